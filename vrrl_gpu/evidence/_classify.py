"""Classify an exception (CuPy, the twin, message markers, NVML) into a FailureClass and a stable code."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vrrl_gpu.errors import EvidenceTypeError, KernelCompileError, RecordValueError
from vrrl_gpu.evidence._codes import (
    _DL,
    _LIBRARY_BY_BASE,
    _LIBRARY_BY_CLASS,
    _MARKER_CODE_BASE,
    _U32,
    _UN,
    CODE_COMPILE_FAILURE,
    CODE_CUPY_OUT_OF_MEMORY,
    CODE_MARKER_DEVICE_LOSS,
    CODE_MARKER_PROGRAM_BUG,
    CODE_MARKER_TRANSIENT,
    CODE_NO_MARKER,
    CODE_NONE,
    CUDA_CODE_OUT_OF_RANGE,
    LIBRARY_STATUS_OUT_OF_RANGE,
    _Library,
)
from vrrl_gpu.evidence._cuda_table import (
    CUDA_ERROR_TABLE,
    CUDA_NAME_TO_CODE,
    CUDA_TEXT_TO_CODE,
    DEVICE_LOSS_XIDS,
    MESSAGE_MARKERS,
    NVML_RECLASSIFIABLE_CODES,
    STARTUP_CONFIG_CODES,
)
from vrrl_gpu.format._layout import FailureClass

__all__ = [
    "Classification",
    "classify",
    "classify_code",
    "code_name",
    "NvmlFindings",
    "start_nvml_watch",
    "nvml_device_lost",
]


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
            _UN,
            CUDA_CODE_OUT_OF_RANGE,
            f"CUDA status {status}",
            False,
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
            _UN,
            lib.base + LIBRARY_STATUS_OUT_OF_RANGE,
            f"{lib.label} status out of range",
            False,
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
        FailureClass.TRANSIENT_QUEUE,
        CODE_CUPY_OUT_OF_MEMORY,
        "OutOfMemoryError",
        False,
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
    if module == "torch" or module.startswith("torch."):
        return _classify_torch(e, device_was_working)
    if not module.startswith(("cupy", "cupy_backends", "cupyx")):
        return None
    name = t.__name__
    if name in ("CUDARuntimeError", "CUDADriverError"):
        status = _as_int(getattr(e, "status", None))
        return _classify_cuda(
            -1 if status is None else status,
            driver=name == "CUDADriverError",
            device_was_working=device_was_working,
            message=_safe_str(e),
        )
    if name == "OutOfMemoryError":
        return _oom_classification(getattr(e, "_size", None))
    if name == "CompileException":
        return _compile_classification(name)
    lib = _LIBRARY_BY_CLASS.get(name.lower())
    if lib is not None:
        return _classify_library(lib, getattr(e, lib.status_attr, None))
    return None


def _classify_torch(e: BaseException, device_was_working: bool) -> Classification | None:
    """PyTorch's exception types (matched by name: torch is never imported here)."""
    name = type(e).__name__
    if name == "OutOfMemoryError":  # torch.OutOfMemoryError, alias torch.cuda.OutOfMemoryError
        c = _classify_cuda(2, driver=False, device_was_working=device_was_working)
        return replace(
            c,
            name="torch.OutOfMemoryError",
            reason="PyTorch's caching allocator could not allocate device memory "
            "(cudaErrorMemoryAllocation); retry after freeing memory or with smaller batches",
        )
    if name == "AcceleratorError":
        # Raised from c10's CUDA checks; the code is an attribute where the build sets one, else only in
        # the message ("CUDA error: <cudaGetErrorString>"), which the wording lookup below reads.
        code = _as_int(getattr(e, "error_code", None))
        if code is not None:
            return _classify_cuda(
                code, driver=False, device_was_working=device_was_working, message=_safe_str(e)
            )
    return None


#: ``CUDA error: <wording>`` (PyTorch's C10_CUDA_CHECK), ``CUDA driver error: <wording>`` (its driver
#: checks) and ``Triton Error [CUDA]: <wording>`` (Triton's launcher): the wording of cudaGetErrorString.
_CUDA_TEXT_RE = re.compile(r"(?:CUDA (?:driver )?error|Triton Error \[CUDA\])\s*:\s*([^\n]*)", re.IGNORECASE)


def _classify_by_text(e: BaseException, device_was_working: bool) -> Classification | None:
    """A message that quotes ``cudaGetErrorString``'s wording after a CUDA error prefix."""
    for m in _CUDA_TEXT_RE.finditer(_safe_str(e)):
        wording = m.group(1).strip().rstrip(".").strip()
        code = CUDA_TEXT_TO_CODE.get(wording)
        if code is None:
            # "…encountered (error 700)" or a CUDA error name after the wording: the longest known prefix.
            code = next((c for t, c in _TEXTS_LONGEST_FIRST if wording.startswith(t)), None)
        if code is not None:
            driver = "driver" in m.group(0).lower() or m.group(0).lower().startswith("triton")
            c = _classify_cuda(code, driver=driver, device_was_working=device_was_working)
            return replace(c, reason=f"{c.reason} (its wording in the message of a {type(e).__name__})")
    return None


_TEXTS_LONGEST_FIRST = sorted(CUDA_TEXT_TO_CODE.items(), key=lambda kv: -len(kv[0]))


def _classify_by_name(e: BaseException, device_was_working: bool) -> Classification | None:
    """Another binding's CUDA error (cuda.core, Numba, …) whose message names the code."""
    for m in _CUDA_NAME_RE.finditer(_safe_str(e)):
        code = CUDA_NAME_TO_CODE.get(m.group(1))
        if code is not None:
            c = _classify_cuda(
                code, driver=m.group(1).startswith("CUDA_ERROR_"), device_was_working=device_was_working
            )
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


_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _normalise(text: str) -> str:
    # CamelCase words split too: wgpu's and Dawn's "DeviceLost" reads as "device lost".
    text = _CAMEL_RE.sub(" ", text)
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


def _classify_by_markers(chain: Sequence[BaseException]) -> Classification:
    top = chain[0]
    text = _normalise(" | ".join(_safe_str(e) for e in chain))
    for cls, patterns in _MARKER_PATTERNS:
        for marker, rx in patterns:
            if rx.search(text):
                return Classification(
                    cls,
                    _MARKER_CODE_BASE + cls,
                    type(top).__name__,
                    False,
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
    integer ``cuda_error_code``, as the twin backend raises; PyTorch's
    out-of-memory error as code 2 and ``AcceleratorError`` by its ``error_code``);
    then a CUDA error name in the message (``cudaErrorIllegalAddress``,
    ``CUDA_ERROR_LAUNCH_FAILED``) or ``cudaGetErrorString``'s wording after a
    CUDA error prefix (PyTorch's ``CUDA error: an illegal memory access was
    encountered``, Triton's ``Triton Error [CUDA]: …``); then message markers.
    The exception's ``__cause__``/``__context__`` chain is searched too.
    ``device_was_working=False`` turns codes 3/100/101 into configuration
    problems (Unclassified). ``nvml=True`` asks NVML (if
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
            result = _classify_by_name(e, device_was_working) or _classify_by_text(e, device_was_working)
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
            return Classification(
                _UN,
                code,
                "CUDA status out of range",
                False,
                "a CUDA status outside the code range was recorded",
            )
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
        reason = (
            f"no CUDA status; a {_MARKER_LABELS[cls]} marker matched the message"
            if cls in _MARKER_LABELS
            else "no CUDA status and no known marker in the message"
        )
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
