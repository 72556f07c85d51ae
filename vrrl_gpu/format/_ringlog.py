"""The VRRL v1 ring file: create or open, one exclusive writer, batched appends, strict and salvage reads.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "run.vrrl")
>>> with RingLog.open(path, capacity=8) as log:
...     log.append(Record(timestamp_ns=1, slot_idx=0, tenant_id=0, opcode=3, args=(0, 0, 0, 0), epoch=0))
...     len(log.records())
1
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from vrrl_gpu.errors import (
    CapacityOverflowError,
    CorruptRecordError,
    HeaderMismatchError,
    LogLockedError,
    RecordValueError,
    TruncatedLogError,
    VrrlIoError,
    ZeroCapacityError,
)
from vrrl_gpu.format._layout import (
    FILE_MAGIC,
    FORMAT_VERSION,
    HEADER_DTYPE,
    HEADER_SIZE,
    MAX_CAPACITY,
    RECORD_DTYPE,
    RECORD_MAGIC,
    RECORD_SIZE,
    Record,
    as_record_array,
    check_capacity,
    file_size_for,
)
from vrrl_gpu.format._live import (
    Origin,
    lock_spans,
    overwritten_mask,
    span_slots,
    unlock_spans,
    unpublished_run,
)
from vrrl_gpu.format._safeio import check_writable_target, open_regular

__all__ = ["Header", "RingLog", "ScanResult", "SlotRead", "read_header", "read_live_slots"]

# Reads go through a bounded scratch window so that reading a log never holds
# much more than the records it returns (a 64 MiB log must not cost 128 MiB).
_CHUNK_RECORDS = 1 << 16
_CURSOR_OFFSET = 24
_WORDS_PER_RECORD = RECORD_SIZE // 4
# Pages are this size or a multiple, aligned: a write inside one 4 KiB block is copied whole or not at all.
_PAGE = 4096
# A live cursor counts every record (see _live.py); stored reduced again well before u64 could overflow.
_CURSOR_LIMIT = 1 << 62


@dataclass(frozen=True)
class Header:
    """The 32-byte header, decoded. ``file_size`` is the size of the file it came from."""

    capacity: int
    cursor: int
    flags: int
    file_size: int

    @property
    def expected_size(self) -> int:
        return file_size_for(self.capacity)

    @property
    def start_slot(self) -> int:
        """The slot publish order starts at (the oldest once wrapped)."""
        return self.cursor % self.capacity


@dataclass(frozen=True)
class ScanResult:
    """What a read found: the records in publish order, and the damage a salvage read skipped.

    ``corrupt_slots`` are file slot indices whose magic was neither 0 nor
    0xDEADBEEF; ``missing_slots`` counts slots beyond the end of a short file;
    ``wrapped`` is True when the slot at the cursor holds a record (the ring
    has come round and the oldest records were overwritten); ``overwritten``
    counts slots left out because a live writer replaced (or may have been
    replacing) them while they were read.
    """

    records: npt.NDArray[np.void]
    header: Header
    corrupt_slots: tuple[int, ...] = field(default=())
    missing_slots: int = 0
    wrapped: bool = False
    overwritten: int = 0

    @property
    def is_sound(self) -> bool:
        return not self.corrupt_slots and not self.missing_slots


def _decode_header(raw: bytes, file_size: int, path: str) -> Header:
    if len(raw) < HEADER_SIZE:
        raise TruncatedLogError(
            f"{path}: expected a {HEADER_SIZE}-byte VRRL header, found a file of {len(raw)} bytes",
            expected=HEADER_SIZE,
            found=len(raw),
        )
    h = np.frombuffer(raw[:HEADER_SIZE], dtype=HEADER_DTYPE)[0]
    magic = bytes(h["magic"])
    if magic != FILE_MAGIC:
        raise HeaderMismatchError(
            f"{path}: expected header magic {FILE_MAGIC!r}, got {magic!r}; this is not a VRRL v1 log"
        )
    version = int(h["version"])
    if version != FORMAT_VERSION:
        raise HeaderMismatchError(
            f"{path}: expected format version {FORMAT_VERSION}, got {version}; "
            f"this reader only understands VRRL v1"
        )
    capacity = int(h["capacity"])
    if capacity == 0:
        raise ZeroCapacityError(
            f"{path}: header says capacity 0; a VRRL log has 1 ..= {MAX_CAPACITY:,} slots"
        )
    if capacity > MAX_CAPACITY:
        raise CapacityOverflowError(
            f"{path}: header says capacity {capacity:,}; a VRRL log has 1 ..= {MAX_CAPACITY:,} slots"
        )
    return Header(capacity=capacity, cursor=int(h["cursor"]), flags=int(h["flags"]), file_size=file_size)


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and check the header of the log at ``path`` without reading records."""
    p = os.fspath(path)
    fd = open_regular(p, os.O_RDONLY)
    try:
        return _read_header_fd(fd, p)
    finally:
        os.close(fd)


class RingLog:
    """A VRRL v1 ring file. Use :meth:`open`; close it (or use ``with``).

    A writable log holds an exclusive ``flock`` on the file for its lifetime;
    read-only logs take no lock and see what writers have published so far.
    """

    def __init__(self, path: str, fd: int, header: Header, *, writable: bool) -> None:
        self._path = path
        self._fd: int | None = fd
        self._capacity = header.capacity
        # A writer continues the count a crashed writer left (see _live.py); a reader keeps what it found.
        self._cursor = header.cursor
        self._writable = writable

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        capacity: int | None = None,
        *,
        readonly: bool = False,
    ) -> RingLog:
        """Open the log at ``path``, creating it (mode 0600, full length) when it does not exist.

        An existing file keeps its header's capacity; ``capacity`` is then
        ignored, as in the format. ``readonly=True`` never creates, never
        writes and takes no lock.
        """
        p = os.fspath(path)
        if readonly:
            return cls._open_existing(p, writable=False)
        if capacity is not None:
            capacity = check_capacity(capacity)
        try:
            return cls._open_existing(p, writable=True, capacity=capacity)
        except VrrlIoError as e:
            if not isinstance(e.__cause__, FileNotFoundError):
                raise
        if capacity is None:
            raise RecordValueError(
                f"{p} does not exist; pass capacity=N (1 ..= {MAX_CAPACITY:,}) to create it"
            )
        return cls._create(p, capacity)

    @classmethod
    def create(cls, path: str | os.PathLike[str], capacity: int) -> RingLog:
        """Create a new log; refuses (``FileExistsError`` as a :class:`VrrlIoError`) if ``path`` exists."""
        return cls._create(os.fspath(path), check_capacity(capacity))

    @classmethod
    def _create(cls, p: str, capacity: int) -> RingLog:
        # Built under a temporary name and linked into place, so that a crash at any moment leaves
        # either no log or a whole one, never a file of zeros that no reader accepts.
        p = check_writable_target(p, "the log")
        d = os.path.dirname(p) or "."
        _remove_stale_temps(d, os.path.basename(p))
        tmp = os.path.join(d, f".{os.path.basename(p)}.{secrets.token_hex(6)}.tmp")
        try:
            fd = open_regular(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, what="the log")
        except VrrlIoError as e:
            raise VrrlIoError(f"{p}: cannot create the log: {e.__cause__ or e}") from e.__cause__
        try:
            _lock(fd, p)
            _initialise(fd, p, capacity)
            try:
                os.link(tmp, p)
            except FileExistsError:
                # Lost a race with another creator: open theirs, like any existing log.
                os.close(fd)
                fd = -1
                return cls._open_existing(p, writable=True)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise VrrlIoError(f"{p}: cannot create the log: {e.strerror or e}") from e
                # No hard links here (vfat, some FUSE): fall back to a rename that refuses to replace.
                if os.path.lexists(p):
                    os.close(fd)
                    fd = -1
                    return cls._open_existing(p, writable=True)
                os.rename(tmp, p)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return cls(p, fd, Header(capacity, 0, 0, file_size_for(capacity)), writable=True)

    @classmethod
    def _open_existing(cls, p: str, *, writable: bool, capacity: int | None = None) -> RingLog:
        fd = open_regular(p, os.O_RDWR if writable else os.O_RDONLY, what="the log")
        try:
            if writable:
                _lock(fd, p)
                if _never_initialised(fd):
                    _initialise_abandoned(fd, p, capacity)
            header = _read_header_fd(fd, p)
            if writable:
                _check_full_length(header, p)
                left = unpublished_run(fd, header.capacity, header.cursor)
                if left:
                    # A writer killed between writing records and publishing the cursor after them: they
                    # are whole and the newest; publish them, so that they read as the newest, not oldest.
                    header = replace(header, cursor=header.cursor + left)
                    _pwrite_all(fd, header.cursor.to_bytes(8, "little"), _CURSOR_OFFSET, p)
        except BaseException:
            os.close(fd)
            raise
        return cls(p, fd, header, writable=writable)

    # --------------------------------------------------------------- properties

    @property
    def path(self) -> str:
        return self._path

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def cursor(self) -> int:
        """The next slot to write. For a read-only log, the header's word as found at the last read
        (a live writer's cursor counts every record; it is the slot modulo the capacity)."""
        return self._cursor % self._capacity if self._writable else self._cursor

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def closed(self) -> bool:
        return self._fd is None

    def fileno(self) -> int:
        return self._require_open()

    # ------------------------------------------------------------------ writing

    def append(self, record: Record) -> None:
        """Append one record (a batch of one: one write for the slot, one for the cursor)."""
        if not isinstance(record, Record):
            raise RecordValueError(
                f"append() takes a Record, got {type(record).__name__}; use extend() for arrays"
            )
        self.extend((record,))

    def extend(self, records: npt.ArrayLike | Iterable[Record]) -> int:
        """Append records in order; returns how many.

        Slots are written in spans of at most :func:`span_slots` with the cursor
        published after each (see ``_live.py``: what lets readers of a live log
        drop the slots being rewritten). A span that crosses a page is written
        twice, first with its magic words 0 and then whole, so that a write cut
        short (a kill, a full disk) leaves no half-written record that a reader
        takes as live.
        The ``magic`` word of every record written is 0xDEADBEEF whatever the
        input held. A batch that fails is unpublished whole, the cursor put back, and raises.
        """
        fd = self._require_writable()
        arr = as_record_array(records)
        n = int(arr.shape[0])
        if n == 0:
            return 0
        raw = arr.view(np.uint8).reshape(-1)
        if not bool((raw.view("<u4")[::_WORDS_PER_RECORD] == RECORD_MAGIC).all()):
            # A flat byte copy: copying a structured array field by field is several times slower.
            raw = raw.copy()
            raw.view("<u4")[::_WORDS_PER_RECORD] = RECORD_MAGIC
        arr = raw.view(RECORD_DTYPE)
        cap, cur = self._capacity, self._cursor
        if cur + n >= _CURSOR_LIMIT:
            cur %= cap
        # A batch longer than the ring is written whole all the same: skipping to its last `cap` records
        # would publish a cursor past slots that still hold records a lap older than readers expect.
        span = span_slots(cap)
        locked = lock_spans(fd)
        try:
            for i in range(0, n, span):
                piece = arr[i : i + span]
                pos = cur + i
                self._write_span(fd, pos % cap, piece)
                self._cursor = pos + piece.shape[0]
                self._write_cursor(fd, self._cursor)
        except VrrlIoError:
            if self._cursor != cur:
                # Spans of this batch were published before one failed: take them back, so that a batch
                # lands whole or not at all (the drain counts what it could not write by batches).
                self._unpublish(fd, cur % cap, min(self._cursor - cur, cap))
                self._cursor = cur
                with contextlib.suppress(VrrlIoError):
                    self._write_cursor(fd, cur)
            raise
        finally:
            if locked:
                unlock_spans(fd)
        return n

    def _write_span(self, fd: int, start: int, piece: npt.NDArray[np.void]) -> None:
        cap = self._capacity
        first = min(piece.shape[0], cap - start)
        parts = [(piece[:first], HEADER_SIZE + RECORD_SIZE * start)]
        if first < piece.shape[0]:
            parts.append((piece[first:], HEADER_SIZE))
        try:
            for data, offset in parts:
                if offset // _PAGE != (offset + data.nbytes - 1) // _PAGE:
                    # The kernel copies a write page by page and may stop between pages (a kill, a full
                    # disk): hidden first, a record cut in two is never live. Within one page it cannot.
                    hidden = data.view(np.uint8).reshape(-1).copy()
                    hidden.view("<u4")[::_WORDS_PER_RECORD] = 0
                    _pwrite_all(fd, hidden, offset, self._path)
                _pwrite_all(fd, data, offset, self._path)
        except VrrlIoError:
            # A short write (disk full, quota) may have left part of a record in slots past the cursor,
            # where readers would take it for the oldest record: unpublish every slot of the span.
            self._unpublish(fd, start, piece.shape[0])
            raise

    def _write_cursor(self, fd: int, value: int) -> None:
        _pwrite_all(fd, value.to_bytes(8, "little"), _CURSOR_OFFSET, self._path)

    def _unpublish(self, fd: int, start: int, count: int) -> None:
        """Zero the magic word of ``count`` slots from ``start`` (in place: a full disk still takes it)."""
        cap = self._capacity
        zero = bytes(4)
        for i in range(min(count, cap)):
            with contextlib.suppress(OSError):
                os.pwrite(fd, zero, HEADER_SIZE + RECORD_SIZE * ((start + i) % cap))

    def sync(self) -> None:
        """``fsync`` the file (records and cursor)."""
        fd = self._require_writable()
        try:
            os.fsync(fd)
        except OSError as e:
            raise VrrlIoError(f"{self._path}: fsync failed: {e.strerror or e}") from e

    # ------------------------------------------------------------------ reading

    def scan(self, *, salvage: bool = False) -> ScanResult:
        """Read every live record in publish order.

        Strict (the default) refuses a corrupt record like the original reader
        (:class:`CorruptRecordError`) and a short file (:class:`TruncatedLogError`).
        ``salvage=True`` skips and counts both instead.
        """
        fd = self._require_open()
        header = _read_header_fd(fd, self._path)
        if not self._writable:
            self._cursor = header.cursor
        cap = header.capacity
        present = max(0, min(cap, (header.file_size - HEADER_SIZE) // RECORD_SIZE))
        if not salvage:
            _check_full_length(header, self._path)
        start = header.start_slot
        # A reader of a live log leaves out what the writer rewrote meanwhile; the writer itself need not.
        origin = None if self._writable else Origin(header.cursor, cap)
        out = np.empty(present, RECORD_DTYPE)
        n_out = 0
        corrupt: list[int] = []
        wrapped = False
        overwritten = 0
        # Publish order: slots start..cap-1, then 0..start-1; slots past the end of a short file are absent.
        for lo, hi in ((start, cap), (0, start)):
            hi = min(hi, present)
            s = lo
            while s < hi:
                e = min(hi, s + _CHUNK_RECORDS)
                got = read_live_slots(
                    fd, self._path, s, out[n_out : n_out + (e - s)], salvage=salvage, origin=origin
                )
                if s == start and lo == start:
                    wrapped = got.first_live
                corrupt += got.corrupt
                n_out += got.kept
                overwritten += got.overwritten
                s = e
        if n_out < present:
            # Shrinks in place (realloc): pages never touched were never resident.
            out.resize((n_out,), refcheck=False)
        return ScanResult(
            records=out,
            header=header,
            corrupt_slots=tuple(sorted(corrupt)),
            missing_slots=cap - present,
            wrapped=wrapped or header.cursor >= cap,
            overwritten=overwritten,
        )

    def records(self, *, salvage: bool = False) -> npt.NDArray[np.void]:
        """The live records in publish order, as a ``RECORD_DTYPE`` array (see :meth:`scan`)."""
        return self.scan(salvage=salvage).records

    def __iter__(self) -> Iterator[Record]:
        for row in self.records():
            yield Record.from_row(row)

    def __len__(self) -> int:
        return int(self.records().shape[0])

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Store the cursor reduced (as the format writes it), release the lock and the file. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._writable and self._cursor >= self._capacity:
                self._cursor %= self._capacity
                locked = lock_spans(fd)
                try:
                    self._write_cursor(fd, self._cursor)
                finally:
                    if locked:
                        unlock_spans(fd)
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> RingLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        mode = "closed" if self._fd is None else ("rw" if self._writable else "ro")
        return f"RingLog({self._path!r}, capacity={self._capacity}, cursor={self._cursor}, {mode})"

    def _require_open(self) -> int:
        if self._fd is None:
            raise VrrlIoError(f"{self._path}: the log is closed")
        return self._fd

    def _require_writable(self) -> int:
        fd = self._require_open()
        if not self._writable:
            raise VrrlIoError(
                f"{self._path}: the log was opened read-only; open it without readonly=True to write"
            )
        return fd


# A creator killed before it linked its temporary file into place leaves it behind; one this old, whose
# lock nobody holds, is an abandoned one (a live creator holds the lock from the moment it made it).
_STALE_TEMP_S = 60.0


def _remove_stale_temps(d: str, name: str) -> None:
    """Remove our own abandoned ``.NAME.<12 hex>.tmp`` files in ``d`` (best effort)."""
    prefix = f".{name}."
    try:
        entries = os.listdir(d)
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".tmp") and len(entry) == len(prefix) + 16):
            continue
        full = os.path.join(d, entry)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or now - st.st_mtime < _STALE_TEMP_S:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its creator is still at work
            with contextlib.suppress(OSError):
                os.unlink(full)
        finally:
            os.close(fd)


def _lock(fd: int, path: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise LogLockedError(
                f"{path}: another writer holds this log's lock; close it first, "
                f"or open with readonly=True to read alongside it"
            ) from None
        raise VrrlIoError(f"{path}: cannot lock the log: {e.strerror or e}") from e


def _never_initialised(fd: int) -> bool:
    """True for an empty file or one whose header is all zeros (no writer ever finished creating it)."""
    try:
        raw = os.pread(fd, HEADER_SIZE, 0)
    except OSError:
        return False
    return not raw.strip(b"\0")


def _initialise_abandoned(fd: int, path: str, capacity: int | None) -> None:
    """Initialise a file whose creator died before its header (logs made before creation went through a
    temporary name): the capacity its size gives, else ``capacity``. The caller holds the lock."""
    size = os.fstat(fd).st_size
    cap = (size - HEADER_SIZE) // RECORD_SIZE if size > HEADER_SIZE else 0
    if cap < 1 or cap > MAX_CAPACITY or file_size_for(cap) != size:
        cap = check_capacity(capacity) if capacity is not None else 0
    if cap < 1:
        raise HeaderMismatchError(
            f"{path}: the file holds no header (a writer died while creating it) and its size "
            f"does not give a capacity; pass capacity=N to initialise it"
        )
    _initialise(fd, path, cap)


def _initialise(fd: int, path: str, capacity: int) -> None:
    """Give the file its full length with its blocks reserved, then the header (cursor 0)."""
    size = file_size_for(capacity)
    try:
        os.ftruncate(fd, size)
        # Reserved now, a full disk is an error at creation and never a short write in the middle of a
        # record later (on file systems without fallocate the writes below still catch it).
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
    except OSError as e:
        raise VrrlIoError(
            f"{path}: cannot reserve {size:,} bytes for the log ({e.strerror or e}); free space in "
            f"{os.path.dirname(path) or '.'} or use a smaller capacity"
        ) from e
    header = np.zeros(1, HEADER_DTYPE)
    header["magic"] = FILE_MAGIC
    header["version"] = FORMAT_VERSION
    header["capacity"] = capacity
    _pwrite_all(fd, header.tobytes(), 0, path)


def _check_full_length(header: Header, path: str) -> None:
    if header.file_size < header.expected_size:
        raise TruncatedLogError(
            f"{path}: header says {header.capacity} slots, so expected {header.expected_size} bytes, "
            f"found {header.file_size}; read it with salvage=True (vrrl dump --salvage)",
            expected=header.expected_size,
            found=header.file_size,
        )


def _read_header_fd(fd: int, path: str) -> Header:
    try:
        raw = os.pread(fd, HEADER_SIZE, 0)
        size = os.fstat(fd).st_size
    except OSError as e:
        raise VrrlIoError(f"{path}: cannot read the header: {e.strerror or e}") from e
    return _decode_header(raw, size, path)


def _pwrite_all(fd: int, data: bytes | npt.NDArray[np.void], offset: int, path: str) -> None:
    view = (data.data if isinstance(data, np.ndarray) else memoryview(data)).cast("B")
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n
    except OSError as e:
        raise VrrlIoError(f"{path}: write at byte {offset} failed: {e.strerror or e}") from e


class SlotRead(NamedTuple):
    """What :func:`read_live_slots` found: live records kept, corrupt slots skipped, first slot live,
    slots left out because a writer rewrote them during the read."""

    kept: int
    corrupt: list[int]
    first_live: bool
    overwritten: int = 0


def read_live_slots(
    fd: int,
    path: str,
    lo: int,
    out: npt.NDArray[np.void],
    *,
    salvage: bool,
    origin: Origin | None = None,
) -> SlotRead:
    """Read file slots ``lo, lo + 1, ...`` into ``out``, then move the live records to its front.

    The one strict/salvage record reader under :meth:`RingLog.scan` and the
    chunked readers. Strict: a magic other than 0 or ``0xDEADBEEF`` raises
    :class:`CorruptRecordError`, a file that ends early :class:`TruncatedLogError`.
    Salvage skips both and lists the corrupt slots. ``origin``, the header's
    cursor as read before this read began, makes it a reader of a live log:
    slots a writer rewrote since (or was rewriting) are left out (``_live.py``).
    """
    view = out.data.cast("B")
    offset = HEADER_SIZE + RECORD_SIZE * lo
    got = 0
    try:
        while got < len(view):
            n = os.preadv(fd, [view[got:]], offset + got)
            if n == 0:
                break
            got += n
    except OSError as e:
        raise VrrlIoError(f"{path}: read at byte {offset + got} failed: {e.strerror or e}") from e
    n = got // RECORD_SIZE
    if n < out.shape[0] and not salvage:
        raise TruncatedLogError(
            f"{path}: expected slots {lo}..{lo + out.shape[0] - 1}, the file ends at slot {lo + n}; "
            f"read it with --salvage (salvage=True) to skip the missing slots",
            expected=offset + RECORD_SIZE * out.shape[0],
            found=offset + RECORD_SIZE * n,
        )
    window = out[:n]
    magic = window["magic"]
    first_live = bool(n) and int(magic[0]) == RECORD_MAGIC
    dropped = 0
    if origin is not None and n:
        # Before the magic checks: a magic word copied mid-rewrite may read as neither 0 nor 0xDEADBEEF.
        gone = overwritten_mask(fd, path, lo, n, origin.capacity, origin.cursor) & (magic != 0)
        dropped = int(np.count_nonzero(gone))
        if dropped:
            magic[gone] = 0
    live = magic == RECORD_MAGIC
    if bool(live.all()):
        return SlotRead(n, [], first_live, dropped)
    bad = np.flatnonzero((magic != 0) & ~live)
    if bad.size and not salvage:
        slot = lo + int(bad[0])
        raise CorruptRecordError(
            f"{path}: slot {slot} has record magic {int(magic[bad[0]]):#010x}, expected 0 or "
            f"{RECORD_MAGIC:#010x}; read it with --salvage (salvage=True) to skip damaged slots",
            slot=slot,
            magic=int(magic[bad[0]]),
        )
    kept = window[live]
    out[: kept.shape[0]] = kept
    return SlotRead(int(kept.shape[0]), [lo + int(i) for i in bad], first_live, dropped)
