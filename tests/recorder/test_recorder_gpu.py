"""The Recorder with real faults (``pytest -m gpu``), each in a child process: a real fault kills the CUDA
context of its process. The child script (tests/helpers/recorder_child.py) also runs here on the twin, so the
GPU version exercises code that is known to work.

On a GPU, ``__trap()`` may surface as 719, 715 or 710 (docs/error-classification.md): all are accepted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.child import parse_result
from tests.helpers.gpu import requires_gpu
from tests.helpers.recorder import KERNEL_FAULTS, failures, log_records
from vrrl_gpu import FailureClass, SlotStatus

REPO = Path(__file__).resolve().parents[2]
CHILD = REPO / "tests" / "helpers" / "recorder_child.py"
TRAP_CODES = {719, 715, 710}
PB = int(FailureClass.PROGRAM_BUG)
TQ = int(FailureClass.TRANSIENT_QUEUE)
FAULTED = int(SlotStatus.FAULTED)
AT_LAUNCH = int(SlotStatus.FAILED_AT_LAUNCH)
CUPY_OOM = 0x0007_0000  # CuPy's OutOfMemoryError (vrrl_gpu.evidence.CODE_CUPY_OUT_OF_MEMORY)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("VRRL_DISABLE", None)
    return env


def run_child(scenario: str, device: str, log: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(CHILD), scenario, device, str(log), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return parse_result(proc.stdout)  # the marked line: a device assert's printf may come after it


def check_attribution(out: dict[str, Any], kind: str) -> None:
    if kind == "oom":
        assert out["raised"] in (2, CUPY_OOM)
        assert out["class"] == TQ
        assert not out["poisoned"]
    else:
        code = KERNEL_FAULTS[kind][1]
        assert out["raised"] in (TRAP_CODES if kind == "trap" else {code})
        assert out["class"] == PB
        assert out["poisoned"]
    assert sorted(out["failures"]) == out["expected"]
    culprit, busy = out["culprit"], out["busy"]
    before = set(range(culprit)) - {busy}
    begins, completed = set(out["begins"]), set(out["completed"])
    assert before | {culprit} <= begins  # the culprit's breadcrumb arrived: the attribution rests on it
    if out["mode"] == "begin":
        assert completed == set()  # begin mode writes no end records, so there is no completion to check
    elif kind == "oom":
        assert completed >= before | {culprit + 1}  # not sticky: the launch after the failed slot completed
        assert culprit not in completed
    else:
        assert (
            completed == before
        )  # all that ran before the fault finished; the culprit and the busy one did not


def check_surface(out: dict[str, Any]) -> None:
    assert out["raised"] == 700
    assert out["poisoned"]
    if out["where"] == "close":
        assert out["later_call"] == "RecorderClosedError"  # close() surfaced it, and the recorder is closed
    else:
        assert out["later_call"] == "poisoned"
        assert out["cause_code"] == 700
    assert out["failures"] == [[4, FAULTED, PB, 700]]
    assert out["begins"] == [0, 1, 2, 3, 4]


def check_launch_error(out: dict[str, Any]) -> None:
    assert out["raised"] == 1
    assert not out["poisoned"]
    assert out["failures"] == [[1, AT_LAUNCH, PB, 1]]
    assert out["completed"] == [0, 2]
    assert out["y"] == [2.0, 2.0, 2.0, 2.0]  # slots 0 and 2 ran, slot 1 did not


# ---- the child script on the twin (no GPU needed) ------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "n_streams", "mode"),
    [("trap", "3", "begin+end"), ("trap", "3", "begin"), ("oom", "3", "begin+end")],
)
def test_child_attribution_on_the_twin(tmp_path: Path, kind: str, n_streams: str, mode: str) -> None:
    check_attribution(run_child("attribution", "twin", tmp_path / "a.vrrl", kind, n_streams, mode), kind)


def test_child_surface_and_launch_error_on_the_twin(tmp_path: Path) -> None:
    check_surface(run_child("surface", "twin", tmp_path / "s.vrrl", "launch"))
    check_surface(run_child("surface", "twin", tmp_path / "c.vrrl", "close"))
    check_launch_error(run_child("launch_error", "twin", tmp_path / "l.vrrl"))


# ---- real faults ------------------------------------------------------------------------------------------


@requires_gpu
@pytest.mark.parametrize("mode", ["begin", "begin+end"])
@pytest.mark.parametrize("n_streams", ["1", "3"])
@pytest.mark.parametrize("kind", [*KERNEL_FAULTS, "oom"])
def test_gpu_attribution(tmp_path: Path, kind: str, n_streams: str, mode: str) -> None:
    check_attribution(run_child("attribution", "cupy", tmp_path / "a.vrrl", kind, n_streams, mode), kind)


@requires_gpu
@pytest.mark.parametrize("where", ["check", "synchronize", "close", "launch"])
def test_gpu_fault_surfaces_at(tmp_path: Path, where: str) -> None:
    check_surface(run_child("surface", "cupy", tmp_path / "s.vrrl", where))


@requires_gpu
def test_gpu_launch_time_failure(tmp_path: Path) -> None:
    check_launch_error(run_child("launch_error", "cupy", tmp_path / "l.vrrl"))


@requires_gpu
@pytest.mark.parametrize("kind", ["illegal-address", "trap", "assert", "oom"])
def test_gpu_demo_names_the_faulting_launch(tmp_path: Path, kind: str) -> None:
    """The main job on the device: `vrrl demo --fault-at K` exits 3 and the log names launch K."""
    log = tmp_path / "demo.vrrl"
    proc = subprocess.run(
        [sys.executable, "-m", "vrrl_gpu", "demo", str(log), "--device", "cupy", "--launches", "300",
         "--fault-at", "200", "--fault-kind", kind, "--check-every", "16"],
        capture_output=True, text=True, timeout=180, env=_env(), check=False,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    got = failures(log_records(log))
    assert len(got) == 1, got
    slot, status, cls, code = got[0]
    assert slot == 200
    if kind == "oom":
        assert (status, cls) == (AT_LAUNCH, TQ)
        assert code in (2, CUPY_OOM)
    else:
        assert (status, cls) == (FAULTED, PB)
        assert code in (TRAP_CODES if kind == "trap" else {KERNEL_FAULTS[kind][1]})
