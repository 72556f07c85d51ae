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
from vrrl_gpu.format._sidecar import Sidecar, load_sidecar, write_sidecar
from vrrl_gpu.reproduce._plan import DEFAULT_TIMEOUT, Device, Launch, RecordedFailure, ReplayPlan
from vrrl_gpu.reproduce._rate import DEFAULT_CONFIDENCE, Rate, check_rate_options, misses_to_reject
from vrrl_gpu.reproduce._sampler import Budget, BudgetExhausted, Match, Sampler
from vrrl_gpu.reproduce._trials import TrialOutcome

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
    #: Trials started in all (those a budget or an early stop made redundant included).
    trials: int
    #: Launches in the shortest reproducing suffix (failure launch included), before delta debugging.
    suffix_length: int
    original_length: int
    reproduced: bool = True
    #: What the first trial (the full sequence) did, for the report when it did not reproduce.
    first_outcome: TrialOutcome | None = None
    #: The full sequence's trials: the reference the candidates are held to.
    original_rate: Rate | None = None
    #: Fresh trials of the minimum (None with ``trials=1``, or when the budget ran out first).
    kept_rate: Rate | None = None
    #: The rate a candidate is tested against, and the misses after which it is rejected.
    reference_rate: float = 1.0
    misses_to_reject: int = 1
    #: Candidate sequences judged (each once: results are cached per candidate).
    candidates: int = 0
    #: The budget ran out: ``kept`` is the shortest sequence seen to reproduce so far.
    exhausted: bool = False

    @property
    def miss_probability(self) -> float:
        """Chance that a candidate reproducing at the reference rate was rejected anyway (per candidate)."""
        return float((1.0 - self.reference_rate) ** self.misses_to_reject)


def minimize(
    plan: ReplayPlan,
    registry: str,
    *,
    start: int | None = None,
    device: Device = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    jobs: int | None = None,
    on_trial: Callable[[int, int, bool], None] | None = None,
    trials: int = 1,
    min_rate: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    match: Match = "code",
    seed: int = 0,
    jitter: float = 0.0,
    streams: int = 1,
    trial_timeout: float | None = None,
    devices: Sequence[str] = (),
    budget: Budget | None = None,
    on_best: Callable[[int, int, Rate | None], None] | None = None,
) -> MinimizeResult:
    """Shrink the launches before the recorded failure to a minimal sequence that still reproduces it.

    First the shortest suffix ending at the failure that reproduces (a search
    over its length that assumes a longer suffix reproduces whenever a shorter
    one does; the result is always a suffix that was seen to reproduce), then
    delta debugging (ddmin) over the launches of that suffix, the failure
    launch always kept last. Every trial is a fresh child with ``timeout``
    per launch; up to ``jobs`` trials run at once (default: the CPU count, at
    most 4), which changes how many trials run but never the result.

    Flaky failures (``trials`` > 1): the full sequence runs ``trials`` times
    and its rate ``r`` (or ``min_rate``, when given) is the reference. A
    candidate reproduces at its first trial that reproduces the failure
    (judged with ``match``); it is rejected after ``k`` trials without one,
    the smallest ``k`` (at most ``trials``) with ``(1 - r) ** k <= 1 -
    confidence``: a candidate as reproducible as the reference is rejected
    with at most that probability. A kept sequence was therefore always
    seen to reproduce. The minimum then gets ``trials`` fresh trials of its
    own (``kept_rate``). ``budget`` caps the search; when it runs out the
    shortest sequence seen to reproduce is returned with ``exhausted``.
    ``seed``, ``jitter``, ``streams`` and ``trial_timeout`` are those of :func:`run_trial`.

    ``on_trial(n, length, reproduced)`` is called after each candidate's
    verdict (``n`` trials spent so far); ``on_best(n, length, rate)`` when a
    shorter reproducing sequence is found. Raises :class:`ReplayError` when
    the log holds no failure.
    """
    failure = plan.failure
    if failure is None:
        raise ReplayError(f"{plan.path}: the log holds no failure record; there is nothing to minimise")
    check_rate_options(trials, confidence, min_rate)
    lo = 0 if start is None else start
    if not 0 <= lo <= failure.position:
        raise RecordValueError(f"--from {lo} must be between 0 and the failure's position {failure.position}")
    workers = max(1, min(4, os.cpu_count() or 1) if jobs is None else jobs)
    fail_launch = plan.launches[failure.position]
    before = list(plan.launches[lo : failure.position])
    cache: dict[tuple[int, ...], Rate] = {}
    lock = threading.Lock()
    state: dict[str, Any] = {"reject_after": 1, "best": None}
    first: list[TrialOutcome] = []
    sampler = Sampler(
        registry,
        plan.names,
        failure,
        device=device,
        timeout=timeout,
        match=match,
        seed=seed,
        jitter=jitter,
        streams=streams,
        trial_timeout=trial_timeout,
        jobs=workers,
        devices=devices,
        budget=budget or Budget(),
        confidence=confidence,
        source_log=plan.path,
    )

    def report_best(seq: Sequence[Launch], rate: Rate | None) -> None:
        best = state["best"]
        if rate is not None and rate.reproduced and (best is None or len(seq) < len(best)):
            state["best"] = list(seq)
            if on_best is not None:
                on_best(sampler.spent, len(seq), rate)

    with (
        tempfile.TemporaryDirectory(prefix="vrrl-minimize-") as tmp,
        ThreadPoolExecutor(workers) as pool,
        sampler,
    ):
        counter = [0]

        def log_path() -> str:
            with lock:
                counter[0] += 1
                return os.path.join(tmp, f"cand{counter[0]}.vrrl")

        def one(prefix: Sequence[Launch]) -> bool:
            seq = [*prefix, fail_launch]
            key = tuple(ln.position for ln in seq)
            with lock:
                if key in cache:
                    return cache[key].reproduced > 0
            log = log_path()
            rate, outcomes = sampler.measure(
                seq, max_trials=state["reject_after"], stop=lambda r: r.reproduced > 0, keep_log=log
            )
            _remove_log(log)
            ok = rate.reproduced > 0
            with lock:
                cache[key] = rate
                if not first and outcomes:
                    first.append(outcomes[0])
                report_best(seq, rate)
                if on_trial is not None:
                    on_trial(sampler.spent, len(seq), ok)
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

        full = [*before, fail_launch]
        log = log_path()
        try:
            original, outcomes = sampler.measure(
                full, max_trials=trials, stop=lambda r: False, parallel=workers, keep_log=log
            )
        except BudgetExhausted:
            original, outcomes = Rate(0, 0, confidence=confidence), []
        _remove_log(log)
        first.extend(outcomes[:1])
        cache[tuple(ln.position for ln in full)] = original
        if not original.reproduced:
            outcome = first[0] if first else None
            return MinimizeResult(
                (), failure, sampler.spent, 0, len(full), False, outcome, original_rate=original
            )
        report_best(full, original)
        reference = min_rate if min_rate is not None else original.rate
        state["reject_after"] = min(trials, misses_to_reject(reference, confidence))
        exhausted = False
        suffix = before
        kept: list[Launch] = before
        try:
            # Shortest reproducing suffix: k launches just before the failure. k_hi always reproduces.
            # A failure that needs no earlier launch is the common case: one candidate settles it.
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
        except BudgetExhausted:
            exhausted = True
            kept = state["best"][:-1]
        kept_seq = [*kept, fail_launch]
        kept_rate: Rate | None = None
        if trials > 1 and not exhausted:
            seen = cache.get(tuple(ln.position for ln in kept_seq))
            done = seen.trials if seen is not None else 0
            try:
                kept_rate, _ = sampler.measure(
                    kept_seq, max_trials=trials, stop=lambda r: False, first_index=done, parallel=workers
                )
            except BudgetExhausted:
                exhausted = True
        return MinimizeResult(
            kept=tuple(kept_seq),
            failure=failure,
            trials=sampler.spent,
            suffix_length=len(suffix) + 1,
            original_length=len(full),
            first_outcome=first[0] if first else None,
            original_rate=original,
            kept_rate=kept_rate,
            reference_rate=reference,
            misses_to_reject=state["reject_after"],
            candidates=len(cache),
            exhausted=exhausted,
        )


def _remove_log(log: str) -> None:
    for suffix in ("", ".json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log + suffix)


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


#: Sidecar ``extra`` entries a registry may read to replay the launches, carried into a minimized log so that
#: it replays on its own: ``"torch"`` is vrrl_gpu.torch's call-signature table (its ``SIDECAR_KEY``).
CARRIED_EXTRA = ("torch",)


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
    side = load_sidecar(plan.path) or Sidecar()
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
            extra={
                **{k: side.extra[k] for k in CARRIED_EXTRA if k in side.extra},
                "minimized_from": plan.path,
                **(dict(note) if note else {}),
            },
        ),
    )
    return len(arr)
