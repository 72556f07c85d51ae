"""``record_ops`` with real PyTorch (the CPU build) on the twin: every aten op in the mode, in order, named,
with the words of docs/pytorch.md; nesting, in-place ops, ops that raise, and nothing outside the mode."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.recorder import log_records, with_status
from tests.helpers.torch_env import require
from vrrl_gpu import FailureClass, Recorder, SlotStatus
from vrrl_gpu.format import META_OPCODE_BASE, read_sidecar

torch = require("torch")
vt = require("vrrl_gpu.torch")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")


def _ops(path: Path, status: SlotStatus = SlotStatus.BEGIN) -> list[tuple[str, list[int]]]:
    """(op name, words) of each record with ``status``, in log order."""
    side = read_sidecar(path)
    assert side is not None
    recs = with_status(log_records(path), status)
    recs = recs[recs["opcode"] < META_OPCODE_BASE]
    return [(side.opcode_names[int(r["opcode"])], [int(x) for x in r["args"]]) for r in recs]


def _rec(path: Path, **kw: Any) -> Recorder:
    return Recorder(path, device="twin", capacity=8192, breadcrumbs=kw.pop("breadcrumbs", "begin+end"), **kw)


def test_every_op_in_the_mode_is_recorded_in_order_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    with _rec(path) as rec:
        before = x + 1  # outside the mode: not recorded
        with vt.record_ops(rec) as mode:
            y = torch.mm(x, x.t())
            z = y.relu().sum()
        after = z * 2  # outside again
        rec.synchronize()
    assert mode.calls == 4
    names = [n for n, _ in _ops(path)]
    assert names == ["aten::t", "aten::mm", "aten::relu", "aten::sum"]
    # begin+end: each op's end breadcrumb follows its begin, with the same words.
    assert _ops(path, SlotStatus.COMPLETED) == _ops(path)
    assert float(after) == float(z) * 2
    assert before.shape == x.shape


def test_the_words_carry_call_index_numel_dtype_ndim_tensors_and_the_signature(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    with _rec(path, breadcrumbs="begin") as rec, vt.record_ops(rec):
        a = torch.ones(2, 3, 5, dtype=torch.float16)
        a.mul_(3)  # in place
        b = torch.empty(30, dtype=torch.int64)
        torch.add(torch.arange(30), 1, out=b)  # out=
        a.sum()  # the same signature as nothing before; then again:
        a.sum()
    ops = _ops(path)
    names = [n for n, _ in ops]
    assert names == ["aten::ones", "aten::mul_.Tensor", "aten::empty.memory_format", "aten::arange",
                     "aten::add.out", "aten::sum", "aten::sum"]  # fmt: skip
    words = [w for _, w in ops]
    assert [w[0] for w in words] == list(range(7))  # the call index
    ones_w, mul_w, _, _, add_w, sum1, sum2 = words
    assert ones_w[1:3] == [0, vt.NO_TENSOR]  # a factory: no tensor argument
    f16 = vt.DTYPE_CODES[torch.float16]
    assert mul_w[1] == 30
    assert mul_w[2] == f16 | 3 << 8 | 1 << 16 | vt.FLAG_INPLACE << 24
    assert add_w[2] == vt.DTYPE_CODES[torch.int64] | 1 << 8 | 2 << 16 | vt.FLAG_OUT << 24
    assert sum1[3] == sum2[3] != 0
    assert len({w[3] for w in words}) == 6
    side = read_sidecar(path)
    assert side is not None
    sigs = side.extra["torch"]["signatures"]
    assert sigs[mul_w[3] - 1] == {
        "op": "aten::mul_.Tensor",  # the scalar stays a Python int (replay passes it back as one)
        "args": [{"tensor": [2, 3, 5], "dtype": "float16", "device": "cpu"}, {"int": 3}],
        "kwargs": {},
    }


def test_an_op_that_raises_is_recorded_and_the_exception_propagates(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    table = torch.zeros(4, 2)
    with _rec(path) as rec:
        with vt.record_ops(rec), pytest.raises(IndexError, match="index out of range"):
            table.index_select(0, torch.tensor([1, 9]))
        with vt.record_ops(rec):
            table.sum()  # the recorder goes on after a non-sticky failure
        rec.synchronize()
    recs = log_records(path)
    side = read_sidecar(path)
    assert side is not None
    (failed,) = with_status(recs, SlotStatus.FAILED_AT_LAUNCH)
    assert side.opcode_names[int(failed["opcode"])] == "aten::index_select"
    assert int(failed["failure_class"]) == int(FailureClass.UNCLASSIFIED)
    # Its begin was recorded before it, its end never: the op did not complete.
    assert [n for n, _ in _ops(path)] == ["aten::lift_fresh", "aten::index_select", "aten::sum"]
    assert [n for n, _ in _ops(path, SlotStatus.COMPLETED)] == ["aten::lift_fresh", "aten::sum"]
    sig = side.extra["torch"]["signatures"][int(failed["args"][3]) - 1]
    assert sig["args"][2] == {"tensor": [2], "dtype": "int64", "device": "cpu", "values": [1, 9]}


def test_ops_nest_inside_a_slot_and_a_nested_mode_records_each_op_once(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    x = torch.ones(8)
    with _rec(path) as rec:
        with rec.slot(rec.opcode("step"), (1, 0, 0, 0)), vt.record_ops(rec):
            x.neg()
            with vt.record_ops(rec) as inner:
                x.exp()
            x.abs()
        rec.synchronize()
    assert inner.calls == 0
    side = read_sidecar(path)
    assert side is not None
    recs = log_records(path)
    recs = recs[recs["opcode"] < META_OPCODE_BASE]
    seq = [(side.opcode_names[int(r["opcode"])], SlotStatus(int(r["slot_status"])).name) for r in recs]
    assert seq == [
        ("step", "BEGIN"),
        ("aten::neg", "BEGIN"), ("aten::neg", "COMPLETED"),
        ("aten::exp", "BEGIN"), ("aten::exp", "COMPLETED"),
        ("aten::abs", "BEGIN"), ("aten::abs", "COMPLETED"),
        ("step", "COMPLETED"),
    ]  # fmt: skip


def test_two_recorders_nest_each_with_its_own_log(tmp_path: Path) -> None:
    with _rec(tmp_path / "a.vrrl") as a, _rec(tmp_path / "b.vrrl") as b:
        with vt.record_ops(a):
            torch.ones(2).neg()
            with vt.record_ops(b):
                torch.ones(2).exp()
        a.synchronize()
        b.synchronize()
    assert [n for n, _ in _ops(tmp_path / "a.vrrl")] == ["aten::ones", "aten::neg", "aten::ones", "aten::exp"]
    assert [n for n, _ in _ops(tmp_path / "b.vrrl")] == ["aten::ones", "aten::exp"]


def test_the_device_filter(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    x = torch.ones(3)
    with _rec(path, breadcrumbs="begin") as rec:
        with vt.record_ops(rec, devices="cuda") as cuda_only:
            x.neg()  # a CPU op: not recorded
        with vt.record_ops(rec, devices={"cpu"}) as cpu_only:
            x.exp()
            torch.zeros(2, device="meta")  # a factory on another device: not recorded
    assert (cuda_only.devices, cuda_only.calls) == (frozenset({"cuda"}), 0)
    assert cpu_only.calls == 1
    assert [n for n, _ in _ops(path)] == ["aten::exp"]


def test_signatures_can_be_left_out(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    with _rec(path, breadcrumbs="begin") as rec, vt.record_ops(rec, signatures=False):
        torch.ones(3).neg()
    assert [w[3] for _, w in _ops(path)] == [0, 0]
    side = read_sidecar(path)
    assert side is not None
    assert "torch" not in side.extra


def test_the_breadcrumbs_go_on_the_stream_given(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    with _rec(path) as rec:
        s = rec.backend.new_stream()
        with vt.record_ops(rec, stream=s):
            torch.ones(3).neg()
        rec.synchronize()
        keys = {st.key for st in rec._streams.values()}
    assert s.ptr in keys


def test_captured_breadcrumbs_replay_with_the_graph(tmp_path: Path) -> None:
    # The twin's capture: the ops run on the CPU at once (no CPU op is captured), their breadcrumbs are
    # captured into the graph on the device-sequenced path, and every replay writes its own trail.
    path = tmp_path / "run.vrrl"
    with _rec(path) as rec:
        s = rec.backend.new_stream()
        x = torch.ones(4)
        s.begin_capture()
        with vt.record_ops(rec, stream=s):
            x.neg()
            x.exp()
        graph = s.end_capture()
        for _ in range(3):
            graph.launch(s)
        rec.backend.synchronize(s)  # s was first seen capturing: it has no ring, synchronize() skips it
        rec.synchronize()
    side = read_sidecar(path)
    assert side is not None
    begins = _ops(path)
    raw = [(int(r["slot_idx"]), int(r["slot_status"]), int(r["opcode"])) for r in log_records(path)]
    assert [n for n, _ in begins] == ["aten::neg", "aten::exp"] * 3, raw
    # The words are frozen at capture (call 0 and 1); the device sequence tells the replays apart.
    assert [w[0] for _, w in begins] == [0, 1] * 3
    recs = with_status(log_records(path), SlotStatus.BEGIN, SlotStatus.COMPLETED)
    recs = recs[recs["opcode"] < META_OPCODE_BASE]
    assert sorted(recs["slot_idx"].tolist()) == list(range(12))
    assert side.extra.get("graph_launches") is True


def test_a_disabled_recorder_records_nothing_and_the_ops_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VRRL_DISABLE", "1")
    rec = Recorder(tmp_path / "run.vrrl", device="twin")
    with vt.record_ops(rec) as mode:
        y = torch.ones(3).neg()
    assert mode.calls == 0
    assert torch.equal(y, -torch.ones(3))
    assert not (tmp_path / "run.vrrl").exists()


def test_importing_vrrl_gpu_never_imports_torch() -> None:
    code = (
        "import sys, vrrl_gpu, vrrl_gpu.format, vrrl_gpu.evidence, vrrl_gpu.capture, vrrl_gpu.backends, "
        "vrrl_gpu.recorder, vrrl_gpu.reproduce, vrrl_gpu.analysis, vrrl_gpu._cli\n"
        "bad = sorted(m for m in ('torch', 'triton') if m in sys.modules)\n"
        "assert not bad, bad\n"
        "import vrrl_gpu.torch\n"
        "assert 'torch' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_many_ops_keep_their_order_and_count(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    x = torch.ones(16)
    with _rec(path, breadcrumbs="begin", staging_slots=64) as rec, vt.record_ops(rec):
        for _ in range(500):
            x = x + 1
    words = np.array([w for _, w in _ops(path)])
    assert words[:, 0].tolist() == list(range(len(words)))
    assert Counter(n for n, _ in _ops(path)) == {"aten::add.Tensor": 500}  # x was made outside the mode


def test_modes_on_two_threads_with_one_recorder_each_record_their_own_ops(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "run.vrrl"
    calls: dict[str, int] = {}
    with _rec(path, breadcrumbs="begin") as rec:
        def work(name: str, fn: Any) -> None:
            with vt.record_ops(rec) as mode:
                for _ in range(20):
                    fn(torch.ones(4))
            calls[name] = mode.calls

        threads = [threading.Thread(target=work, args=("neg", torch.neg)),
                   threading.Thread(target=work, args=("exp", torch.exp))]  # fmt: skip
        with vt.record_ops(rec):  # this thread's mode does not silence the others
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        rec.synchronize()
    assert calls == {"neg": 40, "exp": 40}  # each: 20 ones + 20 of its op
    assert Counter(n for n, _ in _ops(path)) == {"aten::ones": 40, "aten::neg": 20, "aten::exp": 20}
