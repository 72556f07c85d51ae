"""The optional C accelerator of the launch path: ``_fast.c`` beside this file, built on first use.

Built like the twin builds kernels (``backends/_twin.py``): with the system C compiler (``$CC``, else ``cc``),
into the per-user cache (``$VRRL_CACHE_DIR/accel`` or ``~/.cache/vrrl_gpu/accel``), named by a hash of the
source, the flags, the compiler and the Python ABI, and published with an atomic rename so concurrent
first uses never load a half-written file. There is no build step: without a compiler, without Python's
headers, on a free-threaded Python (the C relies on the GIL), when the build or the import fails, or with
``VRRL_NO_ACCEL=1``, :func:`module` returns None and the pure-Python reference in ``_hot.py`` runs, with the
same behaviour. ``VRRL_NO_ACCEL`` is read each time a recorder binds a stream, so tests can run both.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["module", "built", "CFLAGS"]

SOURCE = Path(__file__).with_name("_fast.c")
CFLAGS = (
    "-O2",
    "-shared",
    "-fPIC",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
)

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "module": the loaded module or None once tried; "why": why not


def _cache_dir() -> Path:
    base = os.environ.get("VRRL_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "vrrl_gpu"
    return root / "accel"


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
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        _state["why"] = "free-threaded Python (the C relies on the GIL)"
        return None
    cc = os.environ.get("CC") or "cc"
    exe = shutil.which(cc)
    include = sysconfig.get_paths().get("include")
    if exe is None:
        _state["why"] = f"no C compiler ({cc!r} not on PATH)"
        return None
    if not include or not (Path(include) / "Python.h").is_file():
        _state["why"] = "no Python.h (install the Python development headers)"
        return None
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    ident = (version.stdout.splitlines() or [exe])[0]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    text = SOURCE.read_text(encoding="utf-8")
    key = hashlib.sha256(
        "\0".join([text, " ".join(CFLAGS), ident, sys.version, suffix, include]).encode()
    ).hexdigest()[:20]
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"_vrrl_fast-{key}{suffix}"
    if not target.is_file():
        with tempfile.TemporaryDirectory(prefix="vrrl-accel-") as tmp:
            out = Path(tmp) / f"_vrrl_fast{suffix}"
            cmd = [exe, *CFLAGS, f"-I{include}", str(SOURCE), "-o", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                _state["why"] = f"the build failed: {proc.stderr.strip()[-500:]}"
                return None
            # Another process may build the same key at once: publish atomically, last one wins.
            staged = cache / f".{target.name}.{os.getpid()}.{threading.get_ident()}"
            shutil.copyfile(out, staged)
            os.replace(staged, target)
    spec = importlib.util.spec_from_file_location("_vrrl_fast", target)
    if spec is None or spec.loader is None:
        _state["why"] = f"cannot import {target}"
        return None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
