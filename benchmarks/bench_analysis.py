"""Throughput of the analysis commands on this machine: stats, diff, k-way merge, exports, report.

Run: python benchmarks/bench_analysis.py [--records N] [--logs K]. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from vrrl_gpu import RingLog
from vrrl_gpu.analysis import compute_stats, diff_records, export_log, merge_to, render_report
from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC, SlotStatus


def synthetic(n: int, tenant: int = 0, seed: int = 0) -> np.ndarray:
    """n/2 launches with begin+end breadcrumbs on 4 tracks."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n, RECORD_DTYPE)
    r["magic"] = RECORD_MAGIC
    launch = np.arange(n) // 2
    r["timestamp_ns"] = 1_700_000_000_000_000_000 + np.arange(n) * 500 + rng.integers(0, 100, n)
    r["timestamp_ns"].sort()
    r["slot_idx"] = launch
    r["tenant_id"] = tenant * 4 + launch % 4
    r["opcode"] = 0x1000 + launch % 7
    r["slot_status"] = np.where(np.arange(n) % 2, SlotStatus.COMPLETED, SlotStatus.BEGIN)
    return r


def timed(label: str, n: int, fn, *, memory: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Time ``fn``; with ``memory``, run it again under tracemalloc (which slows it) for the peak."""
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    line = f"{label:<36} {dt:8.3f} s  {n / dt / 1e6:7.3f} M records/s"
    if memory:
        tracemalloc.start()
        fn()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        line += f"  peak traced {peak / 2**20:6.1f} MiB (input {n * 64 / 2**20:.1f} MiB)"
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1 << 20)
    ap.add_argument("--logs", type=int, default=1000)
    a = ap.parse_args()
    n = min(a.records, 1 << 20)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "big.vrrl"
        recs = synthetic(n)
        with RingLog.open(p, capacity=n) as log:
            log.extend(recs)
        timed("stats", n, lambda: compute_stats(recs))
        timed("diff (log against itself)", 2 * n, lambda: diff_records(recs, recs.copy()))
        timed("report (HTML)", n, lambda: render_report(recs))
        for fmt in ("jsonl", "csv", "parquet", "chrome"):
            try:
                timed(
                    f"export {fmt}", n, lambda fmt=fmt: export_log(p, Path(d) / f"x.{fmt}", fmt, force=True)
                )
            except ImportError as e:
                print(f"export {fmt}: skipped ({e})")
        per = max(1, n // a.logs)
        paths = []
        for i in range(a.logs):
            q = Path(d) / f"rank{i}.vrrl"
            with RingLog.open(q, capacity=per) as log:
                log.extend(synthetic(per, tenant=i, seed=i))
            paths.append(q)
        total = per * a.logs
        timed(
            f"merge {a.logs} logs -> vrrl",
            total,
            lambda: merge_to(paths, Path(d) / "m.vrrl", "vrrl", force=True),
            memory=True,
        )
        timed(
            f"merge {a.logs} logs -> jsonl",
            total,
            lambda: merge_to(paths, Path(d) / "m.jsonl", "jsonl", force=True),
        )


if __name__ == "__main__":
    main()
