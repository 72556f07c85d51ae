"""Staging rings in ``/dev/shm`` segments that outlive the process, and the liveness of their owners."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from vrrl_gpu.capture._staging import (
    CONTROL_DTYPE,
    CONTROL_SIZE,
    DEFAULT_SHM_DIR,
    MAX_SLOTS,
    STAGING_MAGIC,
    STAGING_VERSION,
    StagingRing,
)
from vrrl_gpu.errors import RecoverError, StagingError, StagingSpaceError, VrrlIoError
from vrrl_gpu.format._safeio import kind_of

__all__ = [
    "ShmSegment",
    "SegmentInfo",
    "SkippedSegment",
    "AbandonedSegment",
    "check_segment_stat",
    "list_segments",
    "pid_alive",
    "owner_alive",
]


# ------------------------------------------------------------ shared memory


def _default_name() -> str:
    return f"vrrl-{os.getuid()}-{os.getpid()}-{secrets.token_hex(8)}.stg"


#: The largest segment a reader maps: the layout of the most slots a ring may have.
MAX_SEGMENT_BYTES = CONTROL_SIZE + (8 + 64) * MAX_SLOTS + 4096

_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


class SkippedSegment(StagingError):
    """A ``vrrl-*.stg`` entry that is not a staging segment one may read.

    ``suspicious`` is True for what no vrrl process makes (a FIFO, a directory,
    a symlink, a segment of ours with a loose mode or an implausible size), and
    False for another user's segment, which is normal on a shared machine.
    """

    def __init__(self, message: str, *, suspicious: bool) -> None:
        super().__init__(message)
        self.suspicious = suspicious


class AbandonedSegment(SkippedSegment):
    """One of our own segments whose creator died before writing its control block (killed between the
    ``O_EXCL`` create and the control block): nothing in it was ever recorded, so it may be removed."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: its creator died before writing the control block", suspicious=False)
        self.path = path


_OUR_NAME = re.compile(r"vrrl-(\d+)-(\d+)-[0-9a-f]{16}\.stg")


def _unwritten_creation(path: str, st: os.stat_result, raw: bytes | None) -> SkippedSegment | None:
    """A segment ours by file owner, mode and name whose control block was never written (shorter than one,
    or its magic still zero): :class:`AbandonedSegment` when its creator (the pid in the name) is gone, a
    quiet skip while the creator lives (it is between its ``O_EXCL`` create and the control block, e.g. a
    recorder starting in another process right now). None for anything else."""
    m = _OUR_NAME.fullmatch(os.path.basename(path))
    if m is None or int(m.group(1)) != os.getuid() or st.st_uid != os.getuid():
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
        return None
    if st.st_size >= CONTROL_SIZE and (raw is None or any(raw[:8])):
        return None
    if pid_alive(int(m.group(2))):
        return SkippedSegment(f"{path}: being created by process {m.group(2)}", suspicious=False)
    return AbandonedSegment(path)


def check_segment_stat(path: str, st: os.stat_result, *, require_mine: bool = True) -> None:
    """Refuse (:class:`SkippedSegment`) what cannot be one of our segments, before reading a byte of it."""
    if not stat.S_ISREG(st.st_mode):
        raise SkippedSegment(f"{path}: is {kind_of(st.st_mode)}, not a staging segment", suspicious=True)
    me = os.getuid()
    if st.st_uid != me:
        if not require_mine:
            return  # listed as another user's (SegmentInfo.mine is False) if we may read it at all
        raise SkippedSegment(
            f"{path}: belongs to uid {st.st_uid}, you are uid {me}; only the owner of a staging segment "
            f"may recover it (run vrrl recover as that user)",
            suspicious=False,
        )
    if st.st_mode & 0o022:
        # Ours are 0600: one that others may write could hold anything they put there.
        raise SkippedSegment(
            f"{path}: mode {stat.S_IMODE(st.st_mode):#o} lets others write it, but vrrl makes its segments "
            f"0600; not read",
            suspicious=True,
        )
    if st.st_size < CONTROL_SIZE:
        unwritten = _unwritten_creation(path, st, None)
        if unwritten is not None:
            raise unwritten
        raise SkippedSegment(
            f"{path}: expected at least {CONTROL_SIZE} bytes (a control block), found {st.st_size}",
            suspicious=True,
        )
    if st.st_size > MAX_SEGMENT_BYTES:
        raise SkippedSegment(
            f"{path}: {st.st_size:,} bytes is more than any staging segment can be "
            f"({MAX_SEGMENT_BYTES:,}); not read",
            suspicious=True,
        )


class ShmSegment:
    """A staging segment: a file in ``/dev/shm`` mapped ``MAP_SHARED``, so records outlive the process.

    Use :meth:`create` (new, mode 0600, space reserved with ``posix_fallocate``)
    or :meth:`open` (an existing one, for recovery; the caller must own it).
    """

    def __init__(self, path: str, mm: mmap.mmap, nbytes: int) -> None:
        self._path = path
        self._mmap: mmap.mmap | None = mm
        self._nbytes = nbytes
        self._array: npt.NDArray[np.uint8] | None = np.frombuffer(mm, np.uint8, count=nbytes)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str] | None,
        nbytes: int,
        *,
        directory: str | os.PathLike[str] = DEFAULT_SHM_DIR,
    ) -> ShmSegment:
        """Create a segment of ``nbytes``; ``path`` None: ``<directory>/vrrl-<uid>-<pid>-<random>.stg``."""
        if nbytes <= 0:
            raise StagingError(f"a segment needs a positive size, got {nbytes}")
        for attempt in range(8):
            p = os.path.join(os.fspath(directory), _default_name()) if path is None else os.fspath(path)
            try:
                fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
                break
            except FileExistsError as e:
                if path is not None or attempt == 7:
                    raise VrrlIoError(f"{p}: cannot create the staging segment: {e.strerror or e}") from e
                # Someone planted our next name: draw another (the name is 64 random bits).
            except OSError as e:
                raise VrrlIoError(f"{p}: cannot create the staging segment: {e.strerror or e}") from e
        try:
            os.fchmod(fd, 0o600)  # whatever the umask: records may hold workload details
            _reserve(fd, nbytes, p)
            mm = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(p)
            raise
        os.close(fd)  # the mapping keeps the file
        return cls(p, mm, nbytes)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ShmSegment:
        """Open an existing segment for recovery; another user's is refused (:class:`RecoverError`)."""
        p = os.fspath(path)
        try:
            fd = os.open(p, os.O_RDWR | _OPEN_FLAGS)
        except IsADirectoryError as e:
            raise SkippedSegment(f"{p}: is a directory, not a staging segment", suspicious=True) from e
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SkippedSegment(
                    f"{p}: is a symlink, not a staging segment; not followed", suspicious=True
                ) from e
            if not isinstance(e, PermissionError):
                raise VrrlIoError(f"{p}: cannot open the staging segment: {e.strerror or e}") from e
            raise RecoverError(
                f"{p}: permission denied; a staging segment can only be recovered by its owner"
            ) from e
        try:
            st = os.fstat(fd)
            try:
                check_segment_stat(p, st)
            except SkippedSegment as e:
                if not e.suspicious:
                    raise RecoverError(str(e)) from None
                raise
            # The control block first: the size must be the layout of its slots before anything is mapped.
            head = _decode_control(p, os.pread(fd, CONTROL_SIZE, 0), st.st_uid, st.st_size)
            try:
                want = StagingRing.layout_size(head.n_slots)
            except StagingError:
                want = -1
            if want != st.st_size:
                raise SkippedSegment(
                    f"{p}: {st.st_size:,} bytes, but a ring of {head.n_slots:,} slots takes {want:,}; "
                    f"not mapped",
                    suspicious=True,
                )
            mm = mmap.mmap(fd, st.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        seg = cls(p, mm, st.st_size)
        try:
            seg.info()  # checks the control block
        except BaseException:
            seg.close()
            raise
        return seg

    @property
    def path(self) -> str:
        return self._path

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def closed(self) -> bool:
        return self._array is None

    @property
    def array(self) -> npt.NDArray[np.uint8]:
        """A writable ``uint8`` view of the whole mapping."""
        if self._array is None:
            raise StagingError(f"{self._path}: the segment is closed")
        return self._array

    def ring(self) -> StagingRing:
        """Attach a consumer to the ring in this segment."""
        return StagingRing.attach(self.array)

    def info(self) -> SegmentInfo:
        """The control block, decoded (raises :class:`StagingError` when it is not a staging ring)."""
        return _decode_control(self._path, bytes(self.array[:CONTROL_SIZE]), os.getuid(), self._nbytes)

    def close(self) -> None:
        """Unmap. Idempotent. Views handed out keep the mapping alive until they are gone."""
        mm, self._mmap, self._array = self._mmap, None, None
        if mm is not None:
            # numpy views may still export it; the mapping then goes with the last of them.
            with contextlib.suppress(BufferError):
                mm.close()

    def unlink(self) -> None:
        """Remove the file (the mapping stays valid until closed)."""
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise VrrlIoError(f"{self._path}: cannot remove the staging segment: {e.strerror or e}") from e

    def __enter__(self) -> ShmSegment:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShmSegment({self._path!r}, nbytes={self._nbytes}, {'closed' if self.closed else 'open'})"


def _reserve(fd: int, nbytes: int, path: str) -> None:
    """Give the file its blocks now, so a full tmpfs is an error here and not a SIGBUS on first touch."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise StagingSpaceError(
                f"{path}: cannot reserve {nbytes:,} bytes for the staging segment ({e.strerror}); "
                f"free space in {os.path.dirname(path) or '.'}, use fewer slots, or use pinned staging"
            ) from e
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            # No fallocate on this file system: writing zeros allocates the blocks just as well.
            _write_zeros(fd, nbytes, path)
            return
        raise VrrlIoError(f"{path}: cannot reserve the staging segment: {e.strerror or e}") from e


def _write_zeros(fd: int, nbytes: int, path: str) -> None:
    chunk = bytes(1 << 20)
    off = 0
    try:
        while off < nbytes:
            off += os.pwrite(fd, chunk[: min(len(chunk), nbytes - off)], off)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StagingSpaceError(
                f"{path}: cannot reserve {nbytes:,} bytes for the staging segment ({e.strerror}); "
                f"free space, use fewer slots, or use pinned staging"
            ) from e
        raise VrrlIoError(f"{path}: cannot reserve the staging segment: {e.strerror or e}") from e


@dataclass(frozen=True)
class SegmentInfo:
    """A staging segment's file owner and control block."""

    path: str
    file_uid: int
    nbytes: int
    owner_pid: int
    owner_uid: int
    n_slots: int
    consumer_position: int
    producer_count: int
    created_ns: int
    flags: int
    log_path: str

    @property
    def mine(self) -> bool:
        """True when the calling user owns the file."""
        return self.file_uid == os.getuid()

    @property
    def owner_alive(self) -> bool:
        """True when the process that created the segment still runs (see :func:`owner_alive`)."""
        return owner_alive(self.owner_pid, self.created_ns)


def _decode_control(path: str, raw: bytes, file_uid: int, nbytes: int) -> SegmentInfo:
    if len(raw) < CONTROL_SIZE:
        raise StagingError(f"{path}: expected a {CONTROL_SIZE}-byte control block, found {len(raw)} bytes")
    ctl = np.frombuffer(raw[:CONTROL_SIZE], CONTROL_DTYPE)[0]
    magic = bytes(ctl["magic"])
    if magic != STAGING_MAGIC:
        raise StagingError(
            f"{path}: expected staging magic {STAGING_MAGIC!r}, got {magic!r}; not a vrrl segment"
        )
    if int(ctl["version"]) != STAGING_VERSION:
        raise StagingError(f"{path}: expected staging version {STAGING_VERSION}, got {int(ctl['version'])}")
    return SegmentInfo(
        path=path,
        file_uid=file_uid,
        nbytes=nbytes,
        owner_pid=int(ctl["owner_pid"]),
        owner_uid=int(ctl["owner_uid"]),
        n_slots=int(ctl["n_slots"]),
        consumer_position=int(ctl["consumer_position"]),
        producer_count=int(ctl["producer_count"]),
        created_ns=int(ctl["created_ns"]),
        flags=int(ctl["flags"]),
        log_path=os.fsdecode(bytes(ctl["log_path"])),
    )


def list_segments(directory: str | os.PathLike[str] = DEFAULT_SHM_DIR) -> list[SegmentInfo | StagingError]:
    """Every ``vrrl-*.stg`` file in ``directory``, decoded without mapping it.

    Files that cannot be read or are not staging rings come back as the
    :class:`StagingError` saying why (so a caller can report them), in path order.
    """
    out: list[SegmentInfo | StagingError] = []
    for p in sorted(Path(directory).glob("vrrl-*.stg")):
        path = str(p)
        try:
            # lstat first: a FIFO must not even be opened, another user's file need not be.
            check_segment_stat(path, os.lstat(path), require_mine=False)
            fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            continue  # removed while we looked
        except SkippedSegment as e:
            out.append(e)
            continue
        except PermissionError as e:
            out.append(SkippedSegment(f"{path}: cannot read: {e.strerror or e}", suspicious=False))
            continue
        except OSError as e:
            out.append(SkippedSegment(f"{path}: cannot read: {e.strerror or e}", suspicious=True))
            continue
        try:
            st = os.fstat(fd)
            check_segment_stat(
                path, st, require_mine=False
            )  # again on what was opened: it may have been swapped meanwhile
            raw = os.pread(fd, CONTROL_SIZE, 0)
        except SkippedSegment as e:
            out.append(e)
            continue
        except OSError as e:
            out.append(SkippedSegment(f"{path}: cannot read: {e.strerror or e}", suspicious=True))
            continue
        finally:
            os.close(fd)
        try:
            out.append(_decode_control(path, raw, st.st_uid, st.st_size))
        except StagingError as e:
            out.append(_unwritten_creation(path, st, raw) or e)
    return out


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (``kill(pid, 0)``; EPERM means it exists but is not ours)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_start_ns(pid: int) -> int | None:
    """When ``pid`` started, from /proc (Linux); None when it cannot be told."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        btime = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    # Field 22 (starttime, clock ticks since boot) comes after the ")" that ends the command name.
    fields = stat_line.rsplit(")", 1)[-1].split()
    try:
        ticks = int(fields[19])
    except (IndexError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return btime * 1_000_000_000 + ticks * 1_000_000_000 // hz


def owner_alive(pid: int, created_ns: int) -> bool:
    """True when the segment's owner still runs: ``pid`` exists and did not start after the segment was made.

    A pid reused by a newer process (it started after ``created_ns``, with a
    second of slack for /proc's coarse clock) counts as dead.
    """
    if not pid_alive(pid):
        return False
    started = _process_start_ns(pid)
    return started is None or started <= created_ns + 1_000_000_000
