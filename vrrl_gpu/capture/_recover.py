"""Recovering records from the staging segments of processes that died before draining them.

With ``staging="shm"`` the device writes breadcrumbs into a file in
``/dev/shm`` (:class:`~vrrl_gpu.capture.ShmSegment`), so the records a process
committed survive its death (SIGKILL, OOM killer, a segfault in a driver).
Recovery drains every committed record of such an orphan into the log named
in the segment's control block (or another one), after a ``RECOVERED``
meta-record (``args`` = pid, count low, count high, 0), fsyncs the log and
removes the segment. Records are taken with the staging ring's seqlock
consumer, so a record the process was writing when it died is never copied
half-written; sequences lost that way are written as ``GAP`` meta-records.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vrrl_gpu.capture._records import gap_record, recovered_record
from vrrl_gpu.capture._shm import AbandonedSegment, SegmentInfo, ShmSegment, SkippedSegment, list_segments
from vrrl_gpu.capture._staging import DEFAULT_SHM_DIR, StagingRing
from vrrl_gpu.errors import RecoverError, StagingError, VrrlError, VrrlIoError, VrrlWarning
from vrrl_gpu.format._layout import RECORD_DTYPE
from vrrl_gpu.format._ringlog import RingLog

__all__ = ["RecoveryResult", "find_orphans", "recover_segment", "recover_orphans", "RECOVERED_LOG_CAPACITY"]

#: Capacity of a log that recovery has to create because the segment's log no longer exists.
RECOVERED_LOG_CAPACITY = 65536


@dataclass(frozen=True)
class RecoveryResult:
    """What recovering one segment did."""

    segment: str
    log_path: str
    owner_pid: int
    #: Records copied into the log (meta-records not counted).
    recovered: int
    #: Sequences the process claimed or overwrote but never committed (written as GAP meta-records).
    lost: int
    #: Records already in the log (drained before the process died, position not yet persisted): skipped.
    duplicates: int


def find_orphans(
    log_path: str | os.PathLike[str] | None = None, *, directory: str | os.PathLike[str] = DEFAULT_SHM_DIR
) -> list[SegmentInfo]:
    """Segments of the calling user whose owner process is gone (for ``log_path`` only, when given)."""
    want = _same_file_key(os.fspath(log_path)) if log_path is not None else None
    out = []
    odd: list[str] = []
    for info in list_segments(directory):
        if isinstance(info, AbandonedSegment):
            # A creation cut short by a kill: never held a record. Removed, quietly (O_NOFOLLOW was checked
            # by the listing; unlink removes the name, not what a symlink would point at).
            with contextlib.suppress(OSError):
                os.unlink(info.path)
            continue
        if isinstance(info, StagingError):
            if not isinstance(info, SkippedSegment) or info.suspicious:
                odd.append(str(info))
            continue
        if not info.mine or info.owner_alive:
            continue
        if want is not None and _same_file_key(info.log_path) != want:
            continue
        out.append(info)
    if odd:
        # One warning, however many: a local user can plant any number of these.
        warnings.warn(
            f"skipped {len(odd)} file(s) in {os.fspath(directory)} named like staging segments that are not "
            f"yours to read (first: {odd[0]})",
            VrrlWarning,
            stacklevel=2,
        )
    return out


def recover_segment(
    segment: str | os.PathLike[str],
    *,
    into: str | os.PathLike[str] | None = None,
    tenant_id: int | None = None,
) -> RecoveryResult:
    """Drain one orphaned segment into its log (or ``into``), then remove it.

    The RECOVERED and GAP meta-records carry the tenant of the segment's
    records, or ``tenant_id`` when it holds none (a recorder recovering its
    own log passes its tenant), else 0.

    Raises :class:`RecoverError` for another user's segment, for one whose
    owner still runs, for one that names no log when ``into`` is not given,
    and for one another recovery is working on.
    """
    path = os.fspath(segment)
    with ShmSegment.open(path) as seg, _exclusive(path):
        info = seg.info()
        if info.owner_alive:
            raise RecoverError(
                f"{path}: its owner, pid {info.owner_pid}, is still running; recovery is only for segments "
                f"of processes that died (the owner's recorder drains its own)"
            )
        target = os.fspath(into) if into is not None else info.log_path
        if not target:
            raise RecoverError(
                f"{path}: the segment names no log; pass --into LOG to say where its records go"
            )
        ring = seg.ring()
        records, gaps, gap_positions = _drain(ring)
        with _open_log(target) as log:
            fresh, duplicates = _without_logged(records, log)
            if fresh.shape[0] or gaps:
                now = time.time_ns()
                if records.shape[0]:
                    tenant = int(records["tenant_id"][0])
                else:
                    tenant = tenant_id if tenant_id is not None else 0
                pieces = [
                    recovered_record(info.owner_pid, int(fresh.shape[0]), timestamp_ns=now, tenant_id=tenant)
                ]
                pieces.extend(_with_gaps(records, fresh, gaps, gap_positions, now, tenant))
                log.extend(np.concatenate(pieces).astype(RECORD_DTYPE, copy=False))
                log.sync()
        ring.persist_position()
        seg.unlink()
        del ring
    return RecoveryResult(
        segment=path,
        log_path=target,
        owner_pid=info.owner_pid,
        recovered=int(fresh.shape[0]),
        lost=sum(c for _, c in gaps),
        duplicates=duplicates,
    )


def recover_orphans(
    log_path: str | os.PathLike[str],
    *,
    directory: str | os.PathLike[str] = DEFAULT_SHM_DIR,
    tenant_id: int | None = None,
) -> list[RecoveryResult]:
    """Recover every orphaned segment of ``log_path`` (what a new Recorder on that log does at start).

    A segment that cannot be recovered (damaged, or taken by a concurrent
    recovery) is left in place with a :class:`~vrrl_gpu.errors.VrrlWarning`,
    so that a new recording is never blocked by an old crash.
    """
    results = []
    for info in find_orphans(log_path, directory=directory):
        try:
            results.append(recover_segment(info.path, tenant_id=tenant_id))
        except FileNotFoundError:
            continue  # recovered by someone else meanwhile
        except (VrrlError, OSError) as e:
            warnings.warn(
                f"{info.path}: orphaned staging segment of pid {info.owner_pid} not recovered: {e}; "
                f"run 'vrrl recover {info.path}' to retry",
                VrrlWarning,
                stacklevel=2,
            )
    return results


# ------------------------------------------------------------------ internals


def _same_file_key(path: str) -> str:
    return os.path.realpath(os.path.abspath(path)) if path else ""


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
    """An flock on the segment file: two recoveries of one segment would copy its records twice."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise VrrlIoError(f"{path}: cannot open the staging segment: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecoverError(f"{path}: another process is recovering this segment right now") from None
        yield
    finally:
        os.close(fd)


def _drain(ring: StagingRing) -> tuple[npt.NDArray[np.void], list[tuple[int, int]], list[int]]:
    """Everything committed in the ring, in sequence order, with the gaps (final drain: no producer runs)."""
    chunks: list[npt.NDArray[np.void]] = []
    gaps: list[tuple[int, int]] = []
    positions: list[int] = []
    taken = 0
    while True:
        res = ring.consume(final=True, persist=False)
        for g, p in zip(res.gaps, res.gap_positions, strict=True):
            gaps.append(g)
            positions.append(taken + p)
        if res.count:
            chunks.append(res.records.copy())  # the mapping goes away with the segment
            taken += res.count
        if not res.count and not res.gaps:
            break
    records = np.concatenate(chunks) if chunks else np.empty(0, RECORD_DTYPE)
    return records.astype(RECORD_DTYPE, copy=False), gaps, positions


def _open_log(path: str) -> RingLog:
    return RingLog.open(path, capacity=RECOVERED_LOG_CAPACITY)


def _without_logged(records: npt.NDArray[np.void], log: RingLog) -> tuple[npt.NDArray[np.void], int]:
    """Drop the leading records that the dead process's drainer already wrote to the log.

    Its drainer persists its position only after writing, so a crash in
    between leaves records both in the log and in the segment. A record is
    64 bytes with a nanosecond timestamp: a byte-identical one in the log's
    tail is the same record.
    """
    if not records.shape[0]:
        return records, 0
    tail = log.records(salvage=True)[-2 * records.shape[0] :]
    if not tail.shape[0]:
        return records, 0
    seen = {bytes(r) for r in tail.view(np.uint8).reshape(-1, RECORD_DTYPE.itemsize)}
    raw = records.view(np.uint8).reshape(-1, RECORD_DTYPE.itemsize)
    k = 0
    while k < raw.shape[0] and bytes(raw[k]) in seen:
        k += 1
    return records[k:], k


def _with_gaps(
    records: npt.NDArray[np.void],
    fresh: npt.NDArray[np.void],
    gaps: Iterable[tuple[int, int]],
    positions: Iterable[int],
    now: int,
    tenant: int,
) -> list[npt.NDArray[np.void]]:
    skipped = records.shape[0] - fresh.shape[0]
    pieces: list[npt.NDArray[np.void]] = []
    prev = 0
    for (first, count), pos in zip(gaps, positions, strict=True):
        at = max(0, pos - skipped)
        pieces.append(fresh[prev:at])
        pieces.append(gap_record(first, count, timestamp_ns=now, tenant_id=tenant))
        prev = at
    pieces.append(fresh[prev:])
    return pieces
