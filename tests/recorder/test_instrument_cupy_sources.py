"""rec.instrument on real kernels nobody here wrote: the CUDA sources shipped inside the installed CuPy.

Collected at test time from cupyx's Python files (triple-quoted sources; never copied into this project).
Every ``extern "C"`` kernel must be instrumented and the result must compile with NVRTC (sm_90, CuPy's own
include paths); every other ``__global__`` function (templates, C++ names) must be refused with a reason.
The counts are printed (``pytest -s``). Those the twin's compiler builds and whose arguments can be made up
(floating-point buffers and scalars) also run on the twin, plain and instrumented.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vrrl_gpu import Recorder, SlotStatus, VrrlWarning
from vrrl_gpu.capture import kernels_dir
from vrrl_gpu.errors import InstrumentError, KernelCompileError
from vrrl_gpu.format._sidecar import opcode_for_name
from vrrl_gpu.recorder._instrument import instrument_source, plain_file

from ..capture.test_kernels import _nvrtc_missing
from ..helpers.recorder import log_records, with_status

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


def _first_error(log: str) -> str:
    """The compiler's first error, without its file and line (the reason the twin cannot build a kernel)."""
    for line in log.splitlines():
        if "error:" in line:
            return re.sub(r"\s+", " ", line.split("error:", 1)[1]).strip()[:90]
    return "the twin's compiler failed"


_HALF = 32 * 1024  # pointers into the middle of 64 KiB buffers: small negative indices stay inside


def _buffers(backend: Any, params: Any, seed: int) -> tuple[list[Any], tuple[object, ...]]:
    """Device buffers (the same contents for the same seed) and arguments for ``params``: pointers into the
    buffers, 16 for integers, 0.5 for floating-point scalars."""
    rng = np.random.default_rng(seed)
    bufs, args = [], []
    for p in params:
        if p.code == "p":
            dtype = np.float64 if "double" in p.ctype else np.float32
            buf = backend.alloc_device(2 * _HALF)
            values = rng.random(2 * _HALF // np.dtype(dtype).itemsize) + 0.1
            buf.from_host(values.astype(dtype).view(np.uint8))
            bufs.append(buf)
            args.append(int(buf.device_ptr) + _HALF)
        else:
            args.append(0.5 if p.code in "fd" else (True if p.code == "?" else 16))
    return bufs, tuple(args)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")
def test_cupys_kernels_that_the_twin_builds_run_the_same_instrumented_with_one_breadcrumb_each(
    tmp_path: Path,
) -> None:
    """Every extern "C" kernel of cupyx that the twin's compiler builds and whose pointers are all floating
    point (integer pointers would be indices the test cannot make up) runs on the twin, plain and
    instrumented, on identical buffers: every buffer ends identical, and the instrumented launch wrote
    exactly one BEGIN and one COMPLETED. The counts and the reasons for the rest are printed."""
    _include, found = _cupy_sources()
    extern_c = [f for f in found if f[3]]
    not_built: Counter[str] = Counter()
    not_run: Counter[str] = Counter()
    ran: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VrrlWarning)
        rec = Recorder(tmp_path / "run.vrrl", device="twin", breadcrumbs="begin+end", capacity=4096)
    try:
        b = rec.backend
        for _file, name, src, _ in extern_c:
            try:
                plain = b.load(plain_file(src, name), name)
            except KernelCompileError as e:
                not_built[_first_error(e.log)] += 1
                continue
            params = plain.signature.params
            if any(p.code == "p" and not re.search(r"\b(float|double)\b", p.ctype) for p in params):
                not_run["an integer or struct pointer argument (its values would be indices)"] += 1
                continue
            ik = rec.instrument(src, name, opcode=rec.opcode(name))
            bufs1, args1 = _buffers(b, params, seed=len(ran))
            bufs2, args2 = _buffers(b, params, seed=len(ran))
            plain((2, 2), (8, 8), args1)
            ik((2, 2), (8, 8), args2)
            for b1, b2 in zip(bufs1, bufs2, strict=True):
                assert np.array_equal(b1.to_host(), b2.to_host()), name
            ran.append(name)
    finally:
        rec.close()
    recs = log_records(rec.path)
    for status in (SlotStatus.BEGIN, SlotStatus.COMPLETED):
        got = Counter(int(op) for op in with_status(recs, status)["opcode"])
        assert got == Counter({opcode_for_name(n): 1 for n in ran}), status
    assert len(ran) + sum(not_built.values()) + sum(not_run.values()) == len(extern_c)
    assert ran, f"no CuPy kernel ran on the twin: not built {dict(not_built)}, not run {dict(not_run)}"
    print(
        f'\n{len(extern_c)} extern "C" kernels of cupyx: {len(ran)} ran on the twin, plain and instrumented '
        f"({', '.join(sorted(set(ran)))}); {sum(not_built.values())} not built by the twin's g++ "
        f"{dict(not_built)}; {sum(not_run.values())} built but not run {dict(not_run)}"
    )
