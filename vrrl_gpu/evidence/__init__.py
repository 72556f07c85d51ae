"""Failure evidence: the CUDA error table, classification, stable codes and output digests."""

from __future__ import annotations

from vrrl_gpu.evidence._classify import (
    Classification,
    NvmlFindings,
    classify,
    classify_code,
    code_name,
    nvml_device_lost,
    start_nvml_watch,
)
from vrrl_gpu.evidence._codes import (
    CODE_COMPILE_FAILURE,
    CODE_CUPY_OUT_OF_MEMORY,
    CODE_MARKER_DEVICE_LOSS,
    CODE_MARKER_PROGRAM_BUG,
    CODE_MARKER_TRANSIENT,
    CODE_NO_MARKER,
    CODE_NONE,
    CUBLAS_CODE_BASE,
    CUDA_CODE_OUT_OF_RANGE,
    CUFFT_CODE_BASE,
    CURAND_CODE_BASE,
    CUSOLVER_CODE_BASE,
    CUSPARSE_CODE_BASE,
    LIBRARY_STATUS_OUT_OF_RANGE,
    NVRTC_CODE_BASE,
)
from vrrl_gpu.evidence._cuda_table import (
    CUBLAS_STATUS_TABLE,
    CUDA_ERROR_TABLE,
    CUDA_NAME_TO_CODE,
    CUFFT_RESULT_TABLE,
    CURAND_STATUS_TABLE,
    CUSOLVER_STATUS_TABLE,
    CUSPARSE_STATUS_TABLE,
    DEVICE_LOSS_XIDS,
    MESSAGE_MARKERS,
    NVML_RECLASSIFIABLE_CODES,
    NVRTC_STATUS_TABLE,
    STARTUP_CONFIG_CODES,
    CudaErrorInfo,
    LibraryStatusInfo,
)
from vrrl_gpu.evidence._digest import output_digest
from vrrl_gpu.evidence._failure import FailureEvidence

__all__ = [
    # cuda_table
    "CudaErrorInfo",
    "LibraryStatusInfo",
    "CUDA_ERROR_TABLE",
    "CUDA_NAME_TO_CODE",
    "STARTUP_CONFIG_CODES",
    "NVML_RECLASSIFIABLE_CODES",
    "DEVICE_LOSS_XIDS",
    "NVRTC_STATUS_TABLE",
    "CUBLAS_STATUS_TABLE",
    "CUFFT_RESULT_TABLE",
    "CURAND_STATUS_TABLE",
    "CUSOLVER_STATUS_TABLE",
    "CUSPARSE_STATUS_TABLE",
    "MESSAGE_MARKERS",
    # codes
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
    # classify
    "Classification",
    "classify",
    "classify_code",
    "code_name",
    "NvmlFindings",
    "start_nvml_watch",
    "nvml_device_lost",
    # digest
    "output_digest",
    # failure
    "FailureEvidence",
]
