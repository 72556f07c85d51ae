"""Recorder overhead: host µs per call and, on a GPU, end-to-end cost.

Run: python benchmarks/bench_recorder.py [--device auto|cupy|twin] [--calls 2000] [--e2e 10000]

Host µs per call for: a bare launch through the backend, ``rec.launch``, a ``rec.wrap``ped kernel, "begin" vs
"begin+end" breadcrumbs, and ``VRRL_DISABLE=1``. With a GPU (``--device cupy`` or auto on a machine with one)
also the end-to-end time of ``--e2e`` launches of a ~50 µs kernel, bare vs recorded.
Targets on an H100 (issue 5): wrapped <= 1.5x bare host time; <= 1 µs added device time per recorded
launch; <= 2 % end to end. On the twin the figures describe the twin, not a GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

from vrrl_gpu import Recorder, VrrlWarning

SPIN_NS = 50_000


def _per_call_us(fn: Callable[[], None], calls: int, sync: Callable[[], None], repeat: int = 5) -> float:
    """Median over ``repeat`` rounds of the host time per call, the queue drained between rounds."""
    samples = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
        sync()
    return statistics.median(samples)


def _host_costs(device: str, calls: int, tmp: str) -> tuple[str, list[tuple[str, float]]]:
    rows: list[tuple[str, float]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VrrlWarning)
        rec = Recorder(
            os.path.join(tmp, "begin.vrrl"), device=device, capacity=1 << 20, staging_slots=1 << 14
        )
    try:
        be = rec.backend
        k = be.load("vrrl_demo.cu", "vrrl_demo_spin")
        args = (0,)  # a kernel that returns at once: the host path is what is measured
        op = rec.opcode("spin")
        wrapped = rec.wrap(k, opcode=op, words=lambda a: (a[0] & 0xFFFFFFFF, 0, 0, 0))
        sync = rec.synchronize
        bare = _per_call_us(lambda: be.launch(k, 1, 1, args), calls, sync)
        rows.append(("bare backend launch", bare))
        rows.append(
            ("rec.launch (begin)", _per_call_us(lambda: rec.launch(k, 1, 1, args, opcode=op), calls, sync))
        )
        rows.append(("wrapped kernel (begin)", _per_call_us(lambda: wrapped(1, 1, args), calls, sync)))
        name = be.name
    finally:
        rec.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VrrlWarning)
        rec2 = Recorder(
            os.path.join(tmp, "be.vrrl"),
            device=device,
            capacity=1 << 20,
            staging_slots=1 << 14,
            breadcrumbs="begin+end",
        )
    try:
        k2 = rec2.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
        op2 = rec2.opcode("spin")
        rows.append(
            (
                "rec.launch (begin+end)",
                _per_call_us(lambda: rec2.launch(k2, 1, 1, (0,), opcode=op2), calls, rec2.synchronize),
            )
        )
        # VRRL_DISABLE: the recorder object is a no-op; the kernel still launches.
        os.environ["VRRL_DISABLE"] = "1"
        try:
            off = Recorder(os.path.join(tmp, "off.vrrl"), device=device)
            rows.append(
                (
                    "rec.launch, VRRL_DISABLE=1",
                    _per_call_us(lambda: off.launch(k2, 1, 1, (0,), opcode=0), calls, rec2.synchronize),
                )
            )
            t0 = time.perf_counter()
            for _ in range(calls):
                with off.slot(0):
                    pass
            rows.append(("rec.slot() body-less, VRRL_DISABLE=1", (time.perf_counter() - t0) / calls * 1e6))
        finally:
            del os.environ["VRRL_DISABLE"]
    finally:
        rec2.close()
    return name, rows


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("auto", "cupy", "twin"), default="auto")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--e2e", type=int, default=10_000)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        name, rows = _host_costs(opts.device, opts.calls, tmp)
        e2e = _end_to_end(opts.e2e, tmp) if name == "cupy" else []
    print(
        f"backend: {name}; host: {platform.machine()}, {os.cpu_count()} cpu(s), "
        f"Python {platform.python_version()}"
    )
    if name == "twin":
        print("(the CPU twin: these are not GPU figures)")
    bare = rows[0][1]
    w = max(len(r[0]) for r in rows + e2e)
    print(f"{'measure':<{w}}  {'µs/call':>9}  {'x bare':>7}")
    for label, us in rows:
        print(f"{label:<{w}}  {us:9.2f}  {us / bare:7.2f}")
    for label, v in e2e:
        print(f"{label:<{w}}  {v:9.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
