"""Analysis of logs: launches and crash windows, stats, diff, merge, follow, exports and the HTML report.

Pure functions over ``RECORD_DTYPE`` arrays (see docs/analysis.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vrrl_gpu.analysis._diff import DiffResult, Divergence, diff_records
    from vrrl_gpu.analysis._export import MergeSummary, export_log, merge_to
    from vrrl_gpu.analysis._follow import LogFollower
    from vrrl_gpu.analysis._launches import (
        FAILURE_STATUSES,
        CrashWindow,
        Launches,
        code_label,
        crash_windows,
        failure_mask,
        find_launches,
        gap_drops,
        launch_keys,
        meta_mask,
        unclaimed_slots,
    )
    from vrrl_gpu.analysis._merge import merge_logs
    from vrrl_gpu.analysis._report import DEFAULT_LAST, render_report, write_report
    from vrrl_gpu.analysis._stats import compute_stats

__all__ = [
    # launches
    "FAILURE_STATUSES",
    "Launches",
    "CrashWindow",
    "meta_mask",
    "failure_mask",
    "launch_keys",
    "find_launches",
    "gap_drops",
    "crash_windows",
    "unclaimed_slots",
    "code_label",
    # stats
    "compute_stats",
    # diff
    "Divergence",
    "DiffResult",
    "diff_records",
    # merge
    "merge_logs",
    # follow
    "LogFollower",
    # export
    "MergeSummary",
    "export_log",
    "merge_to",
    # report
    "DEFAULT_LAST",
    "render_report",
    "write_report",
]

#: Where each lazy name of ``__all__`` is defined (a module's own name for a subpackage): each is imported on
#: first use (PEP 562), so that importing the package costs only the parts a program uses.
_HOMES: dict[str, str] = {
    name: home
    for home, names in (
        ("vrrl_gpu.analysis._diff", ("DiffResult", "Divergence", "diff_records")),
        ("vrrl_gpu.analysis._export", ("MergeSummary", "export_log", "merge_to")),
        ("vrrl_gpu.analysis._follow", ("LogFollower",)),
        (
            "vrrl_gpu.analysis._launches",
            (
                "FAILURE_STATUSES",
                "CrashWindow",
                "Launches",
                "code_label",
                "crash_windows",
                "failure_mask",
                "find_launches",
                "gap_drops",
                "launch_keys",
                "meta_mask",
                "unclaimed_slots",
            ),
        ),
        ("vrrl_gpu.analysis._merge", ("merge_logs",)),
        ("vrrl_gpu.analysis._report", ("DEFAULT_LAST", "render_report", "write_report")),
        ("vrrl_gpu.analysis._stats", ("compute_stats",)),
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
