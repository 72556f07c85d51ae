"""The examples, run as users run them (a subprocess each): on the twin here, on the GPU under -m gpu.

examples/replay_registry.py has its own walk-through test (tests/test_replay_example.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.gpu import requires_gpu
from tests.helpers.recorder import failures, log_records, with_status
from vrrl_gpu import FailureClass, SlotStatus
from vrrl_gpu.format import read_sidecar

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PB = int(FailureClass.PROGRAM_BUG)
needs_cxx = pytest.mark.skipif(
    shutil.which("g++") is None, reason="the twin backend needs a C++ compiler (g++)"
)


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("VRRL_DISABLE", None)
    env["COLUMNS"] = "200"  # keep the dump's table wide enough to show whole opcode names
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def check_quickstart(tmp_path: Path, device: str) -> None:
    log = tmp_path / "quick.vrrl"
    proc = run_example("quickstart.py", str(log), "--device", device, "--steps", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "step 2: sum(y)" in proc.stdout
    assert "saxpy" in proc.stdout  # the dump shows opcode names from the sidecar
    assert "checksum" in proc.stdout
    recs = log_records(log)
    begins = with_status(recs, SlotStatus.BEGIN)
    assert len(begins) == 9  # 3 steps x (2 saxpy + 1 checksum slot)
    assert len(with_status(recs, SlotStatus.COMPLETED)) == 9  # begin+end
    assert sorted(set(begins["epoch"].tolist())) == [0, 1, 2]
    assert failures(recs) == []
    sc = read_sidecar(log)
    assert sc is not None
    assert set(sc.opcode_names.values()) == {"saxpy", "checksum"}
    assert sc.backend == device


def check_device_loss(tmp_path: Path, device: str, *extra: str) -> None:
    log = tmp_path / "crash.vrrl"
    proc = run_example(
        "device_loss_repro.py", str(log), "--device", device, "--launches", "300", "--fault-at", "250", *extra
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the log names launch 250" in proc.stdout
    assert "OK:" in proc.stdout
    assert failures(log_records(log)) == [(250, int(SlotStatus.FAULTED), PB, 700)]


def check_megakernel(tmp_path: Path, device: str) -> None:
    log = tmp_path / "mk.vrrl"
    proc = run_example("megakernel_slots.py", str(log), "--device", device, "--slots", "10", "--poison", "6")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "published, never reached: [1007, 1008, 1009]" in proc.stdout
    recs = log_records(log)
    assert with_status(recs, SlotStatus.PUBLISHED)["slot_idx"].tolist() == list(range(1000, 1010))
    assert with_status(recs, SlotStatus.DEVICE_CLAIMED)["slot_idx"].tolist() == list(range(1000, 1006))
    (reported,) = with_status(recs, SlotStatus.DEVICE_REPORTED)
    assert int(reported["slot_idx"]) == 1006
    assert int(reported["failure_class"]) == PB


# ---- on the twin ----------------------------------------------------------------------------------------


@needs_cxx
def test_quickstart_on_the_twin(tmp_path: Path) -> None:
    check_quickstart(tmp_path, "twin")


@needs_cxx
@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_device_loss_repro_on_the_twin(tmp_path: Path, mode: str) -> None:
    check_device_loss(tmp_path, "twin", "--breadcrumbs", mode)


@needs_cxx
def test_megakernel_slots_on_the_twin(tmp_path: Path) -> None:
    check_megakernel(tmp_path, "twin")


# ---- on the GPU ------------------------------------------------------------------------------------------


@requires_gpu
def test_quickstart_on_the_gpu(tmp_path: Path) -> None:
    check_quickstart(tmp_path, "cupy")


@requires_gpu
def test_device_loss_repro_on_the_gpu(tmp_path: Path) -> None:
    check_device_loss(tmp_path, "cupy")


@requires_gpu
def test_megakernel_slots_on_the_gpu(tmp_path: Path) -> None:
    check_megakernel(tmp_path, "cupy")
