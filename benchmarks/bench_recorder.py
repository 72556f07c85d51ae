"""Recorder overhead (issue 17), in one run: host cost per recorded launch as ratios to a bare launch,
the recorder's own Python work, and the CUDA API calls per recorded launch counted by a CountingBackend.

Run: python benchmarks/bench_recorder.py [--device auto|cupy|twin] [--calls 2000] [--e2e 10000]

Host µs per call on one explicit stream: a bare launch, ``rec.launch`` ("begin", "begin+end"), a
``rec.wrap``ped kernel, a ``rec.slot`` around the bare launch, and ``VRRL_DISABLE=1``, each beside its
target (issue 17: <= 1.2x bare for instrumented kernels, <= 2x through the pack kernel). The bare baseline
is the backend's launch on the twin and CuPy's own ``RawKernel.__call__`` on a GPU. The recorder's own
Python work is timed with every backend launch a no-op that does nothing else (not even count), in units
of a bare 4-argument Python call (target <= 5). The call counts are exact (targets: 1 launch instrumented,
2 pack+begin, 3 pack+begin+end, 0 runtime queries). With a GPU also the end-to-end time of ``--e2e``
launches of a ~50 µs kernel, bare vs recorded.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

from vrrl_gpu import Recorder, VrrlWarning
from vrrl_gpu.backends import CountingBackend, get_backend

SPIN_NS = 50_000
TARGET_PACK = 2.0
TARGET_INSTRUMENTED = 1.2
TARGET_PY_CALLS = 5.0


def _per_call_us(
    fn: Callable[[], object],
    calls: int,
    sync: Callable[[], None],
    repeat: int = 5,
    reduce: Callable[[list[float]], float] = statistics.median,
) -> float:
    """``reduce`` (the median) over ``repeat`` rounds of the host time per call, the queue drained between."""
    samples = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
        sync()
    return reduce(samples)


def _paired_us(
    fn: Callable[[], object], base: Callable[[], object], calls: int, sync: Callable[[], None],
    repeat: int = 7,
) -> tuple[float, float]:  # fmt: skip
    """``fn``'s median host µs per call and the median over rounds of ``fn / base``, ``base`` (the bare
    launch) timed in the same round right before ``fn``: a busy VM's slow spells (the twin's worker threads
    share its 2 vCPUs) then hit both sides of a ratio, not one."""
    times, ratios = [], []
    for _ in range(repeat):
        b = _per_call_us(base, calls, sync, repeat=1)
        t = _per_call_us(fn, calls, sync, repeat=1)
        times.append(t)
        ratios.append(t / b)
    return statistics.median(times), statistics.median(ratios)


def _recorder(tmp: str, name: str, device: Any, **kw: Any) -> Recorder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VrrlWarning)
        return Recorder(os.path.join(tmp, name), device=device, capacity=1 << 20, staging_slots=1 << 14, **kw)


def _kernel(rec: Recorder) -> tuple[Any, tuple[Any, ...]]:
    """The demo's spin kernel with a 0 ns spin (returns at once: the host path is what is measured).

    On CuPy it is CuPy's own RawKernel with exact-width arguments, so "bare" is CuPy's call."""
    k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
    if rec.backend.name == "cupy":
        import numpy as np

        return k.native, (np.uint64(0),)
    return k, (0,)


Row = tuple[str, float, float, str]  # label, µs per call, x the bare launch beside it, target


def _bare(rec: Recorder, k: Any, args: tuple[Any, ...], s: Any) -> Callable[[], None]:
    """The bare launch of ``k`` on ``s``: CuPy's own ``RawKernel.__call__`` on CuPy, else the backend's."""
    if rec.backend.name == "cupy":
        return lambda: k((1,), (1,), args, stream=s)
    be = rec.backend
    return lambda: be.launch(k, 1, 1, args, stream=s)


def _launcher(rec: Recorder, k: Any, args: tuple[Any, ...], op: int, s: Any) -> Callable[[], None]:
    return lambda: rec.launch(k, 1, 1, args, opcode=op, stream=s)


def _host_costs(device: str, calls: int, tmp: str) -> tuple[str, list[Row]]:
    """(backend name, rows of (label, µs per call, x the bare launch, target as text))."""
    rows: list[Row] = []
    pack = f"<= {TARGET_PACK}x"
    rec = _recorder(tmp, "begin.vrrl", device, capture_check="declared")
    try:
        be = rec.backend
        name = be.name
        k, args = _kernel(rec)
        s = be.new_stream()
        op = rec.opcode("spin")
        sync = rec.synchronize
        bare_fn = _bare(rec, k, args, s)

        def row(label: str, fn: Callable[[], object], target: str) -> None:
            rows.append((label, *_paired_us(fn, bare_fn, calls, sync), target))

        rows.append(("bare launch", _per_call_us(bare_fn, calls, sync), 1.0, "baseline"))
        row("rec.launch (begin)", _launcher(rec, k, args, op, s), pack)
        bound_launch = rec.launcher(k, opcode=op, stream=s)
        row("rec.launcher (begin)", lambda: bound_launch(1, 1, args), pack)
        wrapped = rec.wrap(k, opcode=op, words=lambda a: (7, 0, 0, 0))
        row("rec.wrap (begin)", lambda: wrapped(1, 1, args, stream=s), pack)

        def in_slot() -> None:
            with rec.slot(op, stream=s):
                bare_fn()

        row("rec.slot around the bare launch (begin)", in_slot, pack)
        ik = rec.instrument(k, "vrrl_demo_spin", opcode=op)
        row("rec.instrument (begin)", lambda: ik(1, 1, args, stream=s), f"<= {TARGET_INSTRUMENTED}x")
    finally:
        rec.close()
    for label, kw in (
        ("rec.launch (begin), capture_check='probe'", {}),
        ("rec.launch (begin+end)", {"breadcrumbs": "begin+end", "capture_check": "declared"}),
        ("rec.instrument (begin+end)", {"breadcrumbs": "begin+end", "capture_check": "declared"}),
    ):
        other = _recorder(tmp, f"other{len(rows)}.vrrl", device, **kw)
        try:
            k2, a2 = _kernel(other)
            s2 = other.backend.new_stream()
            fn = _launcher(other, k2, a2, other.opcode("spin"), s2)
            target = pack
            if label.startswith("rec.instrument"):
                ik2 = other.instrument(k2, "vrrl_demo_spin", opcode=other.opcode("spin"))
                fn = functools.partial(ik2, 1, 1, a2, stream=s2)
                target = f"<= {TARGET_INSTRUMENTED}x"
            bare2 = _bare(other, k2, a2, s2)
            rows.append((label, *_paired_us(fn, bare2, calls, other.synchronize), target))
        finally:
            other.close()
    os.environ["VRRL_DISABLE"] = "1"
    try:
        off = Recorder(os.path.join(tmp, "off.vrrl"), device=device)
        k3, a3 = _kernel(off)
        s3 = off.backend.new_stream()
        t_off = _paired_us(_launcher(off, k3, a3, 0, s3), _bare(off, k3, a3, s3), calls, off.synchronize)
        rows.append(("rec.launch, VRRL_DISABLE=1", *t_off, "~1x"))
        off.close()
    finally:
        del os.environ["VRRL_DISABLE"]
    return name, rows


def _python_work(calls: int, tmp: str) -> list[tuple[str, float, float]]:
    """The recorder's own work per launch in host time, with every backend launch a no-op, in bare
    4-argument Python calls: the cases of bench_recorder_instructions.py (one home for their definition,
    each a direct call from a closure of the same shape), timed in 31 interleaved rounds on a collected,
    frozen heap; each figure from the fastest round of every case (a busy VM only ever adds time: the
    least-disturbed estimate, as ``timeit`` advises) and, beside it, from the medians; own work = the case
    - its no-op user launch - its no-op pack(s) (instrumented: - the bound launch), each with the empty
    loop's time per call ("none": the loop and the closure's call) taken out first, as the instruction
    counts' are. Timed alone, each part runs faster than beside the others, so the subtraction also
    charges the recorder with what running them together costs: the second row of each is the case minus
    one closure making the same backend calls itself (a slot's inside a do-nothing C context manager). The
    instruction counts of the same cases are bench_recorder_instructions.py's.

    The no-ops are Python functions, as the twin's and the CuPy backend's launches and bound packs are;
    the C launch path enters the interpreter afresh for each, where the subtracted Python-to-Python call
    does not, and that is charged to the recorder too. The rows marked "C backend" take it apart: the same
    cases with the no-ops one C callable (``_noop.c``; as a backend written in C would be), so the C path
    calls C and the subtracted calls are Python-to-C."""
    from bench_recorder_instructions import _c_noop

    out: list[tuple[str, float, float]] = []
    for mode in ("begin", "begin+end"):
        out += _own_work(mode, False, calls, tmp)
        if _c_noop() is None:
            print("the C no-op (benchmarks/_noop.c) cannot be built here: no C backend rows", file=sys.stderr)
        else:
            out += _own_work(mode, True, calls, tmp)
    return out


def _own_work(mode: str, c_calls: bool, calls: int, tmp: str) -> list[tuple[str, float, float]]:
    """:func:`_python_work`'s rows of one mode, with Python or (``c_calls``) C no-op backend calls."""
    from bench_recorder_instructions import _cases

    rec, cases = _cases(mode, True, tmp, c_calls)
    gc.collect()
    gc.freeze()
    try:
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(31):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples[name].append((time.perf_counter() - t0) / calls * 1e6)
            rec.synchronize()
    finally:
        rec.close()
        gc.unfreeze()
    figures: list[list[float]] = []
    for reduce in (min, statistics.median):
        t = {name: reduce(v) for name, v in samples.items()}
        unit = t["unit"] - t["none"]
        packs = 2 if mode == "begin+end" else 1
        got = [unit * 1e3]
        for label, same in (("rec.launch", "same calls"), ("rec.launcher", "same calls"),
                            ("rec.slot", "same calls in a with")):  # fmt: skip
            # Each figure holds the loop and one closure call ("none"): the case keeps one, and each
            # part subtracted takes one more away, so they are put back.
            parts = t["bare"] - t["none"] + packs * (t["pack"] - t["none"])
            got.append((t[label] - t["none"] - parts) / unit)
            got.append((t[label] - t[same]) / unit)
        got.append((t["rec.instrument"] - t["bound"]) / unit)
        figures.append(got)
    tag = "C backend: " if c_calls else ""
    labels = [f"{tag}a bare 4-argument Python call (the unit, {mode}), ns"]
    for label in ("rec.launch", "rec.launcher", "rec.slot"):
        labels.append(f"{tag}recorder's own work per {label} ({mode}), bare calls")
        labels.append(f"  {tag}{label} ({mode}) - one closure making the same calls, bare calls")
    labels.append(f"{tag}recorder's own work per rec.instrument call ({mode}), bare calls")
    return list(zip(labels, figures[0], figures[1], strict=True))


def _count_one(cb: CountingBackend, fn: Callable[[], object]) -> tuple[int, int]:
    cb.reset()
    fn()
    return cb.launches, cb.queries


def _wrap_and_slot_counts(
    rec: Recorder, cb: CountingBackend, k: Any, op: int, s: Any, want: str
) -> list[tuple[str, int, int, str]]:
    wrapped = rec.wrap(k, opcode=op)

    def slot() -> None:
        with rec.slot(op, stream=s):
            cb.launch(k, 1, 1, (0,), stream=s)

    bound = rec.launcher(k, opcode=op, stream=s)
    return [
        ("rec.launcher (begin, stream bound)", *_count_one(cb, lambda: bound(1, 1, (0,))), want),
        ("rec.wrap (begin, stream=s)", *_count_one(cb, lambda: wrapped(1, 1, (0,), stream=s)), want),
        ("rec.slot around one launch (begin, stream=s)", *_count_one(cb, slot), want),
    ]


def _call_counts(tmp: str) -> list[tuple[str, int, int, str]]:
    """(case, backend launches, runtime queries, target) per recorded launch, counted, exact."""
    out: list[tuple[str, int, int, str]] = []
    for mode, capture, explicit in (
        ("begin", "declared", True),
        ("begin+end", "declared", True),
        ("begin", "declared", False),
        ("begin", "probe", True),
    ):
        cb = CountingBackend(get_backend("twin"))
        rec = _recorder(
            tmp, f"count-{mode}-{capture}-{explicit}.vrrl", cb, breadcrumbs=mode, capture_check=capture
        )
        try:
            k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
            s = cb.new_stream() if explicit else None
            op = rec.opcode("spin")
            launch = _launcher(rec, k, (0,), op, s)
            launch()  # first sight of the stream: its ring and the checks, once
            where = "stream=s" if explicit else "stream=None"
            want = "3 launches, 0 queries" if mode == "begin+end" else "2 launches, 0 queries"
            out.append(
                (f"rec.launch ({mode}, capture_check={capture!r}, {where})", *_count_one(cb, launch), want)
            )
            if mode == "begin" and capture == "declared" and explicit:
                out += _wrap_and_slot_counts(rec, cb, k, op, s, want)
            rec.synchronize()
        finally:
            rec.close()
    for mode in ("begin", "begin+end"):
        cb = CountingBackend(get_backend("twin"))
        rec = _recorder(tmp, f"count-instr-{mode}.vrrl", cb, breadcrumbs=mode, capture_check="declared")
        try:
            ik = rec.instrument(rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin"), opcode=rec.opcode("spin"))
            s = cb.new_stream()
            ik(1, 1, (0,), stream=s)
            one = functools.partial(ik, 1, 1, (0,), stream=s)
            out.append((f"rec.instrument ({mode}, stream=s)", *_count_one(cb, one), "1 launch, 0 queries"))
        finally:
            rec.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("auto", "cupy", "twin"), default="auto")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--e2e", type=int, default=10_000)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        name, rows = _host_costs(opts.device, opts.calls, tmp)
        gpu_rows: list[Row] = []
        if name == "twin":
            twin_rows = rows
        else:
            gpu_rows = rows
            _, twin_rows = _host_costs("twin", opts.calls, tmp)
        py = _python_work(opts.calls * 10, tmp)  # rounds of ~1 ms or more: a tick or an interrupt weighs less
        counts = _call_counts(tmp)
        e2e = _end_to_end(opts.e2e, tmp) if name == "cupy" else []
    from vrrl_gpu.recorder import _accel

    used, where = _accel.built()
    print(f"host: {platform.machine()}, {os.cpu_count()} cpu(s), Python {platform.python_version()}, load "
          f"average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"launch path: {'C accelerator, ' + where if used else 'pure Python (' + where + ')'}; "
          f"VRRL_NO_ACCEL=1 for the other; wall times on a shared VM are noisy, "
          f"bench_recorder_instructions.py counts instructions")  # fmt: skip
    w = max(len(r[0]) for r in [*twin_rows, *gpu_rows, *counts, *py]) + 2

    def table(title: str, rs: list[Row]) -> None:
        print(f"\n{title}")
        print(f"{'measure':<{w}}  {'µs/call':>9}  {'x bare':>7}  target  (x bare: the median of 7 rounds' "
              f"ratios, each to the bare launch timed just before)")  # fmt: skip
        for label, us, ratio, target in rs:
            print(f"{label:<{w}}  {us:9.2f}  {ratio:7.2f}  {target}")

    table("twin (the CPU twin, not a GPU): host time per call, one explicit stream", twin_rows)
    if gpu_rows:
        table("GPU (cupy): host time per call; bare = cupy.RawKernel.__call__", gpu_rows)
    else:
        print("\nGPU: not measured: no GPU")
    print("\nthe recorder's own Python work (backend launches replaced by no-ops)")
    print(f"{'measure':<{w}}  {'fastest':>9}  {'median':>7}  (of 31 rounds; instruction counts: "
          f"bench_recorder_instructions.py)")  # fmt: skip
    print('(rows marked "C backend": the same no-op calls made to a C callable instead of Python functions; '
          "what they read below the others is the interpreter entered afresh for each Python backend "
          "function the C launch path calls; the target is judged on the others)")  # fmt: skip
    for label, fast, med in py:
        target = "" if "unit" in label else f"  target <= {TARGET_PY_CALLS:g}"
        if "C backend" in label and target:
            target = "  (for comparison)"
        print(f"{label:<{w}}  {fast:9.2f}  {med:7.2f}{target}")
    print("\nCUDA API calls per recorded launch (CountingBackend over the twin; the same calls on CuPy)")
    print(f"{'case':<{w}}  {'launches':>8}  {'queries':>7}  target")
    for label, n_launch, n_query, target in counts:
        nl = "n/a" if n_launch < 0 else str(n_launch)
        nq = "n/a" if n_query < 0 else str(n_query)
        print(f"{label:<{w}}  {nl:>8}  {nq:>7}  {target}")
    for label, v in e2e:
        print(f"{label:<{w}}  {v:9.2f}")
    sys.stdout.flush()


def _end_to_end(n: int, tmp: str) -> list[tuple[str, float]]:
    """GPU only: n launches of a ~50 µs kernel, bare vs recorded, wall time to the final synchronize."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VrrlWarning)
        rec = Recorder(os.path.join(tmp, "e2e.vrrl"), device="cupy", capacity=1 << 20, staging_slots=1 << 15)
    try:
        be = rec.backend
        k = be.load("vrrl_demo.cu", "vrrl_demo_spin")
        op = rec.opcode("spin50us")
        s = be.new_stream()
        out: list[tuple[str, float]] = []
        for label, fn in (
            ("bare", lambda: be.launch(k, 1, 1, (SPIN_NS,), stream=s)),
            ("recorded", lambda: rec.launch(k, 1, 1, (SPIN_NS,), opcode=op, stream=s)),
        ):
            be.synchronize(s)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            be.synchronize(s)
            out.append((f"{n} x 50 µs kernel, {label} (ms)", (time.perf_counter() - t0) * 1e3))
        bare_ms, rec_ms = out[0][1], out[1][1]
        out.append(("end-to-end overhead (%)", (rec_ms - bare_ms) / bare_ms * 100))
        out.append(("added device+host time per launch (µs)", (rec_ms - bare_ms) * 1e3 / n))
        return out
    finally:
        rec.close()


if __name__ == "__main__":
    main()
