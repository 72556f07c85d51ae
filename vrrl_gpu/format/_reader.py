"""Bounded chunked reads of a log's live range, strict or salvage, without holding the whole log."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vrrl_gpu.errors import RecordValueError, TruncatedLogError
from vrrl_gpu.format._layout import RECORD_DTYPE, RECORD_SIZE
from vrrl_gpu.format._live import Origin
from vrrl_gpu.format._ringlog import read_header, read_live_slots
from vrrl_gpu.format._safeio import open_regular

__all__ = ["Records", "SalvageTally", "iter_record_chunks", "count_records"]

#: An array of records of ``RECORD_DTYPE`` (what every reader returns).
Records = npt.NDArray[np.void]


# ------------------------------------------------------------ chunked reads


@dataclass
class SalvageTally:
    """What a chunked read found beside the records: the corrupt slots and the slots missing at the end of
    a short file (a salvage read skips both), and whether the ring had wrapped (the oldest slot is live)."""

    corrupt_slots: list[int] = field(default_factory=list)
    missing_slots: int = 0
    wrapped: bool = False


def _read_slots(
    fd: int,
    path: str,
    lo: int,
    hi: int,
    *,
    salvage: bool,
    origin: Origin | None = None,
    tally: SalvageTally | None = None,
    first: bool = False,
) -> Records:
    """The live records of file slots ``lo <= s < hi`` (:func:`read_live_slots`; strict: damage raises;
    ``origin``: leave out what a live writer rewrote since that cursor)."""
    buf = np.empty(hi - lo, RECORD_DTYPE)
    got = read_live_slots(fd, path, lo, buf, salvage=salvage, origin=origin)
    kept = got.kept
    if tally is not None:
        tally.corrupt_slots.extend(got.corrupt)
        if first:
            tally.wrapped = got.first_live
    # A sparse chunk is copied out, so a held chunk costs its records, not its window.
    return buf if kept == buf.shape[0] else buf[:kept].copy()


def _open_ro(path: str) -> int:
    return open_regular(path, os.O_RDONLY, what="the log")


def iter_record_chunks(
    path: str | os.PathLike[str],
    *,
    chunk_records: int = 1 << 16,
    salvage: bool = False,
    tally: SalvageTally | None = None,
) -> Iterator[Records]:
    """The live records of a log in publish order, ``chunk_records`` slots at a time.

    The file is opened for each chunk and closed again, so that a merge of
    thousands of logs holds no file descriptors between reads. Strict reads
    refuse a corrupt slot or a short file like :meth:`RingLog.scan`; salvage
    reads count what they skip in ``tally``. Slots a live writer rewrites while
    they are read are left out (``_live.py``), so every record yielded is one
    the writer wrote, whole.
    """
    p = os.fspath(path)
    if chunk_records < 1:
        raise RecordValueError(f"chunk_records must be at least 1, got {chunk_records}")
    h = read_header(p)
    cap, start = h.capacity, h.start_slot
    origin = Origin(h.cursor, cap)
    if h.file_size < h.expected_size and not salvage:
        raise TruncatedLogError(
            f"{p}: header says {cap} slots, so expected {h.expected_size} bytes, found {h.file_size}; "
            f"read it with --salvage",
            expected=h.expected_size,
            found=h.file_size,
        )
    if tally is not None:
        tally.missing_slots += max(0, (h.expected_size - h.file_size) // RECORD_SIZE)
    for lo, hi in ((start, cap), (0, start)):
        s = lo
        while s < hi:
            e = min(hi, s + chunk_records)
            fd = _open_ro(p)
            try:
                chunk = _read_slots(
                    fd, p, s, e, salvage=salvage, origin=origin, tally=tally, first=s == start and lo == start
                )
            finally:
                os.close(fd)
            if chunk.size:
                yield chunk
            s = e


def count_records(path: str | os.PathLike[str], *, salvage: bool = False) -> int:
    """How many live records the log holds (a streaming pass over its slots)."""
    return sum(int(c.shape[0]) for c in iter_record_chunks(path, salvage=salvage))
