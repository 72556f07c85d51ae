"""The optional C accelerator of the launch path: ``_fast.c`` beside this file, built on first use.

Built by :func:`vrrl_gpu._native.build` (the system C compiler, the per-user cache, a hash of the source, the
flags, the compiler and the Python ABI, an atomic rename). There is no build step: without a compiler, without
Python's headers, on a free-threaded Python (the C relies on the GIL), when the build or the import fails, or
with ``VRRL_NO_ACCEL=1``, :func:`module` returns None and the pure-Python reference in ``_hot.py`` runs, with
the same behaviour. ``VRRL_NO_ACCEL`` is read each time a recorder binds a stream, so tests can run both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vrrl_gpu import _native

__all__ = ["module", "built", "CFLAGS"]

SOURCE = Path(__file__).with_name("_fast.c")
CFLAGS = _native.CFLAGS
EXTENSION = _native.Extension(SOURCE, "_vrrl_fast", CFLAGS)


def module() -> Any:
    """The built ``_vrrl_fast`` module, or None (the pure-Python path; see the module docstring)."""
    return EXTENSION.module()


def built() -> tuple[bool, str]:
    """(whether the accelerator is in use, where it is or why not): for the benchmarks and reports."""
    return EXTENSION.built()
