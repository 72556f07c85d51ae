"""The Chrome/Perfetto trace of a fleet: a process per rank, a named thread per stream, slices disjoint."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.analysis_logs import rec, records
from tests.helpers.fleet import Fleet, subset_of
from vrrl_gpu._cli import main
from vrrl_gpu.analysis._fleet_chrome import CRASH_TID_BASE, track_events
from vrrl_gpu.format import SlotStatus


def _assert_no_overlap(events: list[dict[str, Any]]) -> int:
    """Every track's complete slices, in start order, end before the next begins; returns how many."""
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append((e["ts"], e["dur"]))
    n = 0
    for key, slices in tracks.items():
        slices.sort()
        for (t0, d0), (t1, _) in itertools.pairwise(slices):
            assert t0 + d0 <= t1 + 1e-6, (key, t0, d0, t1)
        n += len(slices)
    return n


def test_the_fleet_trace(fleet: Fleet, tmp_path: Path) -> None:
    s = fleet.spec
    out = tmp_path / "fleet.json"
    assert main(["export", *subset_of(fleet), "--format", "chrome", "-o", str(out)]) == 0
    ev = json.loads(out.read_text())["traceEvents"]
    procs = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert procs[10] == "rank 10 · node001 · NVIDIA H100 80GB HBM3 (synthetic)"
    assert procs[0].startswith("rank 0 · ") and "twin" in procs[0]  # noqa: PT018
    assert (threads[(10, 1)], threads[(10, 2)]) == ("stream 0", "stream 1")
    assert threads[(s.no_sidecar_from, 0)] == "stream unknown"
    assert s.damaged_header not in procs and s.missing not in procs  # noqa: PT018  # nothing to draw
    used = {(e["pid"], e["tid"]) for e in ev if e["ph"] != "M" and e.get("s") != "p"}
    assert used <= set(threads)  # every track is named
    # Begin + end: a complete slice; the healthy ranks' 24 launches are all slices.
    assert sum(1 for e in ev if e["ph"] == "X" and e["pid"] == 10 and e["cat"] == "launch") == 24
    assert _assert_no_overlap(ev) > 1000
    failed = {s.faulted_first, *(r for r, _ in s.late_failures)}
    assert {e["pid"] for e in ev if e.get("cat") == "failure"} == failed
    crash = [e for e in ev if e.get("cat") == "crash"]
    assert {e["pid"] for e in crash} == failed
    assert all(e["tid"] >= CRASH_TID_BASE for e in crash)


def test_slices_that_would_overlap_are_clipped() -> None:
    # Two launches on one track (stream unknown) whose begin/end records overlap by 500 ns.
    recs = records([
        rec(0, 0), rec(1000, 0, status=SlotStatus.COMPLETED),
        rec(500, 1), rec(1500, 1, status=SlotStatus.COMPLETED),
    ])  # fmt: skip
    ev = track_events(recs, np.full(4, -1, np.int32), pid=7, base=int(recs["timestamp_ns"].min()))
    xs = sorted((e for e in ev if e["ph"] == "X"), key=lambda e: e["ts"])
    assert [(e["pid"], e["tid"], e["ts"], e["dur"]) for e in xs] == [(7, 0, 0.0, 0.5), (7, 0, 0.5, 1.0)]
    assert xs[0]["args"]["clipped_ns"] == 500 and "clipped_ns" not in xs[1]["args"]  # noqa: PT018
    _assert_no_overlap(ev)


def test_a_fleet_export_takes_only_parquet_or_chrome(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in fleet.paths()[:2]]
    assert main(["export", *paths, "--format", "jsonl", "-o", str(tmp_path / "x")]) == 2
    assert "--format parquet" in capsys.readouterr().err
