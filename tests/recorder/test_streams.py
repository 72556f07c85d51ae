"""Stream identity: every breadcrumb's stream comes back from the log and its sidecar's stream table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.attribution import run_schedule
from tests.helpers.recorder import Axpy, log_records
from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu._cli import main
from vrrl_gpu.analysis._streams import NO_STREAM, StreamTable, streams_of
from vrrl_gpu.format import read_sidecar
from vrrl_gpu.recorder._state import _MAX_RUNS, _StreamState

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")

# An irregular schedule over three streams: runs of different lengths, strides that change.
SCHEDULE = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2, 0, 1, 0, 1, 0, 1, 2, 0, 0, 0, 1, 2, 1, 0]


def _record(path: Path, schedule: list[int], n_streams: int, mode: str = "begin+end") -> None:
    with Recorder(path, device="twin", breadcrumbs=mode, staging_slots=64, capacity=4096) as rec:
        w = Axpy.on(rec)
        streams: list[Any] = [None] + [rec.backend.new_stream() for _ in range(n_streams - 1)]
        for i, s in enumerate(schedule):
            w.launch(i, stream=streams[s], tag=s)


def _launch_rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    recs = log_records(path)
    got = streams_of(path, recs)
    sel = np.isin(recs["slot_status"], [SlotStatus.BEGIN, SlotStatus.COMPLETED])
    return recs[sel], got[sel]


def test_every_breadcrumb_names_its_stream(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    _record(path, SCHEDULE, 3)
    rows, got = _launch_rows(path)
    assert rows.size == 2 * len(SCHEDULE)
    expected = [SCHEDULE[int(s)] for s in rows["slot_idx"].tolist()]
    assert got.tolist() == expected
    side = read_sidecar(path)
    assert side is not None
    assert [s["index"] for s in side.extra["streams"]] == [0, 1, 2]


def test_dump_and_exports_carry_the_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.vrrl"
    _record(path, SCHEDULE, 3)
    assert main(["dump", "--json", str(path)]) == 0
    dumped = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    launch = [d for d in dumped if d["slot_status"] in (SlotStatus.BEGIN, SlotStatus.COMPLETED)]
    assert [d["stream"] for d in launch] == [SCHEDULE[d["slot_idx"]] for d in launch]
    assert {d["stream"] for d in dumped if d["slot_status"] == SlotStatus.META} == {None}

    assert main(["export", str(path), "--format", "jsonl", "-o", str(tmp_path / "run.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert [r["stream"] for r in rows] == [d["stream"] for d in dumped]

    assert main(["export", str(path), "--format", "csv", "-o", str(tmp_path / "run.csv")]) == 0
    with open(tmp_path / "run.csv", encoding="utf-8") as f:
        col = [r["stream"] for r in csv.DictReader(f)]
    assert col == ["" if d["stream"] is None else str(d["stream"]) for d in dumped]

    assert main(["export", str(path), "--format", "chrome", "-o", str(tmp_path / "run.json")]) == 0
    trace = json.loads((tmp_path / "run.json").read_text())
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "thread_name"}
    launches = [e for e in trace["traceEvents"] if e.get("cat") == "launch"]
    assert {names[e["tid"]] for e in launches} == {f"tenant 0 stream {s}" for s in range(3)}
    for e in launches:
        assert names[e["tid"]] == f"tenant 0 stream {SCHEDULE[e['args']['slot_idx']]}"
    capsys.readouterr()


def test_parquet_export_has_a_stream_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "run.vrrl"
    _record(path, SCHEDULE, 3)
    assert main(["export", str(path), "--format", "parquet", "-o", str(tmp_path / "run.parquet")]) == 0
    table = pq.read_table(tmp_path / "run.parquet", columns=["slot_idx", "slot_status", "stream"]).to_pylist()
    launch = [r for r in table if r["slot_status"] in (SlotStatus.BEGIN, SlotStatus.COMPLETED)]
    assert [r["stream"] for r in launch] == [SCHEDULE[r["slot_idx"]] for r in launch]
    capsys.readouterr()


def test_an_earlier_session_in_the_same_log_has_no_stream(tmp_path: Path) -> None:
    """Slot numbers restart in each session: the table of the newest one must not name the old records."""
    path = tmp_path / "run.vrrl"
    _record(path, [0, 1, 0, 1], 2)
    _record(path, [0, 0, 0], 1)
    recs = log_records(path)
    got = streams_of(path, recs)
    starts = np.flatnonzero(recs["opcode"] == 0xFFFFFF04)  # SESSION_START
    assert starts.size == 2
    launch = np.isin(recs["slot_status"], [SlotStatus.BEGIN, SlotStatus.COMPLETED])
    assert set(got[: starts[1]][launch[: starts[1]]].tolist()) == {NO_STREAM}
    assert set(got[starts[1] :][launch[starts[1] :]].tolist()) == {0}


def test_stats_names_each_streams_window_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.vrrl"
    schedule = [0, 1] * 20
    out = run_schedule(path, streams_of=schedule, fault_at=13, n_streams=2, mode="begin+end")
    assert out.verdict == "exact", out.detail
    assert main(["stats", "--json", str(path)]) == 0
    windows = json.loads(capsys.readouterr().out)["crash_windows"]
    assert len({w["stream"] for w in windows}) == len(windows)
    assert len({w["slot_idx"] for w in windows}) == len(windows)
    k = 2 + 13  # two held launches first
    (kw,) = [w for w in windows if w["slot_idx"] == k]
    assert kw["stream"] == schedule[13]
    if len(windows) == 1:
        assert kw["faulted_here"] is True
    assert main(["stats", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"stream {schedule[13]} slot {k} " in text


def test_the_stream_table_is_bounded_and_never_misnames(tmp_path: Path) -> None:
    st = _StreamState(
        key=0, index=3, stream_ref=lambda: None, ring=None, ptrs=None, release=lambda ok: None, window=[None]
    )  # type: ignore[arg-type]
    slots = np.cumsum(np.random.default_rng(1).integers(1, 4, size=3 * _MAX_RUNS)).tolist()
    for s in slots:
        st.note_slot(int(s))
    assert len(st.runs) <= _MAX_RUNS
    side = read_sidecar(_sidecar_with(tmp_path, st))
    table = StreamTable.from_sidecar(side)
    assert table is not None
    got = table.lookup(np.asarray(slots, np.int64))
    assert set(got.tolist()) <= {3, NO_STREAM}
    assert got[-1] == 3
    assert (got == NO_STREAM).any()  # the oldest runs were dropped: unknown, not another stream


def test_the_stream_table_runs_are_the_slots_and_the_newest_run_stays_one_list() -> None:
    """Runs are [first, stride, count] of the slots in order; a new run rewrites ``st.run`` in place (the C
    launch path holds that list), and the runs it finished keep their values."""

    def reference(slots: list[int]) -> list[list[int]]:
        runs: list[list[int]] = []
        for s in slots:
            if runs and runs[-1][2] == 1 and s > runs[-1][0]:
                runs[-1][1:] = [s - runs[-1][0], 2]
            elif runs and runs[-1][2] > 1 and s == runs[-1][0] + runs[-1][1] * runs[-1][2]:
                runs[-1][2] += 1
            else:
                runs.append([s, 1, 1])
        return runs

    st = _StreamState(
        key=0, index=0, stream_ref=lambda: None, ring=None, ptrs=None, release=lambda ok: None, window=[None]
    )  # type: ignore[arg-type]
    newest = st.run
    steps = np.random.default_rng(5).choice([1, 1, 1, 2, 3, 7], size=500)
    slots = np.cumsum(steps).tolist()
    for s in slots:
        st.note_slot(int(s))
        assert st.run is newest
        assert st.runs[-1] is newest
    assert st.runs == reference([int(s) for s in slots])
    assert len(st.runs) > 10  # the schedule broke runs often
    assert all(r is not newest for r in st.runs[:-1])


def _sidecar_with(tmp_path: Path, st: _StreamState) -> Path:
    from vrrl_gpu.format import Sidecar, write_sidecar

    path = tmp_path / "t.vrrl"
    side = Sidecar(
        extra={"session": {"nonce": 1}, "streams": [{"index": st.index, "key": 0, "runs": st.runs}]}
    )
    write_sidecar(path, side)
    return path


def test_meta_records_carry_the_recorders_tenant(tmp_path: Path) -> None:
    """GAP (the device laps an 8-slot ring the host runs far ahead of), SESSION_*, CALIBRATION: tenant 7."""
    path = tmp_path / "run.vrrl"
    rec = Recorder(path, device="twin", staging_slots=8, backpressure=False, tenant_id=7, capacity=1 << 14)
    with rec:
        w = Axpy.on(rec)
        for i in range(2000):
            w.launch(i)
    recs = log_records(path)
    meta = recs[recs["slot_status"] == SlotStatus.META]
    gaps = meta[meta["opcode"] == 0xFFFFFF01]
    assert set(meta["opcode"].tolist()) >= {0xFFFFFF02, 0xFFFFFF04, 0xFFFFFF05}
    assert set(recs["tenant_id"].tolist()) == {7}
    if rec.statistics().dropped:  # lapping depends on how fast the drain thread runs
        assert gaps.size
