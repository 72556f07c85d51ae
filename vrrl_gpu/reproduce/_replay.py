"""``replay``: run a plan again and say whether the recorded failure reproduced."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrrl_gpu.format._sidecar import opcode_label
from vrrl_gpu.reproduce._plan import DEFAULT_TIMEOUT, Device, Launch, RecordedFailure, ReplayPlan
from vrrl_gpu.reproduce._trials import TrialFailure, TrialOutcome, run_trial

__all__ = ["DigestMismatch", "ReplayReport", "replay"]


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


def matches(expected: RecordedFailure, failure: TrialFailure | None, position: int) -> bool:
    """Does ``failure`` (at trial index ``position`` of the expected launch) reproduce ``expected``?"""
    if failure is None or failure.position > position:
        return False
    if failure.position != position and not expected.unknown:
        return False
    if expected.hung:
        return failure.kind == "hung"
    return failure.kind == "exception" and (
        failure.failure_class == expected.failure_class and failure.code == expected.code
    )


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
) -> ReplayReport:
    """Replay the launches at positions ``start ..= stop`` of ``plan`` once, in a fresh child."""
    launches = plan.select(start, stop)
    if replay_log is None and device != "none":
        replay_log = default_replay_log(plan.path)
    outcome = run_trial(
        launches,
        registry,
        names=plan.names,
        device=device,
        timeout=timeout,
        stop_at_failure=stop_at_failure,
        digests=compare_digests,
        replay_log=replay_log,
        progress=progress,
    )
    expected = plan.failure
    if (
        expected is not None
        and launches
        and not (launches[0].position <= expected.position <= launches[-1].position)
    ):
        expected = None
    if expected is None:
        reproduced = not outcome.failures
    else:
        idx = expected.position - launches[0].position
        reproduced = any(matches(expected, f, idx) for f in outcome.failures)
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
    return ReplayReport(plan, launches, outcome, expected, reproduced, compared, mismatch)


def default_replay_log(path: str) -> str:
    """``run.vrrl`` → ``run.replay.vrrl`` (next to it)."""
    p = Path(path)
    stem = p.name[: -len(".vrrl")] if p.name.endswith(".vrrl") else p.name
    return str(p.with_name(stem + ".replay.vrrl"))
