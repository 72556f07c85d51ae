"""The hang watchdog of a Recorder: a thread that notices when no breadcrumb has arrived for a while and
writes HUNG evidence for the launch each busy stream had reached (functions of the recorder's state)."""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

from vrrl_gpu.evidence._failure import FailureEvidence
from vrrl_gpu.format._layout import FailureClass, SlotStatus
from vrrl_gpu.recorder._options import HangReport
from vrrl_gpu.recorder._state import _Launch, _StreamState
from vrrl_gpu.recorder._streams import StreamKey

if TYPE_CHECKING:
    from vrrl_gpu.recorder._recorder import Recorder


def watchdog_loop(rec: Recorder, seconds: float) -> None:
    try:
        last_pos: dict[StreamKey, int] = {}
        while not rec._watchdog_stop.wait(min(0.05, seconds / 4)):
            _tick(rec, seconds, last_pos)
    except BaseException as exc:  # surfaced at the next recorder call and at close()
        rec._watchdog_error = exc

def _tick(rec: Recorder, seconds: float, last_pos: dict[StreamKey, int]) -> None:
    now = time.monotonic()
    positions = {key: st.ring.consumer_position for key, st in list(rec._streams.items())}
    moved = any(last_pos.get(key) != pos for key, pos in positions.items())
    last_pos.clear()  # rebuilt each tick: retired streams leave it
    last_pos.update(positions)
    if moved:
        rec._last_arrival = now
        return
    silent = now - rec._last_arrival
    if silent < seconds:
        return
    for st in list(rec._streams.values()):
        if not st.outstanding:
            continue
        if st.ring.consumer_position >= st.next_seq and not _last_launch_running(rec, st):
            continue
        culprit = rec._crash_window(st)
        if culprit is None or culprit.slot_idx in rec._hang_reported:
            continue
        rec._hang_reported.add(culprit.slot_idx)
        _report_hang(rec, st, culprit, silent)

def _last_launch_running(rec: Recorder, st: _StreamState) -> bool:
    """Every breadcrumb of ``st`` arrived: with "begin" only a stream query tells a hung last launch
    from an idle stream (with "begin+end" its end arrived: it finished)."""
    if rec._opts.breadcrumbs == "begin+end" or rec._poison is not None:
        return False
    if st.gone or st.foreign:
        return False  # no handle to query from this thread
    if rec._backend.is_capturing(st.stream):
        return False  # a query would invalidate the capture; nothing of it runs before a replay
    return int(rec._backend.stream_query(st.stream)) == 600

def _report_hang(rec: Recorder, st: _StreamState, culprit: _Launch, silent: float) -> None:
    fc = FailureClass.TRANSIENT_QUEUE
    if rec._opts.nvml:
        from vrrl_gpu.evidence._classify import nvml_device_lost

        if nvml_device_lost():
            fc = FailureClass.DEVICE_LOSS
    ev = FailureEvidence(
        slot_status=int(SlotStatus.HUNG), failure_class=fc, backend_error_code=0, output_digest=0
    )
    # Not under _lock: the host may hold it, blocked in synchronize() on this very hang. The drainer
    # serialises log writes itself.
    rec._write_evidence(culprit, ev, st)
    note: dict[str, str] | None
    try:
        note = dump = _request_coredump()
    except OSError as e:  # best effort: no reader on the pipe (ENXIO) or no pipe must not stop the report
        dump = None
        note = {"pipe": os.environ.get("CUDA_COREDUMP_PIPE", ""), "error": str(e.strerror or e)}
    if note is not None:
        with rec._sidecar_lock:
            rec._sidecar.extra["coredump"] = note
            rec._save_sidecar()
    report = HangReport(
        slot_idx=culprit.slot_idx,
        opcode=culprit.opcode,
        stream=st.key,
        silent_seconds=silent,
        failure_class=fc,
        coredump_requested=dump is not None,
    )
    if rec._opts.on_hang is not None:
        rec._opts.on_hang(report)


def _request_coredump() -> dict[str, str] | None:
    """Ask the CUDA driver for a user-triggered core dump when the environment enables it."""
    if os.environ.get("CUDA_ENABLE_USER_TRIGGERED_COREDUMP") != "1":
        return None
    pipe = os.environ.get("CUDA_COREDUMP_PIPE")
    if not pipe:
        return None
    fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)
    name = os.environ.get(
        "CUDA_COREDUMP_FILE", f"core_{int(time.time())}_{socket.gethostname()}_{os.getpid()}.nvcudmp"
    )
    return {"pipe": pipe, "expected_file": name}
