"""The CUDA extras bring what CuPy's compiler looks for, and no environment the docs recommend gets two CuPys.

What CuPy 14 looks for (cupy/cupy v14.2.0, the same code in cupy-cuda12x and cupy-cuda13x):

- NVRTC: ``cupy_backends/cuda/libs/_cnvrtc.pxi: _get_softlink`` calls cuda-pathfinder's
  ``load_nvidia_dynamic_lib("nvrtc")``: an already loaded libnvrtc.so.13/.12 first, then site-packages
  ``nvidia/cu13/lib`` before ``nvidia/cuda_nvrtc/lib`` (``_dynamic_libs/descriptor_catalog.py``), then the
  system.
- Headers: ``cupy/_core/core.pyx: assemble_cupy_compiler_options`` adds
  ``-I`` + ``find_nvidia_header_directory("cudart")`` (cuda_runtime.h; site-packages ``nvidia/cu13/include``
  before ``nvidia/cuda_runtime/include``, then conda, CUDA_PATH/CUDA_HOME, the system) and raises
  "Failed to find CUDA headers" without it, even for kernels that include no CUDA header.

CuPy 13 (v13.6.0) does not use pathfinder: it dlopens ``libnvrtc.so.12`` by name (``_cnvrtc.pxi``), which
finds the wheel's copy only through LD_LIBRARY_PATH, and ``_environment._get_include_dir_from_conda_or_wheel``
takes ``nvidia-cuda-runtime-cu12`` headers only when its version has NVRTC's major.minor. So the extras ask
for CuPy 14.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
README_TEST_COMMAND = "python3 -m pip install -q -e '.[test]' && python3 -m pytest"
#: .ci/run's one other pip line: PyTorch's CPU build (pinned: another version pulls a CUDA build) and Triton.
TORCH_CI_LINE = "python3 -m pip install -q torch==2.13.0 triton"

# Per CUDA major: the CuPy package, and the wheels (with the file CuPy 14's lookup wants in them) for NVRTC
# and for cuda_runtime.h.
NEEDS: dict[int, dict[str, Any]] = {
    12: {
        "cupy": "cupy-cuda12x",
        "nvrtc": ("nvidia-cuda-nvrtc-cu12", "nvidia/cuda_nvrtc/lib", "libnvrtc.so.12"),
        "cudart": ("nvidia-cuda-runtime-cu12", "nvidia/cuda_runtime/include", "cuda_runtime.h"),
        # versions the extra must and must not admit: 12.8+ for sm_100 (NVRTC 12.0-12.7 stop at sm_90)
        "admit": "12.9.86",
        "refuse": ("12.6.85", "13.0.48"),
    },
    13: {
        "cupy": "cupy-cuda13x",
        "nvrtc": ("nvidia-cuda-nvrtc", "nvidia/cu13/lib", "libnvrtc.so.13"),
        "cudart": ("nvidia-cuda-runtime", "nvidia/cu13/include", "cuda_runtime.h"),
        "admit": "13.5.37",
        "refuse": ("12.9.86", "14.0.0"),
    },
}


def reqs(*extras: str) -> list[Requirement]:
    out: list[Requirement] = []
    for extra in extras:
        assert extra in EXTRAS, f"no extra {extra!r} in pyproject.toml (there are {sorted(EXTRAS)})"
        out += [Requirement(r) for r in EXTRAS[extra]]
    return out


def by_name(*extras: str) -> dict[str, Requirement]:
    return {r.name.lower(): r for r in reqs(*extras)}


def cupy_packages(*extras: str) -> set[str]:
    return {r.name.lower() for r in reqs(*extras) if r.name.lower().startswith("cupy")}


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {why}")
    pytest.skip(why)


# ---- the extras name what CuPy 14 needs ----------------------------------------------------------


@pytest.mark.parametrize("major", sorted(NEEDS))
def test_cuda_extra_brings_cupy_14_nvrtc_and_runtime_headers(major: int) -> None:
    need = NEEDS[major]
    got = by_name(f"cuda{major}")
    cupy = got.get(need["cupy"])
    assert cupy is not None, f"cuda{major} must install {need['cupy']}"
    assert cupy.specifier.contains("14.2.0"), cupy
    assert not cupy.specifier.contains("13.6.0"), (
        f"cuda{major}: CuPy 13 cannot find pip NVRTC without LD_LIBRARY_PATH; ask for >=14, got {cupy}"
    )
    for what in ("nvrtc", "cudart"):
        dist = need[what][0]
        assert dist in got, f"cuda{major} must install {dist} ({what}), got {sorted(got)}"
        spec = got[dist].specifier
        assert spec.contains(need["admit"]), f"{got[dist]} must admit {need['admit']}"
        for v in need["refuse"]:
            assert not spec.contains(v), f"{got[dist]} must not admit {v}"
    assert cupy_packages(f"cuda{major}") == {need["cupy"]}


@pytest.mark.parametrize("major", sorted(NEEDS))
def test_cuda_extra_has_nothing_of_the_other_major(major: int) -> None:
    # CuPy 14 searches nvidia/cu13/lib before nvidia/cuda_nvrtc/lib: a CUDA 13 NVRTC next to CuPy for CUDA 12
    # would be the one it loads.
    (other,) = set(NEEDS) - {major}
    theirs = {NEEDS[other]["cupy"], NEEDS[other]["nvrtc"][0], NEEDS[other]["cudart"][0]}
    assert not theirs & set(by_name(f"cuda{major}"))
    cu13_suffixed = {n for n in by_name(f"cuda{major}") if n.endswith("-cu13")}
    assert not cu13_suffixed, "CUDA 13 wheels have no -cu13 suffix (nvidia-cuda-runtime-cu13 is a stub)"


def test_pathfinder_searches_where_the_wheels_install() -> None:
    # cuda-pathfinder's own tables (private modules: skipped, not failed, if they move).
    try:
        from cuda.pathfinder._dynamic_libs.lib_descriptor import LIB_DESCRIPTORS
        from cuda.pathfinder._headers.header_descriptor import HEADER_DESCRIPTORS
    except ImportError as e:
        pytest.skip(f"cuda-pathfinder's descriptor tables are not where 1.9 has them: {e}")
    nvrtc = LIB_DESCRIPTORS["nvrtc"]
    cudart = HEADER_DESCRIPTORS["cudart"]
    for major, need in NEEDS.items():
        _, lib_dir, soname = need["nvrtc"]
        assert lib_dir in nvrtc.site_packages_linux, (major, nvrtc.site_packages_linux)
        assert soname in nvrtc.linux_sonames, (major, nvrtc.linux_sonames)
        _, inc_dir, header = need["cudart"]
        assert inc_dir in cudart.site_packages_dirs, (major, cudart.site_packages_dirs)
        assert cudart.header_basename == header
    # The order that makes mixing majors dangerous, and keeps CuPy for CUDA 13 on NVRTC 13 in the test extra.
    dirs = list(nvrtc.site_packages_linux)
    assert dirs.index("nvidia/cu13/lib") < dirs.index("nvidia/cuda_nvrtc/lib")


WHEEL_FILES = [(major, what, *NEEDS[major][what]) for major in sorted(NEEDS) for what in ("nvrtc", "cudart")]


@pytest.mark.parametrize(("major", "what", "dist", "rel_dir", "name"), WHEEL_FILES, ids=lambda v: str(v))
def test_installed_wheels_hold_the_files_the_lookup_wants(
    major: int, what: str, dist: str, rel_dir: str, name: str
) -> None:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed here (cuda{major} installs it)")
    assert f"{rel_dir}/{name}" in {str(f) for f in files}, f"{dist} has no {rel_dir}/{name}"


# ---- the CuPy installed here finds them, not /usr/local/cuda -------------------------------------

_PROBE = r"""
import importlib.metadata, json
from cuda.pathfinder import load_nvidia_dynamic_lib, locate_nvidia_header_directory
from cupy._core import core
from cupy.cuda import nvrtc
version = nvrtc.getVersion()  # CuPy loads its NVRTC (through pathfinder in CuPy 14)
lib = load_nvidia_dynamic_lib("nvrtc")  # cached: the library CuPy got
hdr = locate_nvidia_header_directory("cudart")
dists = [d.metadata["Name"] for d in importlib.metadata.distributions()]
print(json.dumps({
    "cupy": sorted(n.lower() for n in dists if n.lower().startswith("cupy")),
    "nvrtc_version": list(version), "nvrtc": [lib.abs_path, lib.found_via],
    "header": [hdr.abs_path, hdr.found_via] if hdr else None,
    "options": list(core.assemble_cupy_compiler_options(("-std=c++17",))),
}))
"""


def _owner(path: str, dist: str) -> bool:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return False
    target = Path(path).resolve()
    where = importlib.metadata.distribution(dist)
    return any(Path(str(where.locate_file(f))).resolve() == target for f in files)


def test_installed_cupy_compiles_with_nvrtc_and_headers_from_pip_wheels() -> None:
    if importlib.util.find_spec("cupy") is None:
        _missing("CuPy is not installed (the test extra installs cupy-cuda13x)")
    # No CUDA_PATH/CUDA_HOME/CONDA_PREFIX/LD_LIBRARY_PATH: only what pip installed, or the system's fallbacks
    # (this machine has /usr/local/cuda headers), which pathfinder tries after site-packages and which would
    # show as found_via other than "site-packages".
    hide = ("CUDA_PATH", "CUDA_HOME", "CONDA_PREFIX", "LD_LIBRARY_PATH")
    env = {k: v for k, v in os.environ.items() if k not in hide}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=False, timeout=300
    )
    if proc.returncode != 0:
        _missing(f"CuPy could not load NVRTC or find CUDA headers:\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout)
    assert len(got["cupy"]) == 1, f"expected exactly one CuPy package, found {got['cupy']}"
    (cupy,) = got["cupy"]
    (major,) = [m for m, need in NEEDS.items() if need["cupy"] == cupy]
    need = NEEDS[major]
    assert got["nvrtc_version"][0] == major, f"{cupy} loaded NVRTC {got['nvrtc_version']} from {got['nvrtc']}"
    lib_path, lib_via = got["nvrtc"]
    assert lib_via == "site-packages", got["nvrtc"]
    assert _owner(lib_path, need["nvrtc"][0]), f"{lib_path} is not from {need['nvrtc'][0]}"
    assert got["header"] is not None
    hdr_path, hdr_via = got["header"]
    assert hdr_via == "site-packages", f"cuda_runtime.h came from {hdr_path} ({hdr_via}), not a pip wheel"
    assert _owner(str(Path(hdr_path) / "cuda_runtime.h"), need["cudart"][0]), hdr_path
    assert got["options"][-1] == f"-I{hdr_path}", got["options"]
    # And the wheels that provided them are what the extras name.
    assert {need["nvrtc"][0], need["cudart"][0], cupy} <= set(by_name(f"cuda{major}"))


# ---- test environments: one CuPy each --------------------------------------------------------------

# What the docs and pyproject.toml recommend for running the tests: the CUDA 13 set (CI, and CUDA 13 GPU
# hosts, optionally with the cuda13 extra), the CUDA 12 set alone or with cuda12. Never test with cuda12.
TEST_ENVIRONMENTS = [("test",), ("test", "cuda13"), ("test-cuda12",), ("test-cuda12", "cuda12")]


@pytest.mark.parametrize("extras", TEST_ENVIRONMENTS, ids=",".join)
def test_each_test_environment_has_exactly_one_cupy(extras: tuple[str, ...]) -> None:
    assert len(cupy_packages(*extras)) == 1, cupy_packages(*extras)


def _docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), REPO / ".ci" / "run"]


def test_no_install_line_in_the_docs_mixes_two_cupy_packages() -> None:
    seen = 0
    for path in _docs():
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"(?:\.|vrrl_gpu)\[([A-Za-z0-9_,\- ]+)\]", text):
            extras = tuple(e.strip() for e in m.group(1).split(","))
            seen += 1
            cupys = cupy_packages(*extras)
            assert len(cupys) <= 1, f"{path.name}: {m.group(0)} installs {sorted(cupys)}"
    assert seen, "expected install lines with extras in README.md"


def test_test_cuda12_is_the_test_extra_with_cuda_12_in_place_of_cuda_13() -> None:
    test, test12, cuda12 = by_name("test"), by_name("test-cuda12"), by_name("cuda12")
    cuda13_only = {NEEDS[13]["cupy"], NEEDS[13]["nvrtc"][0], NEEDS[13]["cudart"][0]}
    # The tools are the same requirements, markers and all.
    common = {n: str(r) for n, r in test.items() if n not in cuda13_only | set(cuda12)}
    assert {n: str(r) for n, r in test12.items() if n not in cuda12} == common
    assert set(cuda12) <= set(test12)
    for name, req in cuda12.items():
        assert req.specifier == test12[name].specifier, (req, test12[name])
    assert not cuda13_only & set(test12), "no CUDA 13 wheel next to CuPy for CUDA 12"


def test_test_extra_brings_both_nvrtc_majors_for_test_nvrtc_majors() -> None:
    test = by_name("test")
    assert test["nvidia-cuda-nvrtc"].specifier.contains("13.5.37")
    nvrtc12 = test["nvidia-cuda-nvrtc-cu12"].specifier
    assert nvrtc12.contains("12.9.86")
    assert not nvrtc12.contains("12.8.93")
    assert not nvrtc12.contains("13.0.48")
    # CuPy for CUDA 13, which pathfinder gives nvidia/cu13/lib's NVRTC even with the 12.x wheel next to it.
    assert cupy_packages("test") == {NEEDS[13]["cupy"]}


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert README_TEST_COMMAND in readme.splitlines()
    assert README_TEST_COMMAND in ci.splitlines()
    # Whatever the tests need comes in through the test extra, not through extra pip lines in CI; the one
    # exception is PyTorch's CPU build and Triton for tests/torch/ (a CUDA PyTorch must not join CuPy's set).
    pip_lines = [ln for ln in ci.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")]
    assert pip_lines == [TORCH_CI_LINE, README_TEST_COMMAND]


def test_both_test_sets_pull_the_analysis_extra() -> None:
    """CI installs a test set, so the fleet tests (DuckDB) run there rather than skip."""
    analysis = by_name("analysis")
    assert set(analysis) == {"duckdb", "pyarrow"}
    for test_set in ("test", "test-cuda12"):
        have = by_name(test_set)
        for name, req in analysis.items():
            assert name in have, f"{test_set} lacks {name} (the analysis extra)"
            assert have[name].specifier == req.specifier, (test_set, name)
