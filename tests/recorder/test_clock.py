"""Periodic re-calibration of the device clock (issue 11): CALIBRATION meta-records with the offset and its
step, the drain's correction of later device-written timestamps, skipping while a graph is captured, the
drift in the sidecar and in ``vrrl info``.

The twin's %globaltimer is CLOCK_REALTIME, so it never drifts by itself: these tests script the backend's
``calibrate`` to play a drifting device clock."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.helpers.recorder import Axpy, log_records, recorders
from vrrl_gpu import MetaOpcode, Recorder, SlotStatus
from vrrl_gpu.errors import CaptureError, RecordValueError
from vrrl_gpu.format import read_sidecar


@pytest.fixture
def make_rec(tmp_path: Path) -> Iterator[Callable[..., Recorder]]:
    with recorders(tmp_path) as make:
        yield make


def scripted(rec: Recorder, monkeypatch: pytest.MonkeyPatch, offsets: list[int]) -> list[int]:
    """Make the next calibrations return ``offsets`` in turn (then the last one); returns the calls seen."""
    calls: list[int] = []

    def calibrate() -> int:
        value = offsets[min(len(calls), len(offsets) - 1)]
        calls.append(value)
        return value

    monkeypatch.setattr(rec.backend, "calibrate", calibrate)
    return calls


def calibrations(recs: npt.NDArray[np.void]) -> list[tuple[int, int]]:
    """(offset, step) of each CALIBRATION record, as signed ints."""
    meta = recs["slot_status"] == int(SlotStatus.META)
    sel = recs[meta & (recs["opcode"] == int(MetaOpcode.CALIBRATION))]

    def i64(lo: int, hi: int) -> int:
        v = int(lo) | int(hi) << 32
        return v - (1 << 64) if v >= 1 << 63 else v

    return [(i64(r["args"][0], r["args"][1]), i64(r["args"][2], r["args"][3])) for r in sel]


def begins(recs: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
    return recs[recs["slot_status"] == int(SlotStatus.BEGIN)]


@pytest.mark.parametrize("offset", [1_000_000, -2_500_000], ids=["device-behind", "device-ahead"])
def test_recalibrate_corrects_the_records_drained_after_it(
    make_rec: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch, offset: int
) -> None:
    rec = make_rec(recalibrate=None)
    w = Axpy.on(rec)
    w.launch(0)
    rec.synchronize()
    rec._drainer.flush()
    scripted(rec, monkeypatch, [offset])
    assert rec.recalibrate() == offset  # the step from the start's offset (0 on the twin)
    t0 = time.time_ns()
    w.launch(1)
    rec.synchronize()
    t1 = time.time_ns()
    rec.close()
    recs = log_records(rec.path)
    assert calibrations(recs) == [(0, 0), (offset, offset)]
    b = begins(recs)
    assert [int(x) for x in b["slot_idx"]] == [0, 1]
    # The twin stamps CLOCK_REALTIME; the drain added the measured change of offset to the later record only.
    assert t0 + offset <= int(b["timestamp_ns"][1]) <= t1 + offset
    assert int(b["timestamp_ns"][0]) <= t0
    assert rec.clock["drift_ns"] == offset


def test_the_clock_thread_recalibrates_every_period_and_reports_the_drift(
    make_rec: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = make_rec(recalibrate=0.02)
    calls = scripted(rec, monkeypatch, [100 * i for i in range(1, 1000)])
    deadline = time.monotonic() + 30
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    rec.close()
    n = len(calls)
    assert n >= 4
    cal = calibrations(log_records(rec.path))
    assert cal[0] == (0, 0)
    assert cal[1:] == [(100 * i, 100) for i in range(1, n + 1)]
    side = read_sidecar(rec.path)
    assert side is not None
    assert side.clock["calibrations"] == n + 1
    assert side.clock["drift_ns"] == 100 * n
    assert side.clock["max_step_ns"] == 100

    from vrrl_gpu._cli import main

    assert main(["info", rec.path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["clock"]["calibrations"] == n + 1
    assert info["clock"]["drift_ns"] == 100 * n
    assert main(["info", rec.path]) == 0
    assert f"drift +{100 * n:,} ns" in capsys.readouterr().out


def test_no_calibration_while_a_recorded_stream_captures(make_rec: Callable[..., Recorder]) -> None:
    # On the twin, as on CUDA in global capture mode, a calibration's synchronize during a capture would
    # invalidate it (error 900): the clock thread must wait for the capture to end.
    rec = make_rec(recalibrate=0.01)
    w = Axpy.on(rec)
    s = rec.backend.new_stream()
    s.begin_capture()
    w.launch(0, stream=s)
    with pytest.raises(CaptureError, match="capturing"):
        rec.recalibrate()
    before = rec.clock["calibrations"]
    time.sleep(0.2)
    assert rec.clock["calibrations"] == before
    assert rec.clock["skipped_while_capturing"] >= 1
    graph = s.end_capture()  # still valid: nothing synchronized during the capture
    graph.launch(s)
    rec.synchronize()
    deadline = time.monotonic() + 30
    while rec.clock["calibrations"] == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.clock["calibrations"] > before  # resumed after the capture
    rec.close()


def test_a_failing_calibration_is_raised_by_the_next_call(
    make_rec: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = make_rec(recalibrate=0.01)
    w = Axpy.on(rec)

    def broken() -> int:
        raise ValueError("clock read failed")

    monkeypatch.setattr(rec.backend, "calibrate", broken)
    deadline = time.monotonic() + 30
    while rec._watchdog_error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(ValueError, match="clock read failed"):
        w.launch(0)


@pytest.mark.parametrize("bad", [0, -1.0])
def test_recalibrate_period_must_be_positive(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(RecordValueError, match="recalibrate"):
        Recorder(tmp_path / "x.vrrl", device="twin", recalibrate=bad)
