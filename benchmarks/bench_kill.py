"""SIGKILL recording processes at random moments and count what each kill left (issue 16).

Each case is tests/hostile/_kill.py's: a twin recording (pinned or shm staging,
begin or begin+end breadcrumbs, launch / wrap / slot) killed at a random moment
(any time, inside the Recorder's creation, or while recording), its staging
recovered, its log verified and reopened.

Run: PYTHONPATH=. python benchmarks/bench_kill.py [--cases 200] [--first-seed 1000]
Target (issue 16): >= 200 cases, 0 hangs, 0 tracebacks, 0 logs refused, 0 torn records,
loss per kill <= one staging window (256 launches here).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from tests.hostile._kill import STAGING_SLOTS, run_case, summarise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--first-seed", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory() as d:
        for seed in range(args.first_seed, args.first_seed + args.cases):
            r = run_case(seed, Path(d))
            results.append(r)
            if r.hang or r.tracebacks or r.refused or r.torn or r.lost > STAGING_SLOTS:
                print("FAILED", r)
    summary = summarise(results)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; {time.monotonic() - t0:.0f} s")
    cols = ["cases", "no_log", "hangs", "tracebacks", "refused", "torn", "worst_loss", "recovered"]
    cols.append("temp_files")
    print(f"{'class':32}" + "".join(f"{c:>11}" for c in cols))
    for key in sorted(summary, key=lambda k: (k != "all", k)):
        print(f"{key:32}" + "".join(f"{summary[key][c]:>11}" for c in cols))
    print(f"target: 0 hangs, tracebacks, refused, torn; worst_loss <= {STAGING_SLOTS}")
    print(json.dumps(summary["all"]))


if __name__ == "__main__":
    main()
