"""The pytest plugin (--vrrl-dir, the vrrl_recorder fixture), run through pytest's own pytester."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import pytest

def _launch(rec, fault):
    k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = rec.backend.alloc_device(4 * 32)
    x = rec.backend.alloc_device(4 * 32)
    rec.launch(k, 1, 32, (y, x, 1.0, 32, fault), opcode=rec.opcode("axpy"))
    rec.synchronize()

def test_passes(vrrl_recorder):
    _launch(vrrl_recorder, 0)

def test_fails_in_body(vrrl_recorder):
    _launch(vrrl_recorder, 0)
    assert False, "boom"

def test_faults_on_device(vrrl_recorder):
    _launch(vrrl_recorder, 1)

def test_faults_after_the_body(vrrl_recorder):
    k = vrrl_recorder.backend.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = vrrl_recorder.backend.alloc_device(4 * 32)
    vrrl_recorder.launch(k, 1, 32, (y, y, 1.0, 32, 1), opcode=vrrl_recorder.opcode("axpy"))
    # no synchronize: the body returns before the fault surfaces
"""


def test_logs_of_failing_tests_are_kept_and_named(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_gpu_work=TESTS)
    logs = tmp_path / "logs"
    result = pytester.runpytest_subprocess(
        f"--vrrl-dir={logs}", "--vrrl-device=twin", "-p", "no:cacheprovider"
    )
    # Every failure is its test's own, in the call phase: no PASSED + ERROR at teardown.
    result.assert_outcomes(passed=1, failed=3, errors=0)
    kept = sorted(p.name for p in logs.glob("*.vrrl"))
    assert kept == [
        "test_gpu_work.py_test_fails_in_body.vrrl",
        "test_gpu_work.py_test_faults_after_the_body.vrrl",
        "test_gpu_work.py_test_faults_on_device.vrrl",
    ]
    result.stdout.fnmatch_lines(
        [
            "*test_faults_after_the_body*",
            "*illegal memory access*",
            "*vrrl: the kernel fault surfaced after the test body returned; log: *after_the_body.vrrl",
        ]
    )
    assert "FAILED test_gpu_work.py::test_faults_after_the_body" in result.stdout.str()
    assert (logs / "test_gpu_work.py_test_faults_on_device.vrrl.json").exists()
    result.stdout.fnmatch_lines(["*VRRL log kept: *test_faults_on_device.vrrl*"])

    from vrrl_gpu import FailureClass, RingLog, SlotStatus

    with RingLog.open(logs / "test_gpu_work.py_test_faults_on_device.vrrl", readonly=True) as log:
        faulted = [r for r in log if r.slot_status == SlotStatus.FAULTED]
    assert len(faulted) == 1
    assert faulted[0].failure_class is FailureClass.PROGRAM_BUG
    assert faulted[0].backend_error_code == 700


def test_without_vrrl_dir_logs_go_to_tmp_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_one="""
def test_where(vrrl_recorder, tmp_path):
    assert vrrl_recorder.path.startswith(str(tmp_path))
"""
    )
    result = pytester.runpytest_subprocess("--vrrl-device=twin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
