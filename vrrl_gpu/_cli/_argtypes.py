"""argparse ``type=`` converters shared by the commands: bad values become one-line usage errors."""

from __future__ import annotations

import argparse

__all__ = ["count", "positive_int", "positive_seconds", "seconds"]


def count(text: str) -> int:
    """An integer >= 0 (decimal, or 0x… hex)."""
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {v}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = count(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {v}")
    return v


def seconds(text: str) -> float:
    """A number of seconds >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text}")
    return v


def positive_seconds(text: str) -> float:
    """A number of seconds > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return v
