"""Inject an illegal memory access after a few hundred launches and show that the log names that launch.

    python examples/device_loss_repro.py crash.vrrl                 # the GPU (the CPU twin if there is none)
    python examples/device_loss_repro.py crash.vrrl --device twin --launches 400 --fault-at 300

CUDA reports a kernel fault asynchronously: the launch call that caused it
returns normally and the error surfaces later, at a poll, a synchronize or
whatever CUDA call comes next, and it is sticky (the context is dead). The
Recorder has the device write a breadcrumb before each launch, so when the
error surfaces it can name the launch the device had reached. This script
checks that the launch the log names is the one that misbehaved, and exits
0 when it is, 1 when it is not.
"""

from __future__ import annotations

import argparse
import time

from vrrl_gpu import FailureClass, Recorder, RingLog, SlotStatus
from vrrl_gpu.evidence import code_name

N = 4096
BLOCK = 256
ILLEGAL_ADDRESS = 1  # vrrl_demo_axpy's fault_kind: thread 0 stores through a wild pointer (CUDA error 700)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="the VRRL log to write")
    p.add_argument("--device", choices=("auto", "cupy", "twin"), default="auto")
    p.add_argument("--launches", type=int, default=400)
    p.add_argument("--fault-at", type=int, default=300)
    p.add_argument("--check-every", type=int, default=50, help="poll for errors every M launches")
    p.add_argument("--breadcrumbs", choices=("begin", "begin+end"), default="begin")
    args = p.parse_args(argv)

    rec = Recorder(args.log, device=args.device, capacity=8192, breadcrumbs=args.breadcrumbs)
    surfaced = "nowhere"
    error: BaseException | None = None
    try:
        b = rec.backend
        axpy = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
        x, y = b.alloc_device(4 * N), b.alloc_device(4 * N)
        op = rec.opcode("axpy")
        for i in range(args.launches):
            fault = ILLEGAL_ADDRESS if i == args.fault_at else 0
            surfaced = f"the launch call of launch {i}"
            rec.launch(
                axpy,
                (N + BLOCK - 1) // BLOCK,
                BLOCK,
                (y, x, 1.0, N, fault),
                opcode=op,
                words=(i, fault, 0, 0),
            )
            if (i + 1) % args.check_every == 0:
                surfaced = f"rec.check() after launch {i}"
                rec.check()
        surfaced = "rec.synchronize()"
        rec.synchronize()
    except Exception as e:  # the CUDA error, re-raised unchanged by the recorder after it wrote the evidence
        error = e
    finally:
        try:
            rec.close()
        except Exception as e:
            error, surfaced = error or e, "rec.close()"
    if error is None:
        print(f"no error surfaced in {args.launches} launches (is --fault-at below --launches?)")
        return 1
    print(f"the error surfaced at {surfaced}: {type(error).__name__}: {' '.join(str(error).split())}")

    with RingLog.open(args.log, readonly=True) as log:
        records = log.records()
    faulted = records[records["slot_status"] == int(SlotStatus.FAULTED)]
    if len(faulted) != 1:
        print(f"expected one FAULTED record in {args.log}, found {len(faulted)}")
        return 1
    r = faulted[0]
    named = int(r["slot_idx"])
    code = int(r["backend_error_code"])
    ts = time.strftime("%H:%M:%S", time.gmtime(int(r["timestamp_ns"]) / 1e9))
    words = [int(w) for w in r["args"]]
    print(
        f"the log names launch {named} (slot {named}, words {words}, recorded {ts} UTC): "
        f"{FailureClass(int(r['failure_class'])).label}, {code_name(code)}"
    )
    if named != args.fault_at:
        print(f"MISMATCH: the injected fault was at launch {args.fault_at}")
        return 1
    print(f"OK: that is the launch with the injected illegal address ({args.fault_at})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
