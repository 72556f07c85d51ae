"""Which stream each record came from, from the log and its sidecar's stream table (docs/recorder.md).

The format has no stream field. The recorder keeps, per stream, the slots it gave out as arithmetic runs
``[first, stride, count]`` and writes them to the sidecar (``extra.streams``) with the session's identity
(``extra.session``: the nonce its SESSION_START meta-record carries). A record of that session with a launch
status (begin, completed, failed at launch, faulted, hung) belongs to the stream whose runs hold its slot;
a record whose slot says unknown takes the stream the sidecar's ``unknown_windows`` note names. Everything
else is -1: meta-records, records of earlier sessions, slots no run holds (a table trimmed of old runs),
and breadcrumbs of a session that recorded graph launches (their slot is a device sequence).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.errors import VrrlWarning
from vrrl_gpu.format._layout import UNKNOWN_SLOT, MetaOpcode, SlotStatus
from vrrl_gpu.format._reader import Records, iter_record_chunks
from vrrl_gpu.format._sidecar import Sidecar, load_sidecar, sidecar_path

__all__ = ["StreamTable", "StreamMapper", "NO_STREAM", "session_nonce", "streams_of", "mapper_for"]

#: The stream column's value when the stream is not known.
NO_STREAM = -1
_MAX_SLOT = 0xFFFFFFFF

# Evidence first: a session with graph launches maps only those (its breadcrumbs' slots may be sequences).
_S = SlotStatus
_HOST_OR_LAUNCH = np.array([_S.FAILED_AT_LAUNCH, _S.FAULTED, _S.HUNG, _S.BEGIN, _S.COMPLETED], np.uint32)
_EVIDENCE = _HOST_OR_LAUNCH[:3]


def session_nonce(args: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint64]:
    """The nonce of SESSION_START meta-records (``args[1] | args[2] << 32``)."""
    a = np.asarray(args, np.uint64)
    return np.asarray(a[..., 1] | (a[..., 2] << np.uint64(32)))


@dataclass(frozen=True)
class StreamTable:
    """The sidecar's stream table: one row per run (stream, first slot, stride, count)."""

    stream: npt.NDArray[np.int64]
    first: npt.NDArray[np.int64]
    stride: npt.NDArray[np.int64]
    count: npt.NDArray[np.int64]
    nonce: int
    unknown: tuple[int, ...]
    graphs: bool

    @classmethod
    def from_sidecar(cls, side: Sidecar | None) -> StreamTable | None:
        if side is None:
            return None
        extra: dict[str, Any] = side.extra
        session, streams = extra.get("session"), extra.get("streams")
        if not isinstance(session, dict) or not isinstance(streams, list):
            return None
        rows = [
            (int(s["index"]), int(r[0]), int(r[1]), int(r[2]))
            for s in streams
            if isinstance(s, dict)
            for r in s.get("runs", ())
        ]
        arr = np.array(rows, np.int64).reshape(-1, 4)
        return cls(
            stream=arr[:, 0],
            first=arr[:, 1],
            stride=np.maximum(arr[:, 2], 1),
            count=arr[:, 3],
            nonce=int(session.get("nonce", 0)),
            unknown=tuple(int(u.get("stream", NO_STREAM)) for u in extra.get("unknown_windows", ())),
            graphs=bool(extra.get("graph_launches", False)),
        )

    def lookup(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
        """The stream of each slot (-1 when no run holds it).

        Memory is proportional to the slots and the runs, never to the span of
        slot indices (a record of slot 2^32 - 1 beside slot 0 must not cost a
        16 GiB map): per distinct stride ``d``, a run is an interval of the
        lattice ``first mod d + d Z``, found by one ``searchsorted`` over the
        runs sorted by (residue, start). No two runs of a table share a slot,
        so at most one interval of a lattice holds a slot.
        """
        slots = np.asarray(slots, np.int64)
        out = np.full(slots.shape, NO_STREAM, np.int32)
        # Slots are u32; a run starting outside that range (a damaged sidecar) holds none of them.
        usable = (self.first >= 0) & (self.first <= _MAX_SLOT) & (self.count > 0)
        if not slots.size or not usable.any():
            return out
        flat = slots.reshape(-1)
        res = out.reshape(-1)
        in_range = (flat >= 0) & (flat <= _MAX_SLOT)
        stride = np.minimum(self.stride, _MAX_SLOT + 1)
        for d in np.unique(stride[usable]).tolist():
            runs = np.flatnonzero(usable & (stride == d))
            first = self.first[runs]
            # Key: residue above the lattice index, which needs `bits` bits for any u32 slot.
            bits = (_MAX_SLOT // d + 1).bit_length()
            lattice_end = (first % d << bits) | ((1 << bits) - 1)
            key = (first % d << bits) | (first // d)
            order = np.argsort(key, kind="stable")
            key, runs = key[order], runs[order]
            end = np.minimum(key + np.minimum(self.count[runs], 1 << bits) - 1, lattice_end[order])
            probe = (flat % d << bits) | (flat // d)
            at = np.searchsorted(key, probe, side="right") - 1
            hit = (at >= 0) & in_range
            hit[hit] = probe[hit] <= end[at[hit]]
            res[hit] = self.stream[runs[at[hit]]].astype(np.int32)
        return out


class StreamMapper:
    """The stream column of a log read in order, batch by batch.

    ``active``: whether the first records belong to the table's session: true
    when the log holds no SESSION_START of that session (it was overwritten, so
    every record left is from it), else false until that SESSION_START.
    """

    def __init__(self, table: StreamTable | None, *, active: bool) -> None:
        self._table = table
        self._active = table is not None and active
        self._unknown_seen = 0

    def __call__(self, records: Records) -> npt.NDArray[np.int32]:
        n = int(records.shape[0])
        out = np.full(n, NO_STREAM, np.int32)
        t = self._table
        if t is None or not n:
            return out
        status = records["slot_status"]
        starts = np.flatnonzero((status == SlotStatus.META) & (records["opcode"] == MetaOpcode.SESSION_START))
        # Which records lie in the table's session: flips at each SESSION_START (ours on, any other off).
        active = np.empty(n, bool)
        prev, state = 0, self._active
        for s in starts.tolist():
            active[prev:s] = state
            state = int(session_nonce(records["args"][s])) == t.nonce
            active[s] = False
            prev = s + 1
        active[prev:] = state
        self._active = state
        slot = records["slot_idx"]
        wanted = _EVIDENCE if t.graphs else _HOST_OR_LAUNCH
        sel = active & np.isin(status, wanted)
        unknown = sel & (slot == UNKNOWN_SLOT)
        known = np.flatnonzero(sel & ~unknown)
        out[known] = t.lookup(slot[known].astype(np.int64))
        for i in np.flatnonzero(unknown & np.isin(status, _EVIDENCE)).tolist():
            k = self._unknown_seen
            out[i] = t.unknown[k] if k < len(t.unknown) else NO_STREAM
            self._unknown_seen += 1
        return out


def holds_session_start(records: Records, nonce: int) -> bool:
    """Whether ``records`` hold the SESSION_START meta-record with this nonce."""
    m = (records["slot_status"] == SlotStatus.META) & (records["opcode"] == MetaOpcode.SESSION_START)
    return bool((session_nonce(records["args"][m]) == np.uint64(nonce)).any())


#: The sidecar was not read yet: read it (a caller that read it passes it, or None when there is none).
_UNREAD: Any = object()


def _table_of(path: str | os.PathLike[str], sidecar: Sidecar | None = _UNREAD) -> StreamTable | None:
    """The stream table of the log's sidecar; damage is one warning and None (the one sidecar policy)."""
    try:
        return StreamTable.from_sidecar(load_sidecar(path) if sidecar is _UNREAD else sidecar)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError) as e:
        warnings.warn(
            f"{sidecar_path(path)}: the stream table is malformed ({type(e).__name__}: {e}); "
            f"streams not shown",
            VrrlWarning,
            stacklevel=3,
        )
        return None


def streams_of(path: str | os.PathLike[str], records: Records) -> npt.NDArray[np.int32]:
    """The stream column of ``records``: all the live records of the log at ``path``, in order."""
    table = _table_of(path)
    if table is None:
        return np.full(int(records.shape[0]), NO_STREAM, np.int32)
    return StreamMapper(table, active=not holds_session_start(records, table.nonce))(records)


def mapper_for(
    path: str | os.PathLike[str],
    *,
    sidecar: Sidecar | None = _UNREAD,
    progress: Callable[[int], None] | None = None,
) -> StreamMapper | None:
    """A mapper for reading the log at ``path`` in chunks (one pass over it first, for the session start).

    ``sidecar``: the log's sidecar when the caller read it already (None: it has none); ``progress(n)``
    after each chunk of that pass."""
    table = _table_of(path, sidecar)
    if table is None:
        return None
    seen = False
    for c in iter_record_chunks(path, salvage=True):
        if progress is not None:
            progress(int(c.shape[0]))
        if holds_session_start(c, table.nonce):
            seen = True
            break
    return StreamMapper(table, active=not seen)
