"""Issue 16, item 11: the recorder's policy for a full disk (``on_disk_full``), verified on the twin.

The full disk is simulated: every ``pwrite`` to the log's inode fails with
ENOSPC while the switch is on (the sidecar and staging are other files).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.recorder import Axpy, log_records, recorders
from vrrl_gpu import SlotStatus
from vrrl_gpu._cli import main
from vrrl_gpu.errors import DrainError, RecordValueError, VrrlWarning
from vrrl_gpu.format import MetaOpcode


@contextlib.contextmanager
def _full_disk(monkeypatch: pytest.MonkeyPatch, path: Path) -> Iterator[dict[str, bool]]:
    ino = os.stat(path).st_ino
    real = os.pwrite
    switch = {"full": False}

    def pwrite(fd: int, data: object, offset: int) -> int:
        if switch["full"] and os.fstat(fd).st_ino == ino:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "pwrite", pwrite)
    try:
        yield switch
    finally:
        monkeypatch.undo()


def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not cond():
        assert time.monotonic() < deadline, "the drain thread did not get there"
        time.sleep(0.005)


def _launch_words(recs: np.ndarray) -> list[int]:
    return sorted(int(r["args"][0]) for r in recs if int(r["slot_status"]) != SlotStatus.META)


@pytest.mark.parametrize("staging", ["pinned", "shm"])
def test_drop_keeps_recording_counts_the_loss_and_marks_it_with_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, staging: str
) -> None:
    with recorders(tmp_path, capacity=4096, staging=staging, on_disk_full="drop") as make:
        rec = make()
        path = Path(rec.path)
        ax = Axpy.on(rec)
        for i in range(20):
            ax.launch(i)
        rec.synchronize()
        _until(lambda: rec.statistics().drained >= 20)
        with _full_disk(monkeypatch, path) as disk:
            disk["full"] = True
            for i in range(20, 60):
                ax.launch(i)
            rec.synchronize()  # the drain drops what it cannot write; the workload goes on
            _until(lambda: rec.statistics().unwritten >= 40)
            with pytest.warns(VrrlWarning, match=re.escape(str(path)) + ".*disk is full"):
                rec.check()
            lost = rec.statistics().unwritten
            assert lost > 0
            disk["full"] = False
            for i in range(60, 80):
                ax.launch(i)
            rec.synchronize()
            rec.check()  # warned once only: no second warning (warnings are errors here)
        rec.close()
    recs = log_records(path)
    words = _launch_words(recs)
    assert set(range(20)) <= set(words)
    assert set(range(60, 80)) <= set(words), "recording resumed once the disk had room"
    assert sum(1 for w in words if 20 <= w < 60) + lost == 40, "each launch either reached the log or counted"
    gaps = recs[(recs["slot_status"] == SlotStatus.META) & (recs["opcode"] == MetaOpcode.GAP)]
    assert gaps.shape[0] == 1
    a = gaps[0]["args"]
    assert int(a[2]) | int(a[3]) << 32 == lost
    assert main(["verify", str(path)]) == 0


def test_raise_stops_draining_and_the_next_call_names_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with recorders(tmp_path, capacity=4096) as make:
        rec = make()
        path = Path(rec.path)
        ax = Axpy.on(rec)
        for i in range(10):
            ax.launch(i)
        rec.synchronize()
        _until(lambda: rec.statistics().drained >= 10)
        with _full_disk(monkeypatch, path) as disk:
            disk["full"] = True
            for i in range(10, 30):
                ax.launch(i)
            _until(lambda: rec.statistics().failed)
            with pytest.raises(DrainError, match=re.escape(str(path)) + ".*No space left on device"):
                rec.synchronize()
            disk["full"] = False
        with contextlib.suppress(DrainError):
            rec.close()
    assert set(range(10)) <= set(_launch_words(log_records(path)))
    assert main(["verify", str(path)]) == 0
    capsys.readouterr()


def test_the_policy_is_checked() -> None:
    from vrrl_gpu.recorder._options import RecorderOptions

    with pytest.raises(RecordValueError, match="on_disk_full"):
        RecorderOptions(on_disk_full="ignore")
