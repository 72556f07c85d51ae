"""``replay``: run a plan again and say whether the recorded failure reproduced."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrrl_gpu.format._sidecar import opcode_label
from vrrl_gpu.reproduce._plan import DEFAULT_TIMEOUT, Device, Launch, RecordedFailure, ReplayPlan
from vrrl_gpu.reproduce._rate import DEFAULT_CONFIDENCE, DEFAULT_MIN_RATE, Rate, check_rate_options
from vrrl_gpu.reproduce._sampler import Match, Sampler, matches
from vrrl_gpu.reproduce._trials import TrialFailure, TrialOutcome

__all__ = ["DigestMismatch", "ReplayReport", "replay", "matches"]


# ---------------------------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class DigestMismatch:
    position: int
    slot_idx: int
    opcode: int
    recorded: int
    replayed: int | None


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of :func:`replay`."""

    plan: ReplayPlan
    launches: tuple[Launch, ...]
    outcome: TrialOutcome
    #: The recorded failure, if it lies in the replayed range.
    expected: RecordedFailure | None
    reproduced: bool
    digests_compared: int = 0
    digest_mismatch: DigestMismatch | None = None
    #: Every trial's verdict (one trial unless ``trials`` > 1).
    rate: Rate | None = None
    min_rate: float = DEFAULT_MIN_RATE
    match: str = "code"

    @property
    def ok(self) -> bool:
        """Exit-code truth: the failure outcome matched and no digest differed."""
        return self.reproduced and self.digest_mismatch is None

    def to_json(self) -> dict[str, Any]:
        names = self.plan.names
        start = self.launches[0].position if self.launches else 0
        out = self.outcome
        first = out.first_failure
        return {
            "log": self.plan.path,
            "range": [start, start + len(self.launches) - 1] if self.launches else [],
            "launches": len(self.launches),
            "lost_records": self.plan.lost_records,
            "recorded_failure": self.expected.to_json(names) if self.expected else None,
            "replay": {
                "status": out.status,
                "completed": out.completed,
                "backend": out.backend,
                "replay_log": out.replay_log,
                "failure": _abs_failure(first, self.launches, names) if first else None,
                "failures": [_abs_failure(f, self.launches, names) for f in out.failures],
            },
            "reproduced": self.reproduced,
            "match": self.match,
            "rate": None if self.rate is None else {**self.rate.to_json(), "min_rate": self.min_rate},
            "digests": {
                "compared": self.digests_compared,
                "first_mismatch": None
                if self.digest_mismatch is None
                else {
                    "position": self.digest_mismatch.position,
                    "slot_idx": self.digest_mismatch.slot_idx,
                    "opcode_name": opcode_label(self.digest_mismatch.opcode, names),
                    "recorded": self.digest_mismatch.recorded,
                    "replayed": self.digest_mismatch.replayed,
                },
            },
        }


def _abs_failure(f: TrialFailure, launches: Sequence[Launch], names: Mapping[int, str]) -> dict[str, Any]:
    d = f.to_json()
    if f.position < len(launches):
        ln = launches[f.position]
        d.update(
            position=ln.position,
            slot_idx=ln.slot_idx,
            opcode=ln.opcode,
            opcode_name=opcode_label(ln.opcode, names),
        )
    return d


def replay(
    plan: ReplayPlan,
    registry: str,
    *,
    start: int | None = None,
    stop: int | None = None,
    device: Device = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    stop_at_failure: bool = False,
    compare_digests: bool = False,
    replay_log: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
    trials: int = 1,
    min_trials: int = 1,
    min_rate: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    match: Match = "code",
    seed: int = 0,
    jitter: float = 0.0,
    streams: int = 1,
    trial_timeout: float | None = None,
    jobs: int = 1,
    devices: Sequence[str] = (),
    on_trial: Callable[[Rate], None] | None = None,
) -> ReplayReport:
    """Replay the launches at positions ``start ..= stop`` of ``plan`` in up to ``trials`` fresh children.

    Each trial is judged with ``match`` (see :func:`matches`). Trials stop
    once at least ``min_trials`` ran and the Wilson interval of the rate
    (at ``confidence``) lies entirely above or entirely below ``min_rate``
    (default :data:`DEFAULT_MIN_RATE`): a failure that reproduces on the first
    trial costs one trial. The replay reproduced when some trial did and the
    rate is not significantly below ``min_rate``. ``outcome`` is the first
    reproducing trial (else the first); digests are compared for it.
    ``seed``, ``jitter``, ``streams`` and ``trial_timeout`` are those of :func:`run_trial`.
    """
    check_rate_options(trials, confidence, min_rate, min_trials)
    launches = plan.select(start, stop)
    if replay_log is None and device != "none":
        replay_log = default_replay_log(plan.path)
    expected = plan.failure
    if (
        expected is not None
        and launches
        and not (launches[0].position <= expected.position <= launches[-1].position)
    ):
        expected = None
    threshold = DEFAULT_MIN_RATE if min_rate is None else min_rate
    with Sampler(
        registry,
        plan.names,
        expected,
        device=device,
        timeout=timeout,
        match=match,
        seed=seed,
        jitter=jitter,
        streams=streams,
        trial_timeout=trial_timeout,
        jobs=jobs,
        devices=devices,
        confidence=confidence,
        stop_at_failure=stop_at_failure,
        source_log=plan.path,
    ) as sampler:
        rate, outcomes = sampler.measure(
            launches,
            max_trials=trials,
            stop=lambda r: r.trials >= min_trials and (r.above(threshold) or r.below(threshold)),
            parallel=jobs,
            keep_log=os.fspath(replay_log) if replay_log is not None else None,
            digests=compare_digests,
            on_trial=on_trial,
            progress=progress if trials == 1 else None,
        )
    judged = [sampler.judge(launches, o)[0] for o in outcomes]
    outcome = outcomes[judged.index(True)] if True in judged else outcomes[0]
    reproduced = rate.reproduced > 0 and not rate.below(threshold)
    compared = 0
    mismatch = None
    if compare_digests:
        for i, ln in enumerate(launches):
            if ln.recorded_digest is None or i not in outcome.digests:
                continue
            compared += 1
            got = outcome.digests[i]
            if got != ln.recorded_digest and mismatch is None:
                mismatch = DigestMismatch(ln.position, ln.slot_idx, ln.opcode, ln.recorded_digest, got)
    if outcome.replay_log is not None and replay_log is not None:
        outcome = dataclasses.replace(outcome, replay_log=os.fspath(replay_log))
    return ReplayReport(
        plan, launches, outcome, expected, reproduced, compared, mismatch, rate, threshold, match
    )


def default_replay_log(path: str) -> str:
    """``run.vrrl`` → ``run.replay.vrrl`` (next to it)."""
    p = Path(path)
    stem = p.name[: -len(".vrrl")] if p.name.endswith(".vrrl") else p.name
    return str(p.with_name(stem + ".replay.vrrl"))
