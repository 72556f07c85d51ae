"""Recorded CUDA graph replays: a fault inside replay k is attributed to the captured node and to replay k.

On the twin (its graph capture models CUDA's); the same under ``-m gpu`` with CuPy's graphs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.backends.contract import WILD_ADDRESS
from tests.helpers.child import parse_result, print_result
from tests.helpers.gpu import requires_gpu
from tests.helpers.recorder import log_records, with_status
from vrrl_gpu import Recorder, SlotStatus, classify
from vrrl_gpu._cli import main
from vrrl_gpu.analysis._graphs import graph_faults
from vrrl_gpu.backends import TwinCudaError
from vrrl_gpu.format import Sidecar, read_sidecar

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")

GRAPH_FAULT_CU = Path(__file__).with_name("graph_fault.cu")
REPO = Path(__file__).resolve().parents[2]
N = 64


class _Graph:
    """A graph of three recorded nodes (a, b, c) captured on a new stream; node b faults while ``flag``."""

    def __init__(self, rec: Recorder) -> None:
        b = rec.backend
        self.rec = rec
        self.kernel = b.load(GRAPH_FAULT_CU, "graph_step")
        self.flag = b.alloc_pinned(64)
        self.flag.host[:] = 0
        self.out = b.alloc_device(4 * N)
        self.stream = b.new_stream()
        self.ops = [rec.opcode(n) for n in ("node_a", "node_b", "node_c")]
        safe = (self.out, self.flag.device_ptr, 0, N)
        zero = b.alloc_pinned(64)
        zero.host[:] = 0
        self._zero = zero
        with rec.capturing(self.stream):
            self.stream.begin_capture()
            for i, op in enumerate(self.ops):
                # Only node b reads the flag; a and c read a flag that stays 0.
                args = (self.out, self.flag.device_ptr, WILD_ADDRESS, N) if i == 1 else (
                    safe[0], zero.device_ptr, 0, N)  # fmt: skip
                rec.launch(self.kernel, 1, N, args, opcode=op, words=(i, 0, 0, 0), stream=self.stream)
            self.graph = self.stream.end_capture()

    def fault_from_now(self) -> None:
        self.flag.host[:4].view("u4")[0] = 1


def _op(side: Any, name: str) -> int:
    (op,) = [k for k, v in side.opcode_names.items() if v == name]
    return int(op)


def _faults(path: Path) -> list[list[int]]:
    recs = with_status(log_records(path), SlotStatus.FAULTED)
    return [[int(r["opcode"]), int(r["slot_idx"])] for r in recs]


def replay_fault_scenario(device: str, path: Path, mode: str) -> dict[str, Any]:
    """Three clean replays, then replay 3 faults in node b; what the log and sidecar say (JSON-able)."""
    rec = Recorder(path, device=device, breadcrumbs=mode, capacity=4096)
    raised = 0
    try:
        g = _Graph(rec)
        numbers = []
        for _ in range(3):
            numbers.append(rec.launch_graph(g.graph, stream=g.stream))
            rec.synchronize()  # replays 0-2 run with the flag clear
        g.fault_from_now()
        numbers.append(rec.launch_graph(g.graph, stream=g.stream))  # replay 3 faults in node b
        rec.synchronize()
    except Exception as exc:
        raised = classify(exc).code
    finally:
        rec.close()
    side = read_sidecar(path)
    assert side is not None
    replay_op = _op(side, "cuda_graph")
    begins = with_status(log_records(path), SlotStatus.BEGIN)
    return {
        "raised": raised,
        "numbers": numbers,
        "node_b": g.ops[1],
        "faults": _faults(path),
        "notes": side.extra.get("graph_faults", []),
        "replay_words": [int(a[0]) for a in begins[begins["opcode"] == replay_op]["args"]],
    }


def check_replay_fault(out: dict[str, Any], mode: str) -> None:
    assert out["raised"] == 700
    assert out["numbers"] == [0, 1, 2, 3]
    # One failure record: the node, with its device sequence as slot (3 nodes x 3 replays before it,
    # twice as many with end breadcrumbs, then a and b of replay 3).
    per_replay = 3 if mode == "begin" else 6
    node_b_seq = 3 * per_replay + (1 if mode == "begin" else 2)
    assert out["faults"] == [[out["node_b"], node_b_seq]]
    (note,) = out["notes"]
    assert note["node_slot"] == node_b_seq
    assert note["node_opcode"] == out["node_b"]
    assert [(r["graph"], r["replay"]) for r in note["replays"]] == [(0, 3)]
    # The replay's own breadcrumbs: four begins on the stream, words (replay, graph, 0, 0).
    assert out["replay_words"] == [0, 1, 2, 3]


@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_a_fault_in_replay_k_names_the_node_and_replay_k(tmp_path: Path, mode: str) -> None:
    out = json.loads(json.dumps(replay_fault_scenario("twin", tmp_path / "run.vrrl", mode)))
    check_replay_fault(out, mode)


def _child(device: str, log: Path, mode: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("VRRL_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, __file__, device, str(log), mode],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return parse_result(proc.stdout)


@requires_gpu
@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_a_fault_in_replay_k_on_a_gpu(tmp_path: Path, mode: str) -> None:
    """The same with CuPy's graphs and a real illegal address, in a child process (a real fault kills the
    CUDA context of its process)."""
    check_replay_fault(_child("cupy", tmp_path / "run.vrrl", mode), mode)


def test_the_gpu_child_runs_on_the_twin(tmp_path: Path) -> None:
    check_replay_fault(_child("twin", tmp_path / "run.vrrl", "begin+end"), "begin+end")


def test_info_names_the_node_and_the_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.vrrl"
    replay_fault_scenario("twin", path, "begin+end")
    assert main(["info", "--json", str(path)]) == 0
    (note,) = json.loads(capsys.readouterr().out)["graph_faults"]
    assert (note["node_name"], [r["replay"] for r in note["replays"]]) == ("node_b", [3])
    assert main(["info", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "node_b (device sequence 20) in replay 3 of graph 0 (stream 0)" in out


@pytest.mark.parametrize(
    "bad",
    [
        "not a list",
        [{"node_slot": "7", "node_opcode": 1, "replays": []}],
        [{"node_slot": 7, "node_opcode": 1, "replays": [{"stream": 0, "slot": 1, "graph": 0}]}],
        [{"node_slot": 7, "node_opcode": 1, "replays": [{"stream": -1, "slot": 1, "graph": 0, "replay": 0}]}],
    ],
)
def test_a_malformed_graph_fault_note_is_left_out(tmp_path: Path, bad: Any) -> None:
    side = Sidecar(extra={"graph_faults": bad})
    assert graph_faults(side) == []


def test_a_fault_in_an_unrecorded_node_blames_the_replay(tmp_path: Path) -> None:
    """The graph's faulting kernel was captured without the recorder: no recorded node was running, so the
    replay itself (begun, not ended) is the FAULTED launch, its words naming the replay."""
    path = tmp_path / "run.vrrl"
    rec = Recorder(path, device="twin", breadcrumbs="begin+end", capacity=4096)
    b = rec.backend
    k = b.load(GRAPH_FAULT_CU, "graph_step")
    flag = b.alloc_pinned(64)
    flag.host[:] = 0
    out = b.alloc_device(4 * N)
    s = b.new_stream()
    s.begin_capture()
    b.launch(k, 1, N, (out, flag.device_ptr, WILD_ADDRESS, N), stream=s)
    graph = s.end_capture()
    rec.launch_graph(graph, stream=s)
    rec.synchronize()
    flag.host[:4].view("u4")[0] = 1
    rec.launch_graph(graph, stream=s)
    with pytest.raises(TwinCudaError):
        rec.synchronize()
    rec.close()
    side = read_sidecar(path)
    assert side is not None
    recs = with_status(log_records(path), SlotStatus.FAULTED)
    assert [(int(r["opcode"]), int(r["args"][0])) for r in recs] == [(_op(side, "cuda_graph"), 1)]
    assert "graph_faults" not in side.extra


def test_a_node_of_an_earlier_replay_is_not_blamed_for_a_later_one(tmp_path: Path) -> None:
    """begin mode: replay 1's slot faults in an unrecorded kernel before any of its nodes ran, so the
    device-sequenced ring's newest begin is replay 0's last node. That replay had ended (replay 1 began
    after it on the same stream): only replay 1 is blamed, never the old node."""
    path = tmp_path / "run.vrrl"
    rec = Recorder(path, device="twin", breadcrumbs="begin", capacity=4096)
    g = _Graph(rec)
    rec.launch_graph(g.graph, stream=g.stream)
    rec.synchronize()
    k = rec.backend.load(GRAPH_FAULT_CU, "graph_step")
    g.fault_from_now()

    def replay_1() -> None:
        with rec.graph_replay(g.graph, stream=g.stream):
            rec.backend.launch(k, 1, N, (g.out, g.flag.device_ptr, WILD_ADDRESS, N), stream=g.stream)
            rec.backend.synchronize(g.stream)

    with pytest.raises(TwinCudaError):
        replay_1()
    rec.close()
    side = read_sidecar(path)
    assert side is not None
    faulted = with_status(log_records(path), SlotStatus.FAULTED)
    assert [(int(r["opcode"]), int(r["args"][0])) for r in faulted] == [(_op(side, "cuda_graph"), 1)]
    assert "graph_faults" not in side.extra


def test_graph_replay_numbers_each_graph_apart(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "run.vrrl", device="twin", capacity=4096)
    try:
        g1, g2 = _Graph(rec), _Graph(rec)
        seen: list[Any] = []
        for g in (g1, g2, g1, g1, g2):
            with rec.graph_replay(g.graph, stream=g.stream) as k:
                g.graph.launch(g.stream)
            seen.append(k)
        rec.synchronize()
    finally:
        rec.close()
    assert seen == [0, 0, 1, 2, 1]
    side = read_sidecar(rec.path)
    assert side is not None
    begins = with_status(log_records(rec.path), SlotStatus.BEGIN)
    begins = begins[begins["opcode"] == _op(side, "cuda_graph")]
    # Each graph's stream ring holds its replays in order (the two rings interleave in the log).
    by_graph: dict[int, list[int]] = {}
    for a in begins["args"]:
        by_graph.setdefault(int(a[1]), []).append(int(a[0]))
    assert by_graph == {0: [0, 1, 2], 1: [0, 1]}


def test_disabled_recorder_still_launches_the_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRRL_DISABLE", "1")
    rec = Recorder(tmp_path / "run.vrrl", device="twin")
    b = rec.backend
    k = b.load(GRAPH_FAULT_CU, "graph_step")
    flag = b.alloc_pinned(64)
    flag.host[:] = 0
    out = b.alloc_pinned(4 * N)
    out.host[:] = 0
    s = b.new_stream()
    s.begin_capture()
    b.launch(k, 1, N, (out.device_ptr, flag.device_ptr, 0, N), stream=s)
    graph = s.end_capture()
    assert rec.launch_graph(graph, stream=s) == 0
    with rec.graph_replay(graph, stream=s) as k_no:
        graph.launch(s)
    b.synchronize(s)
    rec.close()
    assert k_no == 0
    assert out.host[: 4 * N].view("f4").tolist() == [2.0 + i for i in range(N)]
    assert not (tmp_path / "run.vrrl").exists()


class _NoWeakref:
    """Like CuPy's Graph: no weak references, CUDA handles as ints."""

    __slots__ = ("graph", "graphExec")

    def __init__(self, handle: int) -> None:
        self.graph = handle
        self.graphExec = handle + 1


def test_graphs_without_weak_references_are_numbered_by_identity_and_not_kept_alive() -> None:
    from vrrl_gpu.recorder._graphs import GraphReplays

    reps = GraphReplays()
    a, b = _NoWeakref(10), _NoWeakref(20)
    before = sys.getrefcount(a)
    assert [reps.next_replay(g) for g in (a, b, a, a, b)] == [(0, 0), (1, 0), (0, 1), (0, 2), (1, 1)]
    assert sys.getrefcount(a) == before  # a graph's device memory is not kept alive by its count
    assert reps.next_replay(_NoWeakref(30)) == (2, 0)  # other handles: another graph

if __name__ == "__main__":
    # python tests/recorder/test_graph_replays.py DEVICE LOG MODE: the replay fault in its own process.
    print_result(replay_fault_scenario(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
