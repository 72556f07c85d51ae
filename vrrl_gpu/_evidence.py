"""Failure evidence: classify an exception, name its stable code, digest the outputs.

Everything here runs without a GPU. CuPy is never imported to *classify*:
CuPy's exception types are recognised by class name, module and ``status``
(cuFFT: ``result``), because the library modules cannot even be imported
without their shared libraries. CuPy is imported only to copy a CuPy array
to the host for :func:`output_digest`.

Stable code space (``backend_error_code``, u32; these numbers never change)
---------------------------------------------------------------------------
=========================  =====================================================
``0``                      no error
``1 .. 0xFFFE``            a ``cudaError_t`` / ``CUresult`` code, as itself
``0xFFFF``                 a CUDA status outside ``0 .. 0xFFFE`` (not representable)
``0x0001_0000 + s``        NVRTC status ``s`` (``NVRTCError``)
``0x0002_0000 + s``        cuBLAS status ``s``
``0x0003_0000 + s``        cuFFT result ``s``
``0x0004_0000 + s``        cuRAND status ``s``
``0x0005_0000 + s``        cuSOLVER status ``s``
``0x0006_0000 + s``        cuSPARSE status ``s``
``0x0007_0000``            CuPy ``OutOfMemoryError`` (pool allocation failure)
``0x0008_0000``            kernel compile failure (CuPy ``CompileException``, ``KernelCompileError``)
``0x00F0_0001``            no CUDA status; a device-loss message marker matched
``0x00F0_0002``            no CUDA status; a transient message marker matched
``0x00F0_0003``            no CUDA status; a program-bug message marker matched
``0x00F0_0004``            no CUDA status and no marker matched
=========================  =====================================================

In each library range, ``base + 0xFFFF`` means "status missing or outside
``0 .. 0xFFFE``". Everything else (``0x0009_0000 ..``) is unassigned and decodes
as Unclassified. ``docs/error-classification.md`` is generated from the tables
by :func:`render_classification_markdown` (``python docs/gen_error_classification.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeAlias

import blake3
import numpy as np

from vrrl_gpu._cuda_errors import (
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
    LibraryStatusInfo,
)
from vrrl_gpu._format import FailureClass, Record
from vrrl_gpu.errors import EvidenceTypeError, KernelCompileError, RecordValueError

__all__ = [
    # code space
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
    # classification
    "Classification",
    "classify",
    "classify_code",
    "code_name",
    "NvmlFindings",
    "start_nvml_watch",
    "nvml_device_lost",
    # digests and evidence
    "output_digest",
    "FailureEvidence",
    # docs
    "render_classification_markdown",
    "main",
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
    _Library("cuSOLVER", CUSOLVER_CODE_BASE, CUSOLVER_STATUS_TABLE, "cusolver_common.h", "CUSOLVERError",
             "status"),
    _Library("cuSPARSE", CUSPARSE_CODE_BASE, CUSPARSE_STATUS_TABLE, "cusparse.h", "CuSparseError", "status"),
)
_LIBRARY_BY_CLASS = {lib.class_name.lower(): lib for lib in _LIBRARIES}
_LIBRARY_BY_BASE = {lib.base: lib for lib in _LIBRARIES}


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True, slots=True)
class Classification:
    """What kind of failure an exception was (immutable; pickles).

    ``code`` is the stable u32 of the module's code space; ``sticky`` says the
    CUDA documentation requires a process restart after this error.
    """

    failure_class: FailureClass
    code: int
    name: str
    sticky: bool
    reason: str

    def __post_init__(self) -> None:
        code = _as_int(self.code)
        if code is None or not 0 <= code <= _U32:
            raise RecordValueError(f"Classification.code must be a u32 (0 ..= {_U32}), got {self.code!r}")
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "failure_class", FailureClass(int(self.failure_class)))

    @property
    def fatal(self) -> bool:
        """True when the device or context must not be used again: a sticky error or a device loss."""
        return self.sticky or self.failure_class is FailureClass.DEVICE_LOSS


def _as_int(v: object) -> int | None:
    """``v`` as an int when it is an integer (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        return None
    return int(v)


def _safe_str(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:  # a broken __str__ must not break classification
        try:
            return repr(e)
        except Exception:
            return type(e).__name__


_CUDA_NAME_RE = re.compile(r"\b(cudaError[A-Z]\w*|CUDA_ERROR_[A-Z0-9_]+)\b")


def _classify_cuda(
    status: int, *, driver: bool, device_was_working: bool, message: str = ""
) -> Classification:
    if not 0 <= status < CUDA_CODE_OUT_OF_RANGE:
        return Classification(
            _UN, CUDA_CODE_OUT_OF_RANGE, f"CUDA status {status}", False,
            f"CUDA status {status} is outside the code range 0 ..= {CUDA_CODE_OUT_OF_RANGE - 1}",
        )
    if status == 0:
        return Classification(_UN, 0, "cudaSuccess", False, "an error object carrying status 0 (success)")
    info = CUDA_ERROR_TABLE.get(status)
    if info is None:
        # A runtime newer than this table may name the code in its message; a name we know belongs to
        # another code, so it cannot be this one (the twin words unknown codes as cudaErrorUnknown).
        m = _CUDA_NAME_RE.match(message)
        name = m.group(1) if m and m.group(1) not in CUDA_NAME_TO_CODE else f"unknown CUDA error {status}"
        return Classification(_UN, status, name, False, f"CUDA code {status} is not in the 12.x/13.x table")
    name = info.driver_name if driver and info.driver_name else info.name
    cls, reason = info.failure_class, info.reason
    if status in STARTUP_CONFIG_CODES and not device_was_working:
        cls = _UN
        reason = "configuration problem at start-up (no driver, no visible device, or a bad device ordinal)"
    return Classification(cls, status, name, info.sticky, reason)


def _classify_library(lib: _Library, status: object) -> Classification:
    s = _as_int(status)
    if s is None or not 0 <= s < LIBRARY_STATUS_OUT_OF_RANGE:
        return Classification(
            _UN, lib.base + LIBRARY_STATUS_OUT_OF_RANGE, f"{lib.label} status out of range", False,
            f"{lib.label} error without a status in 0 ..= {LIBRARY_STATUS_OUT_OF_RANGE - 1} (got {status!r})",
        )
    info = lib.table.get(s)
    if info is None:
        label = f"{lib.label} status {s}"
        return Classification(_UN, lib.base + s, label, False, f"{label} is unknown")
    return Classification(info.failure_class, lib.base + s, info.name, False, info.reason)


def _oom_classification(size: object = None) -> Classification:
    n = _as_int(size)
    what = f"{n:,} bytes" if n is not None else "memory"
    return Classification(
        FailureClass.TRANSIENT_QUEUE, CODE_CUPY_OUT_OF_MEMORY, "OutOfMemoryError", False,
        f"CuPy's memory pool could not allocate {what}, even after freeing its cache; retry after freeing",
    )


def _compile_classification(name: str) -> Classification:
    return Classification(
        FailureClass.PROGRAM_BUG, CODE_COMPILE_FAILURE, name, False, "the kernel source failed to compile"
    )


def _classify_typed(e: BaseException, device_was_working: bool) -> Classification | None:
    """A classification from the exception's type and status, or None when it carries no known status."""
    twin_code = _as_int(getattr(e, "cuda_error_code", None))
    if twin_code is not None:
        return _classify_cuda(
            twin_code, driver=False, device_was_working=device_was_working, message=_safe_str(e)
        )
    if isinstance(e, KernelCompileError):
        return _compile_classification(type(e).__name__)
    t = type(e)
    module = getattr(t, "__module__", "") or ""
    if not module.startswith(("cupy", "cupy_backends", "cupyx")):
        return None
    name = t.__name__
    if name in ("CUDARuntimeError", "CUDADriverError"):
        status = _as_int(getattr(e, "status", None))
        return _classify_cuda(-1 if status is None else status, driver=name == "CUDADriverError",
                              device_was_working=device_was_working, message=_safe_str(e))
    if name == "OutOfMemoryError":
        return _oom_classification(getattr(e, "_size", None))
    if name == "CompileException":
        return _compile_classification(name)
    lib = _LIBRARY_BY_CLASS.get(name.lower())
    if lib is not None:
        return _classify_library(lib, getattr(e, lib.status_attr, None))
    return None


def _classify_by_name(e: BaseException, device_was_working: bool) -> Classification | None:
    """Another binding's CUDA error (cuda.core, Numba, …) whose message names the code."""
    for m in _CUDA_NAME_RE.finditer(_safe_str(e)):
        code = CUDA_NAME_TO_CODE.get(m.group(1))
        if code is not None:
            c = _classify_cuda(code, driver=m.group(1).startswith("CUDA_ERROR_"),
                               device_was_working=device_was_working)
            return replace(c, reason=f"{c.reason} (named in the message of a {type(e).__name__})")
    return None


_MARKER_LABELS = {
    FailureClass.DEVICE_LOSS: "device-loss",
    FailureClass.TRANSIENT_QUEUE: "transient",
    FailureClass.PROGRAM_BUG: "program-bug",
}
_MARKER_PATTERNS = tuple(
    (cls, tuple((m, re.compile(r"\b" + re.escape(m) + r"\b")) for m in markers))
    for cls, markers in MESSAGE_MARKERS
)


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


def _classify_by_markers(chain: Sequence[BaseException]) -> Classification:
    top = chain[0]
    text = _normalise(" | ".join(_safe_str(e) for e in chain))
    for cls, patterns in _MARKER_PATTERNS:
        for marker, rx in patterns:
            if rx.search(text):
                return Classification(
                    cls, _MARKER_CODE_BASE + cls, type(top).__name__, False,
                    f"no CUDA status; the message contains {marker!r}, a {_MARKER_LABELS[cls]} marker",
                )
    return Classification(
        _UN, CODE_NO_MARKER, type(top).__name__, False, "no CUDA status and no known marker in the message"
    )


def _chain(exc: BaseException, limit: int = 8) -> list[BaseException]:
    """The exception, then its ``__cause__`` / ``__context__`` ancestors (a wrapper's CUDA error counts)."""
    out: list[BaseException] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen and len(out) < limit:
        out.append(e)
        seen.add(id(e))
        # ``raise … from None`` hides the context on purpose: so do we.
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    return out


def classify(exc: BaseException, *, device_was_working: bool = True, nvml: bool = False) -> Classification:
    """Classify an exception into a failure class and a stable code. Never raises for any exception.

    Order: a status the exception carries (CuPy's CUDA, NVRTC and library
    errors, CuPy's out-of-memory and compile errors, or any exception with an
    integer ``cuda_error_code``, as the twin backend raises); then a CUDA error
    name in the message (``cudaErrorIllegalAddress``, ``CUDA_ERROR_LAUNCH_FAILED``);
    then message markers. The exception's ``__cause__``/``__context__`` chain is
    searched too. ``device_was_working=False`` turns codes 3/100/101 into
    configuration problems (Unclassified). ``nvml=True`` asks NVML (if
    installed) whether a 719/999 was really a lost GPU.

    >>> classify(RuntimeError("VK_ERROR_DEVICE_LOST")).failure_class.label
    'DeviceLoss'
    """
    if not isinstance(exc, BaseException):
        raise EvidenceTypeError(f"classify expects an exception, got {type(exc).__name__}")
    chain = _chain(exc)
    result: Classification | None = None
    for e in chain:
        result = _classify_typed(e, device_was_working)
        if result is not None:
            break
    if result is None:
        for e in chain:
            result = _classify_by_name(e, device_was_working)
            if result is not None:
                break
    if result is None:
        result = _classify_by_markers(chain)
    if nvml and result.code in NVML_RECLASSIFIABLE_CODES:
        result = _nvml_cross_check(result)
    return result


_CODE_NAMES_FIXED = {
    CODE_CUPY_OUT_OF_MEMORY: "CuPy OutOfMemoryError",
    CODE_COMPILE_FAILURE: "kernel compile failure",
    CODE_MARKER_DEVICE_LOSS: "device-loss message marker",
    CODE_MARKER_TRANSIENT: "transient message marker",
    CODE_MARKER_PROGRAM_BUG: "program-bug message marker",
    CODE_NO_MARKER: "no message marker",
}


def classify_code(code: int, *, device_was_working: bool = True) -> Classification:
    """Decode a stable code (a record's ``backend_error_code``) back into a classification.

    Any u32 decodes; codes nobody assigned are Unclassified.
    """
    n = _as_int(code)
    if n is None or not 0 <= n <= _U32:
        raise RecordValueError(f"backend_error_code must be a u32 (0 ..= {_U32}), got {code!r}")
    code = n
    if code == CODE_NONE:
        return Classification(FailureClass.NONE, 0, "none", False, "no error")
    if code < 0x1_0000:
        if code == CUDA_CODE_OUT_OF_RANGE:
            return Classification(_UN, code, "CUDA status out of range", False,
                                  "a CUDA status outside the code range was recorded")
        return _classify_cuda(code, driver=False, device_was_working=device_was_working)
    lib = _LIBRARY_BY_BASE.get(code & 0xFFFF_0000)
    if lib is not None:
        offset = code & 0xFFFF
        return _classify_library(lib, offset if offset != LIBRARY_STATUS_OUT_OF_RANGE else None)
    if code == CODE_CUPY_OUT_OF_MEMORY:
        return replace(_oom_classification(), name=_CODE_NAMES_FIXED[code])
    if code == CODE_COMPILE_FAILURE:
        return _compile_classification(_CODE_NAMES_FIXED[code])
    if code in (CODE_MARKER_DEVICE_LOSS, CODE_MARKER_TRANSIENT, CODE_MARKER_PROGRAM_BUG, CODE_NO_MARKER):
        cls = FailureClass(code - _MARKER_CODE_BASE)
        reason = (f"no CUDA status; a {_MARKER_LABELS[cls]} marker matched the message"
                  if cls in _MARKER_LABELS else "no CUDA status and no known marker in the message")
        return Classification(cls, code, _CODE_NAMES_FIXED[code], False, reason)
    return Classification(_UN, code, "unassigned code", False, f"code 0x{code:08X} is not assigned")


def code_name(code: int) -> str:
    """A readable name for a stable code: ``"cudaErrorIllegalAddress (700)"``. Never raises.

    CUDA codes show their number in decimal, every other range in hex
    (``"CUBLAS_STATUS_EXECUTION_FAILED (0x0002000D)"``).
    """
    try:
        c = classify_code(code)
    except Exception:
        return f"invalid code ({code!r})"
    n = int(code)
    return f"{c.name} ({n})" if n < 0x1_0000 else f"{c.name} (0x{n:08X})"


# --------------------------------------------------------------------------- NVML cross-check


@dataclass(frozen=True, slots=True)
class NvmlFindings:
    """What NVML said: a GPU is lost (``NVML_ERROR_GPU_IS_LOST``), and the Xids seen since the watch began."""

    gpu_lost: bool = False
    xids: tuple[int, ...] = ()


class _NvmlState:
    def __init__(self, event_set: Any) -> None:
        self.event_set = event_set
        self.xids: list[int] = []


_nvml_lock = threading.Lock()
_nvml_state: _NvmlState | None = None


def _nvml_open(nv: Any) -> _NvmlState:
    global _nvml_state
    if _nvml_state is None:
        # NVML stays initialised from here on: the Xid event set lives only while it is.
        nv.nvmlInit()
        event_set = None
        try:
            event_set = nv.nvmlEventSetCreate()
            for i in range(nv.nvmlDeviceGetCount()):
                try:
                    nv.nvmlDeviceRegisterEvents(
                        nv.nvmlDeviceGetHandleByIndex(i), nv.nvmlEventTypeXidCriticalError, event_set
                    )
                except nv.NVMLError:
                    continue  # this GPU cannot report Xids (not supported); the others still can
        except nv.NVMLError:
            event_set = None
        _nvml_state = _NvmlState(event_set)
    return _nvml_state


def start_nvml_watch() -> bool:
    """Start collecting Xid events now (NVML keeps no history). True when NVML is available.

    Optional: the first ``classify(..., nvml=True)`` starts the watch too, but
    then it only sees Xids that arrive after that.
    """
    try:
        import pynvml
    except ImportError:
        return False
    try:
        with _nvml_lock:
            _nvml_open(pynvml)
    except Exception:  # NVML present but unusable (no driver): the cross-check is optional
        return False
    return True


def _nvml_findings() -> NvmlFindings | None:
    """Ask NVML whether a GPU is lost and which Xids arrived; None when NVML is not available.

    Kept small and separate so that tests can replace it.
    """
    try:
        import pynvml as nv
    except ImportError:
        return None
    try:
        with _nvml_lock:
            state = _nvml_open(nv)
            lost = False
            try:
                for i in range(nv.nvmlDeviceGetCount()):
                    try:
                        nv.nvmlDeviceGetPciInfo(nv.nvmlDeviceGetHandleByIndex(i))
                    except nv.NVMLError as err:
                        lost = lost or getattr(err, "value", None) == nv.NVML_ERROR_GPU_IS_LOST
            except nv.NVMLError as err:
                lost = getattr(err, "value", None) == nv.NVML_ERROR_GPU_IS_LOST
            if state.event_set is not None:
                for _ in range(256):  # drain what is pending; a wait of 0 ms never blocks
                    try:
                        ev = nv.nvmlEventSetWait_v2(state.event_set, 0)
                    except nv.NVMLError:
                        break
                    if ev.eventType & nv.nvmlEventTypeXidCriticalError:
                        state.xids.append(int(ev.eventData))
            return NvmlFindings(gpu_lost=lost, xids=tuple(state.xids))
    except Exception:  # NVML present but unusable: the cross-check is optional, classification goes on
        return None


def _nvml_loss_reasons(findings: NvmlFindings) -> list[str]:
    why: list[str] = []
    if findings.gpu_lost:
        why.append("NVML reports the GPU is lost (NVML_ERROR_GPU_IS_LOST)")
    for x in dict.fromkeys(findings.xids):
        if x in DEVICE_LOSS_XIDS:
            why.append(f"NVML saw Xid {x} ({DEVICE_LOSS_XIDS[x]})")
    return why


def nvml_device_lost() -> bool:
    """True when NVML reports a GPU lost or a device-loss Xid; False without NVML (for hang reports)."""
    findings = _nvml_findings()
    return findings is not None and bool(_nvml_loss_reasons(findings))


def _nvml_cross_check(c: Classification) -> Classification:
    findings = _nvml_findings()
    if findings is None:
        return c
    why = _nvml_loss_reasons(findings)
    if not why:
        return c
    return replace(c, failure_class=_DL, reason=f"{c.reason}; reclassified as DeviceLoss: {'; '.join(why)}")


# --------------------------------------------------------------------------- digests

#: From this many bytes on, hash with every core (measured: below it threads cost more than they win).
_MULTITHREAD_MIN_BYTES = 4 << 20
#: Non-contiguous arrays are copied in pieces of about this size, never whole.
_COPY_CHUNK_BYTES = 8 << 20


_Part: TypeAlias = "np.ndarray[Any, Any] | memoryview | bytes | bytearray"


def _is_device_array(obj: object) -> bool:
    module = getattr(type(obj), "__module__", "") or ""
    return (
        hasattr(obj, "__cuda_array_interface__")
        or callable(getattr(obj, "to_host", None))  # a backend DeviceBuffer (CuPy or twin)
        or (module.startswith(("cupy", "cupyx")) and hasattr(obj, "get") and hasattr(obj, "dtype"))
    )


def _device_to_host(obj: Any, stream: Any) -> np.ndarray[Any, Any]:
    if callable(getattr(obj, "to_host", None)):
        host: Any = obj.to_host()  # synchronises the device first
        if not isinstance(host, np.ndarray):
            raise TypeError(f"expected numpy from {type(obj).__name__}.to_host(), got {type(host).__name__}")
        return host
    module = getattr(type(obj), "__module__", "") or ""
    if not module.startswith(("cupy", "cupyx")):
        import cupy

        obj = cupy.asarray(obj)  # zero-copy view of another library's device array
    host = obj.get(stream=stream)
    if not isinstance(host, np.ndarray):  # pragma: no cover - CuPy always returns numpy
        raise TypeError(f"expected numpy from {type(obj).__name__}.get(), got {type(host).__name__}")
    return host


def _host_parts(obj: Any, stream: Any, out: list[_Part]) -> str:
    """Append the host buffers of ``obj`` to ``out``; return "" or why a device array could not be read."""
    if isinstance(obj, (list, tuple)):
        for item in obj:
            note = _host_parts(item, stream, out)
            if note:
                return note
        return ""
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        if arr.dtype.hasobject:
            raise EvidenceTypeError("output_digest cannot hash arrays holding Python objects (dtype object)")
        out.append(arr)
        return ""
    if isinstance(obj, (bytes, bytearray)):
        out.append(obj)
        return ""
    if _is_device_array(obj):
        try:
            out.append(_device_to_host(obj, stream))
        except Exception as err:  # a dead context: no digest, and the original failure stays on top
            return f"device array could not be read: {type(err).__name__}: {_safe_str(err)}"
        return ""
    try:
        mv = memoryview(obj)
    except TypeError:
        raise EvidenceTypeError(
            f"output_digest takes bytes, bytearray, memoryview, buffer-protocol objects, numpy or CuPy arrays"
            f" "
            f"(or a list/tuple of them), got {type(obj).__name__}"
        ) from None
    out.append(mv)
    return ""


def _byte_views(part: _Part) -> Iterator[Any]:
    """The C-order bytes of a part as contiguous byte buffers, copying only what is not contiguous."""
    if isinstance(part, (bytes, bytearray)):
        yield part
        return
    if isinstance(part, memoryview):
        if part.c_contiguous:
            if part.ndim == 1 and part.format in ("B", "b", "c"):
                yield part
                return
            try:
                flat: Any = part.cast("B")
            except TypeError:  # a format memoryview cannot cast: numpy reads the raw bytes instead
                flat = np.frombuffer(part, dtype=np.uint8)
            yield flat
            return
        yield part.tobytes()  # a strided buffer without numpy semantics: one logical copy
        return
    yield from _array_byte_views(part)


def _array_byte_views(a: np.ndarray[Any, Any]) -> Iterator[np.ndarray[Any, Any]]:
    if a.size == 0 or a.dtype.itemsize == 0:
        return
    if a.flags.c_contiguous:
        yield a.reshape(-1).view(np.uint8)  # a view: a contiguous array is never copied
        return
    if a.ndim == 1:
        step = max(1, _COPY_CHUNK_BYTES // a.dtype.itemsize)
        for i in range(0, a.shape[0], step):
            yield np.ascontiguousarray(a[i:i + step]).view(np.uint8)
        return
    row_bytes = a.nbytes // a.shape[0]
    if row_bytes >= _COPY_CHUNK_BYTES:
        for i in range(a.shape[0]):
            yield from _array_byte_views(a[i])
        return
    rows = max(1, _COPY_CHUNK_BYTES // row_bytes)
    for i in range(0, a.shape[0], rows):
        yield np.ascontiguousarray(a[i:i + rows]).reshape(-1).view(np.uint8)


def _nbytes(part: _Part) -> int:
    return int(part.nbytes) if isinstance(part, (np.ndarray, memoryview)) else len(part)


def _digest(obj: Any, stream: Any = None) -> tuple[int | None, str]:
    parts: list[_Part] = []
    note = _host_parts(obj, stream, parts)
    if note:
        return None, note
    total = sum(_nbytes(p) for p in parts)
    threads = blake3.blake3.AUTO if total >= _MULTITHREAD_MIN_BYTES else 1
    h = blake3.blake3(max_threads=threads)
    for p in parts:
        for view in _byte_views(p):
            h.update(view)
    return int.from_bytes(h.digest(8), "little"), ""


def output_digest(obj: Any, *, stream: Any = None) -> int | None:
    """The VRRL output digest: the first 8 bytes of BLAKE3 of the bytes, read little-endian.

    Takes bytes, bytearray, memoryview and other buffer-protocol objects
    (pinned host buffers), numpy arrays of any dtype and layout (the C-order
    bytes of the logical array, as ``tobytes()`` gives them; a contiguous array
    is hashed in place), CuPy arrays (copied to the host on ``stream``), a
    backend's device buffer (anything with ``to_host()``), or a list/tuple of
    these (hashed as one concatenated stream). Returns None when a
    device array can no longer be read (a dead context) — never raises for
    that. Raises :class:`EvidenceTypeError` for anything else.

    >>> hex(output_digest(b"partial-output"))
    '0x1ae06847172eb845'
    """
    return _digest(obj, stream)[0]


# --------------------------------------------------------------------------- evidence


def _check_word(name: str, value: object, limit: int) -> int:
    n = _as_int(value)
    if n is None or not 0 <= n <= limit:
        raise RecordValueError(f"FailureEvidence.{name} must be an integer 0 ..= {limit}, got {value!r}")
    return n


@dataclass(frozen=True, slots=True)
class FailureEvidence:
    """The four evidence words of a VRRL record, with the classification they came from.

    ``output_digest`` is 0 when there is none; ``digest_note`` then says why
    (no outputs given, the device array could not be read, an unsupported type).
    """

    slot_status: int
    failure_class: FailureClass
    backend_error_code: int
    output_digest: int = 0
    classification: Classification | None = None
    digest_note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "slot_status", _check_word("slot_status", self.slot_status, _U32))
        fc = _check_word("failure_class", self.failure_class, _U32)
        object.__setattr__(self, "failure_class", FailureClass(fc))
        object.__setattr__(
            self, "backend_error_code", _check_word("backend_error_code", self.backend_error_code, _U32)
        )
        object.__setattr__(self, "output_digest", _check_word("output_digest", self.output_digest, _U64))

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        slot_status: int,
        outputs: Any = None,
        stream: Any = None,
        device_was_working: bool = True,
        nvml: bool = False,
        classification: Classification | None = None,
    ) -> FailureEvidence:
        """Classify ``exc`` and digest ``outputs``. Never raises because of the outputs.

        ``slot_status`` is where the failure was seen (a :class:`~vrrl_gpu.SlotStatus`).
        ``classification``, when the caller already classified ``exc``, is used as it is.
        """
        status = _check_word("slot_status", slot_status, _U32)
        c = classification or classify(exc, device_was_working=device_was_working, nvml=nvml)
        digest: int | None = None
        if outputs is None:
            note = "no outputs given"
        else:
            try:
                digest, note = _digest(outputs, stream)
            except Exception as err:  # evidence must not replace the failure it describes
                note = f"outputs could not be digested: {type(err).__name__}: {_safe_str(err)}"
        return cls(
            slot_status=status,
            failure_class=c.failure_class,
            backend_error_code=c.code,
            output_digest=digest or 0,
            classification=c,
            digest_note=note,
        )

    @property
    def words(self) -> tuple[int, int, int, int]:
        """``(slot_status, failure_class, backend_error_code, output_digest)`` as plain ints."""
        return (self.slot_status, int(self.failure_class), self.backend_error_code, self.output_digest)

    def apply(self, record: Record) -> Record:
        """``record`` with its four evidence words replaced by these."""
        return replace(
            record,
            slot_status=self.slot_status,
            failure_class=self.failure_class,
            backend_error_code=self.backend_error_code,
            output_digest=self.output_digest,
        )


# --------------------------------------------------------------------------- docs


_RULES = """\
- **ProgramBug**: what the program did: illegal or misaligned address, device assert, illegal
  instruction, invalid launch configuration, out of launch resources, missing kernel image, symbol or
  PTX, stale handles, stream-capture misuse. A kernel executing `trap` surfaces as 719 (sometimes 715
  or 710); all three are ProgramBug.
- **TransientQueue**: pressure that can be retried: allocation failure, devices unavailable or busy,
  not ready, timeout, MPS server busy or at capacity.
- **DeviceLoss**: the device or its context is gone: ECC or NVLink uncorrectable, contained hardware
  error, watchdog launch timeout, external device, MPS client terminated, system not ready or driver
  mismatch, and no-device / not-initialised errors *after* the device had been working.
- **Unclassified**: unknown (999), shutdown, driver/toolkit/installation mismatches, and anything not
  in a table. A code not in a table is Unclassified, never an exception.
"""


def _md_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render_classification_markdown() -> str:
    """docs/error-classification.md, generated from the tables (a test keeps the file equal to this)."""
    out: list[str] = [
        "# Error classification",
        "",
        ("<!-- Generated from vrrl_gpu/_cuda_errors.py by `python docs/gen_error_classification.py`. "
        "Do not edit by hand: a test keeps this file equal to the code. -->"),
        "",
        ("`vrrl_gpu.classify(exc)` turns an exception into a failure class, a stable code (the record's "
        "`backend_error_code`), a name, a sticky flag and a one-line reason. These are its tables."),
        "",
        "## Classes",
        "",
        _RULES,
        "## Stable codes",
        "",
        ("`backend_error_code` is a u32 whose meaning never changes. `vrrl_gpu.code_name(code)` gives the "
        "readable name (`cudaErrorIllegalAddress (700)`)."),
        "",
        _md_row(["code", "meaning"]),
        _md_row(["---", "---"]),
        _md_row(["`0`", "no error"]),
        _md_row(["`1` ..= `0xFFFE`", "a `cudaError_t` / `CUresult` code, as itself"]),
        _md_row([f"`0x{CUDA_CODE_OUT_OF_RANGE:04X}`", "a CUDA status outside `0 ..= 0xFFFE`"]),
    ]
    for lib in _LIBRARIES:
        out.append(_md_row([f"`0x{lib.base:08X}` + s", f"{lib.label} status `s` ({lib.header})"]))
    out += [
        _md_row([f"`0x{CODE_CUPY_OUT_OF_MEMORY:08X}`", "CuPy `OutOfMemoryError` (memory-pool allocation)"]),
        _md_row([f"`0x{CODE_COMPILE_FAILURE:08X}`",
                 "kernel compile failure (CuPy `CompileException`, vrrl_gpu `KernelCompileError`)"]),
        _md_row([f"`0x{CODE_MARKER_DEVICE_LOSS:08X}`", "no CUDA status; a device-loss marker matched"]),
        _md_row([f"`0x{CODE_MARKER_TRANSIENT:08X}`", "no CUDA status; a transient marker matched"]),
        _md_row([f"`0x{CODE_MARKER_PROGRAM_BUG:08X}`", "no CUDA status; a program-bug marker matched"]),
        _md_row([f"`0x{CODE_NO_MARKER:08X}`", "no CUDA status and no marker matched"]),
        "",
        (f"In each library range, base + `0x{LIBRARY_STATUS_OUT_OF_RANGE:04X}` means the error carried no "
        "status in range. Every other code is unassigned and decodes as Unclassified."),
        "",
        "## CUDA runtime and driver errors",
        "",
        ("From `driver_types.h` (`enum cudaError`) and `cuda.h` (`CUresult`) of the CUDA 13.0 toolkit; rows "
        "marked *since* come from later 13.x headers. CUDA 12.x uses a subset of the same numbers. "
        "*Sticky*: the header says the process must be terminated and relaunched to use CUDA again."),
        "",
        _md_row(["code", "runtime name", "driver name", "class", "sticky", "reason"]),
        _md_row(["---:", "---", "---", "---", "---", "---"]),
    ]
    for info in sorted(CUDA_ERROR_TABLE.values(), key=lambda i: i.code):
        rt = f"`{info.runtime_name}`" if info.runtime_name else "(driver only)"
        if info.since:
            rt += f" *since {info.since}*"
        drv = f"`{info.driver_name}`" if info.driver_name else "(runtime only)"
        out.append(_md_row([info.code, rt, drv, info.failure_class.label, "yes" if info.sticky else "",
                            info.reason]))
    out += [
        "",
        "Adjustments:",
        "",
        "- " + ", ".join(str(c) for c in sorted(STARTUP_CONFIG_CODES)) + " are DeviceLoss only when the "
        "device had been working (`classify(exc, device_was_working=True)`, the default); at start-up they "
        "are configuration problems (Unclassified).",
        "- With `classify(exc, nvml=True)` and nvidia-ml-py installed, "
        + " and ".join(str(c) for c in sorted(NVML_RECLASSIFIABLE_CODES))
        + " become DeviceLoss when NVML reports the GPU lost or an Xid of device-loss kind was seen: "
        + ", ".join(f"{x} ({d})" for x, d in DEVICE_LOSS_XIDS.items()) + ". Without NVML nothing changes.",
        ("- `cudaErrorFabricNotReady` (a later 13.x; its number was not found in any source) is not in the "
         "table and decodes as Unclassified."),
        "",
    ]
    for lib in _LIBRARIES:
        out += [
            f"## {lib.label} statuses",
            "",
            (f"Code `0x{lib.base:08X}` + status, from `{lib.header}`. CuPy raises them as "
            f"`{lib.class_name}` (status in `.{lib.status_attr}`; matched by class name, never imported)."),
            "",
            _md_row(["status", "code", "name", "class", "reason"]),
            _md_row(["---:", "---", "---", "---", "---"]),
        ]
        for s, st in sorted(lib.table.items()):
            cells = [s, f"`0x{lib.base + s:08X}`", f"`{st.name}`", st.failure_class.label, st.reason]
            out.append(_md_row(cells))
        out.append("")
    out += [
        "## Exceptions without a CUDA status",
        "",
        ("Other backends' errors and plain exceptions: first a CUDA error name in the message "
        "(`cudaErrorIllegalAddress`, `CUDA_ERROR_LAUNCH_FAILED`: classified by the CUDA table), then "
        "these case-insensitive markers, on word boundaries, after `_` and `-` become spaces, in this "
        "order (the exception's `__cause__`/`__context__` messages count too):"),
        "",
        _md_row(["order", "class", "code", "markers"]),
        _md_row(["---:", "---", "---", "---"]),
    ]
    for i, (cls, markers) in enumerate(MESSAGE_MARKERS, 1):
        out.append(_md_row([i, cls.label, f"`0x{_MARKER_CODE_BASE + cls:08X}`",
                            ", ".join(f"`{m}`" for m in markers)]))
    out += [
        _md_row([len(MESSAGE_MARKERS) + 1, "Unclassified", f"`0x{CODE_NO_MARKER:08X}`", "nothing matched"]),
        "",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vrrl_gpu._evidence``: print, ``--write`` or ``--check`` docs/error-classification.md."""
    p = argparse.ArgumentParser(prog="python -m vrrl_gpu._evidence", description=main.__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", metavar="PATH", help="write the page to PATH")
    g.add_argument("--check", metavar="PATH", help="exit 1 when PATH differs from the generated page")
    args = p.parse_args(argv)
    text = render_classification_markdown()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        return 0
    if args.check:
        path = Path(args.check)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{path} is out of date; run: python -m vrrl_gpu._evidence --write {path}\n")
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
