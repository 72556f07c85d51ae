"""The clock calibrations a log holds (CALIBRATION meta-records), summarised for ``vrrl info``."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.format._layout import MetaOpcode, SlotStatus

__all__ = ["clock_summary"]


def _i64(lo: npt.NDArray[np.uint32], hi: npt.NDArray[np.uint32]) -> npt.NDArray[np.int64]:
    u: npt.NDArray[np.uint64] = lo.astype(np.uint64) | (hi.astype(np.uint64) << np.uint64(32))
    return u.view(np.int64)


def clock_summary(records: npt.NDArray[np.void]) -> dict[str, Any]:
    """Calibrations, the offsets (first and last), the drift they add up to and the largest step.

    A CALIBRATION record's args are (offset low, high, step low, high): the offset (UNIX ns minus the
    device's %globaltimer) and its change since the calibration before it in the same session (0 for a
    session's first, and in logs of recorders that did not re-calibrate).

    >>> from vrrl_gpu.format import RECORD_DTYPE
    >>> clock_summary(np.zeros(0, dtype=RECORD_DTYPE))["calibrations"]
    0
    """
    sel = records[
        (records["slot_status"] == int(SlotStatus.META)) & (records["opcode"] == int(MetaOpcode.CALIBRATION))
    ]
    if not sel.shape[0]:
        return {"calibrations": 0}
    sel = sel[np.argsort(sel["timestamp_ns"], kind="stable")]
    args = sel["args"]
    offsets = _i64(args[:, 0], args[:, 1])
    steps = _i64(args[:, 2], args[:, 3])
    span = int(sel["timestamp_ns"][-1]) - int(sel["timestamp_ns"][0])
    drift = int(steps.sum())
    return {
        "calibrations": int(sel.shape[0]),
        "first_offset_ns": int(offsets[0]),
        "last_offset_ns": int(offsets[-1]),
        "drift_ns": drift,
        "span_ns": span,
        "drift_ppm": round(drift / span * 1e6, 3) if span > 0 else 0.0,
        "max_step_ns": int(np.abs(steps).max()),
    }
