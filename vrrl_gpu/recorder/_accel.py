"""The optional C accelerator of the launch path: ``_fast.c`` beside this file, built on first use.

Built by :func:`vrrl_gpu._native.build` (the system C compiler, the per-user cache, a hash of the source, the
flags, the compiler and the Python ABI, an atomic rename). There is no build step: without a compiler, without
Python's headers, on a free-threaded Python (the C relies on the GIL), when the build or the import fails, or
with ``VRRL_NO_ACCEL=1``, :func:`module` returns None and the pure-Python reference in ``_hot.py`` runs, with
the same behaviour. ``VRRL_NO_ACCEL`` is read each time a recorder binds a stream, so tests can run both.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from vrrl_gpu import _native

__all__ = ["module", "built", "CFLAGS"]

SOURCE = Path(__file__).with_name("_fast.c")
CFLAGS = _native.CFLAGS

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "module": the loaded module or None once tried; "why": why not


def module() -> Any:
    """The built ``_vrrl_fast`` module, or None (the pure-Python path; see the module docstring)."""
    if os.environ.get("VRRL_NO_ACCEL") == "1":
        return None
    if "module" not in _state:
        with _lock:
            if "module" not in _state:
                try:
                    _state["module"] = _load()
                except Exception as e:  # any failure means the Python path, never a failed recorder
                    _state["module"], _state["why"] = None, f"{type(e).__name__}: {e}"
    return _state["module"]


def built() -> tuple[bool, str]:
    """(whether the accelerator is in use, why not): for the benchmarks and ``vrrl doctor``-like reports."""
    m = module()
    if m is not None:
        return True, str(getattr(m, "__file__", ""))
    if os.environ.get("VRRL_NO_ACCEL") == "1":
        return False, "VRRL_NO_ACCEL=1"
    return False, str(_state.get("why", "not built"))


def _load() -> ModuleType | None:
    try:
        return _native.build(SOURCE, "_vrrl_fast", CFLAGS)
    except _native.Unavailable as e:
        _state["why"] = str(e)
        return None
