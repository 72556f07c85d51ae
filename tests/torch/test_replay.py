"""``op_registry``: recorded aten ops replayed through ``torch.ops`` from the sidecar's call signatures, and
``vrrl replay --minimize`` on a PyTorch log (the model of examples/torch_fault.py, on the twin)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.recorder import log_records, with_status
from tests.helpers.torch_env import require
from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu._cli import main
from vrrl_gpu.errors import RegistryError, ReplayError
from vrrl_gpu.format import read_sidecar
from vrrl_gpu.reproduce import read_plan

torch = require("torch")
vt = require("vrrl_gpu.torch")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _record(path: Path) -> None:
    with Recorder(path, device="twin", capacity=4096) as rec, vt.record_ops(rec):
        w = torch.randn(10, 4)
        x = torch.tensor([[1.0, -2.0], [3.0, 4.5]], dtype=torch.float64)
        x.abs().clamp(min=0.5, max=4.0).sum(dim=1, keepdim=True)
        torch.nn.functional.embedding(torch.tensor([0, 3, 9]), w)
        with pytest.raises(IndexError):
            torch.nn.functional.embedding(torch.tensor([2, 12]), w)


def test_each_recorded_call_is_rebuilt_and_run_through_torch_ops(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    _record(path)
    reg = vt.op_registry(path)
    side = read_sidecar(path)
    assert side is not None
    assert set(reg) == {s["op"] for s in side.extra["torch"]["signatures"]}
    begins = with_status(log_records(path), SlotStatus.BEGIN)
    failed = 0
    for r in begins:
        name = side.opcode_names[int(r["opcode"])]
        words = tuple(int(x) for x in r["args"])
        sig = side.extra["torch"]["signatures"][words[3] - 1]
        try:
            out = reg[name](words, 0, 0, int(r["slot_idx"]))
        except IndexError:
            failed += 1
            assert name == "aten::embedding"
            continue
        first = next((a for a in sig["args"] if isinstance(a, dict) and "tensor" in a), None)
        if name in ("aten::abs", "aten::clamp"):  # elementwise: the output has the input's shape and dtype
            assert first is not None
            assert list(out.shape) == first["tensor"]
            assert str(out.dtype) == f"torch.{first['dtype']}"
        if name == "aten::sum.dim_IntList":
            assert list(out.shape) == [2, 1]
        if name == "aten::embedding":
            assert list(out.shape) == [3, 4]
    assert failed == 1  # the out-of-range index was recorded with its values: it fails again


def test_ops_resolve_by_name_and_overload() -> None:
    assert vt.resolve_op("aten::add.Tensor") is torch.ops.aten.add.Tensor
    assert vt.resolve_op("aten::relu") is torch.ops.aten.relu.default
    for bad in ("add", "aten::no_such_op", "aten::add.NoSuchOverload"):
        with pytest.raises(RegistryError):
            vt.resolve_op(bad)


def test_a_log_without_signatures_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    with Recorder(path, device="twin", capacity=1024) as rec, vt.record_ops(rec, signatures=False):
        torch.ones(2).neg()
    with pytest.raises(RegistryError, match="record_ops"):
        vt.op_registry(path)
    # A table from another log: its signature index names another op.
    other = tmp_path / "other.vrrl"
    _record(other)
    reg = vt.op_registry(other)
    with pytest.raises(ReplayError, match="signature"):
        reg["aten::abs"]((0, 1, 1, 10_000), 0, 0, 0)


def test_vrrl_replay_minimize_reduces_a_pytorch_log_to_the_op_that_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "crash.vrrl"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "torch_fault.py"), str(log), "--device", "twin"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the log names aten::embedding" in proc.stdout
    # The example's registry as it is: op_registry() finds the log being replayed by itself.
    registry = f"{EXAMPLES / 'torch_registry.py'}:REGISTRY"
    small = tmp_path / "small.vrrl"
    code = main(["replay", str(log), "--registry", registry, "--device", "twin",
                 "--minimize", "-o", str(small)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    plan = read_plan(small)
    side = read_sidecar(log)
    assert side is not None
    assert [side.opcode_names[la.opcode] for la in plan.launches] == ["aten::embedding"]
    # The minimized log carries the call signatures: it replays on its own, with the same registry.
    assert main(["replay", str(small), "--registry", registry, "--device", "twin", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reproduced"] is True


def test_op_registry_without_a_log_outside_a_replay_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VRRL_REPLAY_LOG", raising=False)
    with pytest.raises(RegistryError, match="VRRL_REPLAY_LOG"):
        vt.op_registry()


def test_the_minimized_log_carries_the_signature_table() -> None:
    from vrrl_gpu.reproduce._minimize import CARRIED_EXTRA
    from vrrl_gpu.torch._signatures import SIDECAR_KEY

    assert SIDECAR_KEY in CARRIED_EXTRA
