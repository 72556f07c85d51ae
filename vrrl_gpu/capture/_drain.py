"""The drain thread: committed records move from staging rings to the ring file, in batches.

>>> import os, tempfile
>>> from vrrl_gpu.format import RingLog
>>> from vrrl_gpu.capture import StagingRing, pack_reference
>>> ring = StagingRing.create(np.zeros(StagingRing.layout_size(8), np.uint8), 8)
>>> log = RingLog.open(os.path.join(tempfile.mkdtemp(), "d.vrrl"), capacity=16)
>>> with Drainer([ring], log) as drainer:
...     pack_reference(ring, 0, slot_idx=0, tenant_id=0, opcode=7, words=(0, 0, 0, 0), epoch=0,
...                    slot_status=0, timestamp_ns=1)
>>> drainer.statistics().drained, len(log.records())
(1, 1)
>>> log.close()
"""

from __future__ import annotations

import errno
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt

from vrrl_gpu.capture._records import gap_record
from vrrl_gpu.capture._staging import ConsumeResult, StagingRing
from vrrl_gpu.errors import DrainError, StagingError, VrrlIoError, VrrlWarning
from vrrl_gpu.format._layout import RECORD_DTYPE
from vrrl_gpu.format._ringlog import RingLog

__all__ = ["DrainOptions", "DrainStatistics", "Drainer"]


@dataclass(frozen=True)
class DrainOptions:
    """How the drain thread polls and writes.

    ``batch_size``: most records taken from one ring per pass (one pass, one
    log write). While passes find records the thread polls again at once
    (after ``busy_interval_s``, 0 = just yield the GIL); after ``spin_polls``
    empty passes it sleeps, from ``idle_min_s`` doubling up to ``idle_max_s``.
    ``flush_on_close``: drain what is committed when closing. ``final_on_close``:
    that drain also skips sequences that were claimed but never committed (the
    producers are done by then), recording them as gaps. ``tenant_id``: the
    tenant written into gap meta-records. ``thread_name``: for debuggers.
    ``on_write_error``: what a batch that cannot be written because the disk
    is full (ENOSPC, EDQUOT, EFBIG) does: ``"raise"`` stops the thread (the
    records stay in staging; :meth:`Drainer.check` raises); ``"drop"`` drops
    and counts the batch (``unwritten``), keeps draining, warns once at the
    next :meth:`Drainer.check`, and puts a GAP record of the loss before the
    first batch that is written again. Other write errors always raise.
    """

    batch_size: int = 1 << 16
    spin_polls: int = 32
    busy_interval_s: float = 0.0
    idle_min_s: float = 50e-6
    idle_max_s: float = 2e-3
    flush_on_close: bool = True
    final_on_close: bool = True
    tenant_id: int = 0
    thread_name: str = "vrrl-drain"
    on_write_error: str = "raise"

    def __post_init__(self) -> None:
        if self.on_write_error not in ("raise", "drop"):
            raise StagingError(
                f"DrainOptions.on_write_error must be 'raise' or 'drop', got {self.on_write_error!r}"
            )
        if self.batch_size < 1:
            raise StagingError(f"DrainOptions.batch_size must be at least 1, got {self.batch_size}")
        if self.spin_polls < 0:
            raise StagingError(f"DrainOptions.spin_polls must be >= 0, got {self.spin_polls}")
        if self.busy_interval_s < 0 or self.idle_min_s <= 0 or self.idle_max_s < self.idle_min_s:
            raise StagingError(
                "DrainOptions needs busy_interval_s >= 0 and 0 < idle_min_s <= idle_max_s, got "
                f"{self.busy_interval_s}, {self.idle_min_s}, {self.idle_max_s}"
            )


@dataclass(frozen=True)
class DrainStatistics:
    """A snapshot of a :class:`Drainer` (all counts since it was made).

    ``drained``: records written to the log (meta-records excluded);
    ``dropped``: sequences lost (the producer lapped the drain, or never
    committed by a final drain); ``gaps``: gap meta-records written;
    ``batches``: log writes; ``peak_backlog``: most sequences seen outstanding
    in one ring at one poll; ``last_sequence``: per ring, the last sequence
    written to the log (None before the first); ``positions``: per ring, the
    next sequence expected; ``running``: the thread is alive; ``failed``: it died;
    ``host_written``: records written through :meth:`Drainer.write_host`;
    ``unwritten``: records dropped because the disk was full (``on_write_error="drop"``).
    """

    drained: int
    dropped: int
    gaps: int
    batches: int
    peak_backlog: int
    last_sequence: tuple[int | None, ...]
    positions: tuple[int, ...]
    running: bool
    failed: bool
    host_written: int = 0
    unwritten: int = 0


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _disk_full(err: BaseException) -> bool:
    cause = err.__cause__
    return isinstance(err, VrrlIoError) and isinstance(cause, OSError) and cause.errno in _DISK_FULL


class Drainer:
    """A thread that moves committed records from ``rings`` into ``log``.

    The drainer owns the rings' consumer side but not the log: the caller
    closes the log after :meth:`close`. Records of several rings are merged in
    timestamp order within a batch (each ring's own order is kept).
    """

    def __init__(
        self,
        rings: Sequence[StagingRing],
        log: RingLog,
        *,
        options: DrainOptions | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if len({id(r) for r in rings}) != len(rings):
            raise StagingError("the same staging ring was given twice; each ring has exactly one consumer")
        self._rings = tuple(rings)
        self._log = log
        self._opts = options if options is not None else DrainOptions()
        self._clock = clock
        # Held for each pass: flush() takes it to pause the thread between passes.
        self._pass_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._drained = 0
        self._dropped = 0
        self._gaps = 0
        self._batches = 0
        self._peak_backlog = 0
        self._last_seq: list[int | None] = [None] * len(self._rings)
        self._host_written = 0
        self._ts_correction = 0
        self._unwritten = 0
        # Dropped for a full disk and not yet marked by a GAP record in the log: (first sequence, count).
        self._unmarked: tuple[int, int] | None = None
        self._full_message: str | None = None
        self._full_warned = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Drainer:
        """Start the thread (once). Returns self."""
        if self._closed:
            raise DrainError("the drainer is closed; make a new one")
        if self._thread is not None:
            raise DrainError("the drainer was already started")
        self._thread = threading.Thread(target=self._run, name=self._opts.thread_name, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, drain what is committed (unless disabled), join. Idempotent.

        Raises :class:`DrainError` if the thread died or the final drain failed.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        err = self._error
        if self._opts.flush_on_close:
            try:
                with self._pass_lock:
                    self._drain_all(final=self._opts.final_on_close)
            except BaseException as e:
                if err is None:
                    err = e
                else:
                    _add_note(err, f"the final drain on close failed too: {type(e).__name__}: {e}")
        if err is not None:
            raise DrainError(self._describe(err, "close")) from err
        self._warn_full()

    def __enter__(self) -> Drainer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def rings(self) -> tuple[StagingRing, ...]:
        return self._rings

    def add_ring(self, ring: StagingRing) -> None:
        """Drain one more ring from the next pass on (a new stream's, or the device-sequenced one)."""
        with self._pass_lock:
            if any(r is ring for r in self._rings):
                raise StagingError("this staging ring is drained already; each ring has exactly one consumer")
            self._rings = (*self._rings, ring)
            with self._stats_lock:
                self._last_seq.append(None)

    def remove_ring(self, ring: StagingRing) -> None:
        """Stop draining ``ring`` (a stream that is gone, drained to the end): later passes skip it.

        Its entries leave :meth:`statistics`' ``last_sequence`` and ``positions``.
        """
        with self._pass_lock:
            idx = next((i for i, r in enumerate(self._rings) if r is ring), None)
            if idx is None:
                raise StagingError("this staging ring is not drained by this drainer")
            self._rings = self._rings[:idx] + self._rings[idx + 1 :]
            with self._stats_lock:
                del self._last_seq[idx]

    def set_ts_correction(self, ns: int) -> None:
        """Add ``ns`` to the timestamp of every record drained from the rings from now on (not host ones).

        The device stamps records with ``%globaltimer`` plus the offset measured when the recorder started;
        a later calibration that finds the clocks have drifted sets the difference here, so the log's
        timestamps follow the host clock without touching what is already in flight on the device.
        """
        self._ts_correction = int(ns)

    def write_host(self, records: npt.NDArray[np.void], *, flush_first: bool = True) -> None:
        """Append host-written records (evidence, publish records) to the log, in one write.

        The drain thread is paused meanwhile, so the log keeps one writer at a
        time; with ``flush_first`` what is committed in staging goes first, so
        the log stays in time order. Works after the thread died (evidence
        must still reach the log), raising :class:`DrainError` only if this
        write itself fails.
        """
        try:
            with self._pass_lock:
                if flush_first and self._error is None:
                    self._drain_all(final=False)
                n = self._log.extend(records)
        except BaseException as e:
            raise DrainError(self._describe(e, "write")) from e
        with self._stats_lock:
            self._host_written += n
            self._batches += 1

    def sync(self) -> None:
        """``fsync`` the log, between drain passes (raises :class:`DrainError` when it fails)."""
        try:
            with self._pass_lock:
                self._log.sync()
        except BaseException as e:
            raise DrainError(self._describe(e, "sync")) from e

    # ---------------------------------------------------------------- control

    def check(self) -> None:
        """Raise :class:`DrainError` (the thread's exception as ``__cause__``) if the thread died.

        With ``on_write_error="drop"``, the first check after records were
        dropped for a full disk warns (:class:`VrrlWarning`), once.
        """
        err = self._error
        if err is not None:
            raise DrainError(self._describe(err, "check")) from err
        self._warn_full()

    def _warn_full(self) -> None:
        msg = self._full_message
        if msg is not None and not self._full_warned:
            self._full_warned = True
            warnings.warn(VrrlWarning(msg), stacklevel=3)

    def flush(self, *, final: bool = False) -> int:
        """Drain everything committed now, in the calling thread, while the drain thread is paused.

        ``final=True`` also skips sequences that were claimed but never
        committed (only when no producer can still write: a dead device).
        Returns how many records were written. Raises :class:`DrainError` when
        the thread died or this drain fails.
        """
        self.check()
        try:
            with self._pass_lock:
                return self._drain_all(final=final)
        except BaseException as e:
            raise DrainError(self._describe(e, "flush")) from e

    def statistics(self) -> DrainStatistics:
        """A frozen snapshot of the counters."""
        with self._stats_lock:
            return DrainStatistics(
                drained=self._drained,
                dropped=self._dropped,
                gaps=self._gaps,
                batches=self._batches,
                peak_backlog=self._peak_backlog,
                last_sequence=tuple(self._last_seq),
                positions=tuple(r.consumer_position for r in self._rings),
                running=self._thread is not None and self._thread.is_alive(),
                failed=self._error is not None,
                host_written=self._host_written,
                unwritten=self._unwritten,
            )

    # ------------------------------------------------------------------ work

    def _run(self) -> None:
        opts = self._opts
        delay = opts.idle_min_s
        empty = 0
        try:
            while not self._stop.is_set():
                with self._pass_lock:
                    moved = self._drain_pass(final=False)
                if moved:
                    delay, empty = opts.idle_min_s, 0
                    # Yield so producers and flush() get the GIL and the lock between passes.
                    time.sleep(opts.busy_interval_s)
                    continue
                empty += 1
                if empty <= opts.spin_polls:
                    time.sleep(0)
                else:
                    self._stop.wait(delay)
                    delay = min(delay * 2, opts.idle_max_s)
        except BaseException as e:
            # Kept, not swallowed: check(), flush() and close() raise it as DrainError.
            self._error = e

    def _drain_all(self, *, final: bool) -> int:
        """Pass until the rings are empty, or until what was outstanding at the start has moved
        (so a producer that never pauses cannot keep a flush going forever)."""
        outstanding = sum(ring.backlog() for ring in self._rings)
        total = 0
        while True:
            moved = self._drain_pass(final=final)
            total += moved
            if not moved or total >= outstanding:
                return total

    def _drain_pass(self, *, final: bool) -> int:
        """One pass: consume every ring, write one batch, persist positions. Returns sequences moved."""
        results: list[ConsumeResult] = [
            ring.consume(self._opts.batch_size, final=final, persist=False) for ring in self._rings
        ]
        moved = sum(r.count + r.dropped for r in results)
        if not moved:
            return 0
        now = self._clock()
        parts: list[npt.NDArray[np.void]] = []
        keys: list[npt.NDArray[np.uint64]] = []
        n_gaps = 0
        for res in results:
            if not res.count and not res.dropped:
                continue
            arr, gap_rows = self._with_gaps(res, now, self._corrected(res.records))
            n_gaps += len(gap_rows)
            parts.append(arr)
            if len(self._rings) > 1:
                # Each ring's running maximum: a stable sort on it merges rings by time and keeps each
                # ring's own order; a gap record sorts right after the record before it.
                ts = arr["timestamp_ns"].copy()
                ts[gap_rows] = 0
                keys.append(np.maximum.accumulate(ts))
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if len(parts) > 1:
            batch = batch[np.argsort(np.concatenate(keys), kind="stable")]
        if not self._write(batch, results, now):
            return moved
        for ring in self._rings:
            ring.persist_position()
        with self._stats_lock:
            self._batches += 1
            self._gaps += n_gaps
            for i, res in enumerate(results):
                self._drained += res.count
                self._dropped += res.dropped
                self._peak_backlog = max(self._peak_backlog, res.backlog)
                if res.count:
                    self._last_seq[i] = _last_emitted(res)
        return moved

    def _write(self, batch: npt.NDArray[np.void], results: list[ConsumeResult], now: int) -> bool:
        """Write one batch; False when it was dropped for a full disk (``on_write_error="drop"``)."""
        unmarked = self._unmarked
        out = batch
        if unmarked is not None:
            gap = gap_record(*unmarked, timestamp_ns=now, tenant_id=self._opts.tenant_id)
            out = np.concatenate([gap, batch])
        try:
            self._log.extend(out)
        except VrrlIoError as e:
            if self._opts.on_write_error != "drop" or not _disk_full(e):
                raise
            why = e.__cause__
        else:
            self._unmarked = None
            return True
        for ring in self._rings:
            ring.persist_position()  # the batch is given up: staging must not hand it out again
        n = int(batch.shape[0])
        first = min((r.start_seq for r in results if r.count or r.dropped), default=0)
        self._unmarked = (first, n) if unmarked is None else (unmarked[0], unmarked[1] + n)
        with self._stats_lock:
            self._unwritten += n
            self._batches += 1
        if self._full_message is None:
            self._full_message = (
                f"{self._log.path}: the disk is full ({why}); records that cannot be written are "
                f"dropped and counted (on_disk_full='drop'), recording goes on, and a GAP record marks the "
                f"loss in the log once writes succeed again"
            )
        return False

    def _corrected(self, records: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
        corr = self._ts_correction
        if not corr or not records.shape[0]:
            return records
        out: npt.NDArray[np.void] = records.copy()  # may be views of staging memory: never write there
        out["timestamp_ns"] += np.uint64(corr & 0xFFFFFFFFFFFFFFFF)  # wraps: a negative correction subtracts
        return out

    def _with_gaps(
        self, res: ConsumeResult, now: int, records: npt.NDArray[np.void]
    ) -> tuple[npt.NDArray[np.void], list[int]]:
        """The ring's records with a GAP meta-record (stamped with the detection time) where each gap is."""
        if not res.gaps:
            return records, []
        pieces: list[npt.NDArray[np.void]] = []
        rows: list[int] = []
        prev = 0
        for (first, count), pos in zip(res.gaps, res.gap_positions, strict=True):
            pieces.append(records[prev:pos])
            rows.append(pos + len(rows))
            pieces.append(gap_record(first, count, timestamp_ns=now, tenant_id=self._opts.tenant_id))
            prev = pos
        pieces.append(records[prev:])
        return np.concatenate(pieces).astype(RECORD_DTYPE, copy=False), rows

    def _describe(self, err: BaseException, where: str) -> str:
        stats = self.statistics()
        what = "thread" if where in ("check", "close") else where
        return (
            f"the drain {what} failed: {type(err).__name__}: {err}; "
            f"{stats.drained:,} records reached the log before it, the rest stay in staging "
            f"(positions {list(stats.positions)})"
        )

    def __repr__(self) -> str:
        s = self.statistics()
        state = "closed" if self._closed else ("running" if s.running else "idle")
        return f"Drainer({len(self._rings)} rings, drained={s.drained}, dropped={s.dropped}, {state})"


def _last_emitted(res: ConsumeResult) -> int:
    # The last record's sequence: walk back over the gaps that follow it.
    seq = res.next_seq
    for (_, count), pos in zip(reversed(res.gaps), reversed(res.gap_positions), strict=True):
        if pos != res.count:
            break
        seq -= count
    return seq - 1


def _add_note(err: BaseException, note: str) -> None:
    add = getattr(err, "add_note", None)
    if add is not None:
        add(note)
