"""``LogFollower``: follow a log that a recorder is still writing (``vrrl tail -f``)."""

from __future__ import annotations

import os
import time

import numpy as np

from vrrl_gpu.errors import RecordValueError, TruncatedLogError, VrrlIoError
from vrrl_gpu.format._layout import (
    RECORD_DTYPE,
)
from vrrl_gpu.format._live import Origin
from vrrl_gpu.format._reader import Records, _open_ro, _read_slots
from vrrl_gpu.format._ringlog import read_header

__all__ = ["LogFollower"]


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
        h = read_header(self._path)
        if h.file_size < h.expected_size:
            raise TruncatedLogError(
                f"{self._path}: header says {h.capacity} slots, so expected {h.expected_size} bytes, found "
                f"{h.file_size}; the log is damaged (vrrl verify says where)",
                expected=h.expected_size,
                found=h.file_size,
            )
        self._capacity = h.capacity
        self._identity = _identity(self._path)
        #: Set by :meth:`poll` when the path was found to name another file; the caller may reset it.
        self.replaced = False

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
            recs = self._read_range((cur - n_read) % cap, n_read, Origin(h1.cursor, cap))
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
        ident = _identity(self._path)
        if ident != self._identity:
            # Another file now has this name (a new run, a copy moved into place): its records are all
            # new to us, whatever its cursor says. Follow it from its oldest record.
            self._identity = ident
            self.replaced = True
            h = read_header(self._path)
            self._capacity = h.capacity
            return self.last(h.capacity)
        h = read_header(self._path)
        cap = h.capacity
        cur = h.cursor % cap
        if h.file_size < h.expected_size:
            raise TruncatedLogError(
                f"{self._path}: truncated while following (header says {h.expected_size} bytes, the file "
                f"has {h.file_size})",
                expected=h.expected_size,
                found=h.file_size,
            )
        if cap != self._capacity:
            raise VrrlIoError(
                f"{self._path}: the capacity changed from {self._capacity} to {cap} while following; "
                f"the log was rewritten in place, start again"
            )
        if cur == self._cursor:
            return np.empty(0, RECORD_DTYPE)
        n = (cur - self._cursor) % cap
        recs = self._read_range(self._cursor, n, Origin(h.cursor, cap))
        self._cursor = cur
        return recs

    def _read_range(self, lo: int, n: int, origin: Origin) -> Records:
        """The live records of the ``n`` slots from ``lo`` on, wrapping at the capacity, less any the
        writer rewrote since ``origin``."""
        cap = origin.capacity
        if n == 0:
            return np.empty(0, RECORD_DTYPE)
        fd = _open_ro(self._path)
        try:
            # Strict: a writer only ever leaves magic 0 or 0xDEADBEEF, so any other magic is damage,
            # refused as every other reader refuses it.
            if lo + n <= cap:
                return _read_slots(fd, self._path, lo, lo + n, salvage=False, origin=origin)
            return np.concatenate(
                [
                    _read_slots(fd, self._path, lo, cap, salvage=False, origin=origin),
                    _read_slots(fd, self._path, 0, lo + n - cap, salvage=False, origin=origin),
                ]
            )
        finally:
            os.close(fd)


def _identity(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise VrrlIoError(f"{path}: cannot follow the log: {e.strerror or e}") from e
    return st.st_dev, st.st_ino
