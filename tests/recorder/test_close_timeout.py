"""close() on a hung kernel: a bounded wait (close_timeout), then HUNG evidence for the launch that hangs,
then it returns (the staging is leaked: the device may still write into it). Verified on the twin with the
demo spin kernel; the -m gpu case runs the same on a device."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.recorder import Axpy, failures, log_records, recorders, sidecar_file
from vrrl_gpu import FailureClass, Recorder, SlotStatus
from vrrl_gpu.errors import RecordValueError, VrrlWarning

DEVICES = ("twin", pytest.param("cupy", marks=pytest.mark.gpu))
HOUR_NS = 3600 * 10**9


@pytest.fixture
def make_rec(tmp_path: Path) -> Iterator[Callable[..., Recorder]]:
    with recorders(tmp_path, staging_slots=64) as make:
        yield make


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_close_on_a_hung_kernel_writes_hung_and_returns(
    make_rec: Callable[..., Recorder], device: str, mode: str
) -> None:
    rec = make_rec(device, breadcrumbs=mode, close_timeout=0.5)
    w = Axpy.on(rec)
    spin = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
    other = rec.backend.new_stream()
    w.launch(0)
    w.launch(1, stream=other)  # finishes: not blamed
    rec.launch(spin, 1, 1, (HOUR_NS,), opcode=rec.opcode("spin"), words=(2, 0, 0, 0))
    with pytest.warns(VrrlWarning, match="still run"):
        rec.close()  # returns after about close_timeout, not after an hour
    recs = log_records(rec.path)
    assert failures(recs) == [(2, int(SlotStatus.HUNG), int(FailureClass.TRANSIENT_QUEUE), 0)]
    side = sidecar_file(rec.path).read_text()
    assert '"hung_streams"' in side


def test_close_waits_for_work_that_finishes_in_time(make_rec: Callable[..., Recorder]) -> None:
    rec = make_rec(close_timeout=30.0)
    spin = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
    rec.launch(spin, 1, 1, (200 * 10**6,), opcode=rec.opcode("spin"))  # 0.2 s
    rec.close()
    assert failures(log_records(rec.path)) == []


def test_close_timeout_is_checked(tmp_path: Path) -> None:
    with pytest.raises(RecordValueError, match="close_timeout"):
        Recorder(tmp_path / "x.vrrl", device="twin", close_timeout=0)
