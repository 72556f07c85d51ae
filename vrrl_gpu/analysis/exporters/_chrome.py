"""The Chrome / Perfetto trace of a log, written batch by batch in bounded memory.

The process is the rank (pid = the sidecar's ``extra.rank``, named ``rank N · host · device``; pid 1 and the
file's name without a rank), as in the fleet trace (analysis/_fleet_chrome.py); one thread (track) per
``tenant_id`` and stream (-1 when not known: such records share the tenant's track; :class:`_Tracks` is the
one place that names tracks). A launch with both a BEGIN and a COMPLETED record is a complete ("X") slice,
one without an end an instant ("i") event; failures, GAPs and other meta-records are instant events; each
crash window (the launch the device had reached when a fault was seen, up to the fault) is an "X" slice of
category ``crash`` on its stream's own crash track (tid ``CRASH_TID_BASE`` + the launch track's tid), since
it spans launches. No two slices on a track overlap: each ends at the latest where the next begins
(:func:`clip_to_next`; ``args.clipped_ns`` says by how much), and a slice that would begin before one already
written on its track ends is an instant. Timestamps are microseconds after the first record
(``otherData.base_timestamp_ns``).

Streaming: a launch still open at the end of a batch is carried into the next (its opening record only),
so an end pairs with its begin across batches; each track's last slice of a batch is held back until the
next batch shows where that track's next slice begins. At most :data:`CARRY` open launches are carried;
past that the oldest are written as instants (a log without end breadcrumbs, where no launch ever ends).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._fleet_chrome import CRASH_TID_BASE, where_label
from vrrl_gpu.analysis._launches import (
    clip_to_next,
    code_label,
    crash_windows,
    failure_mask,
    find_launches,
    meta_mask,
)
from vrrl_gpu.analysis.exporters._jsonl import TEXT_ROWS
from vrrl_gpu.analysis.exporters._output import Sink, SinkContext, open_binary
from vrrl_gpu.analysis.exporters._rows import LabelCache
from vrrl_gpu.analysis.exporters._text import Lines, choice_table
from vrrl_gpu.format._layout import RECORD_DTYPE, FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu.format._reader import Records, iter_record_chunks
from vrrl_gpu.format._sidecar import Sidecar, opcode_label, slot_label

__all__ = ["ChromeSink", "ChromeWriter", "chrome_trace", "process_of"]

#: The most open launches carried from one batch to the next.
CARRY = 1 << 16
PID = 1


def _us(ns: int, base: int) -> float:
    return round((ns - base) / 1000.0, 3)


class _Tracks:
    """Track ids of (tenant, stream), in order of first appearance, and their metadata events."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, np.int64)  # sorted
        self._ids = np.zeros(0, np.int64)

    def __call__(
        self, tenant: npt.NDArray[np.uint32], stream: npt.NDArray[np.int32]
    ) -> npt.NDArray[np.int64]:
        key = (tenant.astype(np.int64) << np.int64(32)) | (stream.astype(np.int64) + 1)
        pos = np.searchsorted(self._keys, key)
        found = pos < self._keys.shape[0]
        found[found] = self._keys[pos[found]] == key[found]
        if not found.all():
            new, first = np.unique(key[~found], return_index=True)
            new = new[np.argsort(first)]
            ids = np.arange(self._ids.shape[0], self._ids.shape[0] + new.shape[0])
            keys = np.concatenate([self._keys, new])
            order = np.argsort(keys, kind="stable")
            self._keys, self._ids = keys[order], np.concatenate([self._ids, ids])[order]
            pos = np.searchsorted(self._keys, key)
        return np.asarray(self._ids[pos])

    def metadata(self, pid: int, crash: set[int]) -> list[dict[str, Any]]:
        """Names and order of the tracks, and of the crash tracks in ``crash`` (their tids)."""
        out = []
        n = int(self._ids.shape[0])
        for rank, (k, tid) in enumerate(zip(self._keys.tolist(), self._ids.tolist(), strict=True)):
            t, s = k >> 32, (k & 0xFFFFFFFF) - 1
            name = f"tenant {t}" if s < 0 else f"tenant {t} stream {s}"
            tracks = [(tid, name, rank)]
            if CRASH_TID_BASE + tid in crash:
                tracks.append((CRASH_TID_BASE + tid, f"{name} · crash window", n + rank))
            for i, label, order in tracks:
                out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": i, "args": {"name": label}})
                sort = {"sort_index": order}
                out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": i, "args": sort})
        return out


def _launch_events(
    rows: Mapping[str, npt.NDArray[Any]], tids: npt.NDArray[np.int64], base: int, names: LabelCache, pid: int
) -> Iterator[npt.NDArray[np.uint8]]:
    """The launch events as JSON text, each after a comma: an "X" slice when it completed (ending at
    ``rows["stop"]``, with ``clipped_ns`` when that is before its end), else an instant."""
    if not tids.shape[0]:
        return
    labels = names(rows["opcode"])
    name_tab = choice_table([json.dumps(v).encode() for v in labels.values])
    statuses = LabelCache(SlotStatus.label_of)(rows["status"])
    status_tab = choice_table([json.dumps(v).encode() for v in statuses.values])
    # "X" needs the end at or after the start; an end before it is shown as an instant.
    x = rows["completed"] & (rows["end_ts"] >= rows["ts"])
    clipped = x & (rows["stop"] < rows["end_ts"])
    for sel in (np.flatnonzero(x & ~clipped), np.flatnonzero(clipped), np.flatnonzero(~x)):
        for lo in range(0, sel.shape[0], TEXT_ROWS):
            i = sel[lo : lo + TEXT_ROWS]
            ts = rows["ts"][i]
            start = ts - np.uint64(base)
            a = rows["args"][i]
            t = Lines(int(i.shape[0]))
            t.lit(',\n{"name":').pick(labels.idx[i], name_tab).lit(f',"cat":"launch","pid":{pid},"tid":')
            t.uint(tids[i]).lit(',"ts":').uint(start // np.uint64(1000)).lit(".").fixed(
                start % np.uint64(1000), 3
            )
            t.lit(',"args":{"slot_idx":').uint(rows["slot"][i]).lit(',"opcode":').uint(rows["opcode"][i])
            t.lit(',"args":[').uint(a[:, 0]).lit(",").uint(a[:, 1]).lit(",").uint(a[:, 2]).lit(",")
            t.uint(a[:, 3]).lit('],"epoch":').uint(rows["epoch"][i])
            t.lit(',"status":').pick(statuses.idx[i], status_tab)
            if clipped[i[0]]:
                t.lit(',"clipped_ns":').uint(rows["end_ts"][i] - rows["stop"][i])
                d = rows["stop"][i] - ts  # may be 0: it must not reach into the next slice
                t.lit('},"ph":"X","dur":').uint(d // np.uint64(1000)).lit(".").fixed(d % np.uint64(1000), 3)
                t.lit("}")
            elif x[i[0]]:
                d = np.maximum(rows["end_ts"][i] - ts, np.uint64(1))
                t.lit('},"ph":"X","dur":').uint(d // np.uint64(1000)).lit(".").fixed(d % np.uint64(1000), 3)
                t.lit("}")
            else:
                t.lit('},"ph":"i","s":"t"}')
            yield t.render()


def _record_events(
    r: Records,
    idx: npt.NDArray[np.int64],
    tids: npt.NDArray[np.int64],
    base: int,
    names: Mapping[int, str] | None,
    pid: int,
) -> list[dict[str, Any]]:
    """Failure and meta-record events (few: one per such record) as dicts."""
    meta = meta_mask(r)
    events: list[dict[str, Any]] = []
    failure_statuses = (SlotStatus.FAILED_AT_LAUNCH, SlotStatus.FAULTED, SlotStatus.HUNG)
    for j in idx.tolist():
        rec = r[j]
        st, fc, code = int(rec["slot_status"]), int(rec["failure_class"]), int(rec["backend_error_code"])
        op = int(rec["opcode"])
        ts = _us(int(rec["timestamp_ns"]), base)
        if meta[j]:
            a = rec["args"]
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
                    "tid": int(tids[j]),
                    "ts": ts,
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
                    "tid": int(tids[j]),
                    "cname": "terrible",
                    "ts": ts,
                    "args": {
                        "slot_idx": int(rec["slot_idx"]),
                        "opcode": opcode_label(op, names),
                        "failure_class": label,
                        "backend_error_code": code,
                        "output_digest": f"{int(rec['output_digest']):016x}",
                    },
                }
            )
    return events


def process_of(side: Sidecar | None, source: str) -> tuple[int, str]:
    """The trace's process: ``(rank, "rank N · host · device")`` when the sidecar names a rank (the fleet
    trace's convention, so traces of several ranks load side by side), else ``(1, "vrrl FILE …")``."""
    host = side.host if side is not None else ""
    dev = side.device.get("name") if side is not None and isinstance(side.device, dict) else None
    where = where_label(host, dev if isinstance(dev, str) else "")
    rank = side.extra.get("rank") if side is not None else None
    if type(rank) is int and 0 <= rank < 1 << 31:
        return rank, f"rank {rank}{where}"
    return PID, (f"vrrl {Path(source).name}" if source else "vrrl") + where


class ChromeWriter:
    """Writes the trace of batches of records (in publish order) to a binary file, in bounded memory.

    ``base``: the smallest timestamp of all the records to come (the trace's zero);
    ``ends_recorded``: whether any of them is a COMPLETED record (crash windows use it).
    """

    def __init__(
        self,
        f: BinaryIO,
        *,
        base: int,
        ends_recorded: bool,
        opcode_names: Mapping[int, str] | None = None,
        source: str = "",
        process: tuple[int, str] | None = None,
    ) -> None:
        self._f, self._base, self._ends = f, base, ends_recorded
        self._names = opcode_names
        self._labels = LabelCache(lambda op: opcode_label(op, opcode_names))
        self._tracks = _Tracks()
        self._source = source
        self._carry = np.zeros(0, RECORD_DTYPE)
        self._carry_streams = np.zeros(0, np.int32)
        self._carry_at = np.zeros(0, np.int64)  # the carried records' positions in the log
        self._held: dict[str, npt.NDArray[Any]] | None = None  # each track's last slice, until the next
        self._crash_tids: set[int] = set()
        self._last_stop: dict[int, int] = {}  # per track, where its written slices end (the latest)
        self._seen = 0
        pid, name = process if process is not None else process_of(None, source)
        self._pid = pid
        head = {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}}
        f.write(b'{"traceEvents":[' + json.dumps(head, separators=(",", ":")).encode())

    def _dicts(self, events: Iterable[dict[str, Any]]) -> None:
        buf = io.StringIO()
        for e in events:
            buf.write(",\n")
            buf.write(json.dumps(e, separators=(",", ":")))
        self._f.write(buf.getvalue().encode())

    def write(self, records: Records, streams: npt.NDArray[np.int32] | None = None) -> None:
        n = int(records.shape[0])
        if not n:
            return
        k = int(self._carry.shape[0])
        strm = streams if streams is not None else np.full(n, -1, np.int32)
        work = np.concatenate([self._carry, records])
        wstreams = np.concatenate([self._carry_streams, strm])
        at = np.concatenate([self._carry_at, self._seen + np.arange(n, dtype=np.int64)])
        self._seen += n
        ls = find_launches(work)
        tids = self._tracks(work["tenant_id"], wstreams)
        # A launch is done when it completed or when a later launch took its key (its end can never come).
        opener_keys = (ls.tenant.astype(np.int64) << np.int64(32)) | ls.slot.astype(np.int64)
        order = np.lexsort((ls.index, opener_keys))
        superseded = np.zeros(len(ls), bool)
        superseded[order[:-1]] = opener_keys[order[:-1]] == opener_keys[order[1:]]
        open_rows = np.flatnonzero(~ls.completed & ~superseded)
        if open_rows.shape[0] > CARRY:
            open_rows = open_rows[-CARRY:]
        done = np.ones(len(ls), bool)
        done[open_rows] = False
        self._write_launches(ls, done, tids)
        marked = np.flatnonzero(meta_mask(work) | failure_mask(work))
        self._dicts(_record_events(work, marked[marked >= k], tids, self._base, self._names, self._pid))
        windows = [
            w for w in crash_windows(work, ls, wstreams, ends_recorded=self._ends) if w.fault_record >= k
        ]
        self._dicts(self._window_event(w, tids, at) for w in windows)
        keep = ls.index[open_rows]
        self._carry, self._carry_streams, self._carry_at = work[keep], wstreams[keep], at[keep]

    def _write_launches(
        self, ls: Any, rows: npt.NDArray[np.bool_], tids: npt.NDArray[np.int64], *, final: bool = False
    ) -> None:
        sel = np.flatnonzero(rows)
        cols = {
            "opcode": ls.opcode[sel], "status": ls.status[sel], "completed": ls.completed[sel],
            "end_ts": ls.end_ts[sel], "ts": ls.ts[sel], "args": ls.args[sel], "slot": ls.slot[sel],
            "epoch": ls.epoch[sel], "tid": tids[ls.index[sel]],
        }  # fmt: skip
        if self._held is not None:
            cols = {k: np.concatenate([self._held[k], v]) for k, v in cols.items()}
            self._held = None
        start, end = cols["ts"].astype(np.int64), cols["end_ts"].astype(np.int64)
        if self._last_stop:
            # A slice beginning before one already written on its track ends (a track's records out of time
            # order across batches: only unknown streams sharing one) cannot be clipped any more: an instant.
            tracks, inv = np.unique(cols["tid"], return_inverse=True)
            floor = np.array([self._last_stop.get(int(t), -1) for t in tracks], np.int64)[inv]
            cols["completed"] = cols["completed"] & (start >= floor)
        x = cols["completed"] & (cols["end_ts"] >= cols["ts"])
        cols["stop"] = clip_to_next(start, end, cols["tid"], x).astype(np.uint64)
        if not final and x.any():
            # Each track's last slice waits: the next batch may begin that track's next slice before it ends.
            xs = np.flatnonzero(x)
            order = xs[np.lexsort((start[xs], cols["tid"][xs]))]
            last = order[np.append(cols["tid"][order][1:] != cols["tid"][order][:-1], True)]
            hold = np.zeros(x.shape[0], bool)
            hold[last] = True
            self._held = {k: v[hold] for k, v in cols.items() if k != "stop"}
            cols = {k: v[~hold] for k, v in cols.items()}
        for text in _launch_events(cols, cols["tid"], self._base, self._labels, self._pid):
            self._f.write(text.data)
        done = cols["completed"] & (cols["end_ts"] >= cols["ts"])
        if done.any():
            tracks, inv = np.unique(cols["tid"][done], return_inverse=True)
            stops = np.full(tracks.shape[0], -1, np.int64)
            np.maximum.at(stops, inv, cols["stop"][done].astype(np.int64))
            for t, v in zip(tracks.tolist(), stops.tolist(), strict=True):
                self._last_stop[t] = max(v, self._last_stop.get(t, -1))

    def _window_event(self, w: Any, tids: npt.NDArray[np.int64], at: npt.NDArray[np.int64]) -> dict[str, Any]:
        d = w.to_dict()
        d["fault_record"] = int(at[w.fault_record])
        d["launch_record"] = int(at[w.launch_record]) if w.launch_record >= 0 else -1
        tid = CRASH_TID_BASE + int(tids[w.fault_record])  # its stream's crash track: it spans launches
        self._crash_tids.add(tid)
        return {
            "name": f"crash window: {opcode_label(w.opcode, self._names)} (slot {slot_label(w.slot_idx)})",
            "cat": "crash",
            "ph": "X",
            "pid": self._pid,
            "tid": tid,
            "cname": "terrible",
            "ts": _us(w.start_ns, self._base),
            "dur": max(0.001, round((w.end_ns - w.start_ns) / 1000.0, 3)),
            "args": {
                **d,
                "failure_class": FailureClass(w.failure_class).label,
                "code": code_label(w.backend_error_code),
            },
        }

    def finish(self) -> None:
        """The launches still open (instants), the track names, the document's end."""
        ls = find_launches(self._carry)
        tids = self._tracks(self._carry["tenant_id"], self._carry_streams)
        self._write_launches(ls, np.ones(len(ls), bool), tids, final=True)
        self._dicts(self._tracks.metadata(self._pid, self._crash_tids))
        from vrrl_gpu._version import __version__

        other = {
            "source": self._source,
            "base_timestamp_ns": self._base,
            "generator": f"vrrl_gpu {__version__}",
        }
        tail = {"displayTimeUnit": "ns", "otherData": other}
        self._f.write(b"]," + json.dumps(tail, separators=(",", ":")).encode()[1:])


def _bounds(records: Iterable[Records]) -> tuple[int, bool]:
    """(smallest timestamp, any COMPLETED record) over batches."""
    base: int | None = None
    ends = False
    for r in records:
        if r.shape[0]:
            m = int(r["timestamp_ns"].min())
            base = m if base is None else min(base, m)
            ends = ends or bool((r["slot_status"] == SlotStatus.COMPLETED).any())
    return (base or 0), ends


def chrome_trace(
    records: Records,
    *,
    opcode_names: Mapping[int, str] | None = None,
    source: str = "",
    streams: npt.NDArray[np.int32] | None = None,
) -> dict[str, Any]:
    """The Chrome Trace Event document (Perfetto, chrome://tracing) of ``records``, as a dict.

    The same trace ``vrrl export --format chrome`` streams (see the module docstring); ``streams`` is each
    record's stream (-1 when not known).
    """
    base, ends = _bounds([records])
    buf = io.BytesIO()
    w = ChromeWriter(buf, base=base, ends_recorded=ends, opcode_names=opcode_names, source=source)
    w.write(records, streams)
    w.finish()
    doc: dict[str, Any] = json.loads(buf.getvalue())
    return doc


class ChromeSink(Sink):
    """Streams the trace; a first pass over the log (``ctx.source``) finds its zero time.

    Without a source (a sink fed batches by hand) the batches are kept until :meth:`finish`.
    """

    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._ctx = ctx
        self._pending: list[tuple[Records, npt.NDArray[np.int32] | None]] = []
        self._w: ChromeWriter | None = None
        bounds = _bounds(iter_record_chunks(ctx.source, salvage=True)) if ctx.source else None
        self._f = open_binary(path)  # after the first pass, which may refuse the log
        if bounds is not None:
            self._w = self._writer(*bounds)

    def _writer(self, base: int, ends: bool) -> ChromeWriter:
        c = self._ctx
        process = process_of(c.sidecar, c.source)
        return ChromeWriter(
            self._f, base=base, ends_recorded=ends, opcode_names=c.opcode_names, source=c.source,
            process=process,
        )  # fmt: skip

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        streams = self._ctx.streams(records) if self._ctx.streams is not None else None
        if self._w is None:
            self._pending.append((records, streams))
        else:
            self._w.write(records, streams)

    def finish(self) -> None:
        if self._w is None:
            self._w = self._writer(*_bounds(r for r, _ in self._pending))
            for r, s in self._pending:
                self._w.write(r, s)
            self._pending = []
        self._w.finish()

    def close(self) -> None:
        self._f.close()
