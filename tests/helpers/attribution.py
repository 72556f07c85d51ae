"""The attribution matrix: fault at launch K with many launches queued behind it, then judge the evidence.

Each stream first gets a held launch (``Hold``), so the device reaches nothing while the host queues
``ratio x staging_slots`` launches behind K (without backpressure), or until backpressure stops the host
(with it; a timer then releases the hold). The verdict: ``exact`` when a FAULTED record names K, ``unknown``
when the fault stream's record says unknown, ``wrong`` when any FAULTED record names a launch the device had
not reached on its stream (or K's stream names another launch). Used by tests/recorder/test_attribution.py
(twin and ``-m gpu``) and benchmarks/bench_attribution.py (the figures).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tests.helpers.child import print_result
from tests.helpers.recorder import Axpy, Hold, log_records, with_status
from vrrl_gpu import Recorder, SlotStatus, classify
from vrrl_gpu.analysis._streams import streams_of as log_streams
from vrrl_gpu.format import UNKNOWN_SLOT, read_sidecar

RATIOS = (10, 100, 1000)
MODES = ("begin", "begin+end")
STAGINGS = ("pinned", "shm")
STREAMS = (1, 2, 8)
POLLS = (True, False)
BACKPRESSURE = (True, False)


@dataclass(frozen=True)
class Case:
    ratio: int
    mode: str
    staging: str
    streams: int
    poll: bool
    backpressure: bool
    slots: int = 8

    @property
    def id(self) -> str:
        return (
            f"x{self.ratio}-{self.mode}-{self.staging}-s{self.streams}-"
            f"{'poll' if self.poll else 'nopoll'}-{'bp' if self.backpressure else 'nobp'}"
        )


@dataclass(frozen=True)
class Outcome:
    verdict: str  # "exact", "unknown" or "wrong"
    detail: str


def matrix() -> Iterator[Case]:
    for r, m, s, n, p, b in itertools.product(RATIOS, MODES, STAGINGS, STREAMS, POLLS, BACKPRESSURE):
        yield Case(r, m, s, n, p, b)


def run_schedule(
    path: str | os.PathLike[str],
    *,
    streams_of: Sequence[int],
    fault_at: int,
    n_streams: int,
    mode: str = "begin",
    staging: str = "pinned",
    slots: int = 8,
    poll: Sequence[bool] | bool = False,
    backpressure: bool = True,
    device: str = "twin",
    via: str = "launch",
) -> Outcome:
    """Hold every stream, launch workload ``j`` on stream ``streams_of[j]`` (``fault_at`` misbehaves), judge.

    Slots: the holds are 0 .. n_streams - 1, workload launch j is slot n_streams + j.
    """
    rec = Recorder(
        path,
        device=device,
        staging=staging,
        staging_slots=slots,
        breadcrumbs=mode,
        backpressure=backpressure,
        capacity=1 << 16,
    )
    timer: threading.Timer | None = None
    hold: Hold | None = None
    seen: list[str] = []  # what the run raised, for the verdict's detail
    try:
        w = Axpy.on(rec)
        hold = Hold(rec)
        streams: list[Any] = [None] + [rec.backend.new_stream() for _ in range(n_streams - 1)]
        for i, s in enumerate(streams):
            hold.launch(i, stream=s)
        if backpressure:
            # The host blocks once a stream is a window ahead: let the device go after a moment.
            timer = threading.Timer(0.05, hold.release)
            timer.start()
        try:
            for j, s_no in enumerate(streams_of):
                fault = 1 if j == fault_at else 0
                w.launch(n_streams + j, fault=fault, stream=streams[s_no], tag=s_no, via=via)
                if poll if isinstance(poll, bool) else poll[j]:
                    rec.check()
            hold.release()
            rec.synchronize()
        except Exception as exc:
            if classify(exc).code != 700:  # the injected illegal address, seen at a launch, check or sync
                raise
            seen.append(f"{type(exc).__name__}: {exc}")
    finally:
        if timer is not None:
            timer.cancel()
        if hold is not None:
            hold.release()
        try:
            rec.close()
        except Exception as exc:
            seen.append(f"at close: {type(exc).__name__}: {exc}")
    out = judge(path, streams_of=streams_of, fault_at=fault_at, n_streams=n_streams, mode=mode)
    if out.verdict == "wrong":
        # Everything needed to tell a wrong attribution from a run that never faulted, in the failure message.
        recs = log_records(path)
        tail = [(int(r["slot_idx"]), int(r["slot_status"]), int(r["backend_error_code"])) for r in recs[-12:]]
        stats = rec.statistics()
        out = Outcome(
            out.verdict,
            f"{out.detail}; raised {seen or 'nothing'}; last records (slot, status, code) {tail}; "
            f"drained {stats.drained}, dropped {stats.dropped}",
        )
    return out


def run_case(
    path: str | os.PathLike[str], case: Case, *, device: str = "twin", via: str = "launch"
) -> Outcome:
    """The matrix case: fault at K = 3 launches per stream in, on the last stream, ratio x slots behind
    (``via="slot"``: each workload launch inside ``rec.slot``)."""
    n = case.streams
    fault_at = 3 * n + (n - 1)
    total = fault_at + 1 + case.ratio * case.slots
    return run_schedule(
        path,
        streams_of=[j % n for j in range(total)],
        fault_at=fault_at,
        n_streams=n,
        mode=case.mode,
        staging=case.staging,
        slots=case.slots,
        poll=case.poll,
        backpressure=case.backpressure,
        device=device,
        via=via,
    )


def judge(
    path: str | os.PathLike[str], *, streams_of: Sequence[int], fault_at: int, n_streams: int, mode: str
) -> Outcome:
    recs = log_records(path)
    k_slot = n_streams + fault_at
    k_stream = streams_of[fault_at]

    def stream_of(slot: int) -> int:
        return slot if slot < n_streams else streams_of[slot - n_streams]

    began = set(with_status(recs, SlotStatus.BEGIN)["slot_idx"].tolist())
    faulted = with_status(recs, SlotStatus.FAULTED)["slot_idx"].tolist()
    at_launch = with_status(recs, SlotStatus.FAILED_AT_LAUNCH)["slot_idx"].tolist()
    if at_launch:
        # No call of the schedule fails on its own: the only failure is K's fault on the device, so a
        # FAILED_AT_LAUNCH record blames a call (K's own included) for what the device did.
        return Outcome("wrong", f"FAILED_AT_LAUNCH records for slots {at_launch}; K is {k_slot}")
    side = read_sidecar(path)
    unknown_streams = [int(u["stream"]) for u in (side.extra.get("unknown_windows", []) if side else [])]
    if faulted.count(UNKNOWN_SLOT) != len(unknown_streams):
        n_unknown = faulted.count(UNKNOWN_SLOT)
        return Outcome("wrong", f"{n_unknown} unknown records, sidecar notes {unknown_streams}")
    named_streams = log_streams(path, recs)[recs["slot_status"] == SlotStatus.FAULTED].tolist()
    unknown_order = iter(unknown_streams)  # the i-th unknown record is the sidecar's i-th note
    for slot, named in zip(faulted, named_streams, strict=True):
        actual = next(unknown_order) if slot == UNKNOWN_SLOT else stream_of(slot)
        if named != actual:
            return Outcome("wrong", f"slot {slot}: the log names stream {named}, it ran on {actual}")
    for slot in faulted:
        if slot in (UNKNOWN_SLOT, k_slot):
            continue
        s = stream_of(slot)
        if s == k_stream:
            return Outcome("wrong", f"slot {slot} blamed on the fault's stream {s}; K is {k_slot}")
        if slot not in began:
            return Outcome("wrong", f"slot {slot} (stream {s}) blamed but the device never reached it")
        # A launch of another stream may complete after the fault was attributed (its end breadcrumb was
        # in flight): it had begun, which is what its window says.
    if faulted.count(k_slot) == 1 and k_stream not in unknown_streams:
        return Outcome("exact", f"slot {k_slot}")
    if k_slot not in faulted and k_stream in unknown_streams:
        return Outcome("unknown", f"stream {k_stream}: unknown")
    return Outcome("wrong", f"K = {k_slot} on stream {k_stream}; FAULTED slots {faulted}")


if __name__ == "__main__":
    # python tests/helpers/attribution.py CASE_ID DEVICE LOG: one case in its own process (a real fault kills
    # the CUDA context of its process); prints the outcome as JSON.
    case_id, device, log = sys.argv[1:4]
    (chosen,) = [c for c in matrix() if c.id == case_id]
    res = run_case(log, chosen, device=device)
    print_result({"verdict": res.verdict, "detail": res.detail})
