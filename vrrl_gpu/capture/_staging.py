"""The staging ring: where the device writes records, and the host consumer that reads them back.

One contiguous little-endian host buffer (mapped pinned memory, or a file in
``/dev/shm`` registered with CUDA) holds a 4096-byte control block, ``N``
commit words and ``N`` 64-byte records (docs/staging-protocol.md). Producers
(``kernels/vrrl_pack.cu``, or :func:`pack_reference` here) write the record
for sequence ``s`` into slot ``s % N``, fence, then store ``commit = s + 1``.
:meth:`StagingRing.consume` reads committed slots back in sequence order, in
vectors, with a seqlock re-read so that it never returns a torn or mixed record.

>>> from vrrl_gpu.capture import pack_reference
>>> buf = np.zeros(StagingRing.layout_size(8), np.uint8)
>>> ring = StagingRing.create(buf, 8)
>>> pack_reference(ring, 0, slot_idx=0, tenant_id=0, opcode=7, words=(1, 2, 3, 4), epoch=0,
...                slot_status=0, timestamp_ns=5)
>>> r = ring.consume()
>>> (len(r.records), int(r.records[0]["opcode"]), r.dropped, r.next_seq)
(1, 7, 0, 1)
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.errors import StagingError
from vrrl_gpu.format._layout import RECORD_DTYPE, RECORD_SIZE

__all__ = [
    "CONTROL_SIZE",
    "STAGING_MAGIC",
    "STAGING_VERSION",
    "MIN_SLOTS",
    "MAX_SLOTS",
    "CONTROL_DTYPE",
    "ConsumeResult",
    "StagingRing",
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
        self._last: tuple[int, npt.NDArray[np.void]] | None = None
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
    def last_consumed(self) -> tuple[int, npt.NDArray[np.void]] | None:
        """``(sequence, record)`` of the newest record this consumer took (a copy), or None.

        What the producer wrote, kept apart from what it claimed: the
        recorder attributes a fault to it (docs/recorder.md).
        """
        return self._last

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

    def producer_cell(self) -> memoryview:
        """The producer count as a one-element u64 memoryview, for a single host producer that claims
        sequences in order (the recorder's launch path): ``cell[0] = seq + 1`` is :meth:`note_produced`
        without the comparison and the numpy scalar work."""
        cell: Any = self._ctl64[_W_PRODUCER : _W_PRODUCER + 1]
        return memoryview(cell).cast("B").cast("Q")

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
        last_seq = -1
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
                last_seq = s - 1
            if r2 == k:
                window = min(window * 8, n)
        self._pos = s
        if chunks:
            # One tuple assignment: the recorder's watchdog reads it from another thread.
            self._last = (last_seq, chunks[-1][-1:].view(RECORD_DTYPE).reshape(-1).copy())
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
