"""Compile CUDA sources with one libnvrtc loaded through ctypes, independent of CuPy.

Run as a script in a child process: ``python nvrtc_child.py /path/to/libnvrtc.so.N < job.json``. The job is
``{"programs": [{"name": ..., "src": ..., "options": [...]}, ...]}``; the answer on stdout is JSON with the
library's ``nvrtcVersion``, ``nvrtcGetSupportedArchs`` and, per program, ``ok``, the program log and the cubin
(base64). A child process, because CuPy's NVRTC lookup (cuda-pathfinder) first asks the dynamic loader for
an already loaded ``libnvrtc.so.13`` or ``libnvrtc.so.12``: a libnvrtc loaded into the pytest process would
become CuPy's for the rest of the session. One library per child, because every 12.x has the soname
libnvrtc.so.12.
"""

from __future__ import annotations

import base64
import ctypes
import json
import sys
from typing import Any

NVRTC_SUCCESS = 0


class NvrtcLib:
    """The few NVRTC entry points the tests need, from one shared library."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = ctypes.CDLL(path)  # RTLD_LOCAL: symbols are looked up through this handle only
        lib = self.lib
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcGetErrorString.argtypes = [ctypes.c_int]
        lib.nvrtcVersion.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        lib.nvrtcCreateProgram.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
            ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p),
        ]  # fmt: skip
        lib.nvrtcCompileProgram.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        size_p = ctypes.POINTER(ctypes.c_size_t)
        for getter in ("ProgramLog", "CUBIN"):
            getattr(lib, f"nvrtcGet{getter}Size").argtypes = [ctypes.c_void_p, size_p]
            getattr(lib, f"nvrtcGet{getter}").argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nvrtcGetNumSupportedArchs.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.nvrtcGetSupportedArchs.argtypes = [ctypes.POINTER(ctypes.c_int)]

    def _check(self, rc: int, what: str) -> None:
        if rc != NVRTC_SUCCESS:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(rc).decode()} ({rc})")

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        return major.value, minor.value

    def supported_archs(self) -> list[int]:
        n = ctypes.c_int()
        self._check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * n.value)()
        self._check(self.lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        return list(archs)

    def _get(self, prog: ctypes.c_void_p, what: str) -> bytes:
        size = ctypes.c_size_t()
        self._check(getattr(self.lib, f"nvrtcGet{what}Size")(prog, ctypes.byref(size)), f"nvrtcGet{what}Size")
        buf = ctypes.create_string_buffer(size.value)
        self._check(getattr(self.lib, f"nvrtcGet{what}")(prog, buf), f"nvrtcGet{what}")
        return buf.raw

    def compile(self, src: str, name: str, options: list[str]) -> dict[str, Any]:
        prog = ctypes.c_void_p()
        self._check(
            self.lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None),
            "nvrtcCreateProgram",
        )
        try:
            opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            rc = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            log = self._get(prog, "ProgramLog").rstrip(b"\0").decode(errors="replace")
            out: dict[str, Any] = {"rc": rc, "ok": rc == NVRTC_SUCCESS, "log": log, "cubin": None}
            if rc == NVRTC_SUCCESS:
                out["cubin"] = base64.b64encode(self._get(prog, "CUBIN")).decode()
            else:
                out["error"] = self.lib.nvrtcGetErrorString(rc).decode()
            return out
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def main() -> int:
    lib = NvrtcLib(sys.argv[1])
    job = json.load(sys.stdin)
    answer = {
        "path": lib.path,
        "version": list(lib.version()),
        "supported_archs": lib.supported_archs(),
        "results": [lib.compile(p["src"], p["name"], p["options"]) for p in job["programs"]],
    }
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
