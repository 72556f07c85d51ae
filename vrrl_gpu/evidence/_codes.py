"""The stable code space of ``backend_error_code`` (these numbers never change)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vrrl_gpu.evidence._cuda_table import (
    CUBLAS_STATUS_TABLE,
    CUFFT_RESULT_TABLE,
    CURAND_STATUS_TABLE,
    CUSOLVER_STATUS_TABLE,
    CUSPARSE_STATUS_TABLE,
    NVRTC_STATUS_TABLE,
    LibraryStatusInfo,
)
from vrrl_gpu.format._layout import FailureClass

__all__ = [
    "CODE_NONE",
    "CUDA_CODE_OUT_OF_RANGE",
    "NVRTC_CODE_BASE",
    "CUBLAS_CODE_BASE",
    "CUFFT_CODE_BASE",
    "CURAND_CODE_BASE",
    "CUSOLVER_CODE_BASE",
    "CUSPARSE_CODE_BASE",
    "LIBRARY_STATUS_OUT_OF_RANGE",
    "CODE_CUPY_OUT_OF_MEMORY",
    "CODE_COMPILE_FAILURE",
    "CODE_MARKER_DEVICE_LOSS",
    "CODE_MARKER_TRANSIENT",
    "CODE_MARKER_PROGRAM_BUG",
    "CODE_NO_MARKER",
]


_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

CODE_NONE = 0
CUDA_CODE_OUT_OF_RANGE = 0xFFFF
NVRTC_CODE_BASE = 0x0001_0000
CUBLAS_CODE_BASE = 0x0002_0000
CUFFT_CODE_BASE = 0x0003_0000
CURAND_CODE_BASE = 0x0004_0000
CUSOLVER_CODE_BASE = 0x0005_0000
CUSPARSE_CODE_BASE = 0x0006_0000
#: Offset within a library range: status missing or outside ``0 .. 0xFFFE``.
LIBRARY_STATUS_OUT_OF_RANGE = 0xFFFF
CODE_CUPY_OUT_OF_MEMORY = 0x0007_0000
CODE_COMPILE_FAILURE = 0x0008_0000
_MARKER_CODE_BASE = 0x00F0_0000
CODE_MARKER_DEVICE_LOSS = _MARKER_CODE_BASE + FailureClass.DEVICE_LOSS
CODE_MARKER_TRANSIENT = _MARKER_CODE_BASE + FailureClass.TRANSIENT_QUEUE
CODE_MARKER_PROGRAM_BUG = _MARKER_CODE_BASE + FailureClass.PROGRAM_BUG
CODE_NO_MARKER = _MARKER_CODE_BASE + FailureClass.UNCLASSIFIED

_DL = FailureClass.DEVICE_LOSS
_UN = FailureClass.UNCLASSIFIED


@dataclass(frozen=True, slots=True)
class _Library:
    label: str
    base: int
    table: Mapping[int, LibraryStatusInfo]
    header: str
    class_name: str  # CuPy's exception class; matched case-insensitively
    status_attr: str


_LIBRARIES: tuple[_Library, ...] = (
    _Library("NVRTC", NVRTC_CODE_BASE, NVRTC_STATUS_TABLE, "nvrtc.h", "NVRTCError", "status"),
    _Library("cuBLAS", CUBLAS_CODE_BASE, CUBLAS_STATUS_TABLE, "cublas_api.h", "CUBLASError", "status"),
    _Library("cuFFT", CUFFT_CODE_BASE, CUFFT_RESULT_TABLE, "cufft.h", "CuFFTError", "result"),
    _Library("cuRAND", CURAND_CODE_BASE, CURAND_STATUS_TABLE, "curand.h", "CURANDError", "status"),
    _Library(
        "cuSOLVER", CUSOLVER_CODE_BASE, CUSOLVER_STATUS_TABLE, "cusolver_common.h", "CUSOLVERError", "status"
    ),
    _Library("cuSPARSE", CUSPARSE_CODE_BASE, CUSPARSE_STATUS_TABLE, "cusparse.h", "CuSparseError", "status"),
)
_LIBRARY_BY_CLASS = {lib.class_name.lower(): lib for lib in _LIBRARIES}
_LIBRARY_BY_BASE = {lib.base: lib for lib in _LIBRARIES}
