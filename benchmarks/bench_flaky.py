"""Trials spent minimising a flaky failure, against the sequence length, for p = 1.0, 0.5 and 0.2.

Run: python benchmarks/bench_flaky.py [--lengths 8,16,32,64] [--trials 20] [--jobs 2] [--seeds 3]

The failure needs two launches (``arm`` a quarter of the way in, ``load`` at three quarters) and then
strikes with probability p in a fresh process (drawn from the trial's seed, as in
tests/reproduce/test_flaky.py), so the true minimum is those two launches and the failure. Each row:
the mean trials spent over the seeds, the worst, the candidates judged, how many runs found the true
minimum (the target: all of them) and the bound the tests assert (2N + k (L^2 + 4L + 1), k the misses
after which a candidate is rejected).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cupy_backends.cuda.api.runtime import CUDARuntimeError  # noqa: E402

from vrrl_gpu import FailureEvidence, Record, RingLog, SlotStatus  # noqa: E402
from vrrl_gpu.format import Sidecar, opcode_for_name, write_sidecar  # noqa: E402
from vrrl_gpu.reproduce import read_plan  # noqa: E402
from vrrl_gpu.reproduce._minimize import minimize  # noqa: E402

REGISTRY = textwrap.dedent(
    """
    import random
    from cupy_backends.cuda.api.runtime import CUDARuntimeError
    from vrrl_gpu.reproduce import trial_seed

    STATE = {"armed": False, "loaded": False}

    def noop(w, e, t, s):
        return None

    def arm(w, e, t, s):
        STATE["armed"] = True

    def load(w, e, t, s):
        if STATE["armed"]:
            STATE["loaded"] = True

    def fire_with(p):
        def fire(w, e, t, s):
            if STATE["armed"] and STATE["loaded"] and random.Random(trial_seed()).random() < p:
                raise CUDARuntimeError(700)
        return fire

    BASE = {"noop": noop, "arm": arm, "load": load}
    P100 = {**BASE, "fire": fire_with(1.0)}
    P50 = {**BASE, "fire": fire_with(0.5)}
    P20 = {**BASE, "fire": fire_with(0.2)}
    """
)


def write_log(path: Path, length: int) -> list[int]:
    names = ["noop"] * length
    needed = [length // 4, (3 * length) // 4, length - 1]
    names[needed[0]], names[needed[1]], names[needed[2]] = "arm", "load", "fire"
    recs = [
        Record(
            timestamp_ns=1000 + i,
            slot_idx=i,
            tenant_id=0,
            opcode=opcode_for_name(n),
            args=(i, 0, 0, 0),
            epoch=0,
        )
        for i, n in enumerate(names)
    ]
    ev = FailureEvidence.from_exception(CUDARuntimeError(700), slot_status=int(SlotStatus.FAILED_AT_LAUNCH))
    recs.append(ev.apply(recs[-1]))
    with RingLog.open(path, capacity=max(64, 2 * length)) as log:
        log.extend(recs)
    write_sidecar(path, Sidecar(opcode_names={opcode_for_name(n): n for n in set(names)}))
    return needed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="8,16,32,64")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"trials per sequence N = {args.trials}, jobs = {args.jobs}, {args.seeds} seeds per cell")
    print(
        f"{'p':>4} {'L':>4} {'trials (mean)':>14} {'worst':>6} {'cand.':>6} {'k':>3} {'true min':>9} "
        f"{'bound':>7} {'s/run':>6}"
    )
    with tempfile.TemporaryDirectory() as d:
        reg = Path(d) / "bench_flaky_reg.py"
        reg.write_text(REGISTRY)
        for p, name in ((1.0, "P100"), (0.5, "P50"), (0.2, "P20")):
            for length in lengths:
                log = Path(d) / f"L{length}.vrrl"
                if not log.exists():
                    needed = write_log(log, length)
                else:
                    needed = [length // 4, (3 * length) // 4, length - 1]
                plan = read_plan(log)
                spent: list[int] = []
                cands: list[int] = []
                ks: list[int] = []
                exact = 0
                t0 = time.perf_counter()
                for seed in range(args.seeds):
                    r = minimize(
                        plan, f"{reg}:{name}", device="none", trials=args.trials, jobs=args.jobs, seed=seed
                    )
                    spent.append(r.trials)
                    cands.append(r.candidates)
                    ks.append(r.misses_to_reject)
                    exact += [x.position for x in r.kept] == needed
                secs = (time.perf_counter() - t0) / args.seeds
                n = length - 1
                bound = 2 * args.trials + max(ks) * (n * n + 4 * n + 1)
                print(
                    f"{p:>4} {length:>4} {statistics.mean(spent):>14.1f} {max(spent):>6} "
                    f"{statistics.mean(cands):>6.1f} {max(ks):>3} {exact:>4}/{args.seeds:<4} {bound:>7} "
                    f"{secs:>6.1f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
