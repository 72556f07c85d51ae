"""Reading a log while its writer appends: which copied slots a reader can trust.

A reader copies slots with ``pread`` while the writer may be overwriting
them with ``pwrite``; the kernel orders neither against the other, so a slot
copied during its rewrite mixes two records (a torn record). The format has
no sequence word to detect that, so the writer (:meth:`RingLog.extend`) keeps
three rules instead, none of which changes a byte of a log at rest:

1. While it holds the log, the header's cursor counts every record written
   (``cursor = position``, not ``position % capacity``; the format reads the
   cursor modulo capacity, so any reader still finds the right slot), and
   closing the log stores it reduced again. A reader comparing two cursors
   then knows how far the writer went, even round the ring several times.
2. It writes at most :func:`span_slots` slots past the published cursor
   before publishing the cursor again (records first, cursor after).
3. It holds an open-file-description lock on one byte far past the end of
   the file (:data:`SPAN_LOCK_OFFSET`) while it writes, which readers can
   test without taking it (``F_OFD_GETLK``), so a reader never slows the
   writer down.

A reader takes the cursor ``origin`` before copying; each slot ``s`` then
holds the record at position ``P - capacity`` where ``P = origin + (s - origin)
mod capacity`` is the position whose write would replace it. After copying,
the reader tests the lock and then reads the cursor ``c``: every write that
began before the copy ended is at a position below ``c`` (none in progress) or
below ``c + span_slots`` (lock held). A slot is kept only when its ``P`` is at
or past that bound, so every record returned is whole and is the record that
was there when ``origin`` was read. If the cursor went backwards (the writer
closed and stored it reduced), positions are counted from the reduced value;
the one case this cannot vouch for is a writer that laps the ring, closes,
and a new writer that opens and writes past ``origin`` all within one
chunk's copy (the reduction hides how far the first one went).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from vrrl_gpu.errors import VrrlIoError
from vrrl_gpu.format._layout import HEADER_SIZE, RECORD_MAGIC, RECORD_SIZE

__all__ = [
    "SPAN_LOCK_OFFSET",
    "Origin",
    "lock_spans",
    "overwritten_mask",
    "read_cursor",
    "span_slots",
    "unlock_spans",
    "unpublished_run",
]

#: The byte the writer locks while it writes (far beyond any log's 64 MiB; locks past EOF are allowed).
SPAN_LOCK_OFFSET = 1 << 62
_CURSOR_OFFSET = 24
_MAX_SPAN = 4096
# struct flock on Linux (x86_64 and aarch64): l_type, l_whence, l_start, l_len, l_pid, padding.
_FLOCK = struct.Struct("@hhqqi4x")


class Origin(NamedTuple):
    """The header's cursor as a reader found it before copying, and the log's capacity."""

    cursor: int
    capacity: int


def span_slots(capacity: int) -> int:
    """The most slots the writer writes past the published cursor (and so the reader's margin)."""
    return max(1, min(_MAX_SPAN, capacity // 4))


def _lock_arg(kind: int) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, SPAN_LOCK_OFFSET, 1, 0)


def lock_spans(fd: int) -> bool:
    """Take the span lock without waiting; False when it cannot be had (the reader then keeps a margin)."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _lock_arg(fcntl.F_WRLCK))
    except OSError:
        # Held by someone else (only a hostile reader could) or unsupported here: readers testing the
        # lock see that holder and keep the margin, so writing on is safe for them.
        return False
    return True


def unlock_spans(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _lock_arg(fcntl.F_UNLCK))


def _writer_mid_batch(fd: int) -> bool:
    try:
        got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _lock_arg(fcntl.F_RDLCK))
    except OSError:
        return True  # cannot tell: assume a write is in progress
    return bool(_FLOCK.unpack(got)[0] != fcntl.F_UNLCK)


def read_cursor(fd: int, path: str) -> int:
    """The header's cursor word, read until two reads agree (8 bytes copied under a writer may tear)."""
    prev = -1
    try:
        for _ in range(16):
            raw = os.pread(fd, 8, _CURSOR_OFFSET)
            if len(raw) < 8:
                raise VrrlIoError(f"{path}: the header ends before its cursor ({len(raw) + 24} bytes)")
            cur = int.from_bytes(raw, "little")
            if cur == prev:
                return cur
            prev = cur
    except OSError as e:
        raise VrrlIoError(f"{path}: cannot read the cursor: {e.strerror or e}") from e
    return prev  # the writer moved at every read: the caller drops what this cannot vouch for


def overwritten_mask(
    fd: int, path: str, lo: int, n: int, capacity: int, origin: int
) -> npt.NDArray[np.bool_]:
    """Which of the ``n`` file slots from ``lo``, just copied, the writer may have rewritten since ``origin``.

    Call it right after the copy: it tests the span lock, then reads the cursor.
    """
    margin = span_slots(capacity) if _writer_mid_batch(fd) else 0
    after = read_cursor(fd, path)
    if after < origin:
        # Stored reduced at close (or a new writer started from a reduced cursor): count from there.
        origin = after - (after - origin) % capacity
    reach = after + margin - origin  # slots at walk offsets below this may have been rewritten
    if reach <= 0:
        return np.zeros(n, bool)
    if reach >= capacity:
        return np.ones(n, bool)
    offsets = (np.arange(lo, lo + n, dtype=np.int64) - origin % capacity) % capacity
    return offsets < reach


def unpublished_run(fd: int, capacity: int, cursor: int) -> int:
    """How many whole records a writer left just past the cursor of a ring that had not wrapped: written,
    and then it stopped (a kill) before publishing the cursor after them (rule 2: records first).

    The pattern is unambiguous: the slot at the cursor holds a record, the ring's last slot is empty
    (a ring that wrapped has every slot written, and a rolled-back batch empties slots from the cursor
    on), and the run of records from the cursor ends within one span. Those records are the newest of
    the log: a writer that opens it publishes them (readers in the format's order would take them for
    the oldest). 0 when the pattern is not there.
    """
    slot = cursor % capacity
    if slot >= capacity - 1:
        return 0
    width = min(span_slots(capacity), capacity - 1 - slot)
    try:
        last = os.pread(fd, 4, HEADER_SIZE + (capacity - 1) * RECORD_SIZE)
        head = os.pread(fd, (width + 1) * RECORD_SIZE, HEADER_SIZE + slot * RECORD_SIZE)
    except OSError:
        return 0
    if len(last) < 4 or any(last) or len(head) < RECORD_SIZE:
        return 0
    magic = np.frombuffer(head[: len(head) - len(head) % RECORD_SIZE], "<u4")[:: RECORD_SIZE // 4]
    live = magic == RECORD_MAGIC
    if not live[0]:
        return 0
    zero = np.flatnonzero(magic == 0)
    if not zero.size or not live[: zero[0]].all():
        return 0  # no end within a span, or something else than records before it: not this pattern
    return int(zero[0])
