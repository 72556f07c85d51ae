"""Classification: every table row against real CuPy exception objects, stable codes, markers, NVML."""

from __future__ import annotations

import glob
import re
import subprocess
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cupy_backends.cuda.api import driver, runtime
from hypothesis import given
from hypothesis import strategies as st

import vrrl_gpu
from vrrl_gpu import FailureClass
from vrrl_gpu.errors import EvidenceTypeError, KernelCompileError, RecordValueError
from vrrl_gpu.evidence import (
    CUBLAS_STATUS_TABLE,
    CUDA_ERROR_TABLE,
    CUDA_NAME_TO_CODE,
    CUFFT_RESULT_TABLE,
    CURAND_STATUS_TABLE,
    CUSOLVER_STATUS_TABLE,
    CUSPARSE_STATUS_TABLE,
    NVRTC_STATUS_TABLE,
    Classification,
    CudaErrorInfo,
    LibraryStatusInfo,
    NvmlFindings,
    _classify,
    _codes,
    classify,
    classify_code,
    code_name,
)

DL, TQ, PB, UN = (
    FailureClass.DEVICE_LOSS,
    FailureClass.TRANSIENT_QUEUE,
    FailureClass.PROGRAM_BUG,
    FailureClass.UNCLASSIFIED,
)
ROWS = sorted(CUDA_ERROR_TABLE.values(), key=lambda i: i.code)


class TwinError(RuntimeError):
    """What the twin backend raises: any exception with an integer ``cuda_error_code``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"twin: CUDA error {code}")
        self.cuda_error_code = code


def driver_error(status: int, message: str = "CUDA_ERROR_X: stand-in") -> BaseException:
    # CUDADriverError.__init__ loads libcuda; the real class with status set is what classify sees.
    e = driver.CUDADriverError.__new__(driver.CUDADriverError)
    e.status = status  # type: ignore[attr-defined]
    RuntimeError.__init__(e, message)
    return e


def cupy_library_error(class_name: str, module: str, attr: str, status: object) -> BaseException:
    # The library modules cannot be imported without libcublas & co.; same name, module and attribute.
    cls = type(class_name, (RuntimeError,), {"__module__": module})
    e = cls(f"{class_name}: stand-in")
    setattr(e, attr, status)
    return e


# ---------------------------------------------------------------- the CUDA table, row by row


@pytest.mark.parametrize("info", ROWS, ids=lambda i: str(i.code))
def test_every_row_classifies_a_real_cuda_runtime_error(info: CudaErrorInfo) -> None:
    exc = runtime.CUDARuntimeError(info.code)
    c = classify(exc)
    assert (c.failure_class, c.code, c.sticky, c.reason) == (
        info.failure_class,
        info.code,
        info.sticky,
        info.reason,
    )
    assert c.name == info.name
    message = str(exc)
    if not message.startswith("unrecognized"):  # cudart 13.2 names every runtime code it knows
        assert message.split(":")[0] == info.runtime_name


@pytest.mark.parametrize("info", ROWS, ids=lambda i: str(i.code))
def test_every_row_classifies_a_driver_error_stand_in(info: CudaErrorInfo) -> None:
    c = classify(driver_error(info.code))
    assert (c.failure_class, c.code, c.sticky) == (info.failure_class, info.code, info.sticky)
    assert c.name == (info.driver_name or info.runtime_name)


@pytest.mark.parametrize("info", ROWS, ids=lambda i: str(i.code))
def test_an_int_cuda_error_code_attribute_classifies_like_cuda_runtime_error(info: CudaErrorInfo) -> None:
    assert classify(TwinError(info.code)) == classify(runtime.CUDARuntimeError(info.code))


def test_table_rows_are_consistent() -> None:
    assert len(CUDA_ERROR_TABLE) == len(ROWS)
    for code, info in CUDA_ERROR_TABLE.items():
        assert code == info.code
        assert 0 < code < 0xFFFF
        assert info.runtime_name or info.driver_name
        assert info.runtime_name is None or re.fullmatch(r"cudaError[A-Z]\w+", info.runtime_name)
        assert info.driver_name is None or re.fullmatch(r"CUDA_ERROR_[A-Z0-9_]+", info.driver_name)
        assert info.reason
        assert "\n" not in info.reason
        assert "|" not in info.reason
    for name, code in CUDA_NAME_TO_CODE.items():
        assert name in (CUDA_ERROR_TABLE[code].runtime_name, CUDA_ERROR_TABLE[code].driver_name)


def test_the_ground_rules_hold_for_the_codes_the_issue_names() -> None:
    expect = {
        DL: [214, 220, 226, 702, 911, 810, 802, 803, 3, 100, 101],
        TQ: [2, 46, 600, 909, 807, 808, 809],
        PB: [700, 716, 710, 715, 719, 9, 701, 98, 200, 209, 218, 500, 400, 709, 900, 908, 917],
        UN: [999, 4, 34, 35, 36, 221, 222, 223],
    }
    for cls, codes in expect.items():
        for code in codes:
            assert CUDA_ERROR_TABLE[code].failure_class is cls, code
    # A trap surfaces as 719, sometimes 715 or 710: all "the kernel aborted", all ProgramBug and sticky.
    for c in (710, 715, 719):
        assert CUDA_ERROR_TABLE[c].sticky
        assert CUDA_ERROR_TABLE[c].failure_class is PB


def _headers() -> tuple[Path, Path] | None:
    for inc in sorted(glob.glob("/usr/local/cuda*/include"), reverse=True):
        dt, cu = Path(inc) / "driver_types.h", Path(inc) / "cuda.h"
        if dt.exists() and cu.exists():
            return dt, cu
    return None


HEADERS = _headers()
needs_headers = pytest.mark.skipif(
    HEADERS is None, reason="no CUDA toolkit headers under /usr/local/cuda*/include"
)


def _runtime_enum(text: str) -> dict[int, tuple[str, str]]:
    """{code: (name, doc comment)} of ``enum cudaError``."""
    body = re.search(r"enum\s+__device_builtin__\s+cudaError\s*\{(.*?)\};", text, re.S)
    assert body is not None
    out = {}
    prev = 0
    for m in re.finditer(r"(cuda\w+)\s*=\s*(\d+)", body.group(1)):
        doc = body.group(1)[prev : m.start()]  # the comment between the previous enumerator and this one
        prev = m.end()
        if m.group(1) != "cudaSuccess":
            out[int(m.group(2))] = (m.group(1), " ".join(doc.replace("*", " ").split()))
    return out


@needs_headers
def test_the_table_covers_every_enum_value_in_the_toolkit_headers() -> None:
    assert HEADERS is not None
    dt, cu = HEADERS
    rt = _runtime_enum(dt.read_text())
    body = re.search(r"typedef enum cudaError_enum\s*\{(.*?)\}\s*CUresult;", cu.read_text(), re.S)
    assert body is not None
    drv = {int(v): n for n, v in re.findall(r"(CUDA_\w+)\s*=\s*(\d+)", body.group(1)) if int(v) != 0}
    assert len(rt) > 100
    assert len(drv) > 90
    assert set(rt) | set(drv) <= set(CUDA_ERROR_TABLE)
    for code, (name, _) in rt.items():
        assert CUDA_ERROR_TABLE[code].runtime_name == name
    for code, name in drv.items():
        assert CUDA_ERROR_TABLE[code].driver_name == name
    # Only rows marked with a later toolkit version may be missing from these headers.
    extra = {c for c in CUDA_ERROR_TABLE if c not in rt and c not in drv}
    assert all(CUDA_ERROR_TABLE[c].since for c in extra), extra


@needs_headers
def test_sticky_is_exactly_what_the_header_comments_say() -> None:
    assert HEADERS is not None
    rt = _runtime_enum(HEADERS[0].read_text())
    documented = {c for c, (_, doc) in rt.items() if re.search(r"relaunched|cannot be used again", doc)}
    assert documented == {c for c, i in CUDA_ERROR_TABLE.items() if i.sticky}


@pytest.mark.parametrize("code", [11, 14, 33, 201 + 1000, 5555, 65000])
def test_unknown_codes_are_unclassified_never_an_exception(code: int) -> None:
    c = classify(runtime.CUDARuntimeError(code))
    assert c.failure_class is UN
    assert c.code == code
    assert not c.sticky
    assert str(code) in c.name
    assert code_name(code) == f"unknown CUDA error {code} ({code})"


def test_status_zero_and_out_of_range_statuses_do_not_raise() -> None:
    assert classify(runtime.CUDARuntimeError(0)).code == 0
    assert classify(TwinError(-1)).code == 0xFFFF
    assert classify(TwinError(1 << 40)).code == 0xFFFF
    assert classify(TwinError(0xFFFF)).failure_class is UN


def test_a_newer_runtime_name_in_the_message_is_kept_for_an_unknown_code() -> None:
    e = driver_error(920, "cudaErrorFabricNotReady: fabric not ready")
    assert classify(e).name == "cudaErrorFabricNotReady"
    assert classify(e).failure_class is UN


@given(st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_any_u32_status_classifies_without_raising(code: int) -> None:
    c = classify(TwinError(code))
    assert 0 <= c.code <= 0xFFFF
    assert isinstance(c.failure_class, FailureClass)
    d = classify_code(code)
    assert d.code == code
    assert isinstance(code_name(code), str)


@given(st.one_of(st.integers(), st.text(max_size=5), st.none(), st.floats(allow_nan=False)))
def test_code_name_never_raises(value: Any) -> None:
    assert isinstance(code_name(value), str)


def test_startup_codes_are_configuration_problems_when_the_device_never_worked() -> None:
    for code in (3, 100, 101):
        assert classify(runtime.CUDARuntimeError(code)).failure_class is DL
        c = classify(runtime.CUDARuntimeError(code), device_was_working=False)
        assert c.failure_class is UN
        assert c.code == code
        assert "start-up" in c.reason
        assert classify_code(code, device_was_working=False).failure_class is UN
    # Every other code is the same either way.
    assert classify(runtime.CUDARuntimeError(700), device_was_working=False).failure_class is PB


# ---------------------------------------------------------------- other CuPy failure types


def test_cupy_out_of_memory_is_transient_with_its_own_code() -> None:
    from cupy.cuda.memory import OutOfMemoryError

    c = classify(OutOfMemoryError(1024, 2048, 4096))
    assert c == Classification(TQ, 0x0007_0000, "OutOfMemoryError", False, c.reason)
    assert "1,024 bytes" in c.reason


def test_compile_errors_are_program_bugs() -> None:
    from cupy.cuda.compiler import CompileException
    from cupy_backends.cuda.libs.nvrtc import NVRTCError

    c = classify(CompileException("error: expected a ';'", "src", "k.cu", ("-arch=sm_90",)))
    assert (c.failure_class, c.code, c.name) == (PB, 0x0008_0000, "CompileException")
    n = classify(NVRTCError(6))
    assert (n.failure_class, n.code, n.name) == (PB, 0x0001_0006, "NVRTC_ERROR_COMPILATION")
    k = classify(KernelCompileError("failed", source="x", name="k", options=(), log="log"))
    assert (k.failure_class, k.code) == (PB, 0x0008_0000)


@pytest.mark.parametrize("status", sorted(NVRTC_STATUS_TABLE))
def test_every_nvrtc_status_with_a_real_nvrtc_error(status: int) -> None:
    from cupy_backends.cuda.libs.nvrtc import NVRTCError

    info = NVRTC_STATUS_TABLE[status]
    c = classify(NVRTCError(status))
    assert (c.failure_class, c.code, c.name) == (info.failure_class, 0x0001_0000 + status, info.name)
    assert str(NVRTCError(status)).startswith(info.name)  # names checked against libnvrtc itself


LIBS = [
    ("CUBLASError", "cupy_backends.cuda.libs.cublas", "status", 0x0002_0000, CUBLAS_STATUS_TABLE),
    ("CuFFTError", "cupy.cuda.cufft", "result", 0x0003_0000, CUFFT_RESULT_TABLE),
    ("CURANDError", "cupy_backends.cuda.libs.curand", "status", 0x0004_0000, CURAND_STATUS_TABLE),
    ("CUSOLVERError", "cupy_backends.cuda.libs.cusolver", "status", 0x0005_0000, CUSOLVER_STATUS_TABLE),
    ("CuSparseError", "cupy_backends.cuda.libs.cusparse", "status", 0x0006_0000, CUSPARSE_STATUS_TABLE),
]
LIB_ROWS = [(lib, s) for lib in LIBS for s in sorted(lib[4])]


Lib = tuple[str, str, str, int, Mapping[int, LibraryStatusInfo]]


@pytest.mark.parametrize(("lib", "status"), LIB_ROWS, ids=lambda x: x[0] if isinstance(x, tuple) else str(x))
def test_every_library_status(lib: Lib, status: int) -> None:
    name, module, attr, base, table = lib
    c = classify(cupy_library_error(name, module, attr, status))
    info = table[status]
    assert (c.failure_class, c.code, c.name) == (info.failure_class, base + status, info.name)
    assert not c.sticky
    assert classify_code(base + status) == c
    assert code_name(base + status) == f"{info.name} (0x{base + status:08X})"


@pytest.mark.parametrize("lib", LIBS, ids=lambda x: x[0])
def test_library_errors_with_unknown_or_missing_status(lib: tuple[str, str, str, int, Any]) -> None:
    name, module, attr, base, _ = lib
    assert classify(cupy_library_error(name, module, attr, 9000)).code == base + 9000
    assert classify(cupy_library_error(name, module, attr, 9000)).failure_class is UN
    missing = classify(cupy_library_error(name, module, "other", 1))
    assert (missing.code, missing.failure_class) == (base + 0xFFFF, UN)


def test_library_names_are_matched_only_in_cupy_modules() -> None:
    c = classify(cupy_library_error("CUBLASError", "someone_else.blas", "status", 13))
    assert c.code == _codes.CODE_NO_MARKER


def test_cufft_status_is_read_from_result() -> None:
    by_result = cupy_library_error("CuFFTError", "cupy.cuda.cufft", "result", 6)
    assert classify(by_result).name == "CUFFT_EXEC_FAILED"
    assert classify(cupy_library_error("CuFFTError", "cupy.cuda.cufft", "status", 6)).code == 0x0003_FFFF


# ---------------------------------------------------------------- exceptions without a status


@pytest.mark.parametrize(
    ("message", "cls"),
    [
        ("VK_ERROR_DEVICE_LOST", DL),
        ("wgpu: Device Lost while mapping", DL),
        ("the GPU has fallen off the bus", DL),
        ("context lost after gpu reset", DL),
        ("Xid 79 seen", DL),
        ("device lost and queue full", DL),
        ("submission queue full", TQ),
        ("operation timed out", TQ),
        ("CUDA out of memory. Tried to allocate 2 GiB", TQ),
        ("resource temporarily unavailable, try again", TQ),
        ("timed out while validation failed", TQ),
        ("shader compile failed: syntax error", PB),
        ("Invalid-Program", PB),
        ("device-side assert triggered", PB),
        ("pipeline validation failed", PB),
        ("everything is fine", UN),
        ("abusybox", UN),
        ("xidden", UN),
        # Other runtimes' device-loss words: CamelCase (wgpu, Dawn), Vulkan and DXGI codes, "adapter lost".
        ("DeviceLost after queue submit", DL),
        ("wgpu: Validation Error: Parent device is lost (DeviceLost)", DL),
        ("the adapter lost its device", DL),
        ("DXGI_ERROR_DEVICE_REMOVED", DL),
        ("vkQueueSubmit failed: VK_ERROR_DEVICE_LOST", DL),
        ("OutOfMemory while allocating", TQ),
        ("DeviceLostness", UN),
    ],
)
def test_message_markers_in_priority_order(message: str, cls: FailureClass) -> None:
    c = classify(RuntimeError(message))
    assert c.failure_class is cls
    assert c.code == 0x00F0_0000 + cls
    assert c.name == "RuntimeError"
    assert not c.sticky


@pytest.mark.parametrize("info", [i for i in CUDA_ERROR_TABLE.values() if i.text], ids=lambda i: str(i.code))
def test_the_wording_after_a_cuda_error_prefix_names_the_code(info: CudaErrorInfo) -> None:
    # PyTorch's C10_CUDA_CHECK and Triton's launcher quote cudaGetErrorString, not the code or its name.
    for message in (
        f"CUDA error: {info.text}\nCUDA kernel errors might be asynchronously reported at some other call",
        f"Triton Error [CUDA]: {info.text}",
        f"CUDA driver error: {info.text}",
    ):
        c = classify(RuntimeError(message))
        assert (c.code, c.failure_class, c.sticky) == (info.code, info.failure_class, info.sticky), message


def test_a_wording_without_a_cuda_prefix_is_left_to_the_markers() -> None:
    assert classify(RuntimeError("an illegal memory access was encountered")).code == 0x00F0_0000 + PB
    assert classify(RuntimeError("CUDA error: something nobody wrote")).code == 0x00F0_0000 + UN


def test_cuda_error_names_in_other_bindings_messages() -> None:
    c = classify(RuntimeError("CUDA_ERROR_LAUNCH_FAILED: unspecified launch failure"))
    assert (c.code, c.failure_class, c.sticky, c.name) == (719, PB, True, "CUDA_ERROR_LAUNCH_FAILED")
    assert "RuntimeError" in c.reason
    assert classify(ValueError("got cudaErrorMemoryAllocation")).failure_class is TQ


def _throw(e: BaseException) -> None:
    raise e


def _raise_from(inner: BaseException, outer: BaseException, *, hide: bool = False) -> None:
    try:
        _throw(inner)
    except BaseException:
        if hide:
            raise outer from None
        raise outer from inner


def test_the_cause_chain_is_searched() -> None:
    with pytest.raises(vrrl_gpu.RecorderPoisonedError) as poisoned:
        _raise_from(runtime.CUDARuntimeError(700), vrrl_gpu.RecorderPoisonedError("poisoned"))
    assert classify(poisoned.value).code == 700
    with pytest.raises(KeyError) as hidden:
        _raise_from(RuntimeError("device lost"), KeyError("x"), hide=True)
    assert classify(hidden.value).code == _codes.CODE_NO_MARKER  # "from None" hides the context on purpose


def test_broken_str_and_non_exceptions() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise ValueError("no")

    assert classify(Broken()).failure_class is UN
    with pytest.raises(EvidenceTypeError):
        classify("not an exception")  # type: ignore[arg-type]


def test_classifying_a_plain_exception_does_not_import_cupy() -> None:
    code = (
        "import sys, numpy as np, vrrl_gpu\n"
        "vrrl_gpu.classify(RuntimeError('device lost')); vrrl_gpu.classify(MemoryError())\n"
        "vrrl_gpu.classify(RuntimeError('CUDA_ERROR_ILLEGAL_ADDRESS'), nvml=True)\n"
        "vrrl_gpu.output_digest(b'x'); vrrl_gpu.output_digest(np.zeros((3, 3))[:, 1])\n"
        "vrrl_gpu.FailureEvidence.from_exception(RuntimeError('x'), slot_status=3, outputs=b'y')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupy_backends', 'cupyx')]\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- stable codes


def test_the_code_space_is_pinned() -> None:
    # These numbers are written into logs; changing one breaks every log ever written.
    assert (_codes.CODE_NONE, _codes.CUDA_CODE_OUT_OF_RANGE) == (0, 0xFFFF)
    assert [
        _codes.NVRTC_CODE_BASE,
        _codes.CUBLAS_CODE_BASE,
        _codes.CUFFT_CODE_BASE,
        _codes.CURAND_CODE_BASE,
        _codes.CUSOLVER_CODE_BASE,
        _codes.CUSPARSE_CODE_BASE,
    ] == [0x0001_0000, 0x0002_0000, 0x0003_0000, 0x0004_0000, 0x0005_0000, 0x0006_0000]
    assert _codes.LIBRARY_STATUS_OUT_OF_RANGE == 0xFFFF
    assert (_codes.CODE_CUPY_OUT_OF_MEMORY, _codes.CODE_COMPILE_FAILURE) == (0x0007_0000, 0x0008_0000)
    markers = [
        _codes.CODE_MARKER_DEVICE_LOSS,
        _codes.CODE_MARKER_TRANSIENT,
        _codes.CODE_MARKER_PROGRAM_BUG,
        _codes.CODE_NO_MARKER,
    ]
    assert markers == [0x00F0_0001, 0x00F0_0002, 0x00F0_0003, 0x00F0_0004]


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0, "none (0)"),
        (700, "cudaErrorIllegalAddress (700)"),
        (719, "cudaErrorLaunchFailure (719)"),
        (2, "cudaErrorMemoryAllocation (2)"),
        (916, "CUDA_ERROR_KEY_ROTATION (916)"),
        (0xFFFF, "CUDA status out of range (65535)"),
        (0x0001_0006, "NVRTC_ERROR_COMPILATION (0x00010006)"),
        (0x0002_000D, "CUBLAS_STATUS_EXECUTION_FAILED (0x0002000D)"),
        (0x0003_0006, "CUFFT_EXEC_FAILED (0x00030006)"),
        (0x0004_0066, "CURAND_STATUS_ALLOCATION_FAILED (0x00040066)"),
        (0x0005_000A, "CUSOLVER_STATUS_ZERO_PIVOT (0x0005000A)"),
        (0x0006_0002, "CUSPARSE_STATUS_ALLOC_FAILED (0x00060002)"),
        (0x0002_0063, "cuBLAS status 99 (0x00020063)"),
        (0x0002_FFFF, "cuBLAS status out of range (0x0002FFFF)"),
        (0x0007_0000, "CuPy OutOfMemoryError (0x00070000)"),
        (0x0008_0000, "kernel compile failure (0x00080000)"),
        (0x00F0_0001, "device-loss message marker (0x00F00001)"),
        (0x00F0_0004, "no message marker (0x00F00004)"),
        (0x00F0_0009, "unassigned code (0x00F00009)"),
        (0xFFFF_FFFF, "unassigned code (0xFFFFFFFF)"),
        (-1, "invalid code (-1)"),
        (1 << 32, "invalid code (4294967296)"),
    ],
)
def test_code_names(code: int, name: str) -> None:
    assert code_name(code) == name


def test_classify_code_is_the_inverse_of_classify() -> None:
    for exc in (
        runtime.CUDARuntimeError(700),
        RuntimeError("device lost"),
        RuntimeError("queue full"),
        RuntimeError("compile failed"),
        RuntimeError("?"),
        TwinError(2),
    ):
        c = classify(exc)
        d = classify_code(c.code)
        assert (d.failure_class, d.code, d.sticky) == (c.failure_class, c.code, c.sticky)
    assert classify_code(0).failure_class is FailureClass.NONE
    assert classify_code(0x0009_0000).failure_class is UN
    with pytest.raises(RecordValueError):
        classify_code(-1)
    with pytest.raises(RecordValueError):
        classify_code(True)


def test_classification_is_validated_and_fatal_means_sticky_or_lost() -> None:
    with pytest.raises(RecordValueError):
        Classification(UN, 1 << 32, "x", False, "r")
    assert Classification(PB, 700, "x", True, "r").fatal
    assert Classification(DL, 214, "x", False, "r").fatal
    assert not Classification(TQ, 2, "x", False, "r").fatal
    assert Classification(4, 0, "x", False, "r").failure_class is UN  # type: ignore[arg-type]


# ---------------------------------------------------------------- NVML cross-check


def test_nvml_reclassifies_719_and_999_when_the_gpu_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_classify, "_nvml_findings", lambda: NvmlFindings(gpu_lost=True))
    for code in (719, 999):
        c = classify(runtime.CUDARuntimeError(code), nvml=True)
        assert c.failure_class is DL
        assert c.code == code
        assert "NVML reports the GPU is lost" in c.reason
        assert classify(runtime.CUDARuntimeError(code)).failure_class is not DL  # nvml=False: unchanged
    # Other codes are never reclassified.
    assert classify(runtime.CUDARuntimeError(700), nvml=True).failure_class is PB


def test_nvml_reclassifies_on_a_device_loss_xid_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_classify, "_nvml_findings", lambda: NvmlFindings(xids=(13, 79)))
    c = classify(runtime.CUDARuntimeError(719), nvml=True)
    assert c.failure_class is DL
    assert "Xid 79 (GPU has fallen off the bus)" in c.reason
    assert "Xid 13" not in c.reason
    monkeypatch.setattr(_classify, "_nvml_findings", lambda: NvmlFindings(xids=(13, 31)))
    assert classify(runtime.CUDARuntimeError(719), nvml=True).failure_class is PB


def test_nvml_device_lost_for_hang_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_classify, "_nvml_findings", lambda: NvmlFindings(xids=(95,)))
    assert _classify.nvml_device_lost()
    monkeypatch.setattr(_classify, "_nvml_findings", lambda: NvmlFindings(xids=(13,)))
    assert not _classify.nvml_device_lost()
    monkeypatch.setattr(_classify, "_nvml_findings", lambda: None)
    assert not _classify.nvml_device_lost()


def test_nvml_is_not_asked_unless_requested(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> NvmlFindings:
        raise AssertionError("NVML must not be consulted")

    monkeypatch.setattr(_classify, "_nvml_findings", boom)
    assert classify(runtime.CUDARuntimeError(719)).failure_class is PB


def test_without_pynvml_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    assert _classify._nvml_findings() is None
    assert not _classify.start_nvml_watch()
    assert classify(runtime.CUDARuntimeError(719), nvml=True) == classify(runtime.CUDARuntimeError(719))


def _fake_pynvml(*, lost: bool, xid_events: list[int]) -> types.ModuleType:
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

    events = list(xid_events)
    nv.NVMLError = NVMLError  # type: ignore[attr-defined]
    nv.NVML_ERROR_GPU_IS_LOST = 15  # type: ignore[attr-defined]
    nv.nvmlEventTypeXidCriticalError = 8  # type: ignore[attr-defined]
    nv.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nv.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"  # type: ignore[attr-defined]
    nv.nvmlEventSetCreate = lambda: "set"  # type: ignore[attr-defined]
    nv.nvmlDeviceRegisterEvents = lambda h, mask, es: None  # type: ignore[attr-defined]

    def pci(h: str) -> object:
        if lost and h == "gpu1":
            raise NVMLError(15)
        return object()

    def wait(es: str, timeout_ms: int) -> object:
        if not events:
            raise NVMLError(10)  # NVML_ERROR_TIMEOUT
        return types.SimpleNamespace(eventType=8, eventData=events.pop(0))

    nv.nvmlDeviceGetPciInfo = pci  # type: ignore[attr-defined]
    nv.nvmlEventSetWait_v2 = wait  # type: ignore[attr-defined]
    return nv


def test_the_nvml_probe_reads_gpu_lost_and_xids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_classify, "_nvml_state", None)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(lost=True, xid_events=[]))
    assert _classify._nvml_findings() == NvmlFindings(gpu_lost=True, xids=())
    c = classify(runtime.CUDARuntimeError(999), nvml=True)
    assert c.failure_class is DL
    assert "GPU is lost" in c.reason

    monkeypatch.setattr(_classify, "_nvml_state", None)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(lost=False, xid_events=[79]))
    assert _classify.start_nvml_watch()
    assert _classify._nvml_findings() == NvmlFindings(gpu_lost=False, xids=(79,))
    # The Xid stays known after it was drained: the GPU does not come back.
    c = classify(runtime.CUDARuntimeError(719), nvml=True)
    assert c.failure_class is DL
    assert "Xid 79" in c.reason


def test_a_broken_nvml_never_breaks_classification(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = _fake_pynvml(lost=False, xid_events=[])

    def init() -> None:
        raise RuntimeError("driver not loaded")

    nv.nvmlInit = init  # type: ignore[attr-defined]
    monkeypatch.setattr(_classify, "_nvml_state", None)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    assert _classify._nvml_findings() is None
    assert classify(runtime.CUDARuntimeError(719), nvml=True).failure_class is PB
