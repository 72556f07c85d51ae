"""Reproduce: read a crashed job's log into a plan, replay it in child processes, minimise it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vrrl_gpu.reproduce._child import current_recorder, current_stream, trial_seed
    from vrrl_gpu.reproduce._minimize import MinimizeResult, minimize, write_sequence_log
    from vrrl_gpu.reproduce._plan import (
        DEFAULT_TIMEOUT,
        MATCH_MODES,
        REPLAY_DEVICES,
        Device,
        Launch,
        Match,
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
    from vrrl_gpu.reproduce._sampler import Budget, matches
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

#: Where each lazy name of ``__all__`` is defined (a module's own name for a subpackage): each is imported on
#: first use (PEP 562), so that importing the package costs only the parts a program uses.
_HOMES: dict[str, str] = {
    name: home
    for home, names in (
        ("vrrl_gpu.reproduce._child", ("current_recorder", "current_stream", "trial_seed")),
        ("vrrl_gpu.reproduce._minimize", ("MinimizeResult", "minimize", "write_sequence_log")),
        (
            "vrrl_gpu.reproduce._plan",
            (
                "DEFAULT_TIMEOUT",
                "MATCH_MODES",
                "REPLAY_DEVICES",
                "Device",
                "Launch",
                "Match",
                "RecordedFailure",
                "ReplayPlan",
                "read_plan",
            ),
        ),
        (
            "vrrl_gpu.reproduce._rate",
            ("DEFAULT_CONFIDENCE", "DEFAULT_MIN_RATE", "Rate", "misses_to_reject", "wilson_interval"),
        ),
        ("vrrl_gpu.reproduce._registry", ("independent", "load_registry", "resolve_registry")),
        ("vrrl_gpu.reproduce._replay", ("DigestMismatch", "ReplayReport", "replay")),
        ("vrrl_gpu.reproduce._sampler", ("Budget", "matches")),
        ("vrrl_gpu.reproduce._trials", ("TrialFailure", "TrialOutcome", "run_trial")),
    )
    for name in names
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
