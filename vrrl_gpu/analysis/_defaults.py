"""The analysis defaults that ``vrrl --help`` shows, in a module that imports nothing: building the command
line's parser reads them without importing the report, fleet and diff code they belong to."""

from __future__ import annotations

__all__ = ["DEFAULT_LAST", "DEFAULT_BINS", "DEFAULT_HANG_AFTER_S"]

#: How many of the newest launches the report's timeline shows by default.
DEFAULT_LAST = 200

#: The fleet page's time bins across the window (the image's width in pixels).
DEFAULT_BINS = 600

#: The fleet analysis's ``hang_after_s`` when neither it nor ``since_ns`` is given.
DEFAULT_HANG_AFTER_S = 60.0
