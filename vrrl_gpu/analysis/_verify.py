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

from vrrl_gpu.analysis._streams import session_nonce
from vrrl_gpu.errors import SidecarError
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
from vrrl_gpu.format._ringlog import read_header
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


def semantic_findings(path: str | os.PathLike[str], *, now_ns: int | None = None) -> list[Finding]:
    """The semantic damage in the log at ``path`` (which a strict read accepted); [] when none."""
    h = read_header(path)
    cap = int(h.capacity)
    raw = np.fromfile(os.fspath(path), dtype=RECORD_DTYPE, count=cap, offset=HEADER_SIZE)
    n = int(raw.shape[0])
    magic = raw["magic"]
    live = magic == RECORD_MAGIC
    cur = int(h.cursor) % cap
    wrapped = bool(live[cur:].any())
    slots = np.arange(n)
    out: list[Finding] = []

    def add(what: str, where: np.ndarray) -> None:
        if where.size:
            out.append(Finding(what, tuple(int(s) for s in where[:_MAX_LISTED]), int(where.size)))

    # Publish order; empty slots before the oldest record are records a failed batch rolled back, not damage.
    order = np.concatenate((slots[cur:], slots[:cur])) if wrapped else slots[:cur]
    held = np.flatnonzero(live[order])
    if held.size:
        inside = order[held[0] : held[-1] + 1]
        add("record magic is 0 where a record must be (between live records)", inside[magic[inside] == 0])
    order = order[live[order]]
    r = raw[order]
    status, opcode, fc = r["slot_status"], r["opcode"], r["failure_class"]
    add("slot_status outside SlotStatus", order[status > max(SlotStatus)])
    add("failure_class outside FailureClass", order[fc > max(FailureClass)])
    is_meta_status = status == SlotStatus.META
    add(
        "reserved meta-opcode on a record that is not META",
        order[(opcode >= META_OPCODE_BASE) & ~is_meta_status],
    )
    add("META status with a user opcode", order[is_meta_status & (opcode < META_OPCODE_BASE)])
    evidence = np.isin(status, [SlotStatus.FAULTED, SlotStatus.HUNG, SlotStatus.FAILED_AT_LAUNCH])
    add(
        "the unknown slot on a record that is not failure evidence",
        order[(r["slot_idx"] == UNKNOWN_SLOT) & ~evidence],
    )

    ts = r["timestamp_ns"].astype(np.uint64)
    add("timestamp 0", order[ts == 0])
    if ts.size > 1:
        newest = np.maximum.accumulate(ts)[:-1]
        back = np.flatnonzero(ts[1:] + np.uint64(TIME_TOLERANCE_NS) < newest) + 1
        add(f"timestamp more than {TIME_TOLERANCE_NS / 1e9:g} s before an earlier record's", order[back])
    now = time.time_ns() if now_ns is None else now_ns
    add("timestamp in the future", order[ts > np.uint64(now + TIME_TOLERANCE_NS)])
    try:
        side = read_sidecar(path)
    except SidecarError:
        side = None  # a broken sidecar does not make the log unreadable: skip the session-span check
    nonce = side.extra.get("session", {}).get("nonce") if side is not None else None
    if side is not None and side.start_time_ns and nonce is not None:
        starts = np.flatnonzero(is_meta_status & (opcode == MetaOpcode.SESSION_START))
        ours = starts[session_nonce(r["args"][starts]) == np.uint64(nonce)]
        if ours.size:
            after = np.arange(ts.size) > int(ours[-1])
            early = after & (ts + np.uint64(TIME_TOLERANCE_NS) < np.uint64(side.start_time_ns))
            add("timestamp before the session began (the sidecar's start time)", order[early])
    return out
