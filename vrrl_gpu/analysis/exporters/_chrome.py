"""The Chrome / Perfetto trace of a log."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._launches import code_label, crash_windows, failure_mask, find_launches, meta_mask
from vrrl_gpu.analysis.exporters._output import Sink, SinkContext
from vrrl_gpu.format._layout import RECORD_DTYPE, FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._sidecar import opcode_label, slot_label

__all__ = ["ChromeSink", "chrome_trace"]


# -------------------------------------------------------------- chrome trace


def _us(ns: int, base: int) -> float:
    return round((ns - base) / 1000.0, 3)


def chrome_trace(
    records: Records,
    *,
    opcode_names: Mapping[int, str] | None = None,
    source: str = "",
    streams: npt.NDArray[np.int32] | None = None,
) -> dict[str, Any]:
    """A Chrome Trace Event document (Perfetto, chrome://tracing) for a log's records.

    One process; one thread (track) per ``tenant_id`` and stream (``streams``:
    each record's, -1 when not known; such records share the tenant's track). A launch with both a
    BEGIN and a COMPLETED record is a complete ("X") slice, one without an end
    an instant ("i") event; failures, GAPs and other meta-records are instant
    events; each crash window (the launch the device had reached when a fault
    was seen, up to the fault) is an "X" slice of category ``crash``.
    Timestamps are microseconds after the first record
    (``otherData.base_timestamp_ns``).
    """
    from vrrl_gpu._version import __version__

    ls = find_launches(records)
    strm = streams if streams is not None else np.full(int(records.shape[0]), -1, np.int32)
    key = (records["tenant_id"].astype(np.int64) << np.int64(32)) | (strm.astype(np.int64) + 1)
    uniq, inverse = np.unique(key, return_inverse=True)
    tids: list[int] = inverse.reshape(-1).tolist()
    tid_of = {(int(k) >> 32, (int(k) & 0xFFFFFFFF) - 1): i for i, k in enumerate(uniq.tolist())}
    ts = records["timestamp_ns"]
    base = int(ts.min()) if ts.size else 0
    pid = 1
    events: list[dict[str, Any]] = [
        {
            "ph": "M",
            "name": "process_name",
            "pid": pid,
            "tid": 0,
            "args": {"name": f"vrrl {Path(source).name}" if source else "vrrl"},
        },
    ]
    for (t, s), tid in tid_of.items():
        name = f"tenant {t}" if s < 0 else f"tenant {t} stream {s}"
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
        events.append(
            {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}}
        )

    # Column lists, not numpy scalars, in the per-launch loop: it runs once per launch.
    labels = {op: opcode_label(op, opcode_names) for op in np.unique(ls.opcode).tolist()}
    statuses = {st: SlotStatus.label_of(st) for st in np.unique(ls.status).tolist()}
    launch_tids = [tids[i] for i in ls.index.tolist()]
    cols = zip(
        ls.opcode.tolist(), ls.ts.tolist(), launch_tids, ls.slot.tolist(), ls.args.tolist(),
        ls.epoch.tolist(), ls.status.tolist(), ls.completed.tolist(), ls.end_ts.tolist(),
        strict=True,
    )  # fmt: skip
    for op, start, track, slot, words, epoch, status, completed, end in cols:
        ev: dict[str, Any] = {
            "name": labels[op],
            "cat": "launch",
            "pid": pid,
            "tid": track,
            "ts": _us(start, base),
            "args": {
                "slot_idx": slot,
                "opcode": op,
                "args": words,
                "epoch": epoch,
                "status": statuses[status],
            },
        }
        if completed and end >= start:
            ev["ph"] = "X"
            ev["dur"] = max(0.001, round((end - start) / 1000.0, 3))
        else:
            ev["ph"] = "i"
            ev["s"] = "t"
        events.append(ev)

    meta = meta_mask(records)
    failure_statuses = (SlotStatus.FAILED_AT_LAUNCH, SlotStatus.FAULTED, SlotStatus.HUNG)
    marked = np.flatnonzero(meta | failure_mask(records))  # everything else is covered by the launches
    for j in marked.tolist():
        r = records[j]
        st, fc, code = int(r["slot_status"]), int(r["failure_class"]), int(r["backend_error_code"])
        t, op = int(r["tenant_id"]), int(r["opcode"])
        if meta[j]:
            a = r["args"]
            if op == MetaOpcode.GAP:
                count = int(a[2]) | (int(a[3]) << 32)
                name, cat, scope = f"gap: {count} record(s) dropped", "gap", "p"
                args: dict[str, Any] = {"dropped": count, "first_sequence": int(a[0]) | (int(a[1]) << 32)}
            else:
                name, cat, scope = opcode_label(op), "meta", "t"
                args = {"args": a.tolist()}
            events.append(
                {
                    "name": name,
                    "cat": cat,
                    "ph": "i",
                    "s": scope,
                    "pid": pid,
                    "tid": tids[j],
                    "ts": _us(int(r["timestamp_ns"]), base),
                    "args": args,
                }
            )
        elif fc or code or st in failure_statuses:
            label = FailureClass(fc).label
            events.append(
                {
                    "name": f"{SlotStatus.label_of(st)}: {label} {code_label(code)}",
                    "cat": "failure",
                    "ph": "i",
                    "s": "t",
                    "pid": pid,
                    "tid": tids[j],
                    "cname": "terrible",
                    "ts": _us(int(r["timestamp_ns"]), base),
                    "args": {
                        "slot_idx": int(r["slot_idx"]),
                        "opcode": opcode_label(op, opcode_names),
                        "failure_class": label,
                        "backend_error_code": code,
                        "output_digest": f"{int(r['output_digest']):016x}",
                    },
                }
            )
    for w in crash_windows(records, ls, strm):
        events.append(
            {
                "name": (
                    f"crash window: {opcode_label(w.opcode, opcode_names)} (slot {slot_label(w.slot_idx)})"
                ),
                "cat": "crash",
                "ph": "X",
                "pid": pid,
                "tid": tids[w.fault_record],
                "cname": "terrible",
                "ts": _us(w.start_ns, base),
                "dur": max(0.001, round((w.end_ns - w.start_ns) / 1000.0, 3)),
                "args": {
                    **w.to_dict(),
                    "failure_class": FailureClass(w.failure_class).label,
                    "code": code_label(w.backend_error_code),
                },
            }
        )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"source": source, "base_timestamp_ns": base, "generator": f"vrrl_gpu {__version__}"},
    }


class ChromeSink(Sink):
    """The trace needs the whole log (launch pairs, crash windows), so batches are kept until the end."""

    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._path, self._ctx = path, ctx
        self._chunks: list[Records] = []

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        self._chunks.append(records)

    def finish(self) -> None:
        recs = np.concatenate(self._chunks) if self._chunks else np.empty(0, RECORD_DTYPE)
        self._chunks = []
        mapper = self._ctx.streams
        streams = mapper(recs) if mapper is not None else None
        trace = chrome_trace(
            recs, opcode_names=self._ctx.opcode_names, source=self._ctx.source, streams=streams
        )
        with open(self._path, "w", encoding="utf-8") as f:
            json.dump(trace, f, separators=(",", ":"))
