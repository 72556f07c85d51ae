"""The single-log Chrome trace: the rank as process, each stream's crash windows on their own track, and no
two slices overlapping on a track, whatever the batches the log is streamed in."""

from __future__ import annotations

import io
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.analysis_logs import T0, rec, records
from vrrl_gpu._cli import main
from vrrl_gpu.analysis._fleet_chrome import CRASH_TID_BASE
from vrrl_gpu.analysis.exporters._chrome import ChromeWriter, process_of
from vrrl_gpu.format import FailureClass, RingLog, Sidecar, SlotStatus, write_sidecar

C = SlotStatus.COMPLETED


def _overlaps(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append((e["ts"], e["dur"]))
    bad = []
    for key, slices in tracks.items():
        slices.sort()
        for (t0, d0), (t1, _) in itertools.pairwise(slices):
            if t0 + d0 > t1 + 1e-6:
                bad.append((key, t0, d0, t1))
    return bad


def _trace(recs: Any, chunk: int) -> list[dict[str, Any]]:
    buf = io.BytesIO()
    w = ChromeWriter(buf, base=int(recs["timestamp_ns"].min()), ends_recorded=True, process=(5, "rank 5"))
    for lo in range(0, recs.shape[0], chunk):
        w.write(recs[lo : lo + chunk], np.full(min(chunk, recs.shape[0] - lo), -1, np.int32))
    w.finish()
    events: list[dict[str, Any]] = json.loads(buf.getvalue())["traceEvents"]
    return events


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_overlapping_slices_are_clipped_across_batches(chunk: int) -> None:
    # Launch 0 ends 500 ns after launch 1 begins (clock noise): clipped, whatever the batch boundaries.
    recs = records([rec(0, 0), rec(1000, 0, status=C), rec(500, 1), rec(1500, 1, status=C),
                    rec(2000, 2), rec(2400, 2, status=C)])  # fmt: skip
    ev = _trace(recs, chunk)
    xs = sorted((e for e in ev if e["ph"] == "X"), key=lambda e: e["ts"])
    assert [(e["pid"], e["args"]["slot_idx"], e["ts"], e["dur"]) for e in xs] == [
        (5, 0, 0.0, 0.5), (5, 1, 0.5, 1.0), (5, 2, 2.0, 0.4),
    ]  # fmt: skip
    assert xs[0]["args"]["clipped_ns"] == 500
    assert all("clipped_ns" not in e["args"] for e in xs[1:])
    assert _overlaps(ev) == []


@pytest.mark.parametrize("in_time_order", [True, False])
def test_random_slices_never_overlap_and_every_launch_is_drawn_once(in_time_order: bool) -> None:
    rng = np.random.default_rng(7)
    starts = rng.integers(0, 10**6, 400)
    if in_time_order:  # one stream's records: begins in order, ends overlapping the next begin at times
        starts.sort()
    rows = []
    for slot, t in enumerate(starts.tolist()):
        rows += [rec(t, slot), rec(t + int(rng.integers(1, 5000)), slot, status=C)]
    recs = records(rows)
    for chunk in (7, 64, 1000):
        ev = _trace(recs, chunk)
        assert _overlaps(ev) == []
        launches = [e for e in ev if e.get("cat") == "launch"]
        assert sorted(e["args"]["slot_idx"] for e in launches) == list(range(400))
        if in_time_order:  # nothing had to become an instant
            assert all(e["ph"] == "X" for e in launches)


def test_the_rank_is_the_process_and_crash_windows_have_their_own_track(tmp_path: Path) -> None:
    p = tmp_path / "rank3.vrrl"
    rows = [rec(0, 0), rec(100, 0, status=C), rec(200, 1),
            rec(900, 1, status=SlotStatus.FAULTED, fc=FailureClass.PROGRAM_BUG, code=700)]  # fmt: skip
    with RingLog.open(p, capacity=64) as log:
        log.extend(records(rows))
    side = Sidecar(host="node7", device={"name": "H100"}, extra={"rank": 3}, opcode_names={})
    write_sidecar(p, side)
    out = tmp_path / "t.json"
    assert main(["export", str(p), "--format", "chrome", "-o", str(out)]) == 0
    ev = json.loads(out.read_text())["traceEvents"]
    (proc,) = [e for e in ev if e["ph"] == "M" and e["name"] == "process_name"]
    assert (proc["pid"], proc["args"]["name"]) == (3, "rank 3 · node7 · H100")
    assert {e["pid"] for e in ev} == {3}
    (crash,) = [e for e in ev if e.get("cat") == "crash"]
    launch_tids = {e["tid"] for e in ev if e.get("cat") == "launch"}
    assert crash["tid"] == CRASH_TID_BASE + next(iter(launch_tids))
    names = {e["tid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names[crash["tid"]].endswith("· crash window")
    assert _overlaps(ev) == []
    assert int(ev[1]["ts"] * 1000) + T0 >= T0


def test_without_a_rank_the_process_is_the_file() -> None:
    assert process_of(None, "/x/run.vrrl") == (1, "vrrl run.vrrl")
    assert process_of(Sidecar(host="h", extra={"rank": "3"}), "/x/run.vrrl") == (1, "vrrl run.vrrl · h")
    assert process_of(Sidecar(extra={"rank": True}), "") == (1, "vrrl")
