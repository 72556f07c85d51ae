"""Every .cu in kernels/ compiles to a cubin with NVRTC 12 and NVRTC 13, for sm_80, sm_90 and sm_100, with the
options the CuPy backend passes, without CuPy and without a GPU.

Each libnvrtc is loaded through ctypes (nvrtc_child.py) in a child process, one library per child: CuPy's own
NVRTC lookup takes an already loaded libnvrtc.so.12/.13 if there is one, so loading NVRTC 12 into this process
would hand it to CuPy for the rest of the session. The libraries come from the pip wheels of the test extra
(nvidia-cuda-nvrtc for 13.x, nvidia-cuda-nvrtc-cu12 for 12.9) and from VRRL_NVRTC_LIBS (paths separated by
os.pathsep), for versions that cannot share one environment with those wheels, e.g. the oldest 12.x:

    pip download --no-deps nvidia-cuda-nvrtc-cu12==12.0.140 -d /tmp/n && unzip -q /tmp/n/*.whl -d /tmp/n120
    VRRL_NVRTC_LIBS=/tmp/n120/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 python3 -m pytest tests/kernels

With CI set, a missing NVRTC major fails with what to install; otherwise it is skipped.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
KERNELS = REPO / "kernels"
CHILD = Path(__file__).with_name("nvrtc_child.py")
CU_FILES = sorted(p.name for p in KERNELS.glob("*.cu"))
#: The tests' own kernels (the contract suite's tests/backends/*.cu, tests/recorder/*.cu): the -m gpu run
#: compiles them with NVRTC too.
CONTRACT_CU = sorted((REPO / "tests").rglob("*.cu"))
ARCHS = ("sm_80", "sm_90", "sm_100")
MAJORS = (12, 13)
# What provides each major in the test extra (pyproject.toml), and the file it installs.
WHEELS = {13: ("nvidia-cuda-nvrtc", "libnvrtc.so.13"), 12: ("nvidia-cuda-nvrtc-cu12", "libnvrtc.so.12")}
# Where a pip wheel puts cuda_runtime.h, per major (what cuda-pathfinder's "cudart" header lookup searches).
CUDART_INCLUDE = {13: "nvidia/cu13/include", 12: "nvidia/cuda_runtime/include"}
# The CuPy backend's NVRTC_OPTIONS (vrrl_gpu/backends/_cupy.py); compared with the package's own below.
BACKEND_NVRTC_OPTIONS = ("-std=c++17",)
NVRTC_ERROR_COMPILATION = 6


@dataclass(frozen=True)
class Nvrtc:
    label: str  # the wheel's distribution name and version, or the path given in VRRL_NVRTC_LIBS
    path: Path
    major: int  # from the soname libnvrtc.so.N
    minor: int | None  # from the wheel's version; None for VRRL_NVRTC_LIBS


def _find_nvrtc_libraries() -> list[Nvrtc]:
    found: list[Nvrtc] = []
    for major, (dist_name, soname) in sorted(WHEELS.items()):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in dist.files or ():
            if f.name == soname:
                path = Path(str(dist.locate_file(f))).resolve()
                minor = int(dist.version.split(".")[1])
                found.append(Nvrtc(f"{dist_name}-{dist.version}", path, major, minor))
    for entry in os.environ.get("VRRL_NVRTC_LIBS", "").split(os.pathsep):
        if entry.strip():
            path = Path(entry.strip()).resolve()
            m = re.search(r"libnvrtc\.so\.(\d+)$", path.name)
            if m is None:
                pytest.fail(f"VRRL_NVRTC_LIBS: expected paths to libnvrtc.so.N files, got {entry!r}")
            found.append(Nvrtc(str(path), path, int(m.group(1)), None))
    return found


LIBS = _find_nvrtc_libraries()


def _kernel_names(src: str) -> list[str]:
    """The extern "C" __global__ kernels of a source (comments removed first)."""
    src = re.sub(r"//[^\n]*|/\*.*?\*/", " ", src, flags=re.S)
    pattern = r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\('
    return re.findall(pattern, src)


def _site_dir(rel: str) -> Path | None:
    for entry in sys.path:
        d = Path(entry) / rel
        if (d / "cuda_runtime.h").is_file():
            return d
    return None


def cupy_nvrtc_options(arch: str, major: int) -> list[str]:
    """The options NVRTC gets from the backend's ``RawModule(code=..., options=(*NVRTC_OPTIONS,
    -I<kernels>, -I<dir of the .cu>))`` in CuPy 14 (read in the installed CuPy 14.2 and in cupy/cupy v14.2.0):

    - ``cupy/_core/core.pyx: assemble_cupy_compiler_options``: the bundled CCCL include dirs first
      (``_get_cccl_include_options``), the caller's options (no ``--std=c++17`` added, ours has ``-std=``),
      ``-I<cupy>/_core/include``, then ``-I`` + ``find_nvidia_header_directory("cudart")`` (cuda-pathfinder);
    - ``cupy/cuda/compiler.py: _compile_with_cache_cuda`` appends ``-ftz=true``;
    - ``_compile_using_nvrtc_no_warning`` appends ``-arch=sm_XX`` (a cubin:
      ``_get_arch_for_options_for_nvrtc``) and ``--device-as-default-execution-space`` (jitify is off for
      RawModule; ``--pch`` only with CUPY_NVRTC_USE_PCH=1).

    CuPy's include dirs are those of the installed CuPy when there is one (our kernels include none of their
    headers). The cudart include dir is the pip wheel's for this major, when installed.
    """
    pre: list[str] = []
    post: list[str] = []
    spec = importlib.util.find_spec("cupy")
    if spec is not None and spec.submodule_search_locations:
        inc = Path(next(iter(spec.submodule_search_locations))) / "_core" / "include"
        pre = [f"-I{inc}/cupy/_cccl/cub", f"-I{inc}/cupy/_cccl/thrust", f"-I{inc}/cupy/_cccl/libcudacxx"]
        post = [f"-I{inc}"]
    cudart = _site_dir(CUDART_INCLUDE[major])
    if cudart is not None:
        post.append(f"-I{cudart}")
    user = [*BACKEND_NVRTC_OPTIONS, f"-I{KERNELS}", f"-I{KERNELS}"]
    return [*pre, *user, *post, "-ftz=true", f"-arch={arch}", "--device-as-default-execution-space"]


BROKEN = '#include "vrrl_record.cuh"\nextern "C" __global__ void vrrl_broken() { vrrl_record r = 3; }\n'
# __builtin_offsetof in a constant expression: what kernels/vrrl_record.cuh asserts only where it compiles.
OFFSETOF = (
    '#include "vrrl_record.cuh"\n'
    'static_assert(__builtin_offsetof(vrrl_record, epoch) == 40, "epoch at 40");\n'
    'extern "C" __global__ void vrrl_offsetof_probe() {}\n'
)


def _instrumented() -> dict[str, str]:
    """Every kernel of kernels/ that rec.instrument accepts, rewritten (``file:kernel`` -> source)."""
    from vrrl_gpu.errors import InstrumentError
    from vrrl_gpu.recorder._instrument import instrument_source

    out: dict[str, str] = {}
    for name in CU_FILES:
        src = (KERNELS / name).read_text(encoding="utf-8")
        for kernel in _kernel_names(src):
            with contextlib.suppress(InstrumentError):
                out[f"{name}:{kernel}"] = instrument_source(src, kernel)
    return out


def _programs(major: int) -> list[dict[str, Any]]:
    progs = [
        {"key": f"{name}:{arch}", "name": name, "src": (KERNELS / name).read_text(encoding="utf-8"),
         "options": cupy_nvrtc_options(arch, major)}
        for name in CU_FILES
        for arch in ARCHS
    ]  # fmt: skip
    for path in CONTRACT_CU:
        src = path.read_text(encoding="utf-8")
        progs.append({"key": f"contract:{path.name}", "name": path.name, "src": src,
                      "options": cupy_nvrtc_options("sm_90", major)})  # fmt: skip
    for key, src in (("broken", BROKEN), ("offsetof", OFFSETOF)):
        options = cupy_nvrtc_options("sm_80", major)
        progs.append({"key": key, "name": f"{key}.cu", "src": src, "options": options})
    for key, src in _instrumented().items():
        for arch in ARCHS[:2]:
            progs.append({"key": f"instrumented:{key}:{arch}", "name": "instrumented.cu", "src": src,
                          "options": cupy_nvrtc_options(arch, major)})  # fmt: skip
    return progs


@functools.cache
def compiled(lib: Nvrtc) -> dict[str, Any]:
    """Everything this module compiles with one library, in one child process (a few seconds)."""
    progs = _programs(lib.major)
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(lib.path)],
        input=json.dumps({"programs": progs}), capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"{lib.label}: the NVRTC child failed:\n{proc.stderr[-4000:]}"
    answer: dict[str, Any] = json.loads(proc.stdout)
    answer["by_key"] = {p["key"]: r for p, r in zip(progs, answer["results"], strict=True)}
    return answer


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {why}")
    pytest.skip(why)


def _unsupported_arch_reason(lib: Nvrtc, arch: str) -> str | None:
    archs = compiled(lib)["supported_archs"]
    if int(arch.removeprefix("sm_")) in archs:
        return None
    return f"NVRTC {'.'.join(map(str, compiled(lib)['version']))} has no {arch} (it supports {archs})"


# ---- which NVRTC majors are here -----------------------------------------------------------------


@pytest.mark.parametrize("major", MAJORS)
def test_each_nvrtc_major_is_installed(major: int) -> None:
    if not any(lib.major == major for lib in LIBS):
        dist_name, soname = WHEELS[major]
        _missing(
            f"no NVRTC {major} ({soname}) was found: the test extra installs it "
            f"(python3 -m pip install -e '.[test]', or pip install '{dist_name}'), "
            f"or name one in VRRL_NVRTC_LIBS"
        )


@pytest.mark.parametrize("lib", LIBS, ids=lambda lib: lib.label)
def test_nvrtc_version_matches_the_library(lib: Nvrtc) -> None:
    major, minor = compiled(lib)["version"]
    assert major == lib.major, f"{lib.path} says NVRTC {major}.{minor}"
    if lib.minor is not None:
        assert minor == lib.minor, f"{lib.label}: nvrtcVersion says {major}.{minor}"


@pytest.mark.parametrize("lib", LIBS, ids=lambda lib: lib.label)
def test_sm_100_is_there_from_nvrtc_12_8_on(lib: Nvrtc) -> None:
    # Blackwell (sm_100) came with CUDA 12.8; CuPy 14 compiles for at most sm_90 below 12.8
    # (compiler.py: _get_max_compute_capability).
    version = tuple(compiled(lib)["version"])
    assert (100 in compiled(lib)["supported_archs"]) == (version >= (12, 8)), compiled(lib)["supported_archs"]
    for arch in ARCHS[:2]:
        assert _unsupported_arch_reason(lib, arch) is None


# ---- the kernels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", CU_FILES)
@pytest.mark.parametrize("lib", LIBS, ids=lambda lib: lib.label)
def test_every_cu_file_compiles_to_a_cubin(lib: Nvrtc, name: str, arch: str) -> None:
    reason = _unsupported_arch_reason(lib, arch)
    if reason is not None:
        pytest.skip(reason)
    result = compiled(lib)["by_key"][f"{name}:{arch}"]
    assert result["ok"], f"{lib.label} {name} {arch}:\n{result['log']}"
    cubin = base64.b64decode(result["cubin"])
    assert cubin[:4] == b"\x7fELF", "expected a cubin (ELF), got something else"
    names = _kernel_names((KERNELS / name).read_text(encoding="utf-8"))
    assert names, f'no extern "C" kernels found in {name}'
    for kernel in names:
        assert kernel.encode() in cubin, f"{kernel} is not in the {name} cubin"


@pytest.mark.parametrize("path", CONTRACT_CU, ids=lambda p: p.name)
@pytest.mark.parametrize("lib", LIBS, ids=lambda lib: lib.label)
def test_the_contract_suites_kernels_compile_to_a_cubin(lib: Nvrtc, path: Path) -> None:
    result = compiled(lib)["by_key"][f"contract:{path.name}"]
    assert result["ok"], f"{lib.label} {path.name} sm_90:\n{result['log']}"
    for kernel in _kernel_names(path.read_text(encoding="utf-8")):
        assert kernel.encode() in base64.b64decode(result["cubin"])


@pytest.mark.parametrize("arch", ARCHS[:2])
@pytest.mark.parametrize("lib", LIBS, ids=lambda lib: lib.label)
def test_instrumented_kernels_compile_to_a_cubin(lib: Nvrtc, arch: str) -> None:
    """rec.instrument's rewrite of each kernel of kernels/ it accepts (recorder/_instrument.py)."""
    keys = sorted(_instrumented())
    assert len(keys) >= 4, keys  # the demo and pack kernels that neither exit threads nor are templates
    for key in keys:
        result = compiled(lib)["by_key"][f"instrumented:{key}:{arch}"]
        assert result["ok"], f"{lib.label} {key} {arch}:\n{result['log']}"
        assert base64.b64decode(result["cubin"])[:4] == b"\x7fELF"


@pytest.mark.parametrize("lib", LIBS, ids=lambda lib: lib.label)
def test_a_broken_kernel_fails_and_the_log_says_why(lib: Nvrtc) -> None:
    result = compiled(lib)["by_key"]["broken"]
    assert not result["ok"]
    assert result["rc"] == NVRTC_ERROR_COMPILATION, result
    assert result["cubin"] is None
    assert "broken.cu(2): error" in result["log"], result["log"]
    assert "vrrl_record" in result["log"]


@pytest.mark.parametrize("lib", LIBS, ids=lambda lib: lib.label)
def test_offsetof_constant_expressions_need_nvrtc_13(lib: Nvrtc) -> None:
    # Why vrrl_record.cuh guards its offset asserts with __CUDACC_VER_MAJOR__ >= 13 under NVRTC.
    result = compiled(lib)["by_key"]["offsetof"]
    if lib.major >= 13:
        assert result["ok"], result["log"]
    else:
        assert not result["ok"]
        assert "type name is not allowed" in result["log"], result["log"]


# ---- the options are the backend's ---------------------------------------------------------------


def test_backend_nvrtc_options_are_the_ones_compiled_with() -> None:
    # The backend module may move (vrrl_gpu is being split into subpackages): look for it by name.
    import pkgutil

    import vrrl_gpu

    found = []
    for info in pkgutil.walk_packages(vrrl_gpu.__path__, "vrrl_gpu."):
        if info.name.rsplit(".", 1)[-1] in ("_cupy", "cupy"):
            mod = importlib.import_module(info.name)
            if hasattr(mod, "NVRTC_OPTIONS"):
                found.append(tuple(mod.NVRTC_OPTIONS))
    assert found, "expected the CuPy backend module (NVRTC_OPTIONS) inside vrrl_gpu"
    assert found == [BACKEND_NVRTC_OPTIONS]


def test_options_match_what_the_installed_cupy_assembles() -> None:
    # CuPy 14's own assemble_cupy_compiler_options (importing CuPy needs no GPU); the compiler.py tail
    # (-ftz=true, -arch, --device-as-default-execution-space) needs a device, so it is as read above.
    try:
        from cupy._core import core
    except Exception as e:
        pytest.skip(f"CuPy does not import: {type(e).__name__}: {e}")
    user = (*BACKEND_NVRTC_OPTIONS, f"-I{KERNELS}", f"-I{KERNELS}")
    try:
        assembled = list(core.assemble_cupy_compiler_options(user))
    except RuntimeError as e:  # "Failed to find CUDA headers"
        _missing(f"CuPy cannot assemble its compiler options: {e}")
    majors = [m for m, dist in ((12, "cupy-cuda12x"), (13, "cupy-cuda13x")) if _installed(dist)]
    assert len(majors) == 1, f"expected one CuPy package (cupy-cuda12x or cupy-cuda13x), found {majors}"
    ours = cupy_nvrtc_options("sm_80", majors[0])[:-3]
    assert assembled == ours
