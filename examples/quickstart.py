"""Quickstart: record a small workload with a Recorder, then print the log.

    python examples/quickstart.py run.vrrl                # the GPU through CuPy (the CPU twin if none)
    python examples/quickstart.py run.vrrl --device twin  # the CUDA kernels compiled for the CPU
    python examples/quickstart.py run.vrrl --digests      # each launch's output digest in the log too

Each training "step" is one epoch: a wrapped saxpy kernel (a ``cupy.RawKernel``
on a GPU; on the twin the same kind of kernel from ``kernels/vrrl_demo.cu``)
and a ``rec.slot`` around a reduction that is launched by other means. The
log is then printed with ``vrrl dump``; the opcode names come from the
sidecar file written beside the log.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import numpy as np

from vrrl_gpu import Recorder

SAXPY = r"""
extern "C" __global__ void saxpy(float* y, const float* x, float a, unsigned int n) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] = a * x[i] + y[i];
    }
}
"""
N = 1024
BLOCK = 256


def make_workload(rec: Recorder) -> tuple[Any, tuple[Any, ...], Any]:
    """(kernel, args, checksum): a RawKernel-like saxpy, its arguments (y, x, a, n, ...), a reduction of y."""
    a, n = np.float32(0.5), np.uint32(N)
    if rec.backend.name == "cupy":
        import cupy as cp

        x = cp.arange(N, dtype=cp.float32)
        y = cp.zeros(N, dtype=cp.float32)
        return cp.RawKernel(SAXPY, "saxpy"), (y, x, a, n), lambda: float(y.sum())
    # The twin runs kernels from .cu files: the demo's axpy takes the same arguments and a fault switch (0).
    b = rec.backend
    xb, yb = b.alloc_device(4 * N), b.alloc_device(4 * N)
    xb.from_host(np.arange(N, dtype=np.float32))
    kernel = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
    return kernel, (yb, xb, a, n, 0), lambda: float(yb.to_host().view(np.float32).sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="the VRRL log to write")
    p.add_argument("--device", choices=("auto", "cupy", "twin"), default="auto")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--digests", action="store_true", help="record each launch's output digest (syncs)")
    args = p.parse_args(argv)

    opts = {"capacity": 4096, "breadcrumbs": "begin+end", "digests": args.digests}
    with Recorder(args.log, device=args.device, **opts) as rec:
        kernel, kargs, checksum = make_workload(rec)
        # Same call signature as RawKernel.__call__; the record's words are computed from the arguments, and
        # y (a[0]) is the output: digested into failure evidence, and per launch with --digests.
        saxpy = rec.wrap(
            kernel, opcode=rec.opcode("saxpy"), words=lambda a: (int(a[3]), 0, 0, 0), outputs=lambda a: a[0]
        )
        reduce_op = rec.opcode("checksum")
        for step in range(args.steps):
            rec.epoch = step
            for _ in range(2):
                saxpy(((N + BLOCK - 1) // BLOCK,), (BLOCK,), kargs)
            with rec.slot(reduce_op, words=(step, 0, 0, 0)):  # work launched by other means
                total = checksum()
            rec.check()  # polls: a CUDA error would be attributed, recorded and re-raised here
            print(f"step {step}: sum(y) = {total:,.1f}")
        backend = rec.backend.name
    print(f"recorded {args.steps * 3} launches on the {backend} backend into {args.log}:")
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-m", "vrrl_gpu", "dump", args.log], check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
