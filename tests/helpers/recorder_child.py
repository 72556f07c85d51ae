"""Recorder fault scenarios run in a child process (a real fault kills the CUDA context of its process).

``python tests/helpers/recorder_child.py SCENARIO DEVICE LOG [ARGS...]`` prints one JSON object, what the
scenario saw and what it expected, on one marked line (tests/helpers/child.py: device printf output of an
assert may be flushed before or after it, so the parent looks for the marker, never at the last line).
tests/recorder/test_recorder_gpu.py runs it with ``--device cupy`` under ``-m gpu`` and, to keep this script
honest on machines without a GPU, with the twin.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tests.helpers.child import print_result
from tests.helpers.recorder import KERNEL_FAULTS, Axpy, N, failures, log_records, with_status
from vrrl_gpu import FailureClass, Recorder, SlotStatus, classify
from vrrl_gpu.errors import RecorderPoisonedError

FAULTED = int(SlotStatus.FAULTED)
AT_LAUNCH = int(SlotStatus.FAILED_AT_LAUNCH)
PB = int(FailureClass.PROGRAM_BUG)


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.001)


def _code(exc: BaseException) -> int:
    return classify(exc).code


def attribution(device: str, path: str, kind: str, n_streams: str, mode: str) -> dict[str, Any]:
    """Round 1 on every stream, all idle; stream 1 held busy; stream 0 misbehaves at its 4th launch."""
    streams_n = int(n_streams)
    rec = Recorder(path, device=device, breadcrumbs=mode, capacity=4096, staging_slots=256)
    per = 2 if mode == "begin+end" else 1
    w = Axpy.on(rec)
    flag = rec.backend.alloc_pinned(64)
    flag.host[:] = 0  # pinned memory is not zeroed on a GPU
    wait = rec.backend.load("vrrl_demo.cu", "vrrl_demo_wait")
    wait_op, alloc_op = rec.opcode("wait"), rec.opcode("alloc")
    streams: list[Any] = [None] + [rec.backend.new_stream() for _ in range(streams_n - 1)]
    slot = 0
    for s in streams:
        for _ in range(3):
            w.launch(slot, stream=s)
            slot += 1
    rec.synchronize()
    busy = None
    if streams_n == 3:
        busy = slot
        rec.launch(
            wait,
            1,
            1,
            (flag.device_ptr, 30 * 10**9),
            opcode=wait_op,
            words=(slot, 0, 0, 0),
            stream=streams[1],
        )
        slot += 1
        _wait_for(lambda: rec.statistics().drained >= per * 9 + 1, "the waiting kernel to start")
    for _ in range(3):
        w.launch(slot)
        slot += 1
    culprit = slot
    out: dict[str, Any] = {"culprit": culprit}
    try:
        if kind == "oom":
            with rec.slot(alloc_op, words=(culprit, 0, 0, 0)):
                rec.backend.alloc_device(1 << 50)
        else:
            w.launch(culprit, fault=KERNEL_FAULTS[kind][0])
        rec.synchronize()
        out["raised"] = None
    except Exception as e:
        out["raised"] = _code(e)
        out["class"] = int(classify(e).failure_class)
    flag.host[:4].view(np.uint32)[0] = 1
    if kind == "oom":
        w.launch(culprit + 1)  # not sticky: the recorder keeps working
        rec.synchronize()
    out["poisoned"] = rec.poisoned
    rec.close()
    recs = log_records(path)
    out["failures"] = failures(recs)
    status = AT_LAUNCH if kind == "oom" else FAULTED
    exp = [(culprit, status, out.get("class"), out["raised"])]
    if busy is not None and kind != "oom":
        exp.append((busy, status, out.get("class"), out["raised"]))
    out["expected"] = sorted(exp)
    out["busy"] = busy
    out["mode"] = mode
    # Both sets, not a culprit_completed flag: in begin mode nothing is ever COMPLETED, which made that flag
    # vacuous; the parent checks what each mode does write.
    out["completed"] = sorted(with_status(recs, SlotStatus.COMPLETED)["slot_idx"].tolist())
    out["begins"] = sorted(with_status(recs, SlotStatus.BEGIN)["slot_idx"].tolist())
    return out


def surface(device: str, path: str, where: str) -> dict[str, Any]:
    """An illegal address at slot 4, noticed by check(), synchronize(), close() or a later launch."""
    rec = Recorder(path, device=device, capacity=1024, staging_slots=64)
    w = Axpy.on(rec)
    for i in range(4):
        w.launch(i)
    w.launch(4, fault=1)
    out: dict[str, Any] = {"where": where}
    try:
        if where == "check":
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                rec.check()
                time.sleep(0.001)
        elif where == "synchronize":
            rec.synchronize()
        elif where == "close":
            rec.close()
        else:
            _wait_for(lambda: rec.backend.stream_query(None) not in (0, 600), "the fault")
            w.launch(5)
        out["raised"] = None
    except Exception as e:
        out["raised"] = _code(e)
    out["poisoned"] = rec.poisoned
    try:
        w.launch(6)
    except RecorderPoisonedError as e:
        out["later_call"] = "poisoned"
        out["cause_code"] = _code(e.__cause__) if e.__cause__ is not None else None
    except Exception as e:
        out["later_call"] = type(e).__name__
    rec.close()
    out["failures"] = failures(log_records(path))
    out["begins"] = sorted(with_status(log_records(path), SlotStatus.BEGIN)["slot_idx"].tolist())
    return out


def launch_error(device: str, path: str) -> dict[str, Any]:
    """A block of 2048 threads is refused at the call (code 1, not sticky); the recorder keeps working."""
    rec = Recorder(path, device=device, capacity=1024, staging_slots=64, breadcrumbs="begin+end")
    w = Axpy.on(rec)
    w.x.from_host(np.ones(N, dtype=np.float32))
    w.launch(0)
    out: dict[str, Any] = {}
    try:
        w.launch(1, block=2048)
        out["raised"] = None
    except Exception as e:
        out["raised"] = _code(e)
    w.launch(2)
    rec.synchronize()
    out["y"] = w.y.to_host().view(np.float32)[:4].tolist()
    out["poisoned"] = rec.poisoned
    rec.close()
    recs = log_records(path)
    out["failures"] = failures(recs)
    out["completed"] = sorted(with_status(recs, SlotStatus.COMPLETED)["slot_idx"].tolist())
    return out


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "attribution": attribution,
    "surface": surface,
    "launch_error": launch_error,
}


def main(argv: list[str]) -> int:
    scenario, device, path, *rest = argv
    result = SCENARIOS[scenario](device, path, *rest)
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
