"""``RecorderOptions``, ``HangReport`` and the ``VRRL_DISABLE`` kill switch."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from vrrl_gpu.backends._base import Backend
from vrrl_gpu.backends._registry import BACKEND_NAMES
from vrrl_gpu.capture._drain import DrainOptions
from vrrl_gpu.errors import (
    RecordValueError,
)
from vrrl_gpu.format._layout import (
    MAX_CAPACITY,
    FailureClass,
)

__all__ = ["HangReport", "RecorderOptions", "recorder_disabled"]


F = TypeVar("F", bound=Callable[..., Any])
Words = tuple[int, int, int, int]

_U32 = 0xFFFFFFFF


def recorder_disabled() -> bool:
    """True when ``VRRL_DISABLE`` is set to a true value: every Recorder is then a no-op."""
    return os.environ.get("VRRL_DISABLE", "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class RecorderOptions:
    """Options of a :class:`Recorder` (also accepted as keyword arguments).

    ``staging_slots`` is the size of each per-stream staging ring (a power of
    two); ``backpressure`` holds a launch while its stream's device is that many
    breadcrumbs behind, so attribution stays exact and the ring is never lapped
    (off: the host runs ahead freely, and a fault may be attributed as
    unknown); ``watchdog`` (seconds) enables the hang watchdog; ``nvtx`` opens an
    NVTX range (domain ``vrrl``) named ``"<opcode name> #<slot>"`` around each
    recorded launch, so Nsight Systems timelines line up with the log.
    ``capture`` makes the device-sequenced ring when the recorder starts, so
    launches under CUDA graph capture are recorded without allocating inside
    the capture (False: made at the first :meth:`Recorder.device_ring`, and a
    captured launch raises :class:`~vrrl_gpu.errors.CaptureError`).
    ``device`` may be a :class:`~vrrl_gpu.backends.Backend` instance (the
    recorder closes it). ``capture_check``: ``"probe"`` asks the runtime at
    every launch whether its stream is capturing; ``"declared"`` asks nothing
    per launch and relies on captures being declared with
    :meth:`Recorder.capturing`. ``recalibrate`` (seconds, None: never) measures
    the host/device clock offset again that often from a thread of the
    recorder, writes a CALIBRATION meta-record with the drift, and corrects the
    timestamps of the records drained after it (skipped while a recorded stream
    is capturing a graph). ``digests`` (a debugging mode): after each launch
    or slot given ``outputs=``, wait for its stream and write a host COMPLETED
    record carrying the BLAKE3 digest of the outputs, so ``vrrl diff`` and
    ``vrrl replay --compare-digests`` compare every launch's output; costs a
    synchronize per such launch.
    ``on_disk_full``: when the log's disk is full,
    ``"raise"`` stops draining (the records wait in staging) and the next
    :meth:`Recorder.check`, :meth:`~Recorder.synchronize` or launch that waits
    on the drain raises :class:`~vrrl_gpu.errors.DrainError` naming the log;
    ``"drop"`` keeps the workload and the recording going, drops and counts
    what cannot be written, warns once, and
    marks the loss with a GAP record when writes succeed again
    (``statistics().unwritten``).
    """

    capacity: int = 65536
    device: str | Backend = "auto"
    staging: str = "pinned"
    staging_slots: int = 4096
    backpressure: bool = True
    breadcrumbs: str = "begin"
    tenant_id: int = 0
    watchdog: float | None = None
    on_hang: Callable[[HangReport], None] | None = None
    nvml: bool = False
    recover_orphans: bool = True
    nvtx: bool = False
    drain: DrainOptions | None = None
    capture: bool = True
    close_timeout: float | None = 300.0
    capture_check: str = "probe"
    recalibrate: float | None = 10.0
    digests: bool = False
    on_disk_full: str = "raise"

    def __post_init__(self) -> None:
        if not isinstance(self.device, Backend) and self.device not in BACKEND_NAMES:
            *head, last = (repr(n) for n in BACKEND_NAMES)
            raise RecordValueError(
                f"device must be {', '.join(head)} or {last} (or a Backend instance), got {self.device!r}"
            )
        if self.capture_check not in ("probe", "declared"):
            raise RecordValueError(f"capture_check must be 'probe' or 'declared', got {self.capture_check!r}")
        if self.on_disk_full not in ("raise", "drop"):
            raise RecordValueError(f"on_disk_full must be 'raise' or 'drop', got {self.on_disk_full!r}")
        if self.staging not in ("pinned", "shm"):
            raise RecordValueError(f"staging must be 'pinned' or 'shm', got {self.staging!r}")
        if self.breadcrumbs not in ("begin", "begin+end"):
            raise RecordValueError(f"breadcrumbs must be 'begin' or 'begin+end', got {self.breadcrumbs!r}")
        if not 1 <= int(self.capacity) <= MAX_CAPACITY:
            raise RecordValueError(f"capacity must be 1 ..= {MAX_CAPACITY:,}, got {self.capacity}")
        n = int(self.staging_slots)
        if n < 8 or n & (n - 1):
            raise RecordValueError(f"staging_slots must be a power of two >= 8, got {self.staging_slots}")
        if not 0 <= int(self.tenant_id) <= _U32:
            raise RecordValueError(f"tenant_id must be a u32, got {self.tenant_id}")
        if self.close_timeout is not None and not self.close_timeout > 0:
            raise RecordValueError(
                f"close_timeout must be a positive number of seconds or None, got {self.close_timeout}"
            )
        if self.recalibrate is not None and not self.recalibrate > 0:
            raise RecordValueError(
                f"recalibrate must be a positive number of seconds or None, got {self.recalibrate}"
            )
        if self.watchdog is not None and not self.watchdog > 0:
            raise RecordValueError(f"watchdog must be a positive number of seconds, got {self.watchdog}")


@dataclass(frozen=True)
class HangReport:
    """What the watchdog saw: the launch in the crash window and how long nothing arrived."""

    slot_idx: int
    opcode: int
    stream: int
    silent_seconds: float
    failure_class: FailureClass
    coredump_requested: bool


def _merge_options(
    options: RecorderOptions | dict[str, Any] | None, kwargs: dict[str, Any]
) -> RecorderOptions:
    if isinstance(options, dict):
        kwargs = {**options, **kwargs}
        options = None
    base = options or RecorderOptions()
    names = {f.name for f in fields(RecorderOptions)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise RecordValueError(
            f"unknown Recorder option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    return replace(base, **kwargs) if kwargs else base
