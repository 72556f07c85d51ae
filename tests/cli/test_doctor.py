"""``vrrl doctor``: on the twin in CI (exit codes, JSON fields, forced failures with their fixes), and on the
device under ``-m gpu``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.helpers.gpu import requires_gpu
from vrrl_gpu._cli import main
from vrrl_gpu.backends import TwinBackend, _doctor
from vrrl_gpu.backends import _cupy as cupy_mod
from vrrl_gpu.backends._host import HostDevices
from vrrl_gpu.errors import StagingSpaceError

ENVIRONMENT = [
    "python",
    "cupy packages",
    "cupy",
    "driver/runtime",
    "nvrtc",
    "cuda headers",
    "nvidia host",
    "cuda devices",
]
LIVE = [
    "compile",
    "mapped pinned memory",
    "pack round trip",
    "clock calibration",
    "shm + hostRegister",
    "stream query",
]


def doctor_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_doctor_on_the_twin_passes_every_live_check_and_says_it_is_the_twin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = doctor_json(capsys, "--device", "twin", "--calibrations", "3")
    assert code == 0, [c for c in report["checks"] if c["status"] == "fail"]
    assert (report["ok"], report["device"], report["backend"], report["simulated"]) == (
        True,
        "twin",
        "twin",
        True,
    )
    assert [c["name"] for c in report["checks"]] == [*ENVIRONMENT, "backend", *LIVE]
    for c in report["checks"]:
        assert set(c) == {"name", "status", "detail", "fix", "data"}
        assert c["status"] in _doctor.STATUSES
    checks = by_name(report)
    assert "NOT A GPU" in checks["backend"]["detail"]
    assert {checks[n]["status"] for n in LIVE} == {"ok"}
    cal = checks["clock calibration"]["data"]
    assert len(cal["offsets_ns"]) == 3
    assert cal["spread_ns"] == max(cal["offsets_ns"]) - min(cal["offsets_ns"])
    assert checks["backend"]["data"]["device_info"]["simulated"] is True


def test_doctor_table_names_the_twin_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--device", "twin", "--calibrations", "1"]) == 0
    out = capsys.readouterr().out
    assert "CPU TWIN, NOT A GPU" in out
    for name in LIVE:
        assert name in out


def test_a_wrong_record_fails_the_round_trip_with_a_fix_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pack = TwinBackend.pack

    def bad_pack(self: TwinBackend, ring: Any, seq: int, **kw: Any) -> None:
        kw["opcode"] ^= 1  # the device writes one bit wrong
        real_pack(self, ring, seq, **kw)

    monkeypatch.setattr(TwinBackend, "pack", bad_pack)
    code, report = doctor_json(capsys, "--device", "twin", "--calibrations", "1")
    assert code == 1
    assert report["ok"] is False
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["pack round trip"]
    assert "differs from pack_reference" in failed[0]["detail"]
    assert failed[0]["fix"]
    assert by_name(report)["stream query"]["status"] == "ok"  # the checks after it still ran


def test_a_full_dev_shm_fails_the_shm_check_and_says_what_to_free(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class FullShm:
        @staticmethod
        def create(path: object, nbytes: int) -> Any:
            raise StagingSpaceError(f"/dev/shm/x: cannot reserve {nbytes:,} bytes (No space left on device)")

    monkeypatch.setattr(_doctor, "ShmSegment", FullShm)
    code, report = doctor_json(capsys, "--device", "twin", "--calibrations", "1")
    assert code == 1
    shm = by_name(report)["shm + hostRegister"]
    assert shm["status"] == "fail"
    assert "StagingSpaceError" in shm["detail"]
    assert "/dev/shm" in shm["fix"]
    assert "--shm-size" in shm["fix"]


def test_two_cupy_packages_fail_with_the_uninstall_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = {"cupy-cuda12x": "14.2.0", "cupy-cuda13x": "14.2.0"}

    def version(dist: str) -> str:
        if dist in versions:
            return versions[dist]
        raise _doctor.importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(_doctor.importlib.metadata, "version", version)
    check = _doctor.check_cupy_distributions(required=False)
    assert check.status == "fail"
    assert "cupy-cuda12x" in check.detail
    assert "cupy-cuda13x" in check.detail
    assert "pip uninstall -y cupy-cuda12x cupy-cuda13x" in check.fix
    code, report = doctor_json(capsys, "--device", "twin", "--calibrations", "1")
    assert code == 1
    assert by_name(report)["cupy packages"]["status"] == "fail"


def test_cupy_that_does_not_start_fails_with_the_cuda_code_and_skips_the_live_checks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Err(RuntimeError):
        status = 35

    def refuse(self: Any, device_id: int | None = None) -> None:
        e = Err("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")
        raise cupy_mod.cuda_start_error(e) from e

    monkeypatch.setattr(cupy_mod.CupyBackend, "__init__", refuse)
    code, report = doctor_json(capsys, "--device", "cupy")
    assert code == 1
    assert report["backend"] is None
    backend = by_name(report)["backend"]
    assert backend["status"] == "fail"
    assert "(35)" in backend["detail"]
    assert "driver" in backend["fix"]
    assert "vrrl_gpu[cuda12]" in backend["fix"]
    assert {by_name(report)[n]["status"] for n in LIVE} == {"skip"}


def test_auto_on_a_host_without_nvidia_hardware_runs_the_twin_with_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vrrl_gpu.backends import _registry

    nothing = HostDevices((), None, "pynvml not installed")
    monkeypatch.setattr(_registry, "probe_host", lambda: nothing)
    monkeypatch.setattr(_doctor, "probe_host", lambda: nothing)
    code, report = doctor_json(capsys, "--device", "auto", "--calibrations", "1")
    backend = by_name(report)["backend"]
    assert (report["backend"], backend["status"]) == ("twin", "warn")
    assert "found no NVIDIA device" in backend["detail"]
    # Without NVIDIA hardware, a missing driver is information, not a failure.
    assert by_name(report)["driver/runtime"]["status"] in {"ok", "info", "skip"}
    assert code == (0 if report["ok"] else 1)


def test_every_failure_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # A twin whose every call fails: each live check becomes a failure with a fix.
    def broken(self: Any, *a: Any, **k: Any) -> Any:
        raise OSError("injected")

    for name in ("load", "alloc_pinned", "calibrate", "new_stream"):
        monkeypatch.setattr(TwinBackend, name, broken)
    monkeypatch.setattr(_doctor, "ShmSegment", type("S", (), {"create": staticmethod(broken)}))
    report = _doctor.run_doctor("twin", calibrations=1)
    failed = report.failures
    assert {c.name for c in failed} >= {
        "compile",
        "mapped pinned memory",
        "clock calibration",
        "shm + hostRegister",
        "stream query",
    }
    assert all(c.fix for c in failed)
    assert by_name(report.to_dict())["pack round trip"]["status"] == "skip"


@pytest.mark.parametrize("argv", [["--device", "metal"], ["--calibrations", "0"], ["--bogus"]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


def test_cuda_versions_read_as_major_minor() -> None:
    assert [_doctor.cuda_version_text(v) for v in (13020, 12090, 12040, 0)] == [
        "13.2",
        "12.9",
        "12.4",
        "none",
    ]


@requires_gpu
def test_doctor_on_the_gpu_exits_0_and_names_the_device(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = doctor_json(capsys, "--device", "cupy")
    assert code == 0, [c for c in report["checks"] if c["status"] == "fail"]
    assert (report["backend"], report["simulated"]) == ("cupy", False)
    checks = by_name(report)
    devices = checks["cuda devices"]["data"]["devices"]
    assert devices
    assert all(d["uuid"].startswith("GPU-") and d["name"] for d in devices)
    assert checks["driver/runtime"]["data"]["driver_version"] >= 12000
    assert (checks["nvrtc"]["status"], checks["cuda headers"]["status"]) == ("ok", "ok")
    assert {checks[n]["status"] for n in LIVE} <= {"ok", "warn"}
    assert np.isfinite(checks["clock calibration"]["data"]["spread_ns"])


def test_a_check_that_crashes_is_a_failure_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*a: Any) -> Any:
        raise RuntimeError("cupy blew up inside its own import machinery")

    monkeypatch.setattr(_doctor, "check_headers", crash)
    monkeypatch.setattr(cupy_mod.CupyBackend, "__init__", crash)  # not a VrrlError
    code, report = doctor_json(capsys, "--device", "cupy")
    assert code == 1
    checks = by_name(report)
    assert checks["cuda headers"]["status"] == "fail"
    assert "blew up" in checks["cuda headers"]["detail"]
    assert checks["backend"]["status"] == "fail"
    assert "RuntimeError" in checks["backend"]["detail"]
    assert checks["backend"]["fix"]
