"""The text formats' optional C renderer: ``_text_fast.c`` beside this file, built on first use.

Built by :func:`vrrl_gpu._native.build`, like the recorder's accelerator. Without a compiler or Python's
headers, on a free-threaded Python, when the build or the import fails, or with ``VRRL_NO_ACCEL=1``,
:func:`module` returns None and ``_text.py`` renders with numpy: the same bytes, more slowly.
``VRRL_NO_ACCEL`` is read at each render, so tests can run both engines in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vrrl_gpu import _native

__all__ = ["built", "module"]

SOURCE = Path(__file__).with_name("_text_fast.c")
EXTENSION = _native.Extension(SOURCE, "_vrrl_text")


def module() -> Any:
    """The built ``_vrrl_text`` module, or None (the numpy engine; see the module docstring)."""
    return EXTENSION.module()


def built() -> tuple[bool, str]:
    """(whether the C renderer is in use, where it is or why not): for tests and benchmarks."""
    return EXTENSION.built()
