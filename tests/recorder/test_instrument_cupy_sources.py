"""rec.instrument on real kernels nobody here wrote: the CUDA sources shipped inside the installed CuPy.

Collected at test time from cupyx's Python files (triple-quoted sources; never copied into this project).
Every ``extern "C"`` kernel must be instrumented and the result must compile with NVRTC (sm_90, CuPy's own
include paths); every other ``__global__`` function (templates, C++ names) must be refused with a reason.
The counts are printed (``pytest -s``). None of these kernels is run: their arguments are CuPy's business.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from vrrl_gpu.capture import kernels_dir
from vrrl_gpu.errors import InstrumentError
from vrrl_gpu.recorder._instrument import instrument_source

from ..capture.test_kernels import _nvrtc_missing

_STRINGS = re.compile(r'("""|\'\'\')(.*?)\1', re.S)
_GLOBAL = re.compile(
    r'(extern\s+"C"\s+)?__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\("
)


def _cupy_sources() -> tuple[Path, list[tuple[str, str, str, bool]]]:
    """(cupy include dir, [(file, kernel, source, extern_c)]) from the installed cupyx."""
    cupy = pytest.importorskip("cupy")
    cupyx = pytest.importorskip("cupyx")
    root = Path(cupyx.__file__).parent
    found: list[tuple[str, str, str, bool]] = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "__global__" not in text:
            continue
        for _q, body in _STRINGS.findall(text):
            if "__global__" not in body:
                continue
            extern = {m.group(2) for m in _GLOBAL.finditer(body) if m.group(1)}
            for m in _GLOBAL.finditer(body):
                name = m.group(2)
                if m.group(1) or name not in extern:
                    found.append((str(path.relative_to(root)), name, body, bool(m.group(1))))
    return Path(cupy.__file__).parent / "_core" / "include", found


def _compile(src: str, name: str, include: Path) -> None:
    try:
        from cupy.cuda import compiler
    except Exception as e:
        _nvrtc_missing(f"CuPy does not import: {e}")
    cccl = include / "cupy" / "_cccl"
    opts = ("-arch=sm_90", "-std=c++17", f"-I{kernels_dir()}", f"-I{include}",
            *(f"-I{cccl / d}" for d in ("thrust", "libcudacxx", "cub")))  # fmt: skip
    try:
        compiler._NVRTCProgram(src, name, method="cubin").compile(opts)
    except (OSError, RuntimeError) as e:
        if type(e).__name__ == "CompileException":
            raise
        _nvrtc_missing(f"NVRTC cannot be loaded: {type(e).__name__}: {e}")


@pytest.mark.slow
def test_cupys_own_kernels_are_instrumented_and_compile_or_are_refused_with_a_reason() -> None:
    include, found = _cupy_sources()
    extern_c = [f for f in found if f[3]]
    others = [f for f in found if not f[3]]
    assert len(extern_c) >= 10, (
        f'expected CuPy to ship a dozen extern "C" kernel sources, found {len(extern_c)}'
    )
    instrumented = 0
    for _file, name, src, _ in extern_c:
        out = instrument_source(src, name)  # an extern "C" kernel of CuPy's must not be refused
        _compile(out, f"{name}.cu", include)
        instrumented += 1
    reasons: Counter[str] = Counter()
    for _file, name, src, _ in others:
        with pytest.raises(InstrumentError) as ei:
            instrument_source(src, name)
        reasons[str(ei.value).split(": ", 1)[1].split(";")[0]] += 1
    assert sum(reasons.values()) == len(others)
    assert set(reasons) <= {
        'it is not declared extern "C" (its name is mangled)',
        'it is a template (instantiated by name expression), and only extern "C" kernels can be rewritten',
    }
    print(
        f"\nCuPy {pytest.importorskip('cupy').__version__}: {len(found)} __global__ functions in cupyx; "
        f'{len(extern_c)} extern "C": {instrumented} instrumented and compiled (sm_90); '
        f"{len(others)} refused: {dict(reasons)}"
    )
