"""The staging ring: where the device writes records, and the host consumer that reads them back.

One contiguous little-endian host buffer (mapped pinned memory, or a file in
``/dev/shm`` registered with CUDA) holds a 4096-byte control block, ``N``
commit words and ``N`` 64-byte records (docs/staging-protocol.md). Producers
(``kernels/vrrl_pack.cu``, or :func:`pack_reference` here) write the record
for sequence ``s`` into slot ``s % N``, fence, then store ``commit = s + 1``.
:meth:`StagingRing.consume` reads committed slots back in sequence order, in
vectors, with a seqlock re-read so that it never returns a torn or mixed record.

>>> buf = np.zeros(StagingRing.layout_size(8), np.uint8)
>>> ring = StagingRing.create(buf, 8)
>>> pack_reference(ring, 0, slot_idx=0, tenant_id=0, opcode=7, words=(1, 2, 3, 4), epoch=0,
...                slot_status=0, timestamp_ns=5)
>>> r = ring.consume()
>>> (len(r.records), int(r.records[0]["opcode"]), r.dropped, r.next_seq)
(1, 7, 0, 1)
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import secrets
import stat
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from vrrl_gpu._format import RECORD_DTYPE, RECORD_MAGIC, RECORD_SIZE, MetaOpcode, SlotStatus
from vrrl_gpu.errors import RecordValueError, RecoverError, StagingError, StagingSpaceError, VrrlIoError

__all__ = [
    "CONTROL_SIZE",
    "STAGING_MAGIC",
    "STAGING_VERSION",
    "MIN_SLOTS",
    "MAX_SLOTS",
    "CONTROL_DTYPE",
    "ConsumeResult",
    "StagingRing",
    "pack_reference",
    "meta_record",
    "gap_record",
    "recovered_record",
    "ShmSegment",
    "SegmentInfo",
    "list_segments",
    "pid_alive",
    "owner_alive",
    "DEFAULT_SHM_DIR",
]

CONTROL_SIZE = 4096
STAGING_MAGIC = b"VRRLSTG1"
STAGING_VERSION = 1
MIN_SLOTS = 8
MAX_SLOTS = 1 << 24
DEFAULT_SHM_DIR = "/dev/shm"
_LOG_PATH_OFFSET = 64
_LOG_PATH_MAX = CONTROL_SIZE - _LOG_PATH_OFFSET - 1  # room for the terminating NUL

#: The control block, field by field (docs/staging-protocol.md). Kernels never touch it.
CONTROL_DTYPE = np.dtype(
    {
        "names": [
            "magic",
            "version",
            "n_slots",
            "owner_pid",
            "owner_uid",
            "consumer_position",
            "producer_count",
            "created_ns",
            "flags",
            "log_path",
        ],
        "formats": ["S8", "<u4", "<u4", "<u4", "<u4", "<u8", "<u8", "<u8", "<u4", f"S{_LOG_PATH_MAX + 1}"],
        "offsets": [0, 8, 12, 16, 20, 24, 32, 40, 48, _LOG_PATH_OFFSET],
        "itemsize": CONTROL_SIZE,
    }
)

# Word indices of the hot control fields in a u64 view of the control block.
_W_CONSUMER = 3  # byte 24
_W_PRODUCER = 4  # byte 32

# The kernel's record write, as one C-level store sequence (the GIL keeps it whole against Python readers).
_RECORD_STRUCT = struct.Struct("<IQIII4IIIIIQ")
_COMMIT_STRUCT = struct.Struct("<Q")
if _RECORD_STRUCT.size != RECORD_SIZE:  # pragma: no cover
    raise AssertionError("the reference packer's struct disagrees with RECORD_SIZE")

_U64 = np.uint64
_FIRST_WINDOW = 256  # the first run read per call; it grows x8 while whole windows are ready
_MAX_ROUNDS = 1 << 12  # bounds one call when a producer keeps lapping the consumer


@dataclass(frozen=True)
class ConsumeResult:
    """What one :meth:`StagingRing.consume` call took.

    ``records`` are in sequence order, starting at ``start_seq`` except for the
    ``gaps``: ``(first_lost_seq, count)`` runs the consumer skipped because the
    producer lapped it (or, in a final drain, because they were never
    committed). ``dropped`` is the sum of the gap counts; ``next_seq`` the
    consumer position afterwards; ``backlog`` how many sequences were known to
    be outstanding when the call began (claimed or drained, whichever is more).
    """

    records: npt.NDArray[np.void]
    dropped: int
    gaps: list[tuple[int, int]]
    next_seq: int
    start_seq: int
    backlog: int
    #: For each gap, how many of ``records`` come before it (where its gap meta-record belongs).
    gap_positions: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.records.shape[0])


def _check_n_slots(n_slots: object) -> int:
    if isinstance(n_slots, bool) or not isinstance(n_slots, (int, np.integer)):
        raise StagingError(f"n_slots must be an integer, got {n_slots!r}")
    n = int(n_slots)
    if n < MIN_SLOTS or n > MAX_SLOTS or n & (n - 1):
        raise StagingError(
            f"n_slots must be a power of two in {MIN_SLOTS} ..= {MAX_SLOTS:,}, got {n:,}; "
            f"round it to a power of two"
        )
    return n


def _check_buffer(buf: object, *, what: str) -> npt.NDArray[np.uint8]:
    if not isinstance(buf, np.ndarray):
        raise StagingError(
            f"{what}: expected a numpy uint8 array over the staging memory, got {type(buf).__name__}"
        )
    if buf.dtype != np.uint8 or buf.ndim != 1 or not buf.flags.c_contiguous:
        raise StagingError(
            f"{what}: expected a 1-D C-contiguous uint8 array, got dtype {buf.dtype}, shape {buf.shape}; "
            f"pass HostAllocation.host or ShmSegment.array"
        )
    if not buf.flags.writeable:
        raise StagingError(
            f"{what}: the staging buffer is read-only; the consumer writes its position into it"
        )
    if buf.ctypes.data % 8:
        raise StagingError(
            f"{what}: the staging buffer starts at {buf.ctypes.data:#x}, which is not 8-byte aligned; "
            f"commit words must be aligned to be written atomically"
        )
    return buf


def _round_page(n: int) -> int:
    return (n + 4095) // 4096 * 4096


class StagingRing:
    """A staging ring over a host buffer. Use :meth:`create` or :meth:`attach`.

    The object is the consumer's view: one consumer per ring. Producers are
    kernels, the twin, or :func:`pack_reference`.
    """

    def __init__(self, buf: npt.NDArray[np.uint8], n_slots: int) -> None:
        n = n_slots
        self._buf = buf
        self._n = n
        self._mask = n - 1
        self._mv = memoryview(buf)  # type: ignore[arg-type]  # numpy arrays export the buffer protocol
        self._ctl64: npt.NDArray[np.uint64] = buf[:CONTROL_SIZE].view("<u8")
        self._control = buf[:CONTROL_SIZE].view(CONTROL_DTYPE)
        co, ro = CONTROL_SIZE, CONTROL_SIZE + 8 * n
        self._commits: npt.NDArray[np.uint64] = buf[co:ro].view("<u8")
        raw = buf[ro : ro + RECORD_SIZE * n]
        self._records: npt.NDArray[np.void] = raw.view(RECORD_DTYPE)
        # Records moved as 8 u64 words: a plain copy, whatever numpy does with packed structs.
        self._raw: npt.NDArray[np.uint64] = raw.view("<u8").reshape(n, RECORD_SIZE // 8)
        self._ones = np.arange(1, n + 1, dtype=_U64)
        self._slot_index = np.arange(n, dtype=_U64)
        self._pos = int(self._ctl64[_W_CONSUMER])
        #: Test hook: called as ``hook(first_seq, count)`` after a run is copied and before the re-read.
        self._copy_hook: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------ layout

    @staticmethod
    def layout_size(n_slots: int) -> int:
        """Bytes needed for ``n_slots`` slots: ``4096 + 72 * N``, rounded up to 4096."""
        n = _check_n_slots(n_slots)
        return _round_page(CONTROL_SIZE + (8 + RECORD_SIZE) * n)

    @classmethod
    def create(
        cls,
        buf: npt.NDArray[np.uint8],
        n_slots: int,
        *,
        log_path: str = "",
        owner_pid: int | None = None,
    ) -> StagingRing:
        """Initialise a ring in ``buf``: control block, zeroed commit words and records."""
        n = _check_n_slots(n_slots)
        buf = _check_buffer(buf, what="StagingRing.create")
        need = cls.layout_size(n)
        if buf.shape[0] < need:
            raise StagingError(
                f"a ring of {n:,} slots needs {need:,} bytes, the buffer has {buf.shape[0]:,}; "
                f"allocate StagingRing.layout_size({n}) bytes"
            )
        path_bytes = os.fsencode(log_path)
        if len(path_bytes) > _LOG_PATH_MAX or b"\0" in path_bytes:
            raise StagingError(
                f"log_path must be at most {_LOG_PATH_MAX} bytes without NUL, got {len(path_bytes)} bytes"
            )
        pid = os.getpid() if owner_pid is None else int(owner_pid)
        if not 0 <= pid < 1 << 32:
            raise StagingError(f"owner_pid must fit in 32 bits, got {pid}")
        buf[:need] = 0
        ctl = buf[:CONTROL_SIZE].view(CONTROL_DTYPE)
        ctl["version"] = STAGING_VERSION
        ctl["n_slots"] = n
        ctl["owner_pid"] = pid
        ctl["owner_uid"] = os.getuid()
        ctl["created_ns"] = time.time_ns()
        ctl["log_path"] = path_bytes
        # The magic last: a half-initialised ring is never taken for a valid one.
        ctl["magic"] = STAGING_MAGIC
        return cls(buf, n)

    @classmethod
    def attach(cls, buf: npt.NDArray[np.uint8]) -> StagingRing:
        """Validate an existing ring in ``buf``; the consumer resumes from the stored position."""
        buf = _check_buffer(buf, what="StagingRing.attach")
        if buf.shape[0] < CONTROL_SIZE:
            raise StagingError(f"expected at least {CONTROL_SIZE} bytes of control block, got {buf.shape[0]}")
        ctl = buf[:CONTROL_SIZE].view(CONTROL_DTYPE)[0]
        magic = bytes(ctl["magic"])
        if magic != STAGING_MAGIC:
            raise StagingError(
                f"expected staging magic {STAGING_MAGIC!r}, got {magic!r}; this is not a vrrl staging ring"
            )
        version = int(ctl["version"])
        if version != STAGING_VERSION:
            raise StagingError(
                f"expected staging version {STAGING_VERSION}, got {version}; another vrrl_gpu wrote it"
            )
        n = _check_n_slots(int(ctl["n_slots"]))
        need = cls.layout_size(n)
        if buf.shape[0] < need:
            raise StagingError(
                f"the control block says {n:,} slots, so expected {need:,} bytes, got {buf.shape[0]:,}; "
                f"the segment is truncated"
            )
        return cls(buf, n)

    # -------------------------------------------------------------- properties

    @property
    def n_slots(self) -> int:
        return self._n

    @property
    def mask(self) -> int:
        return self._mask

    @property
    def commits_offset(self) -> int:
        return CONTROL_SIZE

    @property
    def records_offset(self) -> int:
        return CONTROL_SIZE + 8 * self._n

    @property
    def buffer(self) -> npt.NDArray[np.uint8]:
        return self._buf

    @property
    def records(self) -> npt.NDArray[np.void]:
        """The ``N`` record slots, a live ``RECORD_DTYPE`` view."""
        return self._records

    @property
    def commits(self) -> npt.NDArray[np.uint64]:
        """The ``N`` commit words, a live ``uint64`` view."""
        return self._commits

    @property
    def control(self) -> npt.NDArray[np.void]:
        """The control block, a live one-element ``CONTROL_DTYPE`` view."""
        return self._control

    @property
    def owner_pid(self) -> int:
        return int(self._control["owner_pid"][0])

    @property
    def owner_uid(self) -> int:
        return int(self._control["owner_uid"][0])

    @property
    def created_ns(self) -> int:
        return int(self._control["created_ns"][0])

    @property
    def flags(self) -> int:
        return int(self._control["flags"][0])

    @property
    def log_path(self) -> str:
        return os.fsdecode(bytes(self._control["log_path"][0]))

    @property
    def consumer_position(self) -> int:
        """The next sequence the consumer expects (this object's; see :meth:`persist_position`)."""
        return self._pos

    @property
    def persisted_position(self) -> int:
        """The consumer position as stored in the control block (what recovery continues from)."""
        return int(self._ctl64[_W_CONSUMER])

    def persist_position(self) -> None:
        """Store the consumer position in the control block (after the records reached the log)."""
        self._ctl64[_W_CONSUMER] = self._pos

    @property
    def producer_count(self) -> int:
        """How many sequences host producers have claimed (``note_produced``); 0 when none track it."""
        return int(self._ctl64[_W_PRODUCER])

    def note_produced(self, seq: int) -> None:
        """Record that sequence ``seq`` is claimed: the producer count becomes at least ``seq + 1``.

        Host producers call it when ``seq`` is handed out, from under their
        sequence lock (one writer). It feeds :meth:`backlog`, and lets a final
        drain account for claimed sequences that never arrived.
        """
        if seq + 1 > int(self._ctl64[_W_PRODUCER]):
            self._ctl64[_W_PRODUCER] = seq + 1

    def backlog(self) -> int:
        """Sequences claimed or committed but not yet consumed (scans the commit words)."""
        newest = int(self._commits.max())  # newest committed sequence + 1
        return max(0, max(newest, int(self._ctl64[_W_PRODUCER])) - self._pos)

    # ---------------------------------------------------------------- consumer

    def consume(
        self, max_records: int | None = None, *, final: bool = False, persist: bool = True
    ) -> ConsumeResult:
        """Take up to ``max_records`` (default ``N``) committed records in sequence order.

        For expected sequence ``s`` a slot is taken only while its commit word
        is ``s + 1``; a run of ready slots is copied in one go, then its commit
        words are read again and only the unchanged prefix is kept. A commit
        word beyond ``s + 1`` means the producer lapped the consumer: the
        consumer jumps to the oldest sequence still intact in the ring and
        reports the skipped ones as a gap. ``final=True`` is for when no
        producer is running any more (close, a dead device, a dead process):
        sequences that were never committed are skipped as gaps too, up to
        :attr:`producer_count`, so the call drains everything in the ring and
        accounts for every claimed sequence. ``persist=False`` leaves
        the control block's position alone (call :meth:`persist_position` once
        the records are safe).
        """
        n, mask = self._n, self._mask
        limit = n if max_records is None else int(max_records)
        if limit < 1:
            raise StagingError(f"max_records must be at least 1, got {max_records}")
        start = s = self._pos
        chunks: list[npt.NDArray[np.uint64]] = []
        gaps: list[tuple[int, int]] = []
        gap_positions: list[int] = []
        emitted = 0
        claimed = int(self._ctl64[_W_PRODUCER])
        backlog = max(0, claimed - start)
        window = min(limit, _FIRST_WINDOW, n)

        def skip(to: int) -> None:
            nonlocal s
            if gaps and gaps[-1][0] + gaps[-1][1] == s and gap_positions[-1] == emitted:
                first, count = gaps[-1]
                gaps[-1] = (first, count + to - s)
            else:
                gaps.append((s, to - s))
                gap_positions.append(emitted)
            s = to

        rounds = 0
        while emitted < limit and rounds < _MAX_ROUNDS:
            rounds += 1
            i0 = s & mask
            if int(self._commits[i0]) != s + 1:
                t = self._resume_point(s, final)
                if t is None:
                    claimed = int(self._ctl64[_W_PRODUCER])
                    if final and claimed > s:
                        skip(claimed)  # claimed, never committed (or overwritten by an older sequence)
                    break
                if t > s:
                    skip(t)
                continue
            k = min(limit - emitted, window)
            # Shrink the run to where the producer has got to, so a round costs about what it returns.
            while k > _FIRST_WINDOW and int(self._commits[(s + k - 1) & mask]) != s + k:
                k //= 2
            c = self._read_words(self._commits, i0, k)
            ready = (c - _U64(s)) == self._ones[:k]
            r = k if bool(ready.all()) else int(ready.argmin())
            if r == 0:
                continue  # lapped between the probe and the read; the probe sorts it out
            raw = self._read_words(self._raw, i0, r)
            if self._copy_hook is not None:
                self._copy_hook(s, r)
            c2 = self._read_words(self._commits, i0, r)
            ok = (c2 - _U64(s)) == self._ones[:r]
            r2 = r if bool(ok.all()) else int(ok.argmin())
            if r2:
                chunks.append(raw[:r2])
                emitted += r2
                s += r2
            if r2 == k:
                window = min(window * 8, n)
        self._pos = s
        if persist:
            self._ctl64[_W_CONSUMER] = s
        if not chunks:
            records = np.empty(0, RECORD_DTYPE)
        else:
            flat = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            records = flat.view(RECORD_DTYPE).reshape(-1)
        dropped = sum(c for _, c in gaps)
        return ConsumeResult(
            records=records,
            dropped=dropped,
            gaps=gaps,
            next_seq=s,
            start_seq=start,
            backlog=max(backlog, s - start),
            gap_positions=gap_positions,
        )

    def _resume_point(self, s: int, final: bool) -> int | None:
        """Where to go on when slot ``s`` is not ready: ``s`` (ready now), a later sequence, or None."""
        mask = self._mask
        w = int(self._commits[s & mask])
        if w == s + 1:
            return s
        if w and ((w - 1) & mask) != (s & mask):
            self._raise_corrupt(s & mask, w)
        if w < s + 1 and not final:
            return None  # not written yet: wait for it
        words = self._commits.copy()
        live = words != 0
        bad = live & (((words - _U64(1)) & _U64(mask)) != self._slot_index)
        if bool(bad.any()):
            j = int(bad.argmax())
            self._raise_corrupt(j, int(words[j]))
        candidates = words[words > _U64(s)]  # w > s  <=>  the slot holds a sequence >= s
        if candidates.size == 0:
            return None
        return int(candidates.min()) - 1

    def _raise_corrupt(self, slot: int, word: int) -> None:
        raise StagingError(
            f"commit word of slot {slot} is {word}, expected 0 or s + 1 with s % {self._n} == {slot}; "
            f"the staging memory was overwritten by something that does not follow the staging protocol"
        )

    def _read_words(self, arr: npt.NDArray[np.uint64], i0: int, k: int) -> npt.NDArray[np.uint64]:
        """Copy ``k`` rows of ``arr`` starting at slot ``i0``, wrapping around the end."""
        end = i0 + k
        if end <= self._n:
            out: npt.NDArray[np.uint64] = arr[i0:end].copy()
        else:
            out = np.concatenate((arr[i0:], arr[: end - self._n]))
        return out

    def __repr__(self) -> str:
        return (
            f"StagingRing(n_slots={self._n}, position={self._pos}, producer_count={self.producer_count}, "
            f"owner_pid={self.owner_pid})"
        )


# ---------------------------------------------------------------- producer side


def pack_reference(
    ring: StagingRing,
    seq: int,
    *,
    slot_idx: int,
    tenant_id: int,
    opcode: int,
    words: Sequence[int],
    epoch: int,
    slot_status: int,
    timestamp_ns: int,
) -> None:
    """Write the record for ``seq`` and commit it, leaving the bytes ``vrrl_pack`` leaves.

    The order is the producer protocol: commit word 0, record, commit word
    ``seq + 1`` (docs/staging-protocol.md says why the first store matters).

    The evidence words ``failure_class``, ``backend_error_code`` and
    ``output_digest`` are zero, as the kernel writes them.
    """
    if len(words) != 4:
        raise RecordValueError(f"words must hold 4 integers, got {len(words)}")
    off = ring.records_offset + RECORD_SIZE * (seq & ring.mask)
    commit_off = CONTROL_SIZE + 8 * (seq & ring.mask)
    try:
        # Invalidate first: a consumer that copied the slot meanwhile sees the word change and drops the copy.
        _COMMIT_STRUCT.pack_into(ring._mv, commit_off, 0)
        _RECORD_STRUCT.pack_into(
            ring._mv,
            off,
            RECORD_MAGIC,
            timestamp_ns,
            slot_idx,
            tenant_id,
            opcode,
            words[0],
            words[1],
            words[2],
            words[3],
            epoch,
            slot_status,
            0,
            0,
            0,
        )
        _COMMIT_STRUCT.pack_into(ring._mv, commit_off, seq + 1)
    except struct.error as e:
        raise RecordValueError(f"a record field is out of range for its u32/u64 word: {e}") from None


def meta_record(
    opcode: MetaOpcode,
    args: Sequence[int],
    *,
    timestamp_ns: int,
    tenant_id: int = 0,
    slot_idx: int = 0,
    epoch: int = 0,
) -> npt.NDArray[np.void]:
    """A one-element ``RECORD_DTYPE`` array holding a meta-record (slot_status ``META``)."""
    rec = np.zeros(1, RECORD_DTYPE)
    rec["magic"] = RECORD_MAGIC
    rec["timestamp_ns"] = timestamp_ns
    rec["slot_idx"] = slot_idx
    rec["tenant_id"] = tenant_id
    rec["opcode"] = int(opcode)
    rec["args"] = [int(a) for a in args]
    rec["epoch"] = epoch
    rec["slot_status"] = int(SlotStatus.META)
    return rec


def _split64(v: int) -> tuple[int, int]:
    return v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF


def gap_record(first_seq: int, count: int, *, timestamp_ns: int, tenant_id: int = 0) -> npt.NDArray[np.void]:
    """A GAP meta-record: ``args`` = (first lost sequence low, high, count low, high)."""
    return meta_record(
        MetaOpcode.GAP,
        (*_split64(first_seq), *_split64(count)),
        timestamp_ns=timestamp_ns,
        tenant_id=tenant_id,
    )


def recovered_record(pid: int, count: int, *, timestamp_ns: int, tenant_id: int = 0) -> npt.NDArray[np.void]:
    """A RECOVERED meta-record: ``args`` = (pid, count low, count high, 0)."""
    return meta_record(
        MetaOpcode.RECOVERED,
        (pid & 0xFFFFFFFF, *_split64(count), 0),
        timestamp_ns=timestamp_ns,
        tenant_id=tenant_id,
    )


# ------------------------------------------------------------ shared memory


def _default_name() -> str:
    return f"vrrl-{os.getuid()}-{os.getpid()}-{secrets.token_hex(4)}.stg"


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
        p = os.path.join(os.fspath(directory), _default_name()) if path is None else os.fspath(path)
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
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
            fd = os.open(p, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except PermissionError as e:
            raise RecoverError(
                f"{p}: permission denied; a staging segment can only be recovered by its owner"
            ) from e
        except OSError as e:
            raise VrrlIoError(f"{p}: cannot open the staging segment: {e.strerror or e}") from e
        try:
            st = os.fstat(fd)
            me = os.getuid()
            if st.st_uid != me:
                raise RecoverError(
                    f"{p}: belongs to uid {st.st_uid}, you are uid {me}; only the owner of a staging "
                    f"segment may recover it (run vrrl recover as that user)"
                )
            if not stat.S_ISREG(st.st_mode):
                raise StagingError(f"{p}: expected a regular file, got mode {st.st_mode:#o}")
            if st.st_size < CONTROL_SIZE:
                raise StagingError(
                    f"{p}: expected at least {CONTROL_SIZE} bytes (a control block), found {st.st_size}"
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
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue  # removed while we looked
        except OSError as e:
            out.append(StagingError(f"{path}: cannot read: {e.strerror or e}"))
            continue
        try:
            st = os.fstat(fd)
            raw = os.pread(fd, CONTROL_SIZE, 0)
        finally:
            os.close(fd)
        try:
            out.append(_decode_control(path, raw, st.st_uid, st.st_size))
        except StagingError as e:
            out.append(e)
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
