"""The launch sequence of a log as numpy columns over bounded chunks: what ``vrrl replay --list`` shows.

:func:`read_plan` builds one :class:`Launch` object per launch (a replay needs them); a listing of a
million launches does not: :func:`scan_launches` reads the log three times, a chunk at a time, and keeps
only a few numbers per *failure* record, never per launch or per record. The rules are
:func:`read_plan`'s exactly (``tests/reproduce/test_listing.py`` holds the two side by side):

1. the session: from the last SESSION_START before the last failure record (or the log's start) to the
   first SESSION_START after it (or the log's end);
2. a launch is a non-meta record with a launch status and no failure class, except the begin that repeats
   the words of a failure record that stood in for it (a failure record whose slot no launch had yet
   opens the launch itself); failure records are rare, so they alone go through Python, in order, and
   everything between two of them is decided for the whole span with numpy;
3. :meth:`LaunchIndex.columns` reads the session again and yields the launches' columns in order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vrrl_gpu.format._layout import META_OPCODE_BASE, UNKNOWN_SLOT, FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu.format._reader import Records, iter_record_chunks
from vrrl_gpu.format._ringlog import read_header
from vrrl_gpu.reproduce._plan import RecordedFailure, launch_range

__all__ = ["LaunchColumns", "LaunchIndex", "scan_launches"]

_LAUNCH_STATUSES = np.array([SlotStatus.BEGIN, SlotStatus.PUBLISHED], np.uint32)
_CHUNK = 1 << 16

Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class LaunchColumns:
    """A run of consecutive launches: their positions and the words they were recorded with."""

    position: npt.NDArray[np.int64]
    slot_idx: npt.NDArray[np.uint32]
    tenant_id: npt.NDArray[np.uint32]
    opcode: npt.NDArray[np.uint32]
    args: npt.NDArray[np.uint32]
    epoch: npt.NDArray[np.uint32]

    def __len__(self) -> int:
        return int(self.position.shape[0])

    def slice(self, lo: int, hi: int) -> LaunchColumns:
        return LaunchColumns(
            self.position[lo:hi],
            self.slot_idx[lo:hi],
            self.tenant_id[lo:hi],
            self.opcode[lo:hi],
            self.args[lo:hi],
            self.epoch[lo:hi],
        )


@dataclass
class _Pending:
    """The state of the sequential rules between two failure records (all of it small)."""

    count: int = 0
    #: slot -> (position, opcode) of the newest launch with that slot, for the slots of failure records.
    latest: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: slot -> (tenant, opcode, args) of a failure record that opened its launch (rule 2).
    standin: dict[int, tuple[int, int, tuple[int, ...]]] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    standins: list[int] = field(default_factory=list)
    failure: RecordedFailure | None = None
    #: (position, slot_idx, opcode) of the launch the failure names, as it stood when the failure came.
    failed_launch: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class LaunchIndex:
    """What a log's launch listing needs, from :func:`scan_launches`; ``columns`` reads the launches."""

    path: str
    records: int
    launches: int
    session_start: int
    session_end: int
    failure: RecordedFailure | None
    #: (position, slot_idx, opcode) of the launch the failure names, when it names one.
    failed_launch: tuple[int, int, int] | None
    lost_records: int
    salvage: bool
    chunk_records: int
    #: Record indices of the begins left out (rule 2) and of the failure records that are launches.
    skipped: npt.NDArray[np.int64]
    standins: npt.NDArray[np.int64]

    def check_range(self, start: int | None, stop: int | None) -> tuple[int, int]:
        """The positions ``start ..= stop`` as a half-open range, refused like :meth:`ReplayPlan.select`."""
        return launch_range(self.path, self.launches, start, stop)

    def columns(
        self, lo: int = 0, hi: int | None = None, progress: Progress | None = None
    ) -> Iterator[LaunchColumns]:
        """The launches at positions ``lo <= p < hi``, in order, a chunk of the log at a time."""
        hi = self.launches if hi is None else hi
        pos = 0
        for g, r in _session_chunks(self, progress):
            if pos >= hi:
                return
            idx = np.flatnonzero(_launch_mask(r, g, self.skipped, self.standins))
            first = pos
            pos += int(idx.size)
            if pos <= lo:
                continue
            a, b = max(lo - first, 0), min(hi - first, int(idx.size))
            rows = r[idx[a:b]]
            yield LaunchColumns(
                position=np.arange(first + a, first + b, dtype=np.int64),
                slot_idx=rows["slot_idx"].copy(),
                tenant_id=rows["tenant_id"].copy(),
                opcode=rows["opcode"].copy(),
                args=rows["args"].copy(),
                epoch=rows["epoch"].copy(),
            )


def _chunks(path: str, salvage: bool, chunk_records: int) -> Iterator[tuple[int, Records]]:
    """(index of the first record, records) for each chunk, in publish order."""
    g = 0
    for r in iter_record_chunks(path, chunk_records=chunk_records, salvage=salvage):
        yield g, r
        g += int(r.shape[0])


def _session_chunks(ix: LaunchIndex, progress: Progress | None) -> Iterator[tuple[int, Records]]:
    """The session's records, chunk by chunk, each with the index of its first record."""
    for g, r in _chunks(ix.path, ix.salvage, ix.chunk_records):
        n = int(r.shape[0])
        if progress is not None:
            progress(min(g + n, ix.records), ix.records)
        if g + n <= ix.session_start:
            continue
        if g >= ix.session_end:
            return
        a, b = max(ix.session_start - g, 0), min(ix.session_end - g, n)
        yield g + a, r[a:b]


def _launch_mask(
    r: Records, g: int, skipped: npt.NDArray[np.int64], standins: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Which of ``r`` (records from index ``g``) are launches, given the exceptions of rule 2."""
    m = (
        (r["opcode"] < META_OPCODE_BASE)
        & np.isin(r["slot_status"], _LAUNCH_STATUSES)
        & (r["failure_class"] == 0)
    )
    n = int(r.shape[0])
    for idx, value in ((skipped, False), (standins, True)):
        if idx.size:
            local = idx[(idx >= g) & (idx < g + n)] - g
            m[local] = value
    return np.asarray(m)


def scan_launches(
    path: str | os.PathLike[str],
    *,
    salvage: bool = False,
    chunk_records: int = _CHUNK,
    progress: Progress | None = None,
) -> LaunchIndex:
    """Read ``path`` for its launch listing (the module docstring), in bounded memory."""
    p = os.fspath(path)
    # Pass 1: where the session lies (the failure records and the session starts are few).
    total = 0
    h = read_header(p)
    expected = min(h.cursor, h.capacity)  # the first pass's total, until it has counted
    fail_at: list[npt.NDArray[np.int64]] = []
    fail_slots: list[npt.NDArray[np.uint32]] = []
    starts: list[npt.NDArray[np.int64]] = []
    for g, r in _chunks(p, salvage, chunk_records):
        op, st = r["opcode"], r["slot_status"]
        f = np.flatnonzero((op < META_OPCODE_BASE) & (r["failure_class"] != 0))
        fail_at.append(f + g)
        fail_slots.append(r["slot_idx"][f])
        starts.append(np.flatnonzero((op == MetaOpcode.SESSION_START) & (st == SlotStatus.META)) + g)
        total = g + int(r.shape[0])
        if progress is not None:
            progress(total, max(total, expected))
    fails = np.concatenate([np.zeros(0, np.int64), *fail_at])
    slots = np.concatenate([np.zeros(0, np.uint32), *fail_slots])
    begins = np.concatenate([np.zeros(0, np.int64), *starts])
    anchor = int(fails[-1]) if fails.size else total
    before = begins[begins < anchor]
    session = int(before[-1]) + 1 if before.size else 0
    later = begins[begins >= anchor]
    session_end = int(later[0]) if later.size and fails.size else total
    # The slots whose newest launch the rules ask for: those of the session's failure records.
    focus = np.unique(slots[(fails >= session) & (fails < session_end)])

    # Pass 2: the sequential rules, with numpy between two failure records.
    stub = LaunchIndex(
        p, total, 0, session, session_end, None, None, 0, salvage, chunk_records,
        np.zeros(0, np.int64), np.zeros(0, np.int64),
    )  # fmt: skip
    state = _Pending()
    gaps: list[tuple[int, int]] = []
    for g, r in _session_chunks(stub, progress):
        _advance(r, g, state, focus, gaps)
    end = state.failure.record_index if state.failure is not None else total
    lost = sum(n for at, n in gaps if at < end)
    fl = state.failure
    return LaunchIndex(
        path=p,
        records=total,
        launches=state.count,
        session_start=session,
        session_end=session_end,
        failure=fl,
        failed_launch=state.failed_launch if fl is not None and not fl.unknown else None,
        lost_records=lost,
        salvage=salvage,
        chunk_records=chunk_records,
        skipped=np.array(state.skipped, np.int64),
        standins=np.array(state.standins, np.int64),
    )


def _advance(
    r: Records, g: int, s: _Pending, focus: npt.NDArray[np.uint32], gaps: list[tuple[int, int]]
) -> None:
    """Apply the rules to the records ``r`` (from index ``g``) in order."""
    op, st, fc = r["opcode"], r["slot_status"], r["failure_class"]
    meta = op >= META_OPCODE_BASE
    for k in np.flatnonzero(meta & (op == MetaOpcode.GAP) & (st == SlotStatus.META)).tolist():
        a = r["args"][k]
        gaps.append((g + k, int(a[2]) | (int(a[3]) << 32)))
    cand = ~meta & np.isin(st, _LAUNCH_STATUSES) & (fc == 0)
    failures = np.flatnonzero(~meta & (fc != 0)).tolist()
    a = 0
    for b in [*failures, int(r.shape[0])]:
        _span(r, g, a, b, cand, s, focus)
        if b < r.shape[0]:
            _failure(r, g, b, s)
        a = b + 1


def _span(
    r: Records,
    g: int,
    a: int,
    b: int,
    cand: npt.NDArray[np.bool_],
    s: _Pending,
    focus: npt.NDArray[np.uint32],
) -> None:
    """The launch candidates of records ``a <= k < b``, which hold no failure record."""
    idx = np.flatnonzero(cand[a:b]) + a
    if not idx.size:
        return
    slots = r["slot_idx"][idx]
    keep = np.ones(idx.size, bool)
    if s.standin:
        pending = np.fromiter(s.standin, np.uint32, len(s.standin))
        hits = np.flatnonzero(np.isin(slots, pending))
        if hits.size:
            _, first = np.unique(slots[hits], return_index=True)
            for h in hits[first].tolist():
                k = int(idx[h])
                words = s.standin.pop(int(slots[h]))
                if words == (int(r["tenant_id"][k]), int(r["opcode"][k]), tuple(r["args"][k].tolist())):
                    keep[h] = False
                    s.skipped.append(g + k)
    kept = idx[keep]
    if focus.size:
        ks = slots[keep]
        m = np.flatnonzero(np.isin(ks, focus))
        if m.size:
            # The newest launch of each watched slot in this span.
            rev = m[::-1]
            u, last = np.unique(ks[rev], return_index=True)
            for sl, j in zip(u.tolist(), rev[last].tolist(), strict=True):
                s.latest[int(sl)] = (s.count + j, int(r["opcode"][kept[j]]))
    s.count += int(kept.size)


def _failure(r: Records, g: int, k: int, s: _Pending) -> None:
    """One failure record, as :func:`read_plan` takes it."""
    slot, op, st = int(r["slot_idx"][k]), int(r["opcode"][k]), int(r["slot_status"][k])
    fc, code = int(r["failure_class"][k]), int(r["backend_error_code"][k])
    if slot == UNKNOWN_SLOT:
        if s.failure is None and s.count:
            s.failure = RecordedFailure(s.count - 1, g + k, slot, op, st, FailureClass(fc), code, 0)
        return
    if slot not in s.latest:
        s.latest[slot] = (s.count, op)
        s.standin[slot] = (int(r["tenant_id"][k]), op, tuple(r["args"][k].tolist()))
        s.standins.append(g + k)
        s.count += 1
    pos, opcode = s.latest[slot]
    s.failed_launch = (pos, slot, opcode)
    s.failure = RecordedFailure(pos, g + k, slot, op, st, FailureClass(fc), code, int(r["output_digest"][k]))
