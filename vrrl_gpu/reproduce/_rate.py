"""Reproduction rates: Wilson intervals and the sequential rules that decide when a trial count is enough."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from vrrl_gpu.errors import RecordValueError

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MIN_RATE",
    "Rate",
    "wilson_interval",
    "misses_to_reject",
    "check_rate_options",
]

#: Two-sided confidence of every interval, and 1 - the miss probability of a rejection.
DEFAULT_CONFIDENCE = 0.95
#: ``replay --trials``: the rate a failure must be shown to exceed to count as reproducible.
DEFAULT_MIN_RATE = 0.05


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(
    successes: int, trials: int, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials`` (``(0, 1)`` for no trials)."""
    if trials <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / trials
    z2 = z * z
    denom = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    # The exact bounds at 0 and n successes; floating point would leave 1e-17 there.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == trials else min(1.0, centre + half)
    return lo, hi


def misses_to_reject(rate: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Trials without a reproduction after which a candidate is rejected.

    A candidate that reproduces at ``rate`` shows no reproduction in ``k``
    trials with probability ``(1 - rate) ** k``; this is the smallest ``k``
    that makes that at most ``1 - confidence`` (1 for a rate of 1).
    """
    if rate >= 1.0:
        return 1
    if rate <= 0.0:
        raise RecordValueError(
            "a reference rate of 0 rejects nothing; the original must reproduce at least once"
        )
    beta = 1.0 - confidence
    return max(1, math.ceil(math.log(beta) / math.log1p(-rate) - 1e-12))


def check_rate_options(trials: int, confidence: float, min_rate: float | None, min_trials: int = 1) -> None:
    """Raise :class:`RecordValueError` for options no rule can use."""
    if trials < 1:
        raise RecordValueError(f"trials must be at least 1, got {trials}")
    if not 0.5 <= confidence < 1.0:
        raise RecordValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if min_rate is not None and not 0.0 < min_rate <= 1.0:
        raise RecordValueError(f"min_rate must be in (0, 1], got {min_rate}")
    if min_trials < 1:
        raise RecordValueError(f"min_trials must be at least 1, got {min_trials}")


@dataclass(frozen=True)
class Rate:
    """Trials of one launch sequence: how many reproduced the failure, and what else happened."""

    reproduced: int
    trials: int
    #: Trials that failed differently (another class, code or launch): reported, never counted.
    other_failures: int = 0
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def rate(self) -> float:
        return self.reproduced / self.trials if self.trials else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.reproduced, self.trials, self.confidence)

    def above(self, threshold: float) -> bool:
        """The interval lies entirely above ``threshold``: reproducible at a rate of at least that."""
        return self.interval[0] > threshold

    def below(self, threshold: float) -> bool:
        """The interval lies entirely below ``threshold`` (0 reproductions never lie below a rate of 0)."""
        return self.interval[1] < threshold

    def add(self, reproduced: bool, other: bool) -> Rate:
        return Rate(
            self.reproduced + int(reproduced),
            self.trials + 1,
            self.other_failures + int(other and not reproduced),
            self.confidence,
        )

    def describe(self) -> str:
        lo, hi = self.interval
        return (
            f"{self.reproduced} of {self.trials} trials, rate {self.rate:.2f} "
            f"({self.confidence:.0%} CI {lo:.2f}-{hi:.2f})"
        )

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {
            "reproduced": self.reproduced,
            "trials": self.trials,
            "other_failures": self.other_failures,
            "rate": self.rate,
            "interval": [lo, hi],
            "confidence": self.confidence,
        }
