"""Finding the CUDA sources of ``kernels/`` and reading their kernel signatures.

The top-level ``kernels/`` directory ships in the wheel as ``vrrl_gpu/kernels``
(hatch force-include); in a source checkout or editable install it is found at
``<repo>/kernels``. Both backends compile from here: CuPy with NVRTC, the twin
with the system C++ compiler.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vrrl_gpu.errors import KernelSourceError

__all__ = [
    "KERNEL_FILES",
    "KernelParam",
    "KernelSignature",
    "kernels_dir",
    "kernel_source",
    "kernel_path",
    "sources_digest",
    "parse_kernels",
]

#: The files ``kernels/`` must hold.
KERNEL_FILES = ("vrrl_record.cuh", "vrrl_instrument.cuh", "vrrl_pack.cu", "vrrl_demo.cu", "twin_shim.h")

_SENTINEL = "vrrl_record.cuh"


def _candidates() -> list[Path]:
    out: list[Path] = []
    try:
        pkg = resources.files("vrrl_gpu") / "kernels"
        out.append(Path(str(pkg)))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - only in broken installs
        pass
    # Source checkout / editable install: vrrl_gpu/capture/../../kernels
    out.append(Path(__file__).resolve().parents[2] / "kernels")
    return out


def kernels_dir() -> Path:
    """The directory holding the kernel sources (installed package data first, then the source checkout)."""
    tried = _candidates()
    for d in tried:
        if (d / _SENTINEL).is_file():
            return d
    raise KernelSourceError(
        f"expected the CUDA sources ({_SENTINEL} ...) in one of {', '.join(map(str, tried))}, found none; "
        f"reinstall vrrl_gpu (the wheel ships them as vrrl_gpu/kernels) or run from a full source checkout"
    )


def kernel_path(name: str) -> Path:
    """The path of one file of ``kernels/`` (e.g. ``"vrrl_pack.cu"``)."""
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise KernelSourceError(f"expected a bare file name in kernels/, got {name!r}")
    p = kernels_dir() / name
    if not p.is_file():
        have = sorted(f.name for f in kernels_dir().iterdir() if f.is_file())
        raise KernelSourceError(f"expected kernels/{name} to exist, found only {have}; check the spelling")
    return p


def kernel_source(name: str) -> str:
    """The text of one file of ``kernels/``."""
    return kernel_path(name).read_text(encoding="utf-8")


def sources_digest(extra: str = "") -> str:
    """A digest over every file of ``kernels/`` (plus ``extra``): a cache key that follows any header."""
    h = hashlib.sha256()
    d = kernels_dir()
    for f in sorted(d.iterdir()):
        if f.is_file() and f.suffix in (".cu", ".cuh", ".h"):
            h.update(f.name.encode())
            h.update(b"\0")
            h.update(f.read_bytes())
            h.update(b"\0")
    h.update(extra.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class KernelParam:
    """One kernel parameter: its name, its C type as written, and a numpy type code (``'p'`` = pointer)."""

    name: str
    ctype: str
    code: str


@dataclass(frozen=True)
class KernelSignature:
    """An ``extern "C" __global__`` function of a source file."""

    name: str
    params: tuple[KernelParam, ...]

    @property
    def codes(self) -> str:
        """The parameter type codes as one string, e.g. ``"ppQI"``."""
        return "".join(p.code for p in self.params)


_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\(([^)]*)\)"
)
_QUALIFIERS = {"const", "volatile", "__restrict__", "__restrict", "restrict", "struct"}
_SCALARS = {
    ("bool",): "?",
    ("char",): "b",
    ("signed", "char"): "b",
    ("unsigned", "char"): "B",
    ("int8_t",): "b",
    ("uint8_t",): "B",
    ("short",): "h",
    ("short", "int"): "h",
    ("unsigned", "short"): "H",
    ("unsigned", "short", "int"): "H",
    ("int16_t",): "h",
    ("uint16_t",): "H",
    ("int",): "i",
    ("signed",): "i",
    ("signed", "int"): "i",
    ("unsigned",): "I",
    ("unsigned", "int"): "I",
    ("int32_t",): "i",
    ("uint32_t",): "I",
    ("long", "long"): "q",
    ("long", "long", "int"): "q",
    ("signed", "long", "long"): "q",
    ("unsigned", "long", "long"): "Q",
    ("unsigned", "long", "long", "int"): "Q",
    ("long",): "q",
    ("unsigned", "long"): "Q",
    ("int64_t",): "q",
    ("uint64_t",): "Q",
    ("size_t",): "Q",
    ("float",): "f",
    ("double",): "d",
}


def _parse_param(kernel: str, text: str) -> KernelParam:
    text = " ".join(text.split())
    pointer = "*" in text
    tokens = [t for t in re.split(r"[\s*&]+", text) if t and t not in _QUALIFIERS]
    if not tokens:
        raise KernelSourceError(f"kernel {kernel}: cannot read parameter {text!r}")
    # The last token is the name unless the declaration is unnamed (then every token is part of the type).
    type_tokens = tokens[:-1] if len(tokens) > 1 else tokens
    name = tokens[-1] if len(tokens) > 1 else ""
    if len(tokens) > 1 and tuple(tokens) in _SCALARS and not pointer:
        type_tokens, name = tokens, ""
    if pointer:
        code = "p"
    else:
        found = _SCALARS.get(tuple(type_tokens))
        if found is None:
            raise KernelSourceError(
                f"kernel {kernel}: parameter {text!r} has a type the launchers cannot pass by value; "
                f"expected a pointer or one of int/unsigned int/long long/unsigned long long/float/double/..."
            )
        code = found
    return KernelParam(name=name, ctype=text, code=code)


def parse_kernels(source: str) -> dict[str, KernelSignature]:
    """Every ``extern "C" __global__ void name(...)`` of ``source`` with its parameters, in order.

    Kernels must be declared ``extern "C"`` (CuPy finds them by their unmangled
    name, and the twin generates one trampoline per name).
    """
    text = _COMMENT.sub(" ", source)
    out: dict[str, KernelSignature] = {}
    for m in _KERNEL.finditer(text):
        name, plist = m.group(1), m.group(2).strip()
        params: tuple[KernelParam, ...] = ()
        if plist and plist != "void":
            params = tuple(_parse_param(name, p) for p in plist.split(","))
        out[name] = KernelSignature(name=name, params=params)
    return out
