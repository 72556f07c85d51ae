"""Instructions per recorded launch (issue 17), counted by valgrind's callgrind: repeatable where wall time
is not (a shared 2-vCPU VM). Run: python benchmarks/bench_recorder_instructions.py [--calls 2000]

Each case runs ``--calls`` times inside its own ``exec`` in one process under
``valgrind --tool=callgrind --toggle-collect=builtin_exec --dump-after=builtin_exec``, so every case's
instructions are a dump of their own, the setup excluded; an empty loop is subtracted. Counted: the calling
thread only (the twin's worker and the drain thread are not), so these are host-side costs.

* the recorder's own work per launch, as bench_recorder.py defines it (backend launches no-ops that do
  nothing else, minus the no-op user launch and pack(s)), in bare 4-argument Python calls (target <= 5),
  for ``rec.launch``, a pre-bound ``rec.launcher``, ``rec.slot`` around one launch and an instrumented kernel;
* the calling thread's instructions per call on the real twin: a bare launch, rec.launch, rec.launcher,
  rec.slot around a bare launch, rec.instrument, as ratios to the bare launch (targets <= 2x pack, <= 1.2x
  instrumented).

Both implementations of the launch path are measured: with the C accelerator (recorder/_fast.c, when it
builds) and pure Python (``VRRL_NO_ACCEL=1``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_PY_CALLS, TARGET_PACK, TARGET_INSTRUMENTED = 5.0, 2.0, 1.2
#: Each stream's staging ring and launch map: larger than a case's calls, so backpressure never waits.
STAGING = 1 << 14


def _c_noop() -> Callable[..., None] | None:
    """``_noop.c``'s do-nothing C callable, or None where it cannot be built (no compiler, no headers)."""
    from vrrl_gpu import _native

    try:
        return _native.build(Path(__file__).with_name("_noop.c"), "_vrrl_bench_noop").noop  # type: ignore[no-any-return]
    except _native.Unavailable:
        return None


def _noop_twin(c_calls: bool = False) -> Any:
    """The twin with every launch a no-op that does nothing else: the recorder's own work is what a case
    costs beyond these (a CountingBackend's no-op counts each call, a Counter store through a Python-level
    slot, ~5 bare calls a launch, and that work's interplay with the case's was left in the difference).

    ``c_calls``: the no-ops are one C callable instead of Python functions (as a backend written in C
    would be): the C launch path then calls C, where with Python functions it enters the interpreter
    afresh for each, which a Python caller's call does not (see bench_recorder.py's own-work rows)."""
    from vrrl_gpu.backends import TwinBackend

    if c_calls:
        noop = _c_noop()
        if noop is None:
            raise RuntimeError("the C no-op (benchmarks/_noop.c) cannot be built here")

        class CNoopTwin(TwinBackend):
            # A builtin is no descriptor: backend.launch is the callable itself, as a function's binding
            # would give a bound method taking the same arguments.
            launch = noop

            def bind_pack(self, ring: Any, *, stream: Any, tenant_id: int, ts_offset: int) -> Any:
                return noop

            def bind_launch(self, kernel: Any, own: int, fixed: Any) -> Any:
                return noop

        return CNoopTwin()

    class NoopTwin(TwinBackend):
        # The signatures of the real ones (Backend.launch, PackLauncher, BoundLauncher): the same binding.
        def launch(self, kernel: Any, grid: Any, block: Any, args: Any, *, stream: Any = None,
                   shared_mem: int = 0) -> None:  # fmt: skip
            return None

        def bind_pack(self, ring: Any, *, stream: Any, tenant_id: int, ts_offset: int) -> Any:
            def bound(seq: int, slot_idx: int, opcode: int, words: Any, epoch: int, status: int) -> None:
                return None

            return bound

        def bind_launch(self, kernel: Any, own: int, fixed: Any) -> Any:
            def bound(grid: Any, block: Any, args: Any, varying: Any, stream: Any, shm: int) -> None:
                return None

            return bound

    return NoopTwin()


def _cases(
    mode: str, noop: bool, tmp: str, c_calls: bool = False
) -> tuple[Any, dict[str, Callable[[], object]]]:
    from vrrl_gpu import Recorder, VrrlWarning
    from vrrl_gpu.backends import get_backend

    # No-op launches for the recorder's own work; the twin itself otherwise.
    cb: Any = _noop_twin(c_calls) if noop else get_backend("twin")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VrrlWarning)
        rec = Recorder(os.path.join(tmp, f"{mode}-{noop}-{c_calls}.vrrl"), device=cb, capacity=1 << 16,
                       staging_slots=STAGING, breadcrumbs=mode, capture_check="declared",
                       backpressure=not noop)  # fmt: skip
    k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
    s = cb.new_stream()
    op = rec.opcode("spin")
    ik: Any = rec.instrument(k, opcode=op)
    launcher = rec.launcher(k, opcode=op, stream=s)
    # Steady state: the stream's launch map full (its first STAGING launches allocate an entry each; after
    # that an entry is rewritten in place), the twin's prebuilt pools grown; then the queue drained.
    for _ in range(STAGING // (2 if mode == "begin+end" else 1)):
        rec.launch(k, 1, 1, (0,), opcode=op, stream=s)
    for _ in range(4096):  # the instrumented kernel's prebuilt blocks grown too
        ik(1, 1, (0,), stream=s)
    rec.synchronize()
    pack = rec._by_id[id(s)].pack
    bound = ik.bound
    assert pack is not None
    a, zw, varying = (0,), (0, 0, 0, 0), (0, 0, 0, 0, 0, 0)

    def noop4(a: object, b: object, c: object, d: object) -> None:
        return None

    slot = rec.slot

    def in_slot() -> None:
        with slot(op, zw, stream=s):
            cb.launch(k, 1, 1, a, stream=s)

    # Controls: the same backend calls made by one closure, without the recorder (for a slot, inside a C
    # context manager that does nothing): what a case costs beyond them is the recorder's alone, whatever
    # running them together costs (in wall time far more than the sum of each timed alone).
    lock = threading.RLock()
    end = mode == "begin+end"

    def same_calls() -> None:
        pack(0, 0, op, zw, 0, 1)
        cb.launch(k, 1, 1, a, stream=s)
        if end:
            pack(0, 0, op, zw, 0, 1)

    def same_in_with() -> None:
        pack(0, 0, op, zw, 0, 1)
        with lock:
            cb.launch(k, 1, 1, a, stream=s)
        if end:
            pack(0, 0, op, zw, 0, 1)

    # Every case is one direct call from a closure of the same shape, so what is subtracted (the loop, the
    # closure's own call) is the same for all; a bare Python call is the unit.
    return rec, {
        "none": lambda: None,
        "unit": lambda: noop4(1, 1, 1, 1),
        "bare": lambda: cb.launch(k, 1, 1, a, stream=s),
        "pack": lambda: pack(0, 0, op, zw, 0, 1),
        "rec.launch": lambda: rec.launch(k, 1, 1, a, opcode=op, stream=s),
        "rec.launcher": lambda: launcher(1, 1, a),
        "rec.instrument": lambda: ik(1, 1, a, stream=s),
        "rec.slot": in_slot,
        "bound": lambda: bound(1, 1, a, varying, s, 0),
        "same calls": same_calls,
        "same calls in a with": same_in_with,
    }


def child(calls: int) -> None:
    """Under callgrind: each case of each configuration in its own exec (its own dump), named on stdout.

    Each case starts on a collected, frozen heap: the twin's launch queues two tracked objects a call (its
    worker frees them), so the cases' allocations set off collections, and a full one traverses the whole
    setup's heap (~40 M instructions, ~20,000 a call here) in whichever case crosses the threshold; frozen,
    that heap is outside every collection, and each case pays for the collections of its own objects only.
    """
    import gc

    from vrrl_gpu.recorder import _accel

    print(f"accel {_accel.built()[0]}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("begin", "begin+end"):
            for noop in (True, False):
                rec, cases = _cases(mode, noop, tmp)
                for name, fn in cases.items():
                    gc.collect()
                    gc.freeze()
                    exec("for _ in range(n): fn()", {"n": calls, "fn": fn})
                    print(f"case {mode} {'noop' if noop else 'twin'} {name}", flush=True)
                    rec.synchronize()
                rec.close()


def _per_call(ir: dict[str, int], prefix: str, calls: int) -> dict[str, float]:
    """Instructions per call of each case of ``prefix``, the empty loop subtracted."""
    empty = ir[f"{prefix} none"]
    return {k[len(prefix) + 1 :]: (v - empty) / calls for k, v in ir.items() if k.startswith(prefix + " ")}


def _measure(calls: int, accel: bool, tmp: Path, seed: str | None) -> tuple[bool, dict[str, int]] | None:
    """One callgrind run of :func:`child` (``accel``: whether the C accelerator may load; ``seed``: the
    child's PYTHONHASHSEED, which moves dict probes and so the counts by ~100 instructions a call)."""
    out = tmp / f"cg-{int(accel)}.out"
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=builtin_exec",
           "--dump-after=builtin_exec", f"--callgrind-out-file={out}", sys.executable, __file__, "--child",
           "--calls", str(calls)]  # fmt: skip
    env = dict(os.environ, VRRL_NO_ACCEL="0" if accel else "1")
    if seed is not None:
        env["PYTHONHASHSEED"] = seed
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    names = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("case ")]
    if proc.returncode != 0 or not names:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        return None
    used = "accel True" in proc.stdout
    dumps = sorted(tmp.glob(f"{out.name}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    totals = []
    for d in dumps:
        m = re.search(r"^summary:\s+(\d+)", d.read_text(), re.M)
        totals.append(int(m.group(1)) if m else 0)
        d.unlink()
    # The last dumps are the cases (imports exec too).
    return used, dict(zip(names, totals[-len(names) :], strict=True))


def _report(ir: dict[str, int], calls: int) -> None:
    for mode in ("begin", "begin+end"):
        noop = _per_call(ir, f"{mode} noop", calls)
        packs = 2 if mode == "begin+end" else 1
        unit = noop["unit"]
        print(f"\n{mode}: the recorder's own work (no-op backend: the case minus its no-op launch and "
              f"packs); a bare 4-argument call = {unit:.0f}")  # fmt: skip
        for label, same in (("rec.launch", "same calls"), ("rec.launcher", "same calls"),
                            ("rec.slot", "same calls in a with")):  # fmt: skip
            v = noop[label] - noop["bare"] - packs * noop["pack"]
            c = (noop[label] - noop[same]) / unit
            print(f"  {label:<15} {v:8.0f} = {v / unit:6.1f} bare calls  (target <= {TARGET_PY_CALLS:g}); "
                  f"{c:5.1f} beside one closure making the same calls")  # fmt: skip
        v = noop["rec.instrument"] - noop["bound"]
        target = f"(target <= {TARGET_PY_CALLS:g})"
        print(f"  {'rec.instrument':<15} {v:8.0f} = {v / unit:6.1f} bare calls  {target}")
        twin = _per_call(ir, f"{mode} twin", calls)
        bare = twin["bare"]
        print(f"{mode}: the calling thread on the twin, instructions per call (x a bare launch)")
        print(f"  {'bare launch':<15} {bare:8.0f}")
        print(f"  {'one bound pack':<15} {twin['pack']:8.0f}")
        pairs = (("rec.launch", TARGET_PACK), ("rec.launcher", TARGET_PACK), ("rec.slot", TARGET_PACK),
                 ("rec.instrument", TARGET_INSTRUMENTED))  # fmt: skip
        for label, target in pairs:
            print(f"  {label:<15} {twin[label]:8.0f}  {twin[label] / bare:5.2f}x  (target <= {target:g}x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--python-only", action="store_true", help="skip the run with the C accelerator")
    ap.add_argument("--c-only", action="store_true", help="skip the pure-Python run")
    ap.add_argument("--seed", default=None, help="PYTHONHASHSEED of the measured process (default: random)")
    opts = ap.parse_args()
    if opts.child:
        child(opts.calls)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found: skipped (apt-get install valgrind)")
        return 0
    print(f"instructions per call (callgrind, calling thread only; {opts.calls} calls per case; Python "
          f"{sys.version.split()[0]}; PYTHONHASHSEED {opts.seed or 'random'}; load average "
          f"{os.getloadavg()[0]:.2f})")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        runs = (False,) if opts.python_only else (True,) if opts.c_only else (True, False)
        for accel in runs:
            got = _measure(opts.calls, accel, Path(tmp), opts.seed)
            if got is None:
                return 1
            used, ir = got
            if accel and not used:
                print("\n== C accelerator: not available here (recorder/_accel.py says why)")
                continue
            which = "with the C accelerator (recorder/_fast.c)" if used else "pure Python (VRRL_NO_ACCEL=1)"
            print(f"\n== {which}")
            _report(ir, opts.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
