"""benchmarks/gpu_check.sh runs to the end on a machine without a GPU, inside a short budget, and leaves its
summary table (the GPU steps reported as failed or skipped, never as passed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.gpu import gpu_status

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = (
    "vrrl doctor --device cupy --json",
    "VRRL_REQUIRE_GPU=1 pytest -m gpu (all but the attribution matrix)",
    "bench_gpu.py --device cupy",
    "bench_recorder.py --device cupy",
    "VRRL_REQUIRE_GPU=1 pytest -m gpu tests/recorder/test_attribution.py",
)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout"
)
def test_gpu_check_finishes_inside_its_budget_and_writes_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "VRRL_GPU_CHECK_BUDGET": "25"}
    env.pop("VRRL_REQUIRE_GPU", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
        check=False,
    )  # fmt: skip
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert proc.stdout.startswith(summary.splitlines()[0])  # printed at the end, too
    rows = {line.split(" | ")[0].lstrip("| "): line for line in summary.splitlines() if line.startswith("| ")}
    for step in STEPS:
        assert step in rows, summary
    assert "budget 25 s" in summary
    report = json.loads((out / "doctor.json").read_text(encoding="utf-8"))
    assert {c["name"] for c in report["checks"]} >= {"cuda devices", "backend", "pack round trip"}
    if not gpu_status()[0]:
        assert proc.returncode == 1
        assert "NO GPU SEEN" in summary
        for step in STEPS:
            status = rows[step].split(" | ")[1]
            assert status.startswith(("FAILED", "skipped")), rows[step]
