"""Per-op host cost of ``vrrl_gpu.torch.record_ops`` (issue 14), beside its target.

Run: python benchmarks/bench_torch.py [--device auto|cupy|twin] [--ops 3000]

Host µs per aten op of a small eager op (``x + 1`` on 16 floats): bare; under an empty TorchDispatchMode
(what any Python dispatch mode costs); under ``record_ops`` with and without call signatures, in
``begin`` and ``begin+end`` modes; and with every backend launch a no-op (the do-nothing twin of
``bench_recorder_instructions.py``, whose launch and bound packs do nothing at all: the work of record_ops
and the recorder alone). The overhead is recorded minus bare. Target
(issue 14): <= 25 % of a typical eager op's host time on a GPU. On the twin the ops are CPU ops and the
breadcrumbs go through the twin's pack kernel on its worker threads: those figures describe this
machine's CPU path, not a GPU. GPU figures are measured only where ``torch.cuda.is_available()`` and the
CuPy backend work, and are printed as "not measured" otherwise.
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
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vrrl_gpu import Recorder, VrrlWarning
from vrrl_gpu.torch import record_ops

TARGET_FRACTION = 0.25


class _Empty(TorchDispatchMode):  # type: ignore[no-untyped-call]
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


def _per_op_us(step: Callable[[], object], ops: int, sync: Callable[[], None], repeat: int = 7) -> float:
    """The fastest of ``repeat`` rounds (a shared machine's noise only adds), µs per op."""
    samples = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        for _ in range(ops):
            step()
        sync()
        samples.append((time.perf_counter() - t0) / ops * 1e6)
    return min(samples)


def _measure(device: str, dev: str, ops: int, tmp: str) -> tuple[str, list[tuple[str, float]]]:
    from bench_recorder_instructions import _noop_twin  # benchmarks/ is the script's sys.path[0]

    x = torch.ones(16, device=dev)

    def step() -> object:
        return x + 1

    def cuda_sync() -> None:
        if dev == "cuda":
            torch.cuda.synchronize()

    rows = [("bare eager op", _per_op_us(step, ops, cuda_sync))]
    with _Empty():
        rows.append(("under an empty TorchDispatchMode", _per_op_us(step, ops, cuda_sync)))
    backend = "?"
    for mode in ("begin", "begin+end"):
        for sigs in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", VrrlWarning)
                rec = Recorder(os.path.join(tmp, f"{mode}-{sigs}.vrrl"), device=device, capacity=1 << 20,
                               staging_slots=1 << 14, breadcrumbs=mode)  # fmt: skip
            backend = rec.backend.name
            try:

                def sync(rec: Recorder = rec) -> None:
                    rec.synchronize()
                    cuda_sync()

                with record_ops(rec, signatures=sigs):
                    us = _per_op_us(step, ops, sync)
                rows.append((f"record_ops ({mode}, signatures={'on' if sigs else 'off'})", us))
            finally:
                rec.close()
    for mode in ("begin", "begin+end"):
        # The recorder's and record_ops's own Python work: every backend launch a no-op (no twin worker
        # threads competing for the CPU). On a GPU each breadcrumb adds one CuPy launch of the pack kernel.
        # Not a CountingBackend(noop=True): its counting is a Python-level Counter store per call.
        cb = _noop_twin()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VrrlWarning)
            rec = Recorder(os.path.join(tmp, f"noop-{mode}.vrrl"), device=cb, capacity=1 << 20,
                           breadcrumbs=mode, backpressure=False)  # fmt: skip
        try:
            with record_ops(rec):
                us = _per_op_us(step, ops, cuda_sync)
            rows.append((f"record_ops ({mode}), backend launches no-ops", us))
        finally:
            rec.close()
    return backend, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cupy", "twin"])
    ap.add_argument("--ops", type=int, default=3000)
    a = ap.parse_args(argv)
    gpu = a.device != "twin" and torch.cuda.is_available()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {torch.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        backend, rows = _measure(a.device if gpu else "twin", "cuda" if gpu else "cpu", a.ops, tmp)
    where = "GPU (CUDA tensors, CuPy backend)" if gpu else "twin backend, CPU tensors: NOT a GPU figure"
    print(f"backend: {backend}; {where}")
    bare = rows[0][1]
    width = max(len(label) for label, _ in rows)
    print(f"{'case':<{width}} {'µs/op':>8} {'overhead µs':>12} {'x bare':>7}")
    for label, us in rows:
        print(f"{label:<{width}} {us:8.2f} {us - bare:12.2f} {us / bare:7.2f}")
    worst = max(us for label, us in rows if label.startswith("record_ops")) - bare
    if gpu:
        print(f"target: overhead <= {TARGET_FRACTION:.0%} of the eager op's host time on this GPU "
              f"({TARGET_FRACTION * bare:.2f} µs); worst measured {worst:.2f} µs: "
              f"{'met' if worst <= TARGET_FRACTION * bare else 'NOT met'}")  # fmt: skip
    else:
        print(f"target: overhead <= {TARGET_FRACTION:.0%} of a typical eager op's host time on a GPU; "
              f"GPU figure: not measured (no GPU here). Twin overhead per op {worst:.2f} µs "
              f"= {statistics.fmean([worst / bare]):.2f}x this CPU's bare op")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
