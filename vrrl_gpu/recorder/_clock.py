"""Periodic re-calibration of the device clock: a thread of the Recorder that measures the host/device clock
offset again every few seconds, so long runs do not drift, and the drift it saw (functions of the recorder's
state, like the watchdog's).

Records keep the offset the device was given at the start (it is frozen into bound pack launches, captured
graphs and megakernels); the drainer adds ``offset_now - offset_at_start`` to every device-written record it
moves, and each re-calibration writes a CALIBRATION meta-record with the new offset and the step since the
one before, so a reader can see exactly which correction applied where.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vrrl_gpu.errors import CaptureError

if TYPE_CHECKING:
    from vrrl_gpu.recorder._recorder import Recorder

__all__ = ["ClockHistory", "clock_loop"]


@dataclass
class ClockHistory:
    """What the calibrations of one recorder found: bounded (no list of samples), JSON-ready."""

    first_offset_ns: int
    first_time_ns: int
    last_offset_ns: int = 0
    last_time_ns: int = 0
    calibrations: int = 1
    max_step_ns: int = 0
    skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.last_offset_ns = self.first_offset_ns
        self.last_time_ns = self.first_time_ns

    def add(self, time_ns: int, offset_ns: int) -> int:
        """Note a calibration; returns the step (ns) since the one before."""
        with self._lock:
            step = offset_ns - self.last_offset_ns
            self.last_offset_ns = offset_ns
            self.last_time_ns = time_ns
            self.calibrations += 1
            self.max_step_ns = max(self.max_step_ns, abs(step))
            return step

    def summary(self) -> dict[str, Any]:
        """For the sidecar: the offsets, the total drift and its rate (ppm of the elapsed host time)."""
        with self._lock:
            drift = self.last_offset_ns - self.first_offset_ns
            span = self.last_time_ns - self.first_time_ns
            return {
                "calibrations": self.calibrations,
                "skipped_while_capturing": self.skipped,
                "first_offset_ns": self.first_offset_ns,
                "last_offset_ns": self.last_offset_ns,
                "drift_ns": drift,
                "span_ns": span,
                "drift_ppm": round(drift / span * 1e6, 3) if span > 0 else 0.0,
                "max_step_ns": self.max_step_ns,
            }


def clock_loop(rec: Recorder, seconds: float, stop: threading.Event) -> None:
    """Re-calibrate every ``seconds`` until ``stop``; skip a round while any recorded stream is capturing.

    A sticky CUDA error ends the loop: the context is dead, and the program meets the same error at its
    next call, where the recorder attributes it to a launch; any other exception is kept and raised by the
    next recorder call.
    """
    from vrrl_gpu.evidence._classify import classify

    try:
        while not stop.wait(seconds):
            if _ended(rec):
                return
            try:
                rec.recalibrate()
            except CaptureError:
                rec._clock.skipped += 1  # a capture in progress: nothing may synchronize now; next round
            except BaseException as exc:
                if classify(exc).sticky or _ended(rec):  # closed or poisoned meanwhile
                    return
                raise
    except BaseException as exc:  # surfaced at the next recorder call and at close()
        rec._watchdog_error = exc


def _ended(rec: Recorder) -> bool:
    return rec._closed or rec._poison is not None
