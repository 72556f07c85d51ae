"""One Chrome/Perfetto trace of a fleet: a process per rank, a thread per stream, slices that never overlap.

Perfetto and ``chrome://tracing`` draw the complete ("X") slices of one thread as a stack, so two slices
on a track must nest or be disjoint. A stream runs its launches one after another, so its slices are
disjoint in fact; what breaks that in a trace is clock noise between a launch's COMPLETED record and the
next BEGIN, and records whose stream is not known sharing one track. Each track's slices are therefore
sorted and each one ends at the latest where the next begins (``args.clipped_ns`` says by how much).
Crash windows span launches, so they get a track of their own per stream.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._fleet_logs import RankLog, find_logs, identify_logs, load_log, read_sidecars
from vrrl_gpu.analysis._launches import (
    clip_to_next,
    code_label,
    crash_windows,
    failure_mask,
    find_launches,
    meta_mask,
)
from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.format._layout import FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._sidecar import opcode_label, slot_label

__all__ = ["CRASH_TID_BASE", "FleetTraceSummary", "track_events", "where_label", "write_fleet_trace"]

#: Thread id of stream ``s``'s crash-window track: ``CRASH_TID_BASE + s + 1`` (a launch track is ``s + 1``).
CRASH_TID_BASE = 1 << 20


@dataclass(frozen=True)
class FleetTraceSummary:
    """What :func:`write_fleet_trace` wrote: the ranks (with their states) and the events."""

    out: str
    ranks: list[RankLog]
    events: int


def _us(ns: int, base: int) -> float:
    return round((ns - base) / 1000.0, 3)


def _tid(stream: int) -> int:
    return stream + 1  # 0: the stream is not known


def track_events(
    records: Records,
    streams: npt.NDArray[np.int32],
    *,
    pid: int,
    base: int,
    opcode_names: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """The events of one rank's records as process ``pid``: launch slices per stream track (clipped so
    none overlaps the next), instants for launches without an end, failures and meta-records, and crash
    windows on their own tracks. No metadata events (see :func:`write_fleet_trace`)."""
    ls = find_launches(records)
    events: list[dict[str, Any]] = []
    if len(ls):
        start = ls.ts.astype(np.int64)
        end = ls.end_ts.astype(np.int64)
        tid = streams[ls.index].astype(np.int64) + 1
        x = ls.completed & (ls.end_ts >= ls.ts)
        stop = clip_to_next(start, end, tid, x)
        labels = {op: opcode_label(op, opcode_names) for op in np.unique(ls.opcode).tolist()}
        cols = zip(
            ls.opcode.tolist(), start.tolist(), stop.tolist(), end.tolist(), tid.tolist(), x.tolist(),
            ls.slot.tolist(), ls.epoch.tolist(), ls.status.tolist(), strict=True,
        )  # fmt: skip
        for op, s, e, e0, t, is_x, slot, epoch, st in cols:
            ev: dict[str, Any] = {
                "name": labels[op], "cat": "launch", "pid": pid, "tid": t, "ts": _us(s, base),
                "args": {"slot_idx": slot, "epoch": epoch, "status": SlotStatus.label_of(st)},
            }  # fmt: skip
            if is_x:
                ev["ph"], ev["dur"] = "X", round((e - s) / 1000.0, 3)
                if e < e0:
                    ev["args"]["clipped_ns"] = e0 - e
            else:
                ev["ph"], ev["s"] = "i", "t"
            events.append(ev)
    meta = meta_mask(records)
    for j in np.flatnonzero(meta | failure_mask(records)).tolist():
        r = records[j]
        op, ts = int(r["opcode"]), _us(int(r["timestamp_ns"]), base)
        if meta[j]:
            if op == MetaOpcode.GAP:
                a = r["args"]
                count = int(a[2]) | (int(a[3]) << 32)
                events.append({"name": f"gap: {count} record(s) dropped", "cat": "gap", "ph": "i", "s": "p",
                               "pid": pid, "tid": 0, "ts": ts})  # fmt: skip
            continue
        fc, code = int(r["failure_class"]), int(r["backend_error_code"])
        status = SlotStatus.label_of(int(r["slot_status"]))
        events.append({
            "name": f"{status}: {FailureClass(fc).label} {code_label(code)}",
            "cat": "failure", "ph": "i", "s": "t", "pid": pid, "tid": _tid(int(streams[j])),
            "cname": "terrible", "ts": ts,
            "args": {"slot_idx": int(r["slot_idx"]), "opcode": opcode_label(op, opcode_names)},
        })  # fmt: skip
    for w in crash_windows(records, ls, streams):
        events.append({
            "name": f"crash window: {opcode_label(w.opcode, opcode_names)} (slot {slot_label(w.slot_idx)})",
            "cat": "crash", "ph": "X", "pid": pid, "tid": CRASH_TID_BASE + _tid(w.stream),
            "cname": "terrible", "ts": _us(w.start_ns, base),
            "dur": max(0.001, round((w.end_ns - w.start_ns) / 1000.0, 3)),
            "args": {"failure_class": FailureClass(w.failure_class).label,
                     "code": code_label(w.backend_error_code)},
        })  # fmt: skip
    return events


def where_label(host: str, device: str) -> str:
    """`` · host · device`` (each part only when known): a trace process's name after its rank or file."""
    return (f" · {host}" if host else "") + (f" · {device}" if device else "")


def _meta(pid: int, log: RankLog, tids: Sequence[int]) -> list[dict[str, Any]]:
    name = f"rank {log.rank}{where_label(log.host, log.device)}"
    out: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}},
        {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": log.rank}},
    ]
    for t in sorted(set(tids)):
        crash = t >= CRASH_TID_BASE
        s = (t - CRASH_TID_BASE if crash else t) - 1
        label = ("stream unknown" if s < 0 else f"stream {s}") + (" · crash window" if crash else "")
        out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": t, "args": {"name": label}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": t, "args": {"sort_index": t}})
    return out


def _dump(f: IO[str], events: Sequence[dict[str, Any]], first: bool) -> bool:
    for e in events:
        f.write("" if first else ",\n")
        f.write(json.dumps(e, separators=(",", ":")))
        first = False
    return first


def write_fleet_trace(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    window: tuple[Any, Any] | None = None,
) -> FleetTraceSummary:
    """Write the rank logs the inputs name as one trace: process id = rank (named ``rank N · host ·
    device``), thread id = stream + 1 (0: not known), crash windows on ``CRASH_TID_BASE`` + that.

    ``window``: only records in this span (``_fleet_report.resolve_window`` over the fleet's records).
    Logs are read twice (the first pass finds the fleet's first timestamp, the trace's zero), one at a
    time; the events of one log at a time are in memory.
    """
    from vrrl_gpu._version import __version__
    from vrrl_gpu.analysis._fleet_report import resolve_window
    from vrrl_gpu.analysis.exporters._output import AtomicOutput

    paths, missing = find_logs(inputs)
    if not paths:
        raise RecordValueError(
            f"{', '.join(os.fspath(i) for i in inputs)}: no VRRL logs (*.vrrl) found there"
        )
    sides = read_sidecars(paths)
    logs = identify_logs(paths, missing, sides)
    side_of = {p: s for p, (s, _) in zip(paths, sides, strict=True)}
    spans = [load_log(g, side_of.get(g.path)).log for g in logs]
    firsts = [g.first_ns for g in spans if g.first_ns is not None]
    lasts = [g.last_ns for g in spans if g.last_ns is not None]
    lo, hi = resolve_window(min(firsts) if firsts else 0, max(lasts) if lasts else 1, window)
    target = AtomicOutput(out, force=force)
    count = 0
    try:
        with open(target.tmp, "w", encoding="utf-8") as f:
            f.write('{"traceEvents":[\n')
            first = True
            for g in logs:
                loaded = load_log(g, side_of.get(g.path))
                recs, strm = loaded.records, loaded.streams
                if not recs.shape[0]:
                    continue
                ts = recs["timestamp_ns"]
                keep = (ts >= np.uint64(max(lo, 0))) & (ts <= np.uint64(max(hi, 0)))
                recs, strm = recs[keep], strm[keep]
                pid = loaded.log.rank
                events = track_events(recs, strm, pid=pid, base=lo, opcode_names=loaded.opcode_names)
                tids = [e["tid"] for e in events] or [0]
                meta = _meta(pid, loaded.log, tids)
                first = _dump(f, meta, first)
                first = _dump(f, events, first)
                count += len(events) + len(meta)
            other = {"base_timestamp_ns": lo, "generator": f"vrrl_gpu {__version__}", "ranks": len(logs)}
            f.write(f'],"displayTimeUnit":"ns","otherData":{json.dumps(other)}}}\n')
        target.commit()
    except BaseException:
        target.abort()
        raise
    return FleetTraceSummary(out=os.fspath(out), ranks=spans, events=count)
