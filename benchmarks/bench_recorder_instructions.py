"""Instructions per recorded launch (issue 17), counted by valgrind's callgrind: repeatable where wall time
is not (a shared 2-vCPU VM). Run: python benchmarks/bench_recorder_instructions.py [--calls 2000]

Each case runs ``--calls`` times inside its own ``exec`` in one process under
``valgrind --tool=callgrind --toggle-collect=builtin_exec --dump-after=builtin_exec``, so every case's
instructions are a dump of their own, the setup excluded; an empty loop is subtracted. Counted: the calling
thread only (the twin's worker and the drain thread are not), so these are host-side costs.

* the recorder's own work per launch, as bench_recorder.py defines it (backend launches no-ops through a
  CountingBackend, minus the no-op user launch and pack(s)), in bare 4-argument Python calls (target <= 5);
* the calling thread's instructions per call on the real twin: a bare launch, rec.launch, rec.instrument, as
  ratios to the bare launch (targets <= 2x pack, <= 1.2x instrumented).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_PY_CALLS, TARGET_PACK, TARGET_INSTRUMENTED = 5.0, 2.0, 1.2


def _cases(mode: str, noop: bool, tmp: str) -> tuple[Any, dict[str, Callable[[], object]]]:
    from vrrl_gpu import Recorder, VrrlWarning
    from vrrl_gpu.backends import CountingBackend, get_backend

    # No-op launches through a CountingBackend for the recorder's own work; the twin itself otherwise.
    cb: Any = CountingBackend(get_backend("twin"), noop=True) if noop else get_backend("twin")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VrrlWarning)
        rec = Recorder(os.path.join(tmp, f"{mode}-{noop}.vrrl"), device=cb, capacity=1 << 16,
                       staging_slots=1 << 14, breadcrumbs=mode, capture_check="declared",
                       backpressure=not noop)  # fmt: skip
    k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
    s = cb.new_stream()
    op = rec.opcode("spin")
    ik: Any = rec.instrument(k, opcode=op)

    def launch() -> None:
        rec.launch(k, 1, 1, (0,), opcode=op, stream=s)

    launch()
    ik(1, 1, (0,), stream=s)
    bound = rec._by_id[id(s)].pack
    assert bound is not None

    def noop4(a: object, b: object, c: object, d: object) -> None:
        return None

    return rec, {
        "none": lambda: None,
        "unit": lambda: noop4(1, 1, 1, 1),
        "bare": functools.partial(cb.launch, k, 1, 1, (0,), stream=s),
        "pack": functools.partial(bound, 0, 0, op, (0, 0, 0, 0), 0, 1),
        "rec.launch": launch,
        "rec.instrument": functools.partial(ik, 1, 1, (0,), stream=s),
        "bound": functools.partial(ik.bound, 1, 1, (0,), (0, 0, 0, 0, 0, 0), s, 0),
    }


def child(calls: int) -> None:
    """Under callgrind: each case of each configuration in its own exec (its own dump), named on stdout."""
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("begin", "begin+end"):
            for noop in (True, False):
                rec, cases = _cases(mode, noop, tmp)
                for name, fn in cases.items():
                    exec("for _ in range(n): fn()", {"n": calls, "fn": fn})
                    print(f"case {mode} {'noop' if noop else 'twin'} {name}", flush=True)
                    rec.synchronize()
                rec.close()


def _per_call(ir: dict[str, int], prefix: str, calls: int) -> dict[str, float]:
    """Instructions per call of each case of ``prefix``, the empty loop subtracted."""
    empty = ir[f"{prefix} none"]
    return {k[len(prefix) + 1 :]: (v - empty) / calls for k, v in ir.items() if k.startswith(prefix + " ")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.child:
        child(opts.calls)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found: skipped (apt-get install valgrind)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=builtin_exec",
               "--dump-after=builtin_exec", f"--callgrind-out-file={out}", sys.executable, __file__,
               "--child",
               "--calls", str(opts.calls)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        names = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("case ")]
        if proc.returncode != 0 or not names:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return 1
        dumps = sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        totals = []
        for d in dumps:
            m = re.search(r"^summary:\s+(\d+)", d.read_text(), re.M)
            totals.append(int(m.group(1)) if m else 0)
    ir = dict(zip(names, totals[-len(names) :], strict=True))  # the last dumps: the cases (imports exec too)
    print(f"instructions per call (callgrind, calling thread only; {opts.calls} calls per case; Python "
          f"{sys.version.split()[0]})")  # fmt: skip
    for mode in ("begin", "begin+end"):
        noop = _per_call(ir, f"{mode} noop", opts.calls)
        packs = 2 if mode == "begin+end" else 1
        unit = noop["unit"]
        own = noop["rec.launch"] - noop["bare"] - packs * noop["pack"]
        own_i = noop["rec.instrument"] - noop["bound"]
        print(f"\n{mode}: the recorder's own work (no-op backend); a bare 4-argument call = {unit:.0f}")
        for label, v in (("rec.launch", own), ("rec.instrument", own_i)):
            print(f"  {label:<15} {v:8.0f} = {v / unit:6.1f} bare calls  (target <= {TARGET_PY_CALLS:g})")
        twin = _per_call(ir, f"{mode} twin", opts.calls)
        bare = twin["bare"]
        print(f"{mode}: the calling thread on the twin, instructions per call (x a bare launch)")
        print(f"  {'bare launch':<15} {bare:8.0f}")
        for label, target in (("rec.launch", TARGET_PACK), ("rec.instrument", TARGET_INSTRUMENTED)):
            print(f"  {label:<15} {twin[label]:8.0f}  {twin[label] / bare:5.2f}x  (target <= {target:g}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
