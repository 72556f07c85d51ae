"""The text formats' optional C renderer: ``_text_fast.c`` beside this file, built on first use.

Built by :func:`vrrl_gpu._native.build`, like the recorder's accelerator. Without a compiler or Python's
headers, on a free-threaded Python, when the build or the import fails, or with ``VRRL_NO_ACCEL=1``,
:func:`module` returns None and ``_text.py`` renders with numpy: the same bytes, more slowly.
``VRRL_NO_ACCEL`` is read at each render, so tests can run both engines in one process.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from vrrl_gpu import _native

__all__ = ["built", "module"]

SOURCE = Path(__file__).with_name("_text_fast.c")
CFLAGS = _native.CFLAGS

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "module": the loaded module or None once tried; "why": why not


def module() -> Any:
    """The built ``_vrrl_text`` module, or None (the numpy engine; see the module docstring)."""
    if os.environ.get("VRRL_NO_ACCEL") == "1":
        return None
    if "module" not in _state:
        with _lock:
            if "module" not in _state:
                try:
                    _state["module"] = _native.build(SOURCE, "_vrrl_text", CFLAGS)
                except _native.Unavailable as e:
                    _state["module"], _state["why"] = None, str(e)
                except Exception as e:  # any failure means the numpy engine, never a failed export
                    _state["module"], _state["why"] = None, f"{type(e).__name__}: {e}"
    return _state["module"]


def built() -> tuple[bool, str]:
    """(whether the C renderer is in use, where it is or why not): for tests and benchmarks."""
    m = module()
    if m is not None:
        return True, str(getattr(m, "__file__", ""))
    if os.environ.get("VRRL_NO_ACCEL") == "1":
        return False, "VRRL_NO_ACCEL=1"
    return False, str(_state.get("why", "not built"))
