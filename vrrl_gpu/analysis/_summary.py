"""A log summarised in two passes over bounded chunks: what ``stats`` and ``report`` need, never the log.

:func:`find_launches` groups a whole record array at once (a per-record ``group`` column, sorts over the
whole log). :func:`summarize` gives the same launches from chunks: pass 1 collects the keys that have an
opener anywhere in the log (a key without one is opened by its first record, so this must be known
before any record is grouped), the few records that are failures or GAPs, and the counts; pass 2 groups
each chunk against the newest opener of every key seen so far (one row per key, not per record) and fills
one row per launch. Memory: about 40 bytes per launch, 12 per distinct key and the failure and GAP
records; the chunks themselves are read and dropped. ``tests/analysis/test_summary.py`` holds it equal to
:func:`find_launches` and the whole-array statistics at every chunk size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._launches import CrashWindow, _check, failure_mask, launch_keys, meta_mask, windows_of
from vrrl_gpu.analysis._streams import mapper_for
from vrrl_gpu.format._layout import RECORD_DTYPE, UNKNOWN_SLOT, MetaOpcode, SlotStatus
from vrrl_gpu.format._reader import Records, iter_record_chunks
from vrrl_gpu.format._sidecar import Sidecar

#: Records a summary reads at a time: the grouping's temporaries are ~10x the chunk's records.
SUMMARY_CHUNK = 1 << 14

__all__ = [
    "SUMMARY_CHUNK",
    "LaunchTable",
    "LogSummary",
    "Read",
    "read_log",
    "summarize",
    "summary_windows",
    "whole",
]

#: Reads the same records again at each call, chunk by chunk, in order: ``read(streams)`` yields
#: ``(records, their streams)``, the streams only when asked (else None; the stream mapper keeps state
#: from chunk to chunk, so only one pass runs it).
Read = Callable[[bool], Iterable[tuple[Records, "npt.NDArray[np.int32] | None"]]]

_FIELDS = {
    "index": np.int64,
    "tenant": np.uint32,
    "slot": np.uint32,
    "opcode": np.uint32,
    "epoch": np.uint32,
    "ts": np.uint64,
    "status": np.uint32,
    "completed": np.bool_,
    "end_ts": np.uint64,
    "claimed": np.bool_,
    "failed": np.bool_,
}


@dataclass(frozen=True)
class LaunchTable:
    """One row per launch, the columns of :class:`Launches` that ``stats`` and ``report`` read (same
    meaning: ``index`` is the opening record's index in the whole read)."""

    index: npt.NDArray[np.signedinteger[Any]]
    tenant: npt.NDArray[np.uint32]
    slot: npt.NDArray[np.uint32]
    opcode: npt.NDArray[np.uint32]
    epoch: npt.NDArray[np.uint32]
    ts: npt.NDArray[np.uint64]
    status: npt.NDArray[np.unsignedinteger[Any]]
    completed: npt.NDArray[np.bool_]
    end_ts: npt.NDArray[np.uint64]
    claimed: npt.NDArray[np.bool_]
    failed: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class LogSummary:
    """A log's records, summarised (:func:`summarize`)."""

    records: int
    meta_records: int
    first_ts: int | None
    last_ts: int | None
    #: The tenant ids of the non-meta records, sorted.
    tenants: npt.NDArray[np.uint32]
    launches: LaunchTable
    #: The failure records (:func:`failure_mask`) and the GAP meta-records, with their indices.
    failures: Records
    failure_at: npt.NDArray[np.int64]
    gaps: Records
    gap_at: npt.NDArray[np.int64]
    #: Of each failure record: the launch row it belongs to (-1: none) and its stream (-1: not known).
    failure_group: npt.NDArray[np.int64]
    failure_stream: npt.NDArray[np.int32]
    #: Whether the records hold end breadcrumbs (COMPLETED).
    ends_recorded: bool
    #: Whether the read gave streams (else ``failure_stream`` is all -1 and crash windows take None).
    has_streams: bool


class _Rows:
    """The launch table, grown as openers come (its size is known from pass 1 but for stray openers)."""

    def __init__(
        self, capacity: int, *, index: type[np.signedinteger[Any]], status: type[np.unsignedinteger[Any]]
    ) -> None:
        self.n = 0
        self.cols: dict[str, npt.NDArray[Any]] = {
            k: np.zeros(max(capacity, 16), {"index": index, "status": status}.get(k, t))
            for k, t in _FIELDS.items()
        }

    def add(self, r: Records, idx: npt.NDArray[np.int64], g: int) -> npt.NDArray[np.int64]:
        k = int(idx.size)
        cap = self.cols["index"].shape[0]
        if self.n + k > cap:
            new = max(self.n + k, 2 * cap)
            for name, col in self.cols.items():
                grown = np.zeros(new, col.dtype)
                grown[: self.n] = col[: self.n]
                self.cols[name] = grown
        sl = slice(self.n, self.n + k)
        c = self.cols
        c["index"][sl] = idx + g
        rr = r[idx]
        c["tenant"][sl] = rr["tenant_id"]
        c["slot"][sl] = rr["slot_idx"]
        c["opcode"][sl] = rr["opcode"]
        c["epoch"][sl] = rr["epoch"]
        c["ts"][sl] = rr["timestamp_ns"]
        c["status"][sl] = rr["slot_status"]
        rows = np.arange(self.n, self.n + k, dtype=np.int64)
        self.n += k
        return rows

    def first(self, flag: str, rows: npt.NDArray[np.int64], ts: npt.NDArray[np.uint64] | None = None) -> None:
        """Mark ``flag`` on each of ``rows`` (in record order) that lacks it; ``ts``: its first stamp."""
        if not rows.size:
            return
        u, at = np.unique(rows, return_index=True)
        new = ~self.cols[flag][u]
        self.cols[flag][u[new]] = True
        if ts is not None:
            self.cols["end_ts"][u[new]] = ts[at[new]]

    def table(self) -> LaunchTable:
        return LaunchTable(**{k: v[: self.n] for k, v in self.cols.items()})


class _KeyRows:
    """The newest launch row of each key: a sorted key array and its rows (grows only by new keys)."""

    def __init__(
        self, keys: npt.NDArray[np.uint64] | None = None, *, rows: type[np.signedinteger[Any]] = np.int64
    ) -> None:
        self.keys = keys if keys is not None else np.zeros(0, np.uint64)
        self.rows = np.full(self.keys.shape[0], -1, rows)

    def find(self, k: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        pos = np.searchsorted(self.keys, k)
        found = pos < self.keys.shape[0]
        found[found] = self.keys[pos[found]] == k[found]
        return pos, found

    def get(self, k: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        pos, found = self.find(k)
        out = np.full(k.shape[0], -1, np.int64)
        out[found] = self.rows[pos[found]]
        return out

    def insert(self, k: npt.NDArray[np.uint64], rows: npt.NDArray[np.int64]) -> None:
        """New keys (absent so far, distinct) with their rows."""
        order = np.argsort(k)
        k, rows = k[order], rows[order]
        at = np.searchsorted(self.keys, k)
        self.keys = np.insert(self.keys, at, k)
        self.rows = np.insert(self.rows, at, rows)


def _sorted_unique(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``np.unique`` by sorting (numpy's hash-based unique is several times slower on u64 keys)."""
    s = np.sort(a)
    if s.size < 2:
        return s
    keep = np.empty(s.shape[0], bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _merge(into: npt.NDArray[Any], values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The sorted distinct ``into`` with ``values`` added (``into`` grows by the new ones only)."""
    v = _sorted_unique(values)
    pos = np.searchsorted(into, v)
    found = pos < into.shape[0]
    found[found] = into[pos[found]] == v[found]
    new = v[~found]
    return np.insert(into, pos[~found], new) if new.size else into


def _records(parts: list[Records]) -> Records:
    return np.concatenate(parts) if parts else np.zeros(0, RECORD_DTYPE)


def _indices(parts: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def whole(records: Records, streams: npt.NDArray[np.int32] | None = None) -> Read:
    """A :data:`Read` of records in memory (one chunk)."""
    r = _check(records)

    def read(with_streams: bool) -> Iterator[tuple[Records, npt.NDArray[np.int32] | None]]:
        yield r, streams if with_streams else None

    return read


def read_log(
    path: str | os.PathLike[str],
    *,
    salvage: bool = False,
    chunk_records: int = SUMMARY_CHUNK,
    sidecar: Sidecar | None = None,
    window: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Read:
    """A :data:`Read` of the log at ``path``, ``chunk_records`` at a time; the streams come from ``sidecar``
    (the log's, read by the caller once); ``window``: only records stamped ``lo <= ts <= hi`` (their streams
    are found before the cut, as on the whole log); ``progress(n)`` after each chunk of ``n`` records
    (counted before the window's cut)."""
    p = os.fspath(path)

    def read(with_streams: bool) -> Iterator[tuple[Records, npt.NDArray[np.int32] | None]]:
        mapper = mapper_for(p, sidecar=sidecar) if with_streams else None
        for r in iter_record_chunks(p, chunk_records=chunk_records, salvage=salvage):
            strm = mapper(r) if mapper is not None else None
            if progress is not None:
                progress(int(r.shape[0]))
            if window is not None:
                ts = r["timestamp_ns"]
                keep = (ts >= np.uint64(max(window[0], 0))) & (ts <= np.uint64(max(window[1], 0)))
                r, strm = r[keep], None if strm is None else strm[keep]
            yield r, strm

    return read


def summarize(read: Read) -> LogSummary:
    """Summarise the records ``read`` yields (read twice: once per pass)."""
    # Pass 1: the keys with an opener, the counts, the failure and GAP records.
    total = meta_n = openers = top_status = 0
    lo = hi = None
    okeys = np.zeros(0, np.uint64)
    tenants = np.zeros(0, np.uint32)
    fails: list[Records] = []
    fail_at: list[npt.NDArray[np.int64]] = []
    gaps: list[Records] = []
    gap_at: list[npt.NDArray[np.int64]] = []
    ends = False
    has_streams = False
    for raw, _ in read(False):
        r = _check(raw)
        n = int(r.shape[0])
        if not n:
            continue
        meta = meta_mask(r)
        status = r["slot_status"]
        ts = r["timestamp_ns"]
        meta_n += int(meta.sum())
        top_status = max(top_status, int(status.max()))
        cmin, cmax = int(ts.min()), int(ts.max())
        lo = cmin if lo is None else min(lo, cmin)
        hi = cmax if hi is None else max(hi, cmax)
        opener = (
            ~meta
            & (r["slot_idx"] != UNKNOWN_SLOT)
            & ((status == SlotStatus.BEGIN) | (status == SlotStatus.PUBLISHED))
        )
        openers += int(opener.sum())
        okeys = _merge(okeys, launch_keys(r)[opener])
        tenants = _merge(tenants, r["tenant_id"][~meta])
        fm = np.flatnonzero(failure_mask(r))
        if fm.size:
            fails.append(r[fm].copy())
            fail_at.append(fm + total)
        gm = np.flatnonzero(meta & (r["opcode"] == MetaOpcode.GAP))
        if gm.size:
            gaps.append(r[gm].copy())
            gap_at.append(gm + total)
        ends = ends or bool((status == SlotStatus.COMPLETED).any())
        total += n
    failure_at = _indices(fail_at)

    # Pass 2: group each chunk against the newest opener of each key so far.
    # The narrowest exact types: a million launches cost ~11 MiB less with 32-bit rows and 8-bit statuses.
    small: type[np.signedinteger[Any]] = np.int32 if total < 1 << 31 else np.int64
    rows = _Rows(openers, index=small, status=np.uint8 if top_status < 256 else np.uint32)
    known = _KeyRows(okeys, rows=small)
    strays = _KeyRows(rows=small)
    group_of_failures = np.full(failure_at.shape[0], -1, np.int64)
    stream_of_failures = np.full(failure_at.shape[0], -1, np.int32)
    g = 0
    for raw, strm in read(True):
        r = _check(raw)
        n = int(r.shape[0])
        if not n:
            continue
        group = _group(r, g, rows, known, strays)
        here = (failure_at >= g) & (failure_at < g + n)
        local = failure_at[here] - g
        group_of_failures[here] = group[local]
        if strm is not None:
            has_streams = True
            stream_of_failures[here] = strm[local]
        status = r["slot_status"]
        done = status == SlotStatus.COMPLETED
        rows.first("completed", _rows_where(group, done), _ts_where(r, group, done))
        rows.first("claimed", _rows_where(group, status == SlotStatus.DEVICE_CLAIMED))
        rows.first("failed", _rows_where(group, failure_mask(r)))
        g += n
    return LogSummary(
        records=total,
        meta_records=meta_n,
        first_ts=lo,
        last_ts=hi,
        tenants=tenants,
        launches=rows.table(),
        failures=_records(fails),
        failure_at=failure_at,
        gaps=_records(gaps),
        gap_at=_indices(gap_at),
        failure_group=group_of_failures,
        failure_stream=stream_of_failures,
        ends_recorded=ends,
        has_streams=has_streams,
    )


def _rows_where(group: npt.NDArray[np.int64], sel: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    return group[sel & (group >= 0)]


def _ts_where(r: Records, group: npt.NDArray[np.int64], sel: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint64]:
    return np.asarray(r["timestamp_ns"][sel & (group >= 0)])


def _group(r: Records, g: int, rows: _Rows, known: _KeyRows, strays: _KeyRows) -> npt.NDArray[np.int64]:
    """Each record's launch row (-1: none), as :func:`find_launches` assigns it over the whole log."""
    n = int(r.shape[0])
    status = r["slot_status"]
    non_meta = ~meta_mask(r) & (r["slot_idx"] != UNKNOWN_SLOT)
    keys = launch_keys(r)
    opener = non_meta & ((status == SlotStatus.BEGIN) | (status == SlotStatus.PUBLISHED))
    # A key that no record of the whole log opens is opened by its first record (an earlier chunk's, maybe).
    _, has_opener = known.find(keys)
    stray = np.flatnonzero(non_meta & ~opener & ~has_opener)
    new_strays = np.zeros(0, np.int64)
    if stray.size:
        uk, first = np.unique(keys[stray], return_index=True)
        _, seen = strays.find(uk)
        new_strays = stray[first[~seen]]
        opener[new_strays] = True
    idx = np.flatnonzero(opener).astype(np.int64)
    new_rows = rows.add(r, idx, g)
    row_of = np.full(n, -1, np.int64)
    row_of[idx] = new_rows
    if new_strays.size:
        strays.insert(keys[new_strays], row_of[new_strays])

    group = np.full(n, -1, dtype=np.int64)
    cand = np.flatnonzero(non_meta)
    if not cand.size:
        return group
    # Sort by (key, position) and carry the newest opener forward inside each key's run; records before
    # their key's first opener in this chunk take the newest opener of earlier chunks.
    order = cand[np.lexsort((cand, keys[cand]))]
    marks = np.where(opener[order], np.arange(order.size), -1)
    carried = np.maximum.accumulate(marks)
    owner = order[np.maximum(carried, 0)]
    here = (carried >= 0) & (keys[owner] == keys[order])
    group[order[here]] = row_of[owner[here]]
    earlier = order[~here]
    if earlier.size:
        k = keys[earlier]
        prev = known.get(k)
        miss = prev < 0
        if miss.any():
            prev[miss] = strays.get(k[miss])
        group[earlier] = prev
    # The newest opener of each key in this chunk becomes the row later chunks see.
    if idx.size:
        ok = keys[idx]
        rev = np.arange(idx.size)[::-1]
        u, last = np.unique(ok[rev], return_index=True)
        pos, found = known.find(u)
        known.rows[pos[found]] = new_rows[rev[last]][found]
    return group


def summary_windows(s: LogSummary) -> list[CrashWindow]:
    """:func:`crash_windows` of the summarised log (its fault records are among the failure records)."""
    st = s.failures["slot_status"]
    f = np.flatnonzero((st == SlotStatus.FAULTED) | (st == SlotStatus.HUNG))
    streams = s.failure_stream[f] if s.has_streams else None
    return windows_of(
        s.failures[f], s.failure_at[f], s.failure_group[f], streams, s.launches, s.ends_recorded
    )
