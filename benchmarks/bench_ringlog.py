"""RingLog throughput: batched extend, records(), one-at-a-time append; peak RSS of reading a 64 MiB log.

Run: python benchmarks/bench_ringlog.py [--batch 65536]
Targets (issue 2): extend >= 30 M records/s, records() >= 30 M records/s, reading a 64 MiB log raises
peak RSS by at most 1.5x the log size.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from vrrl_gpu import RECORD_DTYPE, Record, RingLog
from vrrl_gpu.format import MAX_CAPACITY

_RSS_CHILD = r"""
import sys
from vrrl_gpu import RingLog

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM")

log = RingLog.open(sys.argv[1], readonly=True)
# Reset the peak-RSS mark (Linux clear_refs 5) so import-time peaks do not hide the read.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = hwm_kb()
recs = log.records()
after = hwm_kb()
print(before, after, recs.shape[0])
"""


def _records(n: int) -> np.ndarray:
    a = np.zeros(n, RECORD_DTYPE)
    a["timestamp_ns"] = np.arange(n, dtype=np.uint64) + 1_700_000_000_000_000_000
    a["slot_idx"] = np.arange(n, dtype=np.uint32)
    a["opcode"] = 3
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--appends", type=int, default=20000)
    opts = ap.parse_args()
    cap = MAX_CAPACITY
    data = _records(cap)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.vrrl")
        with RingLog.open(path, capacity=cap) as log:
            best = float("inf")
            for _ in range(opts.repeat):
                t0 = time.perf_counter()
                for i in range(0, cap, opts.batch):
                    log.extend(data[i : i + opts.batch])
                best = min(best, time.perf_counter() - t0)
            rows.append((f"extend (batches of {opts.batch:,})", f"{cap / best / 1e6:.1f} M rec/s", ">= 30"))

            best = float("inf")
            for _ in range(opts.repeat):
                t0 = time.perf_counter()
                out = log.records()
                best = min(best, time.perf_counter() - t0)
            assert out.shape[0] == cap
            rows.append(("records() of 1,048,576", f"{cap / best / 1e6:.1f} M rec/s", ">= 30"))

            rec = Record(timestamp_ns=1, slot_idx=0, tenant_id=0, opcode=1, args=(0, 0, 0, 0), epoch=0)
            t0 = time.perf_counter()
            for _ in range(opts.appends):
                log.append(rec)
            dt = time.perf_counter() - t0
            rows.append(("append() one at a time", f"{opts.appends / dt / 1e6:.3f} M rec/s", "baseline"))

        r = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, path], capture_output=True, text=True, check=True
        )
        before_kb, after_kb, _n = (int(x) for x in r.stdout.split())
        size = os.path.getsize(path)
        rise = (after_kb - before_kb) * 1024
        rows.append(
            ("peak RSS rise reading 64 MiB", f"{rise / 2**20:.1f} MiB ({rise / size:.2f}x log)", "<= 1.5x")
        )

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpu(s), Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'result':<28}  target")
    for name, value, target in rows:
        print(f"{name:<{w}}  {value:<28}  {target}")


if __name__ == "__main__":
    main()
