"""The walk-through of docs/reproducing-crashes.md on the twin: ``vrrl demo --fault-at K``, replay, minimise.

Runs the real Recorder in the job and in every replay child (``--device twin``),
with examples/replay_registry.py performing the demo's launches again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vrrl_gpu._cli import COMMAND_MODULES, main
from vrrl_gpu.reproduce import read_plan

REGISTRY = str(Path(__file__).resolve().parents[2] / "examples" / "replay_registry.py") + ":REGISTRY"

pytestmark = [
    pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs a C++ compiler (g++)"),
    pytest.mark.skipif(
        "vrrl_gpu._cli._demo" not in COMMAND_MODULES, reason="the 'vrrl demo' command is not registered yet"
    ),
]


def test_demo_crash_replays_and_minimises_on_the_twin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "crash.vrrl"
    rc = main(
        ["demo", str(log), "--device", "twin", "--launches", "30", "--fault-at", "20", "--elements", "256"]
    )
    capsys.readouterr()
    assert rc != 2, "vrrl demo failed to run"
    plan = read_plan(log)
    assert plan.failure is not None
    assert plan.failure.position == 20
    assert plan.failure.code == 700

    rc = main(["replay", str(log), "--registry", REGISTRY, "--device", "twin", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["reproduced"] is True
    assert out["replay"]["backend"] == "twin"
    replay_log = read_plan(out["replay"]["replay_log"])  # the replay left its own log, with the failure
    assert replay_log.failure is not None
    assert replay_log.failure.code == 700

    small = tmp_path / "small.vrrl"
    rc = main(
        [
            "replay",
            str(log),
            "--registry",
            REGISTRY,
            "--device",
            "twin",
            "--minimize",
            "-o",
            str(small),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert [k["position"] for k in out["kept"]] == [20]  # the demo's fault needs no earlier launch
    assert main(["replay", str(small), "--registry", REGISTRY, "--device", "twin"]) == 0
