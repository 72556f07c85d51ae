"""Build and load a C extension that ships as source beside its loader: the project's one home for that.

Built like the twin builds kernels (``backends/_twin.py``): with the system C compiler (``$CC``, else ``cc``),
into the per-user cache (``$VRRL_CACHE_DIR/accel`` or ``~/.cache/vrrl_gpu/accel``), named by a hash of the
source, the flags, the compiler and the Python ABI, and published with an atomic rename so concurrent first
uses never load a half-written file. There is no build step. Each caller (``recorder/_accel.py``,
``analysis/exporters/_text_accel.py``) holds one :class:`Extension`, keeps its own Python path and takes any
failure here as "use that".
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

__all__ = ["CFLAGS", "Extension", "Unavailable", "build", "cache_dir"]

#: The flags every extension is built with (a caller may pass its own).
CFLAGS = (
    "-O2",
    "-shared",
    "-fPIC",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
)


class Unavailable(Exception):
    """The extension cannot be built or loaded here; the message says why (for ``built()`` reports)."""


def cache_dir() -> Path:
    """Where built extensions are kept: ``$VRRL_CACHE_DIR/accel``, else ``~/.cache/vrrl_gpu/accel``."""
    base = os.environ.get("VRRL_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "vrrl_gpu"
    return root / "accel"


def build(source: Path, name: str, cflags: tuple[str, ...] = CFLAGS) -> ModuleType:
    """The extension module ``name`` (its ``PyInit_<name>``) compiled from ``source``, from the cache when
    built before. Raises :class:`Unavailable` for a missing compiler, missing headers, a free-threaded Python
    (the extensions rely on the GIL) or a failed build; an import error propagates as it is."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise Unavailable("free-threaded Python (the C relies on the GIL)")
    cc = os.environ.get("CC") or "cc"
    exe = shutil.which(cc)
    include = sysconfig.get_paths().get("include")
    if exe is None:
        raise Unavailable(f"no C compiler ({cc!r} not on PATH)")
    if not include or not (Path(include) / "Python.h").is_file():
        raise Unavailable("no Python.h (install the Python development headers)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    ident = (version.stdout.splitlines() or [exe])[0]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    text = source.read_text(encoding="utf-8")
    key = hashlib.sha256(
        "\0".join([text, " ".join(cflags), ident, sys.version, suffix, include]).encode()
    ).hexdigest()[:20]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{name}-{key}{suffix}"
    if not target.is_file():
        with tempfile.TemporaryDirectory(prefix="vrrl-accel-") as tmp:
            out = Path(tmp) / f"{name}{suffix}"
            cmd = [exe, *cflags, f"-I{include}", str(source), "-o", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise Unavailable(f"the build failed: {proc.stderr.strip()[-500:]}")
            # Another process may build the same key at once: publish atomically, last one wins.
            staged = cache / f".{target.name}.{os.getpid()}.{threading.get_ident()}"
            shutil.copyfile(out, staged)
            os.replace(staged, target)
    spec = importlib.util.spec_from_file_location(name, target)
    if spec is None or spec.loader is None:
        raise Unavailable(f"cannot import {target}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Extension:
    """One extension, built and loaded on first use, once per process: :meth:`module` is it, or None when it
    cannot be had here or ``VRRL_NO_ACCEL=1`` (read at each call, so tests can run both paths in one process).
    A test that needs a fresh try replaces :attr:`state` with an empty dict (``monkeypatch.setattr``)."""

    def __init__(self, source: Path, name: str, cflags: tuple[str, ...] = CFLAGS) -> None:
        self.source, self.name, self.cflags = source, name, cflags
        self._lock = threading.Lock()
        self.state: dict[str, Any] = {}  # "module": the loaded module or None once tried; "why": why not

    def module(self) -> Any:
        """The loaded module, or None (the caller's own path)."""
        if os.environ.get("VRRL_NO_ACCEL") == "1":
            return None
        state = self.state
        if "module" not in state:
            with self._lock:
                if "module" not in state:
                    try:
                        state["module"] = build(self.source, self.name, self.cflags)
                    except Unavailable as e:
                        state["module"], state["why"] = None, str(e)
                    except Exception as e:  # any failure means the caller's own path, never a failed caller
                        state["module"], state["why"] = None, f"{type(e).__name__}: {e}"
        return state["module"]

    def built(self) -> tuple[bool, str]:
        """(whether the extension is in use, where it is or why not): for tests, benchmarks and reports."""
        m = self.module()
        if m is not None:
            return True, str(getattr(m, "__file__", ""))
        if os.environ.get("VRRL_NO_ACCEL") == "1":
            return False, "VRRL_NO_ACCEL=1"
        return False, str(self.state.get("why", "not built"))
