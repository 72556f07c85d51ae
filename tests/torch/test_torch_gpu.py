"""On a GPU (``-m gpu``): record_ops on CUDA tensors, a device-side fault in eager mode and inside a captured
CUDA graph, the log naming the op (and the graph replay) that faulted, and a real Triton launch.

Not run yet: the sessions so far had no GPU. They need CUDA PyTorch and CuPy in one environment, each child
process one CUDA context (a sticky fault ends it), hence the subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers.gpu import requires_gpu
from tests.helpers.recorder import log_records
from tests.helpers.torch_env import require
from vrrl_gpu import SlotStatus
from vrrl_gpu.format import META_OPCODE_BASE, read_sidecar

PRELUDE = """
import json, sys, torch
from vrrl_gpu import Recorder
from vrrl_gpu.torch import record_graph_replays, record_ops, record_triton
assert torch.cuda.is_available(), "needs a CUDA build of PyTorch"
"""


def _run(body: str, tmp_path: Path) -> dict[str, object]:
    script = tmp_path / "child.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run.vrrl")], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _named(path: Path, status: SlotStatus) -> list[str]:
    side = read_sidecar(path)
    assert side is not None
    recs = log_records(path)
    recs = recs[(recs["slot_status"] == status) & (recs["opcode"] < META_OPCODE_BASE)]
    return [side.opcode_names.get(int(r["opcode"]), hex(int(r["opcode"]))) for r in recs]


@requires_gpu
def test_an_out_of_bounds_index_in_eager_mode_is_attributed_to_its_op(tmp_path: Path) -> None:
    require("torch")
    got = _run(
        """
        with Recorder(sys.argv[1], device="cupy", breadcrumbs="begin+end", capacity=1 << 14) as rec:
            table = torch.randn(100, 8, device="cuda")
            idx = torch.tensor([1, 2, 1000], device="cuda")
            error = None
            try:
                with record_ops(rec):
                    y = (table * 2).index_select(0, idx).relu()
                rec.synchronize()
            except Exception as e:
                error = type(e).__name__ + ": " + str(e).splitlines()[0]
        print(json.dumps({"error": error}))
        """,
        tmp_path,
    )
    assert got["error"] is not None
    path = tmp_path / "run.vrrl"
    assert _named(path, SlotStatus.FAULTED) == ["aten::index_select"]
    assert "aten::mul.Tensor" in _named(path, SlotStatus.COMPLETED)


@requires_gpu
def test_a_fault_inside_a_captured_graph_names_the_op_and_the_replay(tmp_path: Path) -> None:
    require("torch")
    got = _run(
        """
        with Recorder(sys.argv[1], device="cupy", breadcrumbs="begin+end", capacity=1 << 14) as rec:
            table = torch.randn(100, 8, device="cuda")
            idx = torch.tensor([1, 2, 3], device="cuda")
            s = torch.cuda.Stream()
            with torch.cuda.stream(s):
                (table * 2).index_select(0, idx).relu()  # warm-up outside the capture
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with record_ops(rec), torch.cuda.graph(g):
                out = (table * 2).index_select(0, idx).relu()
            error = None
            with record_graph_replays(rec):
                for _ in range(3):
                    g.replay()
                torch.cuda.synchronize()
                idx.fill_(1000)  # replay 3 reads out of bounds
                try:
                    g.replay()
                    torch.cuda.synchronize()
                except Exception as e:
                    error = type(e).__name__
                try:
                    rec.synchronize()
                except Exception:
                    pass
        print(json.dumps({"error": error}))
        """,
        tmp_path,
    )
    assert got["error"] is not None
    path = tmp_path / "run.vrrl"
    # The replays' own breadcrumbs ("cuda_graph") are on the host ring; the ops' on the device ring.
    begins = [n for n in _named(path, SlotStatus.BEGIN) if n != "cuda_graph"]
    ends = [n for n in _named(path, SlotStatus.COMPLETED) if n != "cuda_graph"]
    assert _named(path, SlotStatus.BEGIN).count("cuda_graph") == 4
    per_replay = ["aten::mul.Tensor", "aten::index_select", "aten::relu"]
    # Three whole replays, then the fourth began index_select and never ended it.
    assert begins[:9] == per_replay * 3
    assert begins[9:11] == per_replay[:2]
    assert ends.count("aten::index_select") == 3
    # The fault names the op and the replay it ran in.
    assert _named(path, SlotStatus.FAULTED) == ["aten::index_select"]
    side = read_sidecar(path)
    assert side is not None
    (note,) = side.extra["graph_faults"]
    assert [r["replay"] for r in note["replays"]] == [3]


@requires_gpu
def test_a_triton_kernel_launch_is_recorded_with_its_name(tmp_path: Path) -> None:
    require("triton")
    got = _run(
        """
        import triton
        import triton.language as tl

        @triton.jit
        def add_kernel(x, y, out, n, BLOCK: tl.constexpr):
            i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            m = i < n
            tl.store(out + i, tl.load(x + i, mask=m) + tl.load(y + i, mask=m), mask=m)

        with Recorder(sys.argv[1], device="cupy", breadcrumbs="begin+end", capacity=1 << 14) as rec:
            x = torch.ones(1000, device="cuda")
            out = torch.empty_like(x)
            with record_triton(rec) as hooks:
                add_kernel[(4,)](x, x, out, 1000, BLOCK=256)
            rec.synchronize()
        print(json.dumps({"launches": hooks.launches, "sum": float(out.sum())}))
        """,
        tmp_path,
    )
    assert got == {"launches": 1, "sum": 2000.0}
    assert _named(tmp_path / "run.vrrl", SlotStatus.BEGIN) == ["triton:add_kernel"]


@requires_gpu
def test_the_current_torch_stream_and_torch_tensors_as_outputs(tmp_path: Path) -> None:
    require("torch")
    got = _run(
        """
        from vrrl_gpu.evidence import output_digest
        with Recorder(sys.argv[1], device="cupy", capacity=1 << 14) as rec:
            s = torch.cuda.Stream()
            x = torch.arange(8, device="cuda", dtype=torch.float32)
            with torch.cuda.stream(s):
                with rec.slot(rec.opcode("on torch stream"), stream=torch.cuda.current_stream(), outputs=x):
                    x.mul_(2)
            rec.synchronize()
            keys = sorted(st.key for st in rec._streams.values())
        print(json.dumps({"keys": keys, "stream": s.cuda_stream, "digest": output_digest(x) ==
                          output_digest(x.cpu().numpy())}))
        """,
        tmp_path,
    )
    assert got["stream"] in got["keys"]  # type: ignore[operator]
    assert got["digest"] is True
