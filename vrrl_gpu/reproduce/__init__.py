"""Reproduce: read a crashed job's log into a plan, replay it in child processes, minimise it."""

from __future__ import annotations

from vrrl_gpu.reproduce._child import current_recorder, current_stream, trial_seed
from vrrl_gpu.reproduce._minimize import MinimizeResult, minimize, write_sequence_log
from vrrl_gpu.reproduce._plan import (
    DEFAULT_TIMEOUT,
    REPLAY_DEVICES,
    Device,
    Launch,
    RecordedFailure,
    ReplayPlan,
    read_plan,
)
from vrrl_gpu.reproduce._rate import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_RATE,
    Rate,
    misses_to_reject,
    wilson_interval,
)
from vrrl_gpu.reproduce._registry import independent, load_registry, resolve_registry
from vrrl_gpu.reproduce._replay import DigestMismatch, ReplayReport, replay
from vrrl_gpu.reproduce._sampler import MATCH_MODES, Budget, Match, matches
from vrrl_gpu.reproduce._trials import TrialFailure, TrialOutcome, run_trial

__all__ = [
    # plan
    "Launch",
    "RecordedFailure",
    "ReplayPlan",
    "DEFAULT_TIMEOUT",
    "Device",
    "REPLAY_DEVICES",
    "read_plan",
    # registry
    "load_registry",
    "independent",
    "resolve_registry",
    # trials
    "TrialFailure",
    "TrialOutcome",
    "run_trial",
    # child
    "current_recorder",
    "current_stream",
    "trial_seed",
    # rates and many trials
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MIN_RATE",
    "Rate",
    "misses_to_reject",
    "wilson_interval",
    "MATCH_MODES",
    "Match",
    "Budget",
    "matches",
    # replay
    "DigestMismatch",
    "ReplayReport",
    "replay",
    # minimize
    "MinimizeResult",
    "minimize",
    "write_sequence_log",
]
