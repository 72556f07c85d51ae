"""``vrrl doctor``: what is installed, what the host shows, and the device path tried live (exit 0/1/2)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from vrrl_gpu._cli._argtypes import positive_int
from vrrl_gpu._cli._output import print_table
from vrrl_gpu.backends._registry import BACKEND_NAMES

if TYPE_CHECKING:  # the checks are imported by the command, not by building the parser
    from vrrl_gpu.backends._doctor import DoctorReport

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the GPU path: versions, libraries, headers, devices, live checks; exit 1 on a failure",
        description=(
            "Report the driver, CUDA runtime, CuPy, NVRTC and CUDA headers, the devices, then run the live "
            "checks (compile the pack kernel, mapped pinned memory, a pack round trip checked against the "
            "reference packer, clock calibration spread, /dev/shm + hostRegister, stream query). Exit 0 when "
            "nothing failed, 1 when something did (each failure says what to install or set), 2 when it "
            "cannot run."
        ),
    )
    p.add_argument(
        "--device",
        choices=BACKEND_NAMES,
        default="auto",
        help="the backend of the live checks (default auto: CuPy on a host with an NVIDIA device)",
    )
    p.add_argument("--calibrations", type=positive_int, default=5, help="clock calibrations to compare")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from vrrl_gpu.backends._doctor import run_doctor

    report = run_doctor(args.device, calibrations=args.calibrations)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print(report)
    return 0 if report.ok else 1


def _print(report: DoctorReport) -> None:
    if report.backend is None:
        title = f"vrrl doctor (device={report.device}): no backend started"
    elif report.simulated:
        title = f"vrrl doctor (device={report.device}): live checks on the CPU TWIN, NOT A GPU"
    else:
        title = f"vrrl doctor (device={report.device}): live checks on CUDA through CuPy"
    rows = [
        (c.name, c.status.upper() if c.status in ("fail", "warn") else c.status, c.detail, c.fix)
        for c in report.checks
    ]
    print_table(title, ("check", "status", "detail", "fix"), rows)
    failed = report.failures
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(c.name for c in failed)}", file=sys.stderr)
