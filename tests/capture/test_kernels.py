"""kernels/: the sources are found (source checkout and wheel), the C record matches RECORD_DTYPE,
every .cu compiles with NVRTC for sm_80 and sm_90 without a GPU, and the signature parser reads them
as the contract says."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vrrl_gpu import RECORD_DTYPE
from vrrl_gpu.capture import KERNEL_FILES, kernel_path, kernel_source, kernels_dir, parse_kernels
from vrrl_gpu.errors import KernelSourceError

REPO = Path(__file__).resolve().parents[2]
CU_FILES = sorted(p.name for p in (REPO / "kernels").glob("*.cu"))

# RECORD_DTYPE field -> the C member at the same offset (u64 fields are split into u32 halves in C).
C_MEMBER = {"timestamp_ns": "timestamp_ns_lo", "output_digest": "output_digest_lo"}


def test_kernels_dir_holds_every_kernel_file() -> None:
    d = kernels_dir()
    for name in KERNEL_FILES:
        assert (d / name).is_file(), name
    assert "vrrl_pack" in kernel_source("vrrl_pack.cu")


def test_editable_install_finds_the_source_checkout() -> None:
    # This checkout is installed editable: the files found are the repository's own.
    assert kernel_path("vrrl_record.cuh").read_bytes() == (REPO / "kernels" / "vrrl_record.cuh").read_bytes()


@pytest.mark.parametrize("name", ["nope.cu", "../pyproject.toml", "", "sub/x.cu"])
def test_missing_or_unsafe_names_raise_kernel_source_error(name: str) -> None:
    with pytest.raises(KernelSourceError):
        kernel_source(name)


def test_c_record_offsets_equal_record_dtype() -> None:
    cxx = shutil.which(os.environ.get("CXX") or "g++")
    if cxx is None:
        pytest.fail("a C++ compiler (g++) is needed to check the C record layout; install g++")
    fields = RECORD_DTYPE.names or ()
    members = [C_MEMBER.get(f, f) for f in fields]
    prog = ['#include "vrrl_record.cuh"', "#include <cstdio>", "#include <cstddef>", "int main() {"]
    prog.append('    std::printf("%zu\\n", sizeof(vrrl_record));')
    prog += [f'    std::printf("%zu\\n", offsetof(vrrl_record, {m}));' for m in members]
    prog.append("}")
    src = "\n".join(prog)
    exe = Path(os.environ.get("TMPDIR", "/tmp")) / f"vrrl_layout_{os.getpid()}"
    kdir = kernels_dir()
    build = subprocess.run(
        [cxx, "-std=c++17", "-DVRRL_TWIN", "-include", str(kdir / "twin_shim.h"), f"-I{kdir}",
         "-x", "c++", "-", "-o", str(exe), "-pthread"],
        input=src, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    try:
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    finally:
        exe.unlink(missing_ok=True)
    assert int(out[0]) == RECORD_DTYPE.itemsize == 64
    got = {f: int(v) for f, v in zip(fields, out[1:], strict=True)}
    want = {f: RECORD_DTYPE.fields[f][1] for f in fields}  # type: ignore[index]
    assert got == want


def test_header_says_it_must_match_the_dtype() -> None:
    text = kernel_source("vrrl_record.cuh")
    assert "must match vrrl_gpu/format/_layout.py RECORD_DTYPE" in text
    assert "static_assert(sizeof(vrrl_record) == 64" in text


# ---- NVRTC ---------------------------------------------------------------------------------------


def _nvrtc_compile(src: str, name: str, arch: str) -> bytes:
    try:
        from cupy.cuda import compiler
    except Exception as e:
        _nvrtc_missing(f"CuPy does not import: {e}")
    try:
        prog = compiler._NVRTCProgram(src, name, method="cubin")
        out = prog.compile((f"-arch={arch}", "-std=c++17", f"-I{kernels_dir()}"))
    except (OSError, RuntimeError) as e:
        if type(e).__name__ == "CompileException":
            raise
        _nvrtc_missing(f"NVRTC cannot be loaded: {type(e).__name__}: {e}")
    cubin = out[0] if isinstance(out, tuple) else out
    assert isinstance(cubin, bytes)
    return cubin


def _nvrtc_missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {why}; the test extra installs cupy-cuda13x and nvidia-cuda-nvrtc")
    pytest.skip(why)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", CU_FILES)
def test_every_cu_file_compiles_to_cubin_with_nvrtc(name: str, arch: str) -> None:
    cubin = _nvrtc_compile((REPO / "kernels" / name).read_text(), name, arch)
    assert cubin[:4] == b"\x7fELF"  # a cubin, not PTX
    for kernel in parse_kernels((REPO / "kernels" / name).read_text()):
        assert kernel.encode() in cubin


def test_nvrtc_rejects_a_broken_kernel() -> None:
    # The compile test above can fail: a kernel with a type error does not compile.
    pytest.importorskip("cupy")
    from cupy.cuda.compiler import CompileException

    broken = '#include "vrrl_record.cuh"\nextern "C" __global__ void k() { vrrl_record r = 3; }'
    with pytest.raises(CompileException):
        _nvrtc_compile(broken, "b.cu", "sm_80")


# ---- signatures ----------------------------------------------------------------------------------


def test_pack_kernel_signatures_match_the_contract() -> None:
    sigs = parse_kernels(kernel_source("vrrl_pack.cu"))
    pack = sigs["vrrl_pack"]
    assert [p.name for p in pack.params] == [
        "records", "commits", "mask", "seq", "slot_idx", "tenant_id", "opcode",
        "a0", "a1", "a2", "a3", "epoch", "slot_status", "ts_offset",
    ]  # fmt: skip
    assert pack.codes == "ppQQIIIIIIIIIq"
    dev = sigs["vrrl_pack_devseq"]
    assert [p.name for p in dev.params][:4] == ["records", "commits", "mask", "dev_counter"]
    assert dev.codes == "ppQpIIIIIIIIq"


def test_demo_kernels_are_declared() -> None:
    sigs = parse_kernels(kernel_source("vrrl_demo.cu"))
    assert sigs["vrrl_demo_axpy"].codes == "ppfII"
    assert sigs["vrrl_demo_spin"].codes == "Q"
    assert {"vrrl_demo_megakernel", "vrrl_demo_record_many", "vrrl_demo_wait"} <= set(sigs)


def test_parser_handles_comments_unnamed_and_qualified_parameters() -> None:
    src = """
    // extern "C" __global__ void commented_out(int x) {}
    extern "C" __global__ void __launch_bounds__(256) k(const float* __restrict__ x, unsigned int,
                                                      volatile unsigned long long* c, long long t, double d,
                                                      unsigned short h, bool b) {}
    __global__ void not_extern_c(int x) {}
    """
    sigs = parse_kernels(src)
    assert set(sigs) == {"k"}
    assert sigs["k"].codes == "pIpqdH?"
    assert sigs["k"].params[1].name == ""


def test_parser_rejects_types_it_cannot_pass() -> None:
    with pytest.raises(KernelSourceError, match="cannot pass by value"):
        parse_kernels('extern "C" __global__ void k(float2 v) {}')


# ---- wheel ---------------------------------------------------------------------------------------


def test_wheel_ships_the_kernels_as_package_data(tmp_path: Path) -> None:
    # About 2 s with hatchling installed (no isolation); an isolated build needs the network and takes longer.
    pytest.importorskip("build")
    isolation: list[str] = []
    if importlib.util.find_spec("hatchling"):
        isolation = ["--no-isolation"]
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", *isolation, "--outdir", str(tmp_path), str(REPO)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("vrrl_gpu-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in KERNEL_FILES:
        assert f"vrrl_gpu/kernels/{f}" in names, sorted(n for n in names if "kernels" in n)
