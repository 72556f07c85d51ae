"""vrrl_gpu: a flight recorder for CUDA work driven from Python.

Every wrapped kernel launch makes the GPU write a 64-byte breadcrumb into
page-locked host memory; a host thread drains them into a VRRL v1 ring file;
CUDA failures become classified failure evidence. ``import vrrl_gpu`` never
imports CuPy or touches CUDA.
"""

from __future__ import annotations

from vrrl_gpu import errors
from vrrl_gpu._cuda_errors import CUDA_ERROR_TABLE, CudaErrorInfo
from vrrl_gpu._drain import Drainer, DrainOptions, DrainStatistics
from vrrl_gpu._evidence import (
    Classification,
    FailureEvidence,
    classify,
    classify_code,
    code_name,
    output_digest,
)
from vrrl_gpu._format import (
    FILE_MAGIC,
    HEADER_SIZE,
    MAX_CAPACITY,
    META_OPCODE_BASE,
    RECORD_DTYPE,
    RECORD_MAGIC,
    RECORD_SIZE,
    FailureClass,
    MetaOpcode,
    Record,
    SlotStatus,
)
from vrrl_gpu._kernels import kernel_source, kernels_dir
from vrrl_gpu._recorder import HangReport, Recorder, RecorderOptions, recorder_disabled
from vrrl_gpu._recover import RecoveryResult, find_orphans, recover_orphans, recover_segment
from vrrl_gpu._replay import (
    Launch,
    MinimizeResult,
    RecordedFailure,
    ReplayPlan,
    ReplayReport,
    TrialOutcome,
    current_recorder,
    load_registry,
    minimize,
    read_plan,
    replay,
    run_trial,
    write_sequence_log,
)
from vrrl_gpu._ringlog import RingLog, ScanResult
from vrrl_gpu._staging import ShmSegment, StagingRing
from vrrl_gpu.backends import (
    Backend,
    DeviceBuffer,
    DeviceCounter,
    HostAllocation,
    KernelHandle,
    RingPointers,
    TwinBackend,
    get_backend,
)
from vrrl_gpu.errors import *  # noqa: F403
from vrrl_gpu.errors import __all__ as _errors_all

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "errors",
    # format
    "FILE_MAGIC",
    "HEADER_SIZE",
    "MAX_CAPACITY",
    "META_OPCODE_BASE",
    "RECORD_DTYPE",
    "RECORD_MAGIC",
    "RECORD_SIZE",
    "FailureClass",
    "MetaOpcode",
    "Record",
    "SlotStatus",
    # ring file
    "RingLog",
    "ScanResult",
    # staging and the drain thread
    "StagingRing",
    "ShmSegment",
    "Drainer",
    "DrainOptions",
    "DrainStatistics",
    # failure evidence
    "CUDA_ERROR_TABLE",
    "Classification",
    "CudaErrorInfo",
    "FailureEvidence",
    "classify",
    "classify_code",
    "code_name",
    "output_digest",
    # device backends and kernel sources
    "Backend",
    "DeviceBuffer",
    "DeviceCounter",
    "HostAllocation",
    "KernelHandle",
    "RingPointers",
    "TwinBackend",
    "get_backend",
    "kernel_source",
    "kernels_dir",
    # the recorder
    "HangReport",
    "Recorder",
    "RecorderOptions",
    "recorder_disabled",
    # replay and recovery
    "Launch",
    "MinimizeResult",
    "RecordedFailure",
    "ReplayPlan",
    "ReplayReport",
    "TrialOutcome",
    "current_recorder",
    "load_registry",
    "minimize",
    "read_plan",
    "replay",
    "run_trial",
    "write_sequence_log",
    "RecoveryResult",
    "find_orphans",
    "recover_orphans",
    "recover_segment",
    # errors
    *_errors_all,
]
