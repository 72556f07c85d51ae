"""Analysis of logs: launches and crash windows, stats, diff, merge, follow, exports and the HTML report.

Pure functions over ``RECORD_DTYPE`` arrays (see docs/analysis.md).
"""

from __future__ import annotations

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
