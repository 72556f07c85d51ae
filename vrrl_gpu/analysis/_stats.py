"""``compute_stats``: counts, coverage, durations and failures of one log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._launches import _check, code_label, gap_drops
from vrrl_gpu.analysis._summary import LogSummary, summarize, summary_windows, whole
from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.format._layout import (
    FailureClass,
    SlotStatus,
)
from vrrl_gpu.format._reader import Records

__all__ = ["compute_stats", "stats_of"]

_U64_MAX = (1 << 64) - 1

#: Launches whose rate bucket is found at a time.
_RATE_ROWS = 1 << 16


# --------------------------------------------------------------------- stats


def _label(names: Mapping[int, str] | None, opcode: int) -> str:
    from vrrl_gpu.format._sidecar import opcode_label

    return opcode_label(opcode, names)


def compute_stats(
    records: Records,
    *,
    opcode_names: Mapping[int, str] | None = None,
    buckets: int = 10,
    streams: npt.NDArray[np.int32] | None = None,
) -> dict[str, Any]:
    """The facts ``vrrl stats`` prints, as a JSON-ready dict (see docs/analysis.md for the keys).

    ``streams``: each record's stream (analysis/_streams.py), for the crash windows."""
    r = _check(records)
    if buckets < 1:
        raise RecordValueError(f"buckets must be a positive integer, got {buckets!r}")
    return stats_of(summarize(whole(r, streams)), opcode_names=opcode_names, buckets=buckets)


def stats_of(
    s: LogSummary, *, opcode_names: Mapping[int, str] | None = None, buckets: int = 10
) -> dict[str, Any]:
    """:func:`compute_stats` of a log read in chunks (:func:`summarize`): the same dict."""
    if buckets < 1:
        raise RecordValueError(f"buckets must be a positive integer, got {buckets!r}")
    ls = s.launches
    out: dict[str, Any] = {
        "records": s.records,
        "meta_records": s.meta_records,
        "launches": len(ls),
        "first_timestamp_ns": s.first_ts,
        "last_timestamp_ns": s.last_ts,
        "span_ns": s.last_ts - s.first_ts if s.first_ts is not None and s.last_ts is not None else 0,
    }

    # Per opcode.
    per_op: list[dict[str, Any]] = []
    ops, counts = np.unique(ls.opcode, return_counts=True)
    for op, n in sorted(zip(ops.tolist(), counts.tolist(), strict=True), key=lambda x: (-x[1], x[0])):
        m = ls.opcode == op
        done = m & ls.completed
        # Differences in u64, read as two's complement: right for any two stamps less than 2^63 apart.
        dur = (ls.end_ts[done] - ls.ts[done]).view(np.int64) if done.any() else None
        per_op.append(
            {
                "opcode": int(op),
                "name": _label(opcode_names, int(op)),
                "launches": int(n),
                "completed": int(done.sum()),
                "failed": int((m & ls.failed).sum()),
                "mean_duration_ns": int(dur.mean()) if dur is not None else None,
            }
        )
    out["opcodes"] = per_op

    # Failures by class and code (every failure record, not only the first of a launch).
    fr = s.failures
    by_class: dict[str, int] = {}
    combos: dict[tuple[str, int], int] = {}
    by_status: dict[str, int] = {}
    for fc, code, st in zip(
        fr["failure_class"].tolist(),
        fr["backend_error_code"].tolist(),
        fr["slot_status"].tolist(),
        strict=True,
    ):
        label = FailureClass(int(fc)).label
        by_class[label] = by_class.get(label, 0) + 1
        combos[(label, int(code))] = combos.get((label, int(code)), 0) + 1
        sname = SlotStatus.label_of(int(st))
        by_status[sname] = by_status.get(sname, 0) + 1
    out["failures"] = {
        "total": int(fr.shape[0]),
        "by_class": dict(sorted(by_class.items())),
        "by_status": dict(sorted(by_status.items())),
        "by_class_and_code": [
            {"class": c, "code": code, "code_name": code_label(code), "count": n}
            for (c, code), n in sorted(combos.items(), key=lambda x: (-x[1], x[0]))
        ],
    }

    # Launch rate over time: equal buckets over the launches' span.
    rate: list[dict[str, Any]] = []
    width = 0
    if len(ls):
        lo, hi = int(ls.ts.min()), int(ls.ts.max())
        width = max(1, -(-(hi - lo + 1) // buckets))
        nb = min(buckets, max(1, -(-(hi - lo + 1) // width)))
        hist = np.zeros(nb, np.int64)
        # A slice of the launches at a time: over the whole column, the four u64 temporaries were ~32 bytes
        # per launch on top of the summary (a million launches: the command's peak RSS, issue 13).
        for a in range(0, len(ls), _RATE_ROWS):
            ts = ls.ts[a : a + _RATE_ROWS]
            # Timestamps are u64 (the whole range is legal): stay unsigned until the bucket index.
            which = (
                ((ts - np.uint64(lo)) // np.uint64(width)).astype(np.int64)
                if hi > lo and width <= _U64_MAX
                else np.zeros(ts.shape[0], np.int64)
            )
            hist += np.bincount(np.minimum(which, nb - 1), minlength=nb)
        for i, n in enumerate(hist.tolist()):
            rate.append(
                {"start_ns": lo + i * width, "launches": int(n), "per_second": round(n * 1e9 / width, 3)}
            )
    out["rate"] = {"bucket_ns": width, "buckets": rate}

    n_gaps, dropped = gap_drops(s.gaps)
    out["gaps"] = {"gap_records": n_gaps, "dropped_records": dropped}

    # Breadcrumb coverage per track: how many BEGIN breadcrumbs got their COMPLETED.
    tracks: list[dict[str, Any]] = []
    for t in s.tenants.tolist():
        m = ls.tenant == t
        begin = m & (ls.status == SlotStatus.BEGIN)
        covered = begin & ls.completed
        published = m & (ls.status == SlotStatus.PUBLISHED)
        nb_, nc = int(begin.sum()), int(covered.sum())
        tracks.append(
            {
                "tenant_id": int(t),
                "launches": int(m.sum()),
                "begin": nb_,
                "completed": nc,
                "open": nb_ - nc,
                "coverage": round(nc / nb_, 6) if nb_ else None,
                "failed": int((m & ls.failed).sum()),
                "published": int(published.sum()),
                "claimed": int((published & ls.claimed).sum()),
                "unclaimed": int((published & ~ls.claimed).sum()),
            }
        )
    out["tracks"] = tracks
    out["crash_windows"] = [w.to_dict() for w in summary_windows(s)]
    return out
