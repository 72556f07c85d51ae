"""Analysis of VRRL logs: launches, statistics, crash windows, diff alignment, chunked reads, k-way merge.

Everything here works on ``RECORD_DTYPE`` arrays (and, for the readers, on log
files) and never touches CUDA. The conventions it relies on are ours
(docs/analysis.md):

* A *track* is a ``tenant_id``. The recorder keeps one tenant per stream (or
  per rank), so "per stream" in the CLI means "per tenant id".
* *Meta-records* are those with ``slot_status == META`` or an opcode in the
  reserved range (``>= META_OPCODE_BASE``); they are never launches.
* A *launch* is identified by its key ``(tenant_id, slot_idx)``. Its opening
  record is a ``BEGIN`` breadcrumb or a ``PUBLISHED`` megakernel slot; in logs
  written by other VRRL writers, where a slot has no such record, the first
  record of the key opens it. Later records with the same key (``COMPLETED``,
  failure evidence, ``DEVICE_CLAIMED``...) belong to the most recent launch of
  that key, so a slot index reused by a later session opens a new launch.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu._format import (
    HEADER_SIZE,
    META_OPCODE_BASE,
    RECORD_DTYPE,
    RECORD_MAGIC,
    RECORD_SIZE,
    FailureClass,
    MetaOpcode,
    SlotStatus,
)
from vrrl_gpu._ringlog import read_header
from vrrl_gpu.errors import CorruptRecordError, RecordValueError, TruncatedLogError, VrrlIoError

__all__ = [
    "FAILURE_STATUSES",
    "Launches",
    "CrashWindow",
    "Divergence",
    "DiffResult",
    "meta_mask",
    "failure_mask",
    "launch_keys",
    "find_launches",
    "gap_drops",
    "crash_windows",
    "unclaimed_slots",
    "compute_stats",
    "diff_records",
    "iter_record_chunks",
    "count_records",
    "merge_logs",
    "LogFollower",
    "code_label",
]

#: Slot statuses that say a launch failed (host-written failure evidence).
FAILURE_STATUSES = (SlotStatus.FAILED_AT_LAUNCH, SlotStatus.FAULTED, SlotStatus.HUNG)

Records = npt.NDArray[np.void]
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
    try:
        from vrrl_gpu._evidence import code_name
    except ImportError:  # pragma: no cover - the evidence module ships with the package
        return str(code)
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
    non_meta = ~meta_mask(r)
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

    ``launch_record`` is the last launch of the fault's track, opened at or
    before the fault record, with no ``COMPLETED`` record: what the device had
    reached. The window runs from its timestamp to the fault record's.
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

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def crash_windows(records: Records, launches: Launches | None = None) -> list[CrashWindow]:
    """One window per ``FAULTED`` or ``HUNG`` record that has an open launch before it on its track."""
    r = _check(records)
    ls = launches if launches is not None else find_launches(r)
    status = r["slot_status"]
    faults = np.flatnonzero(((status == SlotStatus.FAULTED) | (status == SlotStatus.HUNG)) & ~meta_mask(r))
    out: list[CrashWindow] = []
    open_rows = np.flatnonzero(~ls.completed)
    for f in faults.tolist():
        t = r["tenant_id"][f]
        rows = open_rows[(ls.tenant[open_rows] == t) & (ls.index[open_rows] <= f)]
        if not rows.size:
            continue
        row = int(rows[-1])
        li = int(ls.index[row])
        start, end = int(r["timestamp_ns"][li]), int(r["timestamp_ns"][f])
        out.append(
            CrashWindow(
                tenant_id=int(t),
                launch_record=li,
                fault_record=int(f),
                start_ns=min(start, end),
                end_ns=max(start, end),
                slot_idx=int(ls.slot[row]),
                opcode=int(ls.opcode[row]),
                fault_slot_idx=int(r["slot_idx"][f]),
                fault_status=int(status[f]),
                failure_class=int(r["failure_class"][f]),
                backend_error_code=int(r["backend_error_code"][f]),
            )
        )
    return out


# --------------------------------------------------------------------- stats


def _label(names: Mapping[int, str] | None, opcode: int) -> str:
    from vrrl_gpu._sidecar import opcode_label

    return opcode_label(opcode, names)


def compute_stats(
    records: Records, *, opcode_names: Mapping[int, str] | None = None, buckets: int = 10
) -> dict[str, Any]:
    """The facts ``vrrl stats`` prints, as a JSON-ready dict (see docs/analysis.md for the keys)."""
    r = _check(records)
    if buckets < 1:
        raise RecordValueError(f"buckets must be a positive integer, got {buckets!r}")
    ls = find_launches(r)
    meta = meta_mask(r)
    ts_all = r["timestamp_ns"]
    out: dict[str, Any] = {
        "records": int(r.shape[0]),
        "meta_records": int(meta.sum()),
        "launches": len(ls),
        "first_timestamp_ns": int(ts_all.min()) if ts_all.size else None,
        "last_timestamp_ns": int(ts_all.max()) if ts_all.size else None,
        "span_ns": int(ts_all.max() - ts_all.min()) if ts_all.size else 0,
    }

    # Per opcode.
    per_op: list[dict[str, Any]] = []
    ops, counts = np.unique(ls.opcode, return_counts=True)
    for op, n in sorted(zip(ops.tolist(), counts.tolist(), strict=True), key=lambda x: (-x[1], x[0])):
        m = ls.opcode == op
        done = m & ls.completed
        dur = (ls.end_ts[done].astype(np.int64) - ls.ts[done].astype(np.int64)) if done.any() else None
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
    fm = failure_mask(r)
    fr = r[fm]
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
        sname = _status_name(int(st))
        by_status[sname] = by_status.get(sname, 0) + 1
    out["failures"] = {
        "total": int(fm.sum()),
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
        which = (
            ((ls.ts.astype(np.int64) - lo) // width).astype(np.int64)
            if hi > lo
            else np.zeros(len(ls), np.int64)
        )
        hist = np.bincount(np.minimum(which, nb - 1), minlength=nb)
        for i, n in enumerate(hist.tolist()):
            rate.append(
                {"start_ns": lo + i * width, "launches": int(n), "per_second": round(n * 1e9 / width, 3)}
            )
    out["rate"] = {"bucket_ns": width, "buckets": rate}

    n_gaps, dropped = gap_drops(r)
    out["gaps"] = {"gap_records": n_gaps, "dropped_records": dropped}

    # Breadcrumb coverage per track: how many BEGIN breadcrumbs got their COMPLETED.
    tracks: list[dict[str, Any]] = []
    for t in np.unique(r["tenant_id"][~meta]).tolist():
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
    out["crash_windows"] = [w.to_dict() for w in crash_windows(r, ls)]
    return out


def _status_name(value: int) -> str:
    try:
        return SlotStatus(value).name.lower()
    except ValueError:
        return str(value)


# ---------------------------------------------------------------------- diff

#: The kinds of divergence ``diff_records`` reports, in the order it checks them.
DIVERGENCE_KINDS = ("missing", "opcode", "args", "epoch", "failure", "digest", "claim")


@dataclass(frozen=True)
class Divergence:
    """One launch where two logs disagree. ``position`` is the launch's index on its track."""

    kind: str
    tenant_id: int
    position: int
    a: Any
    b: Any
    a_record: int | None
    b_record: int | None
    a_slot: int | None
    b_slot: int | None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class DiffResult:
    """What :func:`diff_records` found. ``divergences`` holds at most ``limit`` entries; ``counts`` all."""

    launches_a: int
    launches_b: int
    compared: int
    counts: dict[str, int] = field(default_factory=dict)
    divergences: list[Divergence] = field(default_factory=list)
    unclaimed_a: list[tuple[int, int]] = field(default_factory=list)
    unclaimed_b: list[tuple[int, int]] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not self.counts

    @property
    def first(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "agree": self.agree,
            "launches_a": self.launches_a,
            "launches_b": self.launches_b,
            "compared": self.compared,
            "counts": dict(self.counts),
            "first": self.first.to_dict() if self.first else None,
            "divergences": [d.to_dict() for d in self.divergences],
            "unclaimed_a": [list(x) for x in self.unclaimed_a],
            "unclaimed_b": [list(x) for x in self.unclaimed_b],
        }


def diff_records(a: Records, b: Records, *, by_track: bool = True, limit: int = 1000) -> DiffResult:
    """Align two logs launch by launch and list where they disagree.

    Alignment: the launches of each track (``tenant_id``), in publish order of
    their opening records, are paired by position (the k-th launch of tenant t
    in A with the k-th of tenant t in B); with ``by_track=False`` all launches
    form one sequence. Meta-records never take part. For each pair: opcode;
    args (the four words); epoch, relative to the track's first launch (so a
    replay starting at another epoch agrees when its steps do); failure (the
    class and code of the launch's first failure record, or none); output
    digest (the last non-zero one, or 0); and for megakernel slots whether the
    device claimed them. Launches beyond the shorter side are ``missing``.
    """
    la, lb = find_launches(_check(a)), find_launches(_check(b))
    res = DiffResult(launches_a=len(la), launches_b=len(lb), compared=0)
    res.unclaimed_a = unclaimed_slots(a, la)
    res.unclaimed_b = unclaimed_slots(b, lb)
    if by_track:
        tracks = sorted(set(la.tenant.tolist()) | set(lb.tenant.tolist()))
        pairs = [(t, np.flatnonzero(la.tenant == t), np.flatnonzero(lb.tenant == t)) for t in tracks]
    else:
        pairs = [(-1, np.arange(len(la)), np.arange(len(lb)))]
    found: list[Divergence] = []
    for t, ra, rb in pairs:
        n = min(ra.size, rb.size)
        res.compared += n
        xa, xb = ra[:n], rb[:n]
        ea = la.epoch[ra].astype(np.int64) - (int(la.epoch[ra[0]]) if ra.size else 0)
        eb = lb.epoch[rb].astype(np.int64) - (int(lb.epoch[rb[0]]) if rb.size else 0)
        rel = {"a": ea, "b": eb}

        def epoch_value(
            s: str, _ls: Launches, _i: int, p: int, rel: dict[str, npt.NDArray[np.int64]] = rel
        ) -> int:
            return int(rel[s][p])

        checks: list[tuple[str, npt.NDArray[np.bool_], Callable[[str, Launches, int, int], Any]]] = [
            ("opcode", la.opcode[xa] != lb.opcode[xb], lambda _s, ls, i, _p: int(ls.opcode[i])),
            ("args", np.any(la.args[xa] != lb.args[xb], axis=1), lambda _s, ls, i, _p: ls.args[i].tolist()),
            ("epoch", ea[:n] != eb[:n], epoch_value),
            (
                "failure",
                (la.fail_class[xa] != lb.fail_class[xb])
                | (la.fail_code[xa] != lb.fail_code[xb])
                | (la.failed[xa] != lb.failed[xb]),
                lambda _s, ls, i, _p: _failure_value(ls, i),
            ),
            ("digest", la.digest[xa] != lb.digest[xb], lambda _s, ls, i, _p: f"{int(ls.digest[i]):016x}"),
            (
                "claim",
                ((la.status[xa] == SlotStatus.PUBLISHED) | (lb.status[xb] == SlotStatus.PUBLISHED))
                & (la.claimed[xa] != lb.claimed[xb]),
                lambda _s, ls, i, _p: bool(ls.claimed[i]),
            ),
        ]
        for kind, bad, value in checks:
            pos = np.flatnonzero(bad)
            if not pos.size:
                continue
            res.counts[kind] = res.counts.get(kind, 0) + int(pos.size)
            for p in pos[:limit].tolist():
                ia, ib = int(xa[p]), int(xb[p])
                found.append(_div(kind, t, p, value("a", la, ia, p), value("b", lb, ib, p), la, ia, lb, ib))
        for side, rows, ls in (("a", ra, la), ("b", rb, lb)):
            extra = rows[n:]
            if not extra.size:
                continue
            res.counts["missing"] = res.counts.get("missing", 0) + int(extra.size)
            for p, i in enumerate(extra[:limit].tolist(), start=n):
                present = _launch_value(ls, int(i))
                if side == "a":
                    found.append(_div("missing", t, p, present, None, la, int(i), None, None))
                else:
                    found.append(_div("missing", t, p, None, present, None, None, lb, int(i)))
    # First divergence = earliest in A's publish order (B's for launches A lacks), then by kind.
    rank = {k: i for i, k in enumerate(DIVERGENCE_KINDS)}
    found.sort(
        key=lambda d: (
            d.a_record if d.a_record is not None else (d.b_record if d.b_record is not None else 0),
            rank[d.kind],
        )
    )
    res.divergences = found[:limit]
    res.counts = {k: res.counts[k] for k in DIVERGENCE_KINDS if k in res.counts}
    return res


def _failure_value(ls: Launches, i: int) -> str | None:
    if not ls.failed[i]:
        return None
    return f"{FailureClass(int(ls.fail_class[i])).label} {code_label(int(ls.fail_code[i]))}"


def _launch_value(ls: Launches, i: int) -> dict[str, Any]:
    return {"opcode": int(ls.opcode[i]), "slot_idx": int(ls.slot[i]), "args": ls.args[i].tolist()}


def _div(
    kind: str,
    t: int,
    p: int,
    va: Any,
    vb: Any,
    la: Launches | None,
    ia: int | None,
    lb: Launches | None,
    ib: int | None,
) -> Divergence:
    return Divergence(
        kind=kind,
        tenant_id=int(t),
        position=int(p),
        a=va,
        b=vb,
        a_record=int(la.index[ia]) if la is not None and ia is not None else None,
        b_record=int(lb.index[ib]) if lb is not None and ib is not None else None,
        a_slot=int(la.slot[ia]) if la is not None and ia is not None else None,
        b_slot=int(lb.slot[ib]) if lb is not None and ib is not None else None,
    )


# ------------------------------------------------------------ chunked reads


def _pread_exact(fd: int, buf: npt.NDArray[np.void], offset: int, path: str) -> int:
    """Fill ``buf`` from ``offset``; returns the whole records read (fewer at the end of a short file)."""
    view = buf.data.cast("B")
    got = 0
    try:
        while got < len(view):
            n = os.preadv(fd, [view[got:]], offset + got)
            if n == 0:
                break
            got += n
    except OSError as e:
        raise VrrlIoError(f"{path}: read at byte {offset + got} failed: {e.strerror or e}") from e
    return got // RECORD_SIZE


def _read_slots(fd: int, path: str, lo: int, hi: int, *, salvage: bool) -> Records:
    """The live records of file slots ``lo <= s < hi`` (strict: a bad magic raises)."""
    buf = np.empty(hi - lo, RECORD_DTYPE)
    got = _pread_exact(fd, buf, HEADER_SIZE + RECORD_SIZE * lo, path)
    if got < buf.shape[0] and not salvage:
        raise TruncatedLogError(
            f"{path}: expected slots {lo}..{hi - 1}, the file ends at slot {lo + got}; "
            f"read it with --salvage to skip the missing slots",
            expected=HEADER_SIZE + RECORD_SIZE * hi,
            found=HEADER_SIZE + RECORD_SIZE * (lo + got),
        )
    buf = buf[:got]
    magic = buf["magic"]
    live = magic == RECORD_MAGIC
    if not salvage:
        bad = np.flatnonzero((magic != 0) & ~live)
        if bad.size:
            slot = lo + int(bad[0])
            raise CorruptRecordError(
                f"{path}: slot {slot} has record magic {int(magic[bad[0]]):#010x}, expected 0 or "
                f"{RECORD_MAGIC:#010x}; read it with --salvage to skip damaged slots",
                slot=slot,
                magic=int(magic[bad[0]]),
            )
    return buf if bool(live.all()) else buf[live]


def _open_ro(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise VrrlIoError(f"{path}: cannot open the log: {e.strerror or e}") from e


def iter_record_chunks(
    path: str | os.PathLike[str], *, chunk_records: int = 1 << 16, salvage: bool = False
) -> Iterator[Records]:
    """The live records of a log in publish order, ``chunk_records`` slots at a time.

    The file is opened for each chunk and closed again, so that a merge of
    thousands of logs holds no file descriptors between reads. Strict reads
    refuse a corrupt slot or a short file like :meth:`RingLog.scan`.
    """
    p = os.fspath(path)
    if chunk_records < 1:
        raise RecordValueError(f"chunk_records must be at least 1, got {chunk_records}")
    h = read_header(p)
    cap, start = h.capacity, h.start_slot
    if h.file_size < h.expected_size and not salvage:
        raise TruncatedLogError(
            f"{p}: header says {cap} slots, so expected {h.expected_size} bytes, found {h.file_size}; "
            f"read it with --salvage",
            expected=h.expected_size,
            found=h.file_size,
        )
    for lo, hi in ((start, cap), (0, start)):
        s = lo
        while s < hi:
            e = min(hi, s + chunk_records)
            fd = _open_ro(p)
            try:
                chunk = _read_slots(fd, p, s, e, salvage=salvage)
            finally:
                os.close(fd)
            if chunk.size:
                yield chunk
            s = e


def count_records(path: str | os.PathLike[str], *, salvage: bool = False) -> int:
    """How many live records the log holds (a streaming pass over its slots)."""
    return sum(int(c.shape[0]) for c in iter_record_chunks(path, salvage=salvage))


def merge_logs(
    paths: Sequence[str | os.PathLike[str]],
    *,
    batch_records: int = 1 << 14,
    memory_records: int = 1 << 18,
    salvage: bool = False,
) -> Iterator[tuple[Records, npt.NDArray[np.int32]]]:
    """Merge logs into one timeline: yields (records, origin index) batches, by timestamp.

    A k-way merge (:func:`heapq.merge`) over one chunked reader per log: at
    most about ``memory_records`` records are held across all readers (each
    reads ``memory_records // len(paths)`` slots at a time, at least 16), plus
    one output batch. Each log is taken in its publish order; ties and logs
    whose timestamps go backwards keep that order, ties between logs go to the
    lower input index.
    """
    if not paths:
        return
    per_log = max(16, min(1 << 16, memory_records // len(paths)))

    def keyed(i: int, p: str | os.PathLike[str]) -> Iterator[tuple[int, int, int, Records, int]]:
        pos = 0
        for chunk in iter_record_chunks(p, chunk_records=per_log, salvage=salvage):
            for j, ts in enumerate(chunk["timestamp_ns"].tolist()):
                yield ts, i, pos, chunk, j
                pos += 1

    out = np.empty(batch_records, RECORD_DTYPE)
    origin = np.empty(batch_records, np.int32)
    k = 0
    for _ts, i, _pos, chunk, j in heapq.merge(*(keyed(i, p) for i, p in enumerate(paths))):
        out[k] = chunk[j]
        origin[k] = i
        k += 1
        if k == batch_records:
            yield out.copy(), origin.copy()
            k = 0
    if k:
        yield out[:k].copy(), origin[:k].copy()


# ------------------------------------------------------------------- follow


class LogFollower:
    """Reads the newest records of a log that another process is writing (``vrrl tail -f``).

    Never takes the writer's lock: it reads the header's cursor and the slots
    the writer published since the last poll. The writer stores records before
    the cursor, so every slot behind the cursor is complete. If the writer
    laps the whole ring between two polls those records are not seen (the
    cursor alone cannot tell); poll faster than the ring fills.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._cursor: int | None = None
        self._capacity = read_header(self._path).capacity

    @property
    def path(self) -> str:
        return self._path

    def last(self, n: int) -> Records:
        """The newest ``n`` records in publish order; later :meth:`poll` calls continue after them."""
        if n < 0:
            raise RecordValueError(f"n must be 0 or more, got {n}")
        for _ in range(20):
            h1 = read_header(self._path)
            cap, cur = h1.capacity, h1.cursor % h1.capacity
            n_read = min(n, cap)
            recs = self._read_range((cur - n_read) % cap, n_read, cap)
            h2 = read_header(self._path)
            if h2.cursor % cap == cur:  # no writer moved underneath: a consistent snapshot
                break
            time.sleep(0.001)
        self._capacity, self._cursor = cap, cur
        return recs

    def poll(self) -> Records:
        """Records published since the previous :meth:`last`/:meth:`poll` (possibly none)."""
        if self._cursor is None:
            return self.last(0)
        h = read_header(self._path)
        cap = h.capacity
        cur = h.cursor % cap
        if cap != self._capacity:
            raise VrrlIoError(
                f"{self._path}: the capacity changed from {self._capacity} to {cap} while following; "
                f"the log was replaced, start again"
            )
        if cur == self._cursor:
            return np.empty(0, RECORD_DTYPE)
        n = (cur - self._cursor) % cap
        recs = self._read_range(self._cursor, n, cap)
        self._cursor = cur
        return recs

    def _read_range(self, lo: int, n: int, cap: int) -> Records:
        """The live records of the ``n`` slots from ``lo`` on, wrapping at ``cap``."""
        if n == 0:
            return np.empty(0, RECORD_DTYPE)
        fd = _open_ro(self._path)
        try:
            # Slots behind the cursor are complete; salvage only skips ones a lapping writer is rewriting.
            if lo + n <= cap:
                return _read_slots(fd, self._path, lo, lo + n, salvage=True)
            return np.concatenate(
                [
                    _read_slots(fd, self._path, lo, cap, salvage=True),
                    _read_slots(fd, self._path, 0, lo + n - cap, salvage=True),
                ]
            )
        finally:
            os.close(fd)
