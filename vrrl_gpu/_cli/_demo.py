"""``vrrl demo``: record a small built-in workload, optionally make one launch misbehave."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu._cli._argtypes import count, positive_int
from vrrl_gpu._cli._output import print_table
from vrrl_gpu.backends._registry import BACKEND_NAMES

__all__ = ["register", "run_demo", "FAULT_KINDS"]

#: --fault-kind → the demo kernel's fault_kind argument (kernels/vrrl_demo.cu); "oom" is a host allocation.
FAULT_KINDS = {"illegal-address": 1, "trap": 2, "assert": 3, "oom": 0}

#: Exit code of a demo whose injected fault was recorded (the CUDA error itself is not re-raised).
EXIT_FAULT_RECORDED = 3


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="record a small built-in workload into LOG (the main job); --fault-at K makes launch K fail",
        description=(
            "Runs N launches of a small axpy kernel through a Recorder, each preceded by the pack kernel "
            "that writes its breadcrumb, drains them into LOG and prints a summary. With --fault-at K, "
            f"launch K misbehaves; the command then exits {EXIT_FAULT_RECORDED} once the evidence is logged."
        ),
    )
    p.add_argument("log", help="the VRRL log to write (created when missing)")
    p.add_argument(
        "--device",
        choices=BACKEND_NAMES,
        default="auto",
        help="auto: the GPU through CuPy when there is one, else the CPU twin (default: auto)",
    )
    p.add_argument("--launches", type=positive_int, default=1000, help="launches to record (default: 1000)")
    p.add_argument(
        "--elements", type=positive_int, default=4096, help="vector length of each launch (default: 4096)"
    )
    p.add_argument(
        "--capacity", type=positive_int, default=65536, help="log capacity in records (default: 65536)"
    )
    p.add_argument("--breadcrumbs", choices=("begin", "begin+end"), default="begin")
    p.add_argument("--staging", choices=("pinned", "shm"), default="pinned")
    p.add_argument(
        "--check-every",
        type=positive_int,
        default=64,
        metavar="M",
        help="poll for asynchronous errors every M launches (default: 64)",
    )
    p.add_argument("--fault-at", type=count, default=None, metavar="K", help="launch K misbehaves")
    p.add_argument("--fault-kind", choices=tuple(FAULT_KINDS), default="illegal-address")
    p.add_argument(
        "--digests",
        action="store_true",
        help="record each launch's output digest (BLAKE3 of y, after waiting for the launch): what "
        "vrrl diff and vrrl replay --compare-digests compare; one synchronize per launch",
    )
    p.set_defaults(func=cmd_demo)


def demo_x(n: int) -> npt.NDArray[np.float32]:
    """The demo's x vector: 1, 2, ..., 7, 1, 2, ... (examples/replay_registry.py makes the same one)."""
    return (np.arange(n, dtype=np.float32) % 7 + 1).astype(np.float32)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Run the demo; returns a summary. A recorded fault is returned as ``summary["fault"]``, not raised."""
    from vrrl_gpu.errors import VrrlWarning
    from vrrl_gpu.recorder._recorder import Recorder

    summary: dict[str, Any] = {"log": args.log, "launches_requested": args.launches}
    t0 = time.perf_counter()
    launched = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VrrlWarning)
        rec = Recorder(
            args.log,
            device=args.device,
            capacity=args.capacity,
            breadcrumbs=args.breadcrumbs,
            staging=args.staging,
            digests=args.digests,
        )
    for w in caught:
        print(f"vrrl: warning: {w.message}", file=sys.stderr)
    summary["backend"] = rec.backend.name
    try:
        backend = rec.backend
        kernel = backend.load("vrrl_demo.cu", "vrrl_demo_axpy")
        n = args.elements
        x = backend.alloc_device(4 * n)
        y = backend.alloc_device(4 * n)
        x.from_host(demo_x(n).view(np.uint8))  # y grows by x at every launch, so each output differs
        axpy = rec.opcode("axpy")
        alloc = rec.opcode("alloc")
        block = 256
        grid = (n + block - 1) // block
        for i in range(args.launches):
            fault = args.fault_at is not None and i == args.fault_at
            if fault and args.fault_kind == "oom":
                with rec.slot(alloc, words=(i, 0, 0, 0)):
                    backend.alloc_device(1 << 50)  # far beyond any device: fails at the call
            kind = FAULT_KINDS[args.fault_kind] if fault else 0
            rec.launch(
                kernel, grid, block, (y, x, 1.0, n, kind), opcode=axpy, words=(i, n, kind, 0),
                outputs=y if args.digests else None,
            )  # fmt: skip
            launched += 1
            if (i + 1) % args.check_every == 0:
                rec.check()
        rec.synchronize()
    except Exception as exc:
        summary["fault"] = exc
    finally:
        try:
            rec.close()
        except Exception as exc:
            summary.setdefault("fault", exc)
    summary["launched"] = launched
    summary["seconds"] = time.perf_counter() - t0
    stats = rec.statistics()
    summary["drained"] = stats.drained
    summary["dropped"] = stats.dropped
    return summary


def cmd_demo(args: argparse.Namespace) -> int:
    if args.fault_at is not None and args.fault_at >= args.launches:
        from vrrl_gpu._cli import UsageError

        raise UsageError(f"vrrl demo: --fault-at {args.fault_at} must be below --launches {args.launches}")
    s = run_demo(args)
    rate = s["launched"] / s["seconds"] if s["seconds"] > 0 else 0.0
    rows = [
        ("backend", s["backend"]),
        ("launches", f"{s['launched']:,} of {s['launches_requested']:,}"),
        ("records drained", f"{s['drained']:,}"),
        ("records lost", f"{s['dropped']:,} (lapped, or never written after a fault)"),
        ("rate", f"{rate:,.0f} launches/s"),
    ]
    fault = s.get("fault")
    if fault is not None:
        from vrrl_gpu.evidence._classify import classify

        c = classify(fault)
        rows.append(("fault", f"{c.failure_class.label}: {c.name} ({c.code})"))
    print_table(f"vrrl demo → {s['log']}", ("field", "value"), rows)
    if fault is not None:
        print(
            f"vrrl: the injected fault was recorded in {s['log']}: {' '.join(str(fault).split())}",
            file=sys.stderr,
        )
        return EXIT_FAULT_RECORDED
    return 0
