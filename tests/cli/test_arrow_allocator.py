"""The ``vrrl`` process runs pyarrow on the system allocator unless its caller chose one; ``main(argv)`` in
process leaves the environment alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vrrl_gpu
from tests.helpers.analysis_logs import NAMES, run_rows, write_log
from vrrl_gpu._cli import main

pa = pytest.importorskip("pyarrow", reason="pyarrow (the parquet extra) is not installed")

VAR = "ARROW_DEFAULT_MEMORY_POOL"

# The child imports it at start-up (a sitecustomize on its PYTHONPATH); at exit it writes what pyarrow used.
_PROBE = f"""
import atexit, json, os, sys

def _report():
    pool = sys.modules["pyarrow"].default_memory_pool().backend_name if "pyarrow" in sys.modules else None
    with open(os.environ["VRRL_TEST_PROBE"], "w", encoding="utf-8") as f:
        json.dump({{"env": os.environ.get({VAR!r}), "pool": pool}}, f)

atexit.register(_report)
"""


def _export_in_child(tmp_path: Path, pool: str | None) -> dict[str, str | None]:
    log = write_log(tmp_path / "a.vrrl", run_rows(20), names=NAMES)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(_PROBE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != VAR}
    # The probe, then this vrrl_gpu (not whichever an installed one would be), then the caller's path.
    path = [str(probe), str(Path(vrrl_gpu.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    env["VRRL_TEST_PROBE"] = str(tmp_path / "seen.json")
    if pool is not None:
        env[VAR] = pool
    out = tmp_path / "a.pq"
    cmd = [sys.executable, "-m", "vrrl_gpu", "export", str(log), "--format", "parquet", "-o", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    seen: dict[str, str | None] = json.loads((tmp_path / "seen.json").read_text(encoding="utf-8"))
    return seen


def test_the_vrrl_process_uses_the_system_allocator(tmp_path: Path) -> None:
    assert _export_in_child(tmp_path, None) == {"env": "system", "pool": "system"}


def test_the_callers_choice_is_kept(tmp_path: Path) -> None:
    other = next((b for b in pa.supported_memory_backends() if b != "system"), None)
    if other is None:
        pytest.skip("this pyarrow has only the system allocator")
    assert _export_in_child(tmp_path, other) == {"env": other, "pool": other}


def test_main_in_process_leaves_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(VAR, raising=False)
    log = write_log(tmp_path / "a.vrrl", run_rows(5), names=NAMES)
    before = dict(os.environ)
    assert main(["export", str(log), "--format", "parquet", "-o", str(tmp_path / "a.pq")]) == 0
    assert dict(os.environ) == before
    # main() as the process entry, but pyarrow is imported already: setting the variable would do nothing.
    argv = ["vrrl", "export", str(log), "--format", "parquet", "-o", str(tmp_path / "b.pq")]
    monkeypatch.setattr(sys, "argv", argv)
    assert main() == 0
    assert dict(os.environ) == before
    capsys.readouterr()
