"""``record_graph_replays`` with real PyTorch (CPU build) on the twin: ``CUDAGraph.replay`` is wrapped while
the block runs and put back exactly after; each replay is numbered; a fault in replay k names the op that
was running and replay k. The CPU build cannot make a CUDA graph, so ``replay`` is a stand-in that launches
a twin graph (the real one runs in tests/torch/test_torch_gpu.py under ``-m gpu``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.backends.contract import WILD_ADDRESS
from tests.helpers.recorder import log_records, with_status
from tests.helpers.torch_env import require
from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu.backends import TwinCudaError
from vrrl_gpu.format import read_sidecar

torch = require("torch")
vt = require("vrrl_gpu.torch")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")

GRAPH_FAULT_CU = Path(__file__).resolve().parents[1] / "recorder" / "graph_fault.cu"


class _StandIn:
    """Plays a captured torch graph: ``replay`` launches a twin graph on its stream (torch's: the current)."""

    def __init__(self, twin_graph: Any, stream: Any) -> None:
        self.twin_graph = twin_graph
        self.stream = stream


def _stand_in_replay(self: _StandIn) -> None:
    self.twin_graph.launch(self.stream)


def test_replay_is_wrapped_inside_the_block_and_restored_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", _stand_in_replay)
    with Recorder(tmp_path / "run.vrrl", device="twin", capacity=4096) as rec:
        with vt.record_graph_replays(rec) as hook:
            assert torch.cuda.CUDAGraph.replay is not _stand_in_replay
            with vt.record_graph_replays(rec) as inner:  # nested: the outer one records, once
                assert torch.cuda.CUDAGraph.replay.__wrapped__ is _stand_in_replay
            assert torch.cuda.CUDAGraph.replay is not _stand_in_replay
        assert torch.cuda.CUDAGraph.replay is _stand_in_replay
    assert hook.replays == 0
    assert inner.replays == 0


def test_a_fault_in_replay_k_names_the_op_and_replay_k(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", _stand_in_replay)
    path = tmp_path / "run.vrrl"
    rec = Recorder(path, device="twin", capacity=8192, breadcrumbs="begin")
    b = rec.backend
    k = b.load(GRAPH_FAULT_CU, "graph_step")
    flag = b.alloc_pinned(64)
    flag.host[:] = 0
    out = b.alloc_device(256)
    s = b.new_stream()
    x = torch.ones(4)
    with rec.capturing(s):
        s.begin_capture()
        with vt.record_ops(rec, stream=s):
            x.neg()
            x.exp()  # the last recorded op before the (unrecorded) kernel that faults
        b.launch(k, 1, 64, (out, flag.device_ptr, WILD_ADDRESS, 64), stream=s)
        graph = _StandIn(s.end_capture(), s)
    with vt.record_graph_replays(rec, stream=s) as hook:
        for _ in range(3):
            torch.cuda.CUDAGraph.replay(graph)
            rec.synchronize()
        flag.host[:4].view("u4")[0] = 1
        torch.cuda.CUDAGraph.replay(graph)
        with pytest.raises(TwinCudaError):
            rec.synchronize()
    rec.close()
    assert hook.replays == 4
    side = read_sidecar(path)
    assert side is not None
    faulted = with_status(log_records(path), SlotStatus.FAULTED)
    assert [side.opcode_names[int(r["opcode"])] for r in faulted] == ["aten::exp"]
    (note,) = side.extra["graph_faults"]
    assert [r["replay"] for r in note["replays"]] == [3]
    assert note["node_slot"] == int(faulted["slot_idx"][0])
