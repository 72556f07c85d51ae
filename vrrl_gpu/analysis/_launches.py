"""Launches and crash windows from record arrays: pure, vectorised functions over ``RECORD_DTYPE``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.evidence._classify import code_name
from vrrl_gpu.format._layout import (
    META_OPCODE_BASE,
    RECORD_DTYPE,
    UNKNOWN_SLOT,
    MetaOpcode,
    SlotStatus,
)
from vrrl_gpu.format._reader import Records

__all__ = [
    "FAILURE_STATUSES",
    "Launches",
    "CrashWindow",
    "meta_mask",
    "failure_mask",
    "launch_keys",
    "find_launches",
    "gap_drops",
    "crash_windows",
    "windows_of",
    "LaunchRows",
    "unclaimed_slots",
    "code_label",
    "clip_to_next",
]


#: Slot statuses that say a launch failed (host-written failure evidence).
FAILURE_STATUSES = (SlotStatus.FAILED_AT_LAUNCH, SlotStatus.FAULTED, SlotStatus.HUNG)

_U64 = npt.NDArray[np.uint64]


def _check(records: Records) -> Records:
    dtype = getattr(records, "dtype", None)
    if dtype != RECORD_DTYPE:
        got = dtype if dtype is not None else type(records).__name__
        raise RecordValueError(f"expected a RECORD_DTYPE array, got {got}")
    return records.reshape(-1)


def code_label(code: int) -> str:
    """``cudaErrorIllegalAddress (700)`` when the evidence module knows the code, else the number."""
    if not code:
        return "-"
    return str(code_name(int(code)))


# --------------------------------------------------------------------- masks


def meta_mask(records: Records) -> npt.NDArray[np.bool_]:
    """True for recorder meta-records (GAP, CALIBRATION, ...)."""
    r = _check(records)
    return np.asarray((r["slot_status"] == SlotStatus.META) | (r["opcode"] >= META_OPCODE_BASE))


def failure_mask(records: Records) -> npt.NDArray[np.bool_]:
    """True for non-meta records that carry failure evidence (a failure status, class or code)."""
    r = _check(records)
    status = r["slot_status"]
    failed = (r["failure_class"] != 0) | (r["backend_error_code"] != 0)
    for s in FAILURE_STATUSES:
        failed |= status == s
    return np.asarray(failed & ~meta_mask(r))


def launch_keys(records: Records) -> _U64:
    """``tenant_id << 32 | slot_idx`` for every record."""
    r = _check(records)
    return np.asarray((r["tenant_id"].astype(np.uint64) << np.uint64(32)) | r["slot_idx"].astype(np.uint64))


def gap_drops(records: Records) -> tuple[int, int]:
    """(number of GAP meta-records, records they say were lost): count = args[2] | args[3] << 32."""
    r = _check(records)
    gaps = r[(r["opcode"] == MetaOpcode.GAP) & meta_mask(r)]
    if not gaps.size:
        return 0, 0
    counts = gaps["args"][:, 2].astype(np.uint64) | (gaps["args"][:, 3].astype(np.uint64) << np.uint64(32))
    return int(gaps.size), int(sum(int(c) for c in counts))


# ------------------------------------------------------------------ launches


@dataclass(frozen=True)
class Launches:
    """One row per launch, in publish order of its opening record (see the module docstring).

    ``index`` is the opening record's position in the input array; ``group``
    maps every record to its launch's row (-1 for meta-records and strays).
    ``end_ts`` is 0 and ``completed`` False when no ``COMPLETED`` record came;
    ``fail_*`` describe the first failure record of the launch (0 when none);
    ``digest`` is the last non-zero output digest seen for it.
    """

    index: npt.NDArray[np.int64]
    group: npt.NDArray[np.int64]
    tenant: npt.NDArray[np.uint32]
    slot: npt.NDArray[np.uint32]
    opcode: npt.NDArray[np.uint32]
    args: npt.NDArray[np.uint32]
    epoch: npt.NDArray[np.uint32]
    ts: npt.NDArray[np.uint64]
    status: npt.NDArray[np.uint32]
    completed: npt.NDArray[np.bool_]
    end_ts: npt.NDArray[np.uint64]
    claimed: npt.NDArray[np.bool_]
    failed: npt.NDArray[np.bool_]
    fail_record: npt.NDArray[np.int64]
    fail_status: npt.NDArray[np.uint32]
    fail_class: npt.NDArray[np.uint32]
    fail_code: npt.NDArray[np.uint32]
    digest: npt.NDArray[np.uint64]

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def select(self, mask: npt.NDArray[np.bool_]) -> Launches:
        """The rows where ``mask`` holds (``group`` is kept as it is: it indexes the full table)."""
        kw = {k: getattr(self, k)[mask] for k in self.__dataclass_fields__ if k != "group"}
        return Launches(group=self.group, **kw)


class LaunchRows(Protocol):
    """The launch columns crash windows and statistics read: :class:`Launches`, or the streamed
    ``LaunchTable`` (analysis/_summary.py), which has these and not the per-record ``group``."""

    @property
    def index(self) -> npt.NDArray[np.signedinteger[Any]]: ...
    @property
    def tenant(self) -> npt.NDArray[np.uint32]: ...
    @property
    def slot(self) -> npt.NDArray[np.uint32]: ...
    @property
    def opcode(self) -> npt.NDArray[np.uint32]: ...
    @property
    def epoch(self) -> npt.NDArray[np.uint32]: ...
    @property
    def ts(self) -> npt.NDArray[np.uint64]: ...
    @property
    def status(self) -> npt.NDArray[np.unsignedinteger[Any]]: ...
    @property
    def completed(self) -> npt.NDArray[np.bool_]: ...
    @property
    def end_ts(self) -> npt.NDArray[np.uint64]: ...
    @property
    def claimed(self) -> npt.NDArray[np.bool_]: ...
    @property
    def failed(self) -> npt.NDArray[np.bool_]: ...
    def __len__(self) -> int: ...


def _first_per_group(
    group: npt.NDArray[np.int64], sel: npt.NDArray[np.bool_], *, last: bool = False
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(launch rows, record indices) of the first (or last) selected record of each launch."""
    idx = np.flatnonzero(sel & (group >= 0))
    if last:
        idx = idx[::-1]
    rows, first = np.unique(group[idx], return_index=True)
    return rows.astype(np.int64), idx[first].astype(np.int64)


def find_launches(records: Records) -> Launches:
    """Group the records of a log (publish order) into launches."""
    r = _check(records)
    n = r.shape[0]
    status = r["slot_status"]
    # Evidence that names no launch (UNKNOWN_SLOT) belongs to none: it must not open one.
    non_meta = ~meta_mask(r) & (r["slot_idx"] != UNKNOWN_SLOT)
    keys = launch_keys(r)
    opener = non_meta & ((status == SlotStatus.BEGIN) | (status == SlotStatus.PUBLISHED))
    # Slots that never had a BEGIN/PUBLISHED record (other writers' logs): their first record opens them.
    stray = np.flatnonzero(non_meta & ~opener & ~np.isin(keys, keys[opener]))
    if stray.size:
        _, first = np.unique(keys[stray], return_index=True)
        opener[stray[first]] = True
    launch_idx = np.flatnonzero(opener).astype(np.int64)

    # Assign each record to the most recent opener of its key: sort by (key, position) and carry the
    # last opener forward inside each key's run.
    group = np.full(n, -1, dtype=np.int64)
    cand = np.flatnonzero(non_meta)
    if cand.size:
        order = cand[np.lexsort((cand, keys[cand]))]
        row_of = np.full(n, -1, dtype=np.int64)
        row_of[launch_idx] = np.arange(launch_idx.size)
        marks = np.where(opener[order], np.arange(order.size), -1)
        carried = np.maximum.accumulate(marks)
        ok = carried >= 0
        owner = np.where(ok, order[np.maximum(carried, 0)], 0)
        ok &= keys[owner] == keys[order]
        group[order[ok]] = row_of[owner[ok]]

    nl = launch_idx.size
    lr = r[launch_idx]
    completed = np.zeros(nl, bool)
    end_ts = np.zeros(nl, np.uint64)
    rows, recs = _first_per_group(group, status == SlotStatus.COMPLETED)
    completed[rows] = True
    end_ts[rows] = r["timestamp_ns"][recs]
    claimed = np.zeros(nl, bool)
    rows, _ = _first_per_group(group, status == SlotStatus.DEVICE_CLAIMED)
    claimed[rows] = True
    failed = np.zeros(nl, bool)
    fail_record = np.full(nl, -1, np.int64)
    fail_status = np.zeros(nl, np.uint32)
    fail_class = np.zeros(nl, np.uint32)
    fail_code = np.zeros(nl, np.uint32)
    rows, recs = _first_per_group(group, failure_mask(r))
    failed[rows] = True
    fail_record[rows] = recs
    fail_status[rows] = status[recs]
    fail_class[rows] = r["failure_class"][recs]
    fail_code[rows] = r["backend_error_code"][recs]
    digest = np.zeros(nl, np.uint64)
    rows, recs = _first_per_group(group, r["output_digest"] != 0, last=True)
    digest[rows] = r["output_digest"][recs]
    return Launches(
        index=launch_idx,
        group=group,
        tenant=lr["tenant_id"].copy(),
        slot=lr["slot_idx"].copy(),
        opcode=lr["opcode"].copy(),
        args=lr["args"].copy(),
        epoch=lr["epoch"].copy(),
        ts=lr["timestamp_ns"].copy(),
        status=lr["slot_status"].copy(),
        completed=completed,
        end_ts=end_ts,
        claimed=claimed,
        failed=failed,
        fail_record=fail_record,
        fail_status=fail_status,
        fail_class=fail_class,
        fail_code=fail_code,
        digest=digest,
    )


def unclaimed_slots(records: Records, launches: Launches | None = None) -> list[tuple[int, int]]:
    """Megakernel slots published by the host (``PUBLISHED``) that no ``DEVICE_CLAIMED`` record picked up.

    Returns ``(tenant_id, slot_idx)`` pairs in publish order.
    """
    ls = launches if launches is not None else find_launches(records)
    m = (ls.status == SlotStatus.PUBLISHED) & ~ls.claimed
    return [(int(t), int(s)) for t, s in zip(ls.tenant[m], ls.slot[m], strict=True)]


# -------------------------------------------------------------- crash window


@dataclass(frozen=True)
class CrashWindow:
    """The launch that was running when a fault was seen, and the fault.

    ``launch_record`` is the record that opened the launch the fault names
    (-1 when it names none: ``slot_idx`` is then ``UNKNOWN_SLOT``). The
    window runs from its timestamp to the fault record's.
    """

    tenant_id: int
    launch_record: int
    fault_record: int
    start_ns: int
    end_ns: int
    slot_idx: int
    opcode: int
    fault_slot_idx: int
    fault_status: int
    failure_class: int
    backend_error_code: int
    #: The stream of the launch (-1: not known; see analysis/_streams.py).
    stream: int = -1
    #: This stream's launch is the one that faulted: True when it is the only window of its fault whose
    #: launch had begun and not ended (for a sticky fault every busy stream has a window), False when
    #: another window is that one, None when that is not knowable.
    faulted_here: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def crash_windows(
    records: Records,
    launches: Launches | None = None,
    streams: npt.NDArray[np.int32] | None = None,
    *,
    ends_recorded: bool | None = None,
) -> list[CrashWindow]:
    """One window per ``FAULTED`` or ``HUNG`` record: the launch it names, not a neighbour on its track.

    A record that names no launch (``UNKNOWN_SLOT``) gets a window of its own with that slot; one whose
    breadcrumbs were lost is its own launch (it carries the same words), and its window starts at it. Only
    a record that names a launch that completed (other writers) falls back to the last open launch of its
    track opened at or before it. ``streams`` (the stream of each record) fills in ``stream``; the windows
    of one fault (its tenant and error code) say which stream faulted when that is knowable.
    ``ends_recorded``: whether the whole log holds COMPLETED records (default: whether ``records`` do; a
    reader of one batch of a longer log says it for the log).
    """
    r = _check(records)
    ls = launches if launches is not None else find_launches(r)
    status = r["slot_status"]
    faults = np.flatnonzero(((status == SlotStatus.FAULTED) | (status == SlotStatus.HUNG)) & ~meta_mask(r))
    return windows_of(
        r[faults],
        faults,
        ls.group[faults],
        None if streams is None else streams[faults],
        ls,
        _ends_recorded(r) if ends_recorded is None else ends_recorded,
    )


def windows_of(
    faults: Records,
    at: npt.NDArray[np.int64],
    group: npt.NDArray[np.int64],
    streams: npt.NDArray[np.int32] | None,
    ls: LaunchRows,
    ends: bool,
) -> list[CrashWindow]:
    """:func:`crash_windows` from the fault records alone: ``at`` their indices, ``group`` their launch rows
    in ``ls`` (-1: none), ``streams`` their streams; ``ends``: whether the log holds end breadcrumbs."""
    out: list[CrashWindow] = []
    rows_of: list[int] = []
    open_rows = np.flatnonzero(~ls.completed)
    for i, f in enumerate(at.tolist()):
        fr = faults[i]
        t = fr["tenant_id"]
        end = int(fr["timestamp_ns"])
        fields: dict[str, Any] = {
            "tenant_id": int(t),
            "fault_record": int(f),
            "fault_slot_idx": int(fr["slot_idx"]),
            "fault_status": int(fr["slot_status"]),
            "failure_class": int(fr["failure_class"]),
            "backend_error_code": int(fr["backend_error_code"]),
            "stream": int(streams[i]) if streams is not None else -1,
        }
        if int(fr["slot_idx"]) == UNKNOWN_SLOT:
            unknown: dict[str, Any] = {"launch_record": -1, "slot_idx": UNKNOWN_SLOT, "opcode": 0}
            out.append(CrashWindow(start_ns=end, end_ns=end, **unknown, **fields))
            rows_of.append(-1)
            continue
        row = int(group[i])
        ours = streams is not None and int(streams[i]) >= 0  # our recorder named the window itself
        if row < 0 or (ls.completed[row] and not ours):
            # The record names a launch that completed (another writer's convention): the last open launch
            # of its track before it is what the device had reached.
            rows = open_rows[(ls.tenant[open_rows] == t) & (ls.index[open_rows] <= f)]
            if not rows.size:
                continue
            row = int(rows[-1])
        li = int(ls.index[row])
        start = int(ls.ts[row])
        out.append(
            CrashWindow(
                launch_record=li,
                start_ns=min(start, end),
                end_ns=max(start, end),
                slot_idx=int(ls.slot[row]),
                opcode=int(ls.opcode[row]),
                **fields,
            )
        )
        rows_of.append(row)
    return _mark_faulted(out, rows_of, ls, ends)


def _mark_faulted(
    windows: list[CrashWindow], rows: list[int], ls: LaunchRows, ends: bool
) -> list[CrashWindow]:
    """Which window of each fault is the faulting launch: the one open launch, when exactly one is open.

    ``rows``: each window's launch row (-1: it names none)."""
    events: dict[tuple[int, int], list[int]] = {}
    for i, w in enumerate(windows):
        if w.fault_status == SlotStatus.FAULTED:
            events.setdefault((w.tenant_id, w.backend_error_code), []).append(i)
    out = list(windows)
    for members in events.values():
        if len(members) == 1:
            out[members[0]] = dataclasses.replace(out[members[0]], faulted_here=True)
            continue
        # Several streams were busy: with begin+end, a window whose launch ended is not the culprit.
        began_open = []
        for i in members:
            w = windows[i]
            row = rows[i] if w.launch_record >= 0 else -1
            has_begin = row >= 0 and int(ls.status[row]) == SlotStatus.BEGIN
            if w.slot_idx != UNKNOWN_SLOT and has_begin and not bool(ls.completed[row]):
                began_open.append(i)
        unknown = any(windows[i].slot_idx == UNKNOWN_SLOT for i in members)
        if len(began_open) == 1 and not unknown and ends:
            for i in members:
                out[i] = dataclasses.replace(out[i], faulted_here=i == began_open[0])
    return out


def _ends_recorded(r: Records) -> bool:
    """Whether the log holds end breadcrumbs (``begin+end``): only then does "no end" mean "still running"."""
    return bool((r["slot_status"] == SlotStatus.COMPLETED).any())


def clip_to_next(
    start: npt.NDArray[np.int64],
    end: npt.NDArray[np.int64],
    track: npt.NDArray[np.int64],
    slice_: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int64]:
    """Where each slice of a trace must stop so that none overlaps the next on its track.

    A stream runs its launches one after another, so its slices are disjoint in fact; clock noise between a
    COMPLETED record and the next BEGIN, and records of unknown streams sharing a track, break that in a
    trace. Per track, in start order, each slice (``slice_`` True) ends at the latest where the next one
    begins. Returns ``end`` with those stops (rows that are not slices keep their end).
    """
    order = np.lexsort((start, track))
    xs = order[slice_[order]]
    stop = end.copy()
    if xs.shape[0] > 1:
        same = track[xs[1:]] == track[xs[:-1]]
        nxt = np.full(xs.shape[0], np.iinfo(np.int64).max, np.int64)
        nxt[:-1][same] = start[xs[1:]][same]
        stop[xs] = np.minimum(end[xs], nxt)
    return np.asarray(stop, np.int64)
