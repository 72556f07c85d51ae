"""``minimize``: the shortest reproducing suffix, then delta debugging; the sequence log."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrrl_gpu.errors import RecordValueError, ReplayError
from vrrl_gpu.format._layout import RECORD_DTYPE
from vrrl_gpu.format._ringlog import RingLog
from vrrl_gpu.format._sidecar import Sidecar, read_sidecar, write_sidecar
from vrrl_gpu.reproduce._plan import DEFAULT_TIMEOUT, Device, Launch, RecordedFailure, ReplayPlan
from vrrl_gpu.reproduce._replay import matches
from vrrl_gpu.reproduce._trials import TrialOutcome, run_trial

__all__ = ["MinimizeResult", "minimize", "write_sequence_log"]


# ---------------------------------------------------------------------------------------------- minimise


@dataclass(frozen=True)
class MinimizeResult:
    """The smallest launch sequence found that still reproduces the recorded failure (failure launch last).

    ``reproduced`` is False when even the full sequence did not reproduce the
    failure; ``kept`` is then empty.
    """

    kept: tuple[Launch, ...]
    failure: RecordedFailure
    trials: int
    #: Launches in the shortest reproducing suffix (failure launch included), before delta debugging.
    suffix_length: int
    original_length: int
    reproduced: bool = True
    #: What the first trial (the full sequence) did, for the report when it did not reproduce.
    first_outcome: TrialOutcome | None = None


def minimize(
    plan: ReplayPlan,
    registry: str,
    *,
    start: int | None = None,
    device: Device = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    jobs: int | None = None,
    on_trial: Callable[[int, int, bool], None] | None = None,
) -> MinimizeResult:
    """Shrink the launches before the recorded failure to a minimal sequence that still reproduces it.

    First the shortest suffix ending at the failure that reproduces (a search
    over its length that assumes a longer suffix reproduces whenever a shorter
    one does; the result is always a suffix that was seen to reproduce), then
    delta debugging (ddmin) over the launches of that suffix, the failure
    launch always kept last. Every trial is a fresh child with ``timeout``;
    up to ``jobs`` trials run at once (default: the CPU count, at most 4), which
    changes how many trials run but never the result. ``on_trial(n, length,
    reproduced)`` is called after each. Raises :class:`ReplayError` when the
    log holds no failure.
    """
    failure = plan.failure
    if failure is None:
        raise ReplayError(f"{plan.path}: the log holds no failure record; there is nothing to minimise")
    lo = 0 if start is None else start
    if not 0 <= lo <= failure.position:
        raise RecordValueError(f"--from {lo} must be between 0 and the failure's position {failure.position}")
    workers = max(1, min(4, os.cpu_count() or 1) if jobs is None else jobs)
    fail_launch = plan.launches[failure.position]
    before = list(plan.launches[lo : failure.position])
    cache: dict[tuple[int, ...], bool] = {}
    lock = threading.Lock()
    counter = [0]
    first: list[TrialOutcome] = []

    with tempfile.TemporaryDirectory(prefix="vrrl-minimize-") as tmp, ThreadPoolExecutor(workers) as pool:

        def one(prefix: Sequence[Launch]) -> bool:
            seq = [*prefix, fail_launch]
            key = tuple(ln.position for ln in seq)
            with lock:
                if key in cache:
                    return cache[key]
                counter[0] += 1
                n = counter[0]
            log = os.path.join(tmp, f"trial{n}.vrrl")
            outcome = run_trial(
                seq,
                registry,
                names=plan.names,
                device=device,
                timeout=timeout,
                stop_at_failure=True,
                replay_log=log,
            )
            ok = matches(failure, outcome.first_failure, len(seq) - 1)
            for suffix in ("", ".json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(log + suffix)
            with lock:
                cache[key] = ok
                if not first:
                    first.append(outcome)
                if on_trial is not None:
                    on_trial(n, len(seq), ok)
            return ok

        def first_true(cands: Sequence[Sequence[Launch]]) -> int | None:
            """Index of the first candidate that reproduces, testing ``workers`` at a time, in order."""
            for b in range(0, len(cands), workers):
                batch = cands[b : b + workers]
                results = list(pool.map(one, batch))
                for i, ok in enumerate(results):
                    if ok:
                        return b + i
            return None

        if not one(before):
            outcome = first[0] if first else None
            return MinimizeResult((), failure, counter[0], 0, len(before) + 1, False, outcome)
        # Shortest reproducing suffix: k launches just before the failure. k_hi always reproduces.
        # A failure that needs no earlier launch is the common case: one trial settles it.
        k_lo, k_hi = (0, 0) if before and one([]) else (0, len(before))
        while k_lo < k_hi:
            span = k_hi - k_lo
            points = sorted({k_lo + span * (j + 1) // (workers + 1) for j in range(workers)} - {k_hi})
            if not points:
                points = [k_lo]
            hit = first_true([before[len(before) - k :] for k in points])
            if hit is None:
                k_lo = points[-1] + 1
            else:
                k_hi = points[hit]
                k_lo = points[hit - 1] + 1 if hit > 0 else k_lo
        suffix = before[len(before) - k_hi :]
        kept = _ddmin(suffix, first_true)
    return MinimizeResult(
        kept=(*kept, fail_launch),
        failure=failure,
        trials=counter[0],
        suffix_length=len(suffix) + 1,
        original_length=len(before) + 1,
        first_outcome=first[0] if first else None,
    )


def _ddmin(
    items: list[Launch], first_true: Callable[[Sequence[Sequence[Launch]]], int | None]
) -> list[Launch]:
    """Zeller's ddmin: a 1-minimal subsequence of ``items`` that reproduces (``items`` itself does).

    ``first_true(candidates)`` returns the index of the first candidate that
    reproduces, or None; candidates keep the original order of the launches.
    """
    c = list(items)
    if c and first_true([[]]) is not None:
        return []
    n = 2
    while len(c) >= 2:
        chunks = [c[len(c) * i // n : len(c) * (i + 1) // n] for i in range(n)]
        hit = first_true(chunks)
        if hit is not None:
            c, n = chunks[hit], 2
            continue
        comps = [[x for j, ch in enumerate(chunks) if j != i for x in ch] for i in range(n)] if n > 2 else []
        hit = first_true(comps) if comps else None
        if hit is not None:
            c, n = comps[hit], max(n - 1, 2)
            continue
        if n >= len(c):
            break
        n = min(len(c), 2 * n)
    return c


def write_sequence_log(
    path: str | os.PathLike[str],
    plan: ReplayPlan,
    launches: Sequence[Launch],
    *,
    note: Mapping[str, Any] | None = None,
) -> int:
    """Write ``launches`` (their original records, in order) and the recorded failure as a new VRRL log.

    The sidecar copies the original's opcode names, so the new log replays
    with the same registry. Refuses to overwrite. Returns the records written.
    """
    p = os.fspath(path)
    rows = [plan.records[ln.record_index] for ln in launches]
    if plan.failure is not None and any(ln.position == plan.failure.position for ln in launches):
        fi = plan.failure.record_index
        if all(ln.record_index != fi for ln in launches):
            rows.append(plan.records[fi])
    arr = np.array(rows, dtype=RECORD_DTYPE)
    with RingLog.create(p, capacity=max(8, len(arr))) as log:
        log.extend(arr)
        log.sync()
    side = read_sidecar(plan.path) or Sidecar()
    write_sidecar(
        p,
        Sidecar(
            opcode_names=dict(plan.names),
            host=side.host,
            user=side.user,
            device=side.device,
            backend=side.backend,
            breadcrumbs=side.breadcrumbs,
            tenant_id=side.tenant_id,
            extra={"minimized_from": plan.path, **(dict(note) if note else {})},
        ),
    )
    return len(arr)
