"""``vrrl verify``'s semantic checks: damage a byte-level read cannot see, inside the live range of a log.

- an empty slot (record magic 0) between live records in publish order (before the oldest one, a rolled
  back batch may have cleared the records it had overwritten);
- a timestamp more than :data:`TIME_TOLERANCE_NS` before the newest one before it (records are written in
  time order up to the drain's batching), in the future, or, after this session's SESSION_START, before the
  sidecar's session start;
- impossible field values: a ``slot_status`` or ``failure_class`` outside their enums, a reserved opcode on
  a non-meta record or a META status on a user opcode, the unknown slot on a record that is not evidence, a
  zero timestamp.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._streams import session_nonce
from vrrl_gpu.errors import SidecarError, VrrlIoError
from vrrl_gpu.format._layout import (
    HEADER_SIZE,
    META_OPCODE_BASE,
    RECORD_DTYPE,
    RECORD_MAGIC,
    UNKNOWN_SLOT,
    FailureClass,
    MetaOpcode,
    SlotStatus,
)
from vrrl_gpu.format._live import unpublished_run
from vrrl_gpu.format._ringlog import read_header
from vrrl_gpu.format._safeio import open_regular
from vrrl_gpu.format._sidecar import read_sidecar

__all__ = ["TIME_TOLERANCE_NS", "Finding", "semantic_findings"]

#: How far a timestamp may lie behind the newest one before it (drain batches, clock calibration), in ns.
TIME_TOLERANCE_NS = 10 * 10**9

_MAX_LISTED = 20


@dataclass(frozen=True)
class Finding:
    """One kind of damage: where (file slots, the first ones) and what."""

    what: str
    slots: tuple[int, ...]
    count: int

    def __str__(self) -> str:
        where = ", ".join(map(str, self.slots))
        more = f" and {self.count - len(self.slots)} more" if self.count > len(self.slots) else ""
        return f"slot {where}{more}: {self.what}"


class _Found:
    """One kind of damage as it is found, chunk by chunk: the first slots and the count."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.slots: list[int] = []
        self.count = 0

    def add(self, where: npt.NDArray[np.integer]) -> None:
        if where.size:
            room = _MAX_LISTED - len(self.slots)
            if room > 0:
                self.slots += [int(x) for x in where[:room]]
            self.count += int(where.size)

    def finding(self) -> Finding | None:
        return Finding(self.what, tuple(self.slots), self.count) if self.count else None


def semantic_findings(
    path: str | os.PathLike[str], *, now_ns: int | None = None, chunk_slots: int = 1 << 16
) -> list[Finding]:
    """The semantic damage in the log at ``path`` (which a strict read accepted); [] when none.

    One pass over the file slots in publish order, ``chunk_slots`` at a time: memory stays bounded.
    """
    p = os.fspath(path)
    h = read_header(p)
    cap = int(h.capacity)
    present = max(0, min(cap, (h.file_size - HEADER_SIZE) // RECORD_DTYPE.itemsize))
    cur = int(h.cursor) % cap
    now = time.time_ns() if now_ns is None else now_ns
    try:
        side = read_sidecar(p)
    except SidecarError:
        side = None  # a broken sidecar does not make the log unreadable: skip the session-span check
    nonce = side.extra.get("session", {}).get("nonce") if side is not None else None
    session_start = side.start_time_ns if side is not None and nonce is not None else 0

    empty = _Found("record magic is 0 where a record must be (between live records)")
    kinds = [
        empty,
        _Found("slot_status outside SlotStatus"),
        _Found("failure_class outside FailureClass"),
        _Found("reserved meta-opcode on a record that is not META"),
        _Found("META status with a user opcode"),
        _Found("the unknown slot on a record that is not failure evidence"),
        _Found("timestamp 0"),
        _Found(f"timestamp more than {TIME_TOLERANCE_NS / 1e9:g} s before an earlier record's"),
        _Found("timestamp in the future"),
    ]
    early_what = "timestamp before the session began (the sidecar's start time)"
    early = _Found(early_what)
    ours_seen = False
    seen_live = False
    pending: list[npt.NDArray[np.int64]] = []  # empty slots after the newest live one: damage if more follow
    newest: int | None = None
    evidence_statuses = [SlotStatus.FAULTED, SlotStatus.HUNG, SlotStatus.FAILED_AT_LAUNCH]
    # Publish order: cursor..end, then 0..cursor. Before the oldest record, empty slots are records a
    # failed batch rolled back (or a ring that never wrapped), not damage. Records a killed writer wrote
    # past the cursor of a ring that had not wrapped, without publishing them, are its newest (the next
    # writer publishes them: format/_live.py unpublished_run): checked last, not as the oldest.
    left = _unpublished(p, cap, int(h.cursor))
    for lo, hi in ((cur + left, present), (0, min(cur, present)), (cur, min(cur + left, present))):
        for a in range(lo, hi, chunk_slots):
            b = min(hi, a + chunk_slots)
            raw = np.fromfile(
                p, dtype=RECORD_DTYPE, count=b - a, offset=HEADER_SIZE + a * RECORD_DTYPE.itemsize
            )
            slots = np.arange(a, a + raw.shape[0], dtype=np.int64)
            live = raw["magic"] == RECORD_MAGIC
            at = np.flatnonzero(live)
            zero = raw["magic"] == 0
            if at.size:
                if seen_live:
                    for q in pending:
                        empty.add(q)
                    empty.add(slots[: at[0]][zero[: at[0]]])
                inside = slots[at[0] : at[-1] + 1]
                empty.add(inside[zero[at[0] : at[-1] + 1]])
                pending = [slots[at[-1] + 1 :][zero[at[-1] + 1 :]]]
                seen_live = True
            elif seen_live:
                pending.append(slots[zero])
            order = slots[live]
            r = raw[live]
            status, opcode, fc = r["slot_status"], r["opcode"], r["failure_class"]
            is_meta_status = status == SlotStatus.META
            ts = r["timestamp_ns"].astype(np.uint64)
            checks = [
                status > max(SlotStatus),
                fc > max(FailureClass),
                (opcode >= META_OPCODE_BASE) & ~is_meta_status,
                is_meta_status & (opcode < META_OPCODE_BASE),
                (r["slot_idx"] == UNKNOWN_SLOT) & ~np.isin(status, evidence_statuses),
                ts == 0,
            ]
            for kind, m in zip(kinds[1:], checks, strict=False):
                kind.add(order[m])
            if ts.size:
                prior = np.maximum.accumulate(ts)
                before = np.concatenate(([newest if newest is not None else ts[0]], prior[:-1])).astype(
                    np.uint64
                )
                if newest is not None:
                    before = np.maximum(before, np.uint64(newest))
                back = ts + np.uint64(TIME_TOLERANCE_NS) < before
                if newest is None:
                    back[0] = False
                kinds[7].add(order[back])
                newest = int(prior[-1]) if newest is None else max(newest, int(prior[-1]))
            kinds[8].add(order[ts > np.uint64(now + TIME_TOLERANCE_NS)])
            if session_start:
                starts = np.flatnonzero(is_meta_status & (opcode == MetaOpcode.SESSION_START))
                ours = starts[session_nonce(r["args"][starts]) == np.uint64(int(nonce or 0))]
                first = 0
                if ours.size:
                    early = _Found(early_what)  # only the records after the last such start count
                    ours_seen = True
                    first = int(ours[-1]) + 1
                if ours_seen:
                    m = ts[first:] + np.uint64(TIME_TOLERANCE_NS) < np.uint64(session_start)
                    early.add(order[first:][m])
    found = [k.finding() for k in [*kinds, early]]
    return [f for f in found if f is not None]


def _unpublished(path: str, capacity: int, cursor: int) -> int:
    try:
        fd = open_regular(path, os.O_RDONLY, what="the log")
    except VrrlIoError:
        return 0  # the byte-level read already opened it: a vanished file is its problem, not this check's
    try:
        return unpublished_run(fd, capacity, cursor)
    finally:
        os.close(fd)
