"""The real device path (``pytest -m gpu``): skipped with a reason without a GPU; VRRL_REQUIRE_GPU=1 fails.

``TestCupyBackend`` is the Backend contract of tests/backends/contract.py: the very tests the twin passes in
CI. Faults poison the whole CUDA context of a process, so every test that makes the device fault runs in a
child process and reports back on one line after a marker (device printf output may come before or after it),
and through the host memory and the log it leaves behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends.contract import BackendContract
from tests.helpers.child import RESULT_MARKER, parse_result
from tests.helpers.gpu import require_gpu_or_skip, requires_gpu
from vrrl_gpu import RingLog

REPO = Path(__file__).resolve().parents[2]
NO_POISON = 0xFFFFFFFF
# Generous: this only checks that calibration put the device clock on the UNIX epoch, not its precision.
CLOCK_SLACK_NS = 50_000_000


@pytest.fixture(scope="module")
def gpu() -> Iterator[Any]:
    require_gpu_or_skip()
    from vrrl_gpu.backends._cupy import CupyBackend

    b = CupyBackend()
    yield b
    b.close()


@pytest.mark.gpu
class TestCupyBackend(BackendContract):
    """The contract on CUDA through CuPy. Scenarios that poison the context run in a child process."""

    TRAP_CODES = frozenset({710, 715, 719})  # shared/notes/cuda-cupy-facts.md: the code a trap surfaces as
    CLOCK_SLACK_NS = CLOCK_SLACK_NS

    @pytest.fixture(scope="class")
    def backend(self) -> Iterator[Any]:  # type: ignore[override]
        require_gpu_or_skip()
        from vrrl_gpu.backends._cupy import CupyBackend

        b = CupyBackend()
        yield b
        b.close()

    def run_scenario(self, name: str, arg: int) -> dict[str, Any]:
        require_gpu_or_skip()
        proc = subprocess.run(
            [sys.executable, "-m", "tests.backends.contract", name, str(arg)],
            capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        return parse_result(proc.stdout)


@requires_gpu
def test_device_info_names_a_real_gpu(gpu: Any) -> None:
    info = gpu.device_info()
    assert (info["backend"], info["simulated"], gpu.is_simulated) == ("cupy", False, False)
    assert info["name"]
    assert "twin" not in info["name"].lower()
    assert re.fullmatch(r"[0-9a-f]{32}", info["uuid"]), info["uuid"]  # the 16 bytes of the device UUID
    assert int(info["uuid"], 16) != 0
    major, minor = (int(v) for v in info["compute_capability"].split("."))
    assert major >= 7, info  # the kernels target sm_80+; anything older cannot be what we test on
    assert info["driver_version"] >= 12000
    assert info["driver_version"] // 1000 >= info["runtime_version"] // 1000  # else CUDA would not start
    cupy = pytest.importorskip("cupy")
    props = cupy.cuda.runtime.getDeviceProperties(gpu.device_id)
    assert (props["major"], props["minor"]) == (major, minor)
    assert info["cupy_version"] == cupy.__version__


_FAULT_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from vrrl_gpu.format import RingLog
    from vrrl_gpu.capture import StagingRing
    from vrrl_gpu.backends import RingPointers
    from vrrl_gpu.backends._cupy import CupyBackend

    fault_kind, log_path, MARKER = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    b = CupyBackend()
    mem = b.alloc_pinned(StagingRing.layout_size(64))
    ring = StagingRing.create(mem.host, 64)
    ptrs = RingPointers.from_staging(mem, ring)
    axpy = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = b.alloc_device(4 * 256)
    stream = b.new_stream()
    for s in range(10):
        b.pack(ptrs, s, slot_idx=s, tenant_id=0, opcode=1, words=(s, 0, 0, 0), epoch=0, stream=stream)
        b.launch(axpy, 1, 256, (y, y, 1.0, 256, 0), stream=stream)
    b.pack(ptrs, 10, slot_idx=10, tenant_id=0, opcode=1, words=(10, 0, 0, 0), epoch=0, stream=stream)
    b.launch(axpy, 1, 256, (y, y, 1.0, 256, fault_kind), stream=stream)  # returns: the fault is asynchronous
    b.pack(ptrs, 11, slot_idx=11, tenant_id=0, opcode=1, words=(11, 0, 0, 0), epoch=0, stream=stream)
    error = None
    try:
        stream.synchronize()
    except Exception as e:
        error = {"type": type(e).__name__, "status": getattr(e, "status", None), "text": str(e)}
    query = b.stream_query(stream)
    # The context is gone; the staging memory is host memory and still reads.
    res = ring.consume(final=True)
    with RingLog.create(log_path, 64) as log:
        log.extend(res.records)
    result = {"error": error, "query": query, "commits": [int(c) for c in ring.commits[:12]]}
    print(MARKER + json.dumps(result))
    """
)


@requires_gpu
@pytest.mark.parametrize(("fault_kind", "codes"), [(1, {700}), (2, {710, 715, 719})])
def test_records_written_before_a_device_fault_survive_and_reach_the_log(
    tmp_path: Path, fault_kind: int, codes: set[int]
) -> None:
    log_path = tmp_path / "fault.vrrl"
    proc = subprocess.run(
        [sys.executable, "-c", _FAULT_CHILD, str(fault_kind), str(log_path), RESULT_MARKER],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = parse_result(proc.stdout)
    assert out["error"] is not None, "the fault never surfaced"
    assert out["error"]["status"] in codes, out["error"]
    assert out["query"] in codes
    assert out["commits"][:11] == list(range(1, 12))  # everything up to the faulting launch's breadcrumb
    assert out["commits"][11] == 0  # queued after the fault: never ran
    with RingLog.open(log_path, readonly=True) as log:
        recs = log.records()
    assert list(recs["slot_idx"]) == list(range(11))
    assert int(recs[-1]["slot_idx"]) == 10  # the last breadcrumb names the launch that faulted


@requires_gpu
def test_auto_picks_cupy_on_a_gpu_host_and_says_nothing_about_a_twin() -> None:
    import warnings

    from vrrl_gpu.backends import get_backend
    from vrrl_gpu.backends._host import probe_host

    assert probe_host().present  # CUDA works, so the host shows its device nodes (or NVML) too
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the twin's warning would fail this
        b = get_backend("auto")
    try:
        assert (b.name, b.is_simulated) == ("cupy", False)
    finally:
        b.close()
