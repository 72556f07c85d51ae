"""Device-side costs of recording: host time per launch, device time of the pack kernel, drain rate.

    python benchmarks/bench_gpu.py                 # the GPU through CuPy ("no GPU: skipped" without one)
    python benchmarks/bench_gpu.py --device twin   # the same host-side figures on the CPU twin

Figures (medians over --repeat rounds):
* host us per bare launch: a RawKernel call of an empty kernel (CuPy: the RawKernel itself; twin: launch()),
  and the same through Backend.launch (argument conversion included);
* host us per pack, and per launch + pack (what a recorded launch adds on the host);
* device us per pack kernel and per empty kernel: CUDA events around a back-to-back run enqueued behind a
  spinning kernel (twin: worker time for a run released at once);
* drain: a kernel writing device-sequenced records as fast as it can into a 65,536-slot staging ring while the
  Drainer thread moves them into a ring file; records/s produced, drained and dropped.
Performance is reported here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vrrl_gpu import RingLog
from vrrl_gpu.backends import Backend, RingPointers, TwinBackend
from vrrl_gpu.capture import Drainer, StagingRing

RING_SLOTS = 1 << 16


def median_us_per_call(fn: Callable[[int], None], n: int, repeat: int, sync: Callable[[], None]) -> float:
    """Median over `repeat` rounds of the host time of `n` calls, in us per call (sync outside the timing)."""
    rounds = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        rounds.append((time.perf_counter() - t0) / n * 1e6)
        sync()
    return statistics.median(rounds)


def make_ring(b: Backend, n: int) -> tuple[Any, StagingRing, RingPointers]:
    mem = b.alloc_pinned(StagingRing.layout_size(n))
    ring = StagingRing.create(mem.host, n)
    return mem, ring, RingPointers.from_staging(mem, ring)


def host_figures(b: Backend, n: int, repeat: int) -> dict[str, float]:
    spin = b.load("vrrl_demo.cu", "vrrl_demo_spin")
    _mem, _ring, ptrs = make_ring(b, RING_SLOTS)
    out: dict[str, float] = {}
    if b.name == "cupy":
        native = spin.native
        grid, block, args = (1, 1, 1), (1, 1, 1), (np.uint64(0),)

        def bare(i: int) -> None:
            native(grid, block, args)

        out["bare RawKernel launch"] = median_us_per_call(bare, n, repeat, b.synchronize)
    else:

        def bare(i: int) -> None:
            b.launch(spin, 1, 1, (0,))

    out["Backend.launch (empty kernel)"] = median_us_per_call(
        lambda i: b.launch(spin, 1, 1, (0,)), n, repeat, b.synchronize
    )

    def pack(i: int) -> None:
        b.pack(ptrs, i, slot_idx=i, tenant_id=0, opcode=1, words=(i & 0xFFFFFFFF, 0, 0, 0), epoch=0)

    out["pack only"] = median_us_per_call(pack, n, repeat, b.synchronize)

    def both(i: int) -> None:
        pack(i)
        bare(i)

    out["pack + bare launch"] = median_us_per_call(both, n, repeat, b.synchronize)
    return out


def device_figures_cupy(b: Any, m: int, repeat: int) -> dict[str, float]:
    import cupy

    spin = b.load("vrrl_demo.cu", "vrrl_demo_spin")
    _mem, _ring, ptrs = make_ring(b, RING_SLOTS)
    stream = b.new_stream()
    out: dict[str, float] = {}

    def run(enqueue: Callable[[int], None]) -> float:
        rounds = []
        for _ in range(repeat):
            b.launch(spin, 1, 1, (200_000_000,), stream=stream)  # the gate: everything below queues behind it
            e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
            e0.record(stream)
            for i in range(m):
                enqueue(i)
            e1.record(stream)
            e1.synchronize()
            rounds.append(cupy.cuda.get_elapsed_time(e0, e1) * 1e3 / m)
        return statistics.median(rounds)

    def pack(i: int) -> None:
        b.pack(ptrs, i, slot_idx=i, tenant_id=0, opcode=1, words=(i, 0, 0, 0), epoch=0, stream=stream)

    out["device us per pack kernel"] = run(pack)
    out["device us per empty kernel"] = run(lambda i: b.launch(spin, 1, 1, (0,), stream=stream))
    return out


def device_figures_twin(b: TwinBackend, m: int, repeat: int) -> dict[str, float]:
    wait = b.load("vrrl_demo.cu", "vrrl_demo_wait")
    spin = b.load("vrrl_demo.cu", "vrrl_demo_spin")
    _mem, _ring, ptrs = make_ring(b, RING_SLOTS)
    gate_mem = b.alloc_pinned(64)
    gate = gate_mem.host[:4].view(np.uint32)
    out: dict[str, float] = {}

    def run(enqueue: Callable[[int], None]) -> float:
        rounds = []
        for _ in range(repeat):
            gate[0] = 0
            b.launch(wait, 1, 1, (gate_mem.device_ptr, 60 * 10**9))
            for i in range(m):
                enqueue(i)
            t0 = time.perf_counter()
            gate[0] = 1
            b.synchronize()
            rounds.append((time.perf_counter() - t0) * 1e6 / m)
        return statistics.median(rounds)

    out["worker us per pack kernel"] = run(
        lambda i: b.pack(ptrs, i, slot_idx=i, tenant_id=0, opcode=1, words=(i, 0, 0, 0), epoch=0)
    )
    out["worker us per empty kernel"] = run(lambda i: b.launch(spin, 1, 1, (0,)))
    return out


def drain_figures(b: Backend, threads: tuple[int, int], per_thread: int) -> dict[str, float]:
    _mem, ring, ptrs = make_ring(b, RING_SLOTS)
    counter = b.alloc_counter()
    after = b.alloc_pinned(4 * threads[0] * threads[1])
    k = b.load("vrrl_demo.cu", "vrrl_demo_record_many")
    total = threads[0] * threads[1] * per_thread
    with tempfile.TemporaryDirectory() as tmp:
        log = RingLog.open(os.path.join(tmp, "bench.vrrl"), capacity=1 << 20)
        try:
            with Drainer([ring], log) as drainer:
                t0 = time.perf_counter()
                kargs = (ptrs.records_ptr, ptrs.commits_ptr, ptrs.mask, counter, 0, 0, 1, per_thread,
                         0xFFFFFFFF, after.device_ptr)  # fmt: skip
                b.launch(k, threads[0], threads[1], kargs)
                b.synchronize()
                t_produced = time.perf_counter() - t0
                while True:
                    st = drainer.statistics()
                    if st.drained + st.dropped >= total or time.perf_counter() - t0 > 60:
                        break
                    time.sleep(0.0005)
                t_drained = time.perf_counter() - t0
            st = drainer.statistics()
        finally:
            log.close()
    return {
        "records produced": float(total),
        "produced per s (launch to sync)": total / t_produced,
        "drained per s (launch to drained)": st.drained / t_drained,
        "dropped": float(st.dropped),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cupy", "twin"), default="cupy")
    ap.add_argument("--launches", type=int, default=5000, help="calls per timed round (host figures)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--records-per-thread", type=int, default=256)
    args = ap.parse_args(argv)

    b: Backend
    if args.device == "cupy":
        from vrrl_gpu.backends._cupy import CupyBackend
        from vrrl_gpu.backends._host import probe_host
        from vrrl_gpu.errors import BackendUnavailableError

        try:
            b = CupyBackend()
        except BackendUnavailableError as e:
            host = probe_host()
            if host.present:  # a GPU is here and CUDA fails: a failure, not "no GPU"
                print(f"GPU present ({host.describe()}) but CUDA does not start: {e}", file=sys.stderr)
                return 1
            print("no GPU: skipped (run with --device twin for the CPU twin's figures)")
            return 0
    else:
        b = TwinBackend()
    try:
        info = b.device_info()
        print(f"device: {info['name']} ({b.name}; cupy {info['cupy_version']}; {os.cpu_count()} CPUs)")
        figures = host_figures(b, args.launches, args.repeat)
        m = 800  # fits the driver's launch queue behind the gate kernel
        if args.device == "cupy":
            figures.update(device_figures_cupy(b, m, args.repeat))
            grid = (132 * 4, 128)
        else:
            assert isinstance(b, TwinBackend)
            figures.update(device_figures_twin(b, m, args.repeat))
            grid = (8, 32)
        figures.update(drain_figures(b, grid, args.records_per_thread))
    finally:
        b.close()
    width = max(map(len, figures))
    for name, value in figures.items():
        unit = "" if name in ("records produced", "dropped") else ("/s" if "per s" in name else " us")
        shown = f"{value:,.0f}" if unit in ("", "/s") else f"{value:.2f}"
        print(f"  {name:<{width}}  {shown}{unit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
