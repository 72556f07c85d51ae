"""The attribution matrix's figures: cases, exact, unknown, wrong (the target: wrong = 0).

Run: python benchmarks/bench_attribution.py [--device twin|cupy] [--only SUBSTRING]

Runs every case of tests/helpers/attribution.py (fault at K with 10x, 100x and 1000x the staging ring's
slots queued behind it; both breadcrumb modes; pinned and shm staging; 1, 2 and 8 streams; polling every
launch or never; with and without backpressure), each in its own process (a real fault kills the CUDA
context of its process), and prints one line per case and the totals.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = REPO / "tests" / "helpers" / "attribution.py"
sys.path.insert(0, str(REPO))

from tests.helpers.attribution import matrix  # noqa: E402  (the repository root is on the path only now)
from tests.helpers.child import parse_result  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="twin", choices=("twin", "cupy"))
    ap.add_argument("--only", default="", help="run only the cases whose id contains this")
    args = ap.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    counts: Counter[str] = Counter()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for i, case in enumerate(c for c in matrix() if args.only in c.id):
            proc = subprocess.run(
                [sys.executable, str(CHILD), case.id, args.device, f"{d}/{i}.vrrl"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if proc.returncode != 0:
                counts["error"] += 1
                print(f"{case.id:45s} ERROR {proc.stderr.strip().splitlines()[-1:]}")
                continue
            out = parse_result(proc.stdout)
            counts[out["verdict"]] += 1
            print(f"{case.id:45s} {out['verdict']:8s} {out['detail']}", flush=True)
    n = sum(counts.values())
    print(
        f"\ncases {n}  exact {counts['exact']}  unknown {counts['unknown']}  wrong {counts['wrong']}  "
        f"errors {counts['error']}  (target: wrong 0)  device {args.device}  {time.perf_counter() - t0:.0f} s"
    )
    return 0 if counts["wrong"] == 0 and counts["error"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
