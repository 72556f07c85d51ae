"""Attribution you can trust: the evidence names launch K and its stream, or says unknown, never another.

The matrix (tests/helpers/attribution.py) faults launch K with 10x, 100x and 1000x more launches queued behind
it than the staging ring holds, in both breadcrumb modes, pinned and shm staging, 1, 2 and 8 streams, polling
every launch or never, with and without backpressure. ``benchmarks/bench_attribution.py`` prints the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.attribution import MODES, Case, matrix, run_case, run_schedule
from tests.helpers.child import parse_result
from tests.helpers.gpu import requires_gpu
from tests.helpers.recorder import Axpy, Hold, log_records, with_status
from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu._cli import main
from vrrl_gpu.backends import TwinCudaError
from vrrl_gpu.format import UNKNOWN_SLOT, read_sidecar
from vrrl_gpu.reproduce import read_plan

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")

CASES = list(matrix())
REPO = Path(__file__).resolve().parents[2]
CHILD = REPO / "tests" / "helpers" / "attribution.py"


def _marks(case: Case) -> Any:
    # The 1000x cases without backpressure queue 8,000 launches each: about a second on the twin.
    slow = case.ratio == 1000 and not case.backpressure
    return pytest.param(case, id=case.id, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("case", [_marks(c) for c in CASES])
def test_matrix_names_k_or_unknown(tmp_path: Path, case: Case) -> None:
    out = run_case(tmp_path / "run.vrrl", case)
    assert out.verdict in ("exact", "unknown"), out.detail
    if case.backpressure:
        # Backpressure keeps every sequence that can still arrive resolvable: never unknown.
        assert out.verdict == "exact", out.detail


def _run_child(case: Case, device: str, log: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("VRRL_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, str(CHILD), case.id, device, str(log)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return parse_result(proc.stdout)


@requires_gpu
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_matrix_on_a_gpu(tmp_path: Path, case: Case) -> None:
    """The same matrix with real faults (an illegal address on the device), one process per case: a real
    fault kills the CUDA context of its process."""
    out = _run_child(case, "cupy", tmp_path / "run.vrrl")
    assert out["verdict"] in ("exact", "unknown"), out["detail"]
    if case.backpressure:
        assert out["verdict"] == "exact", out["detail"]


def test_matrix_child_runs_on_the_twin(tmp_path: Path) -> None:
    """The GPU matrix's child script, kept honest here on the twin."""
    case = Case(10, "begin+end", "pinned", 2, False, True)
    assert _run_child(case, "twin", tmp_path / "run.vrrl")["verdict"] == "exact"


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    n_streams=st.integers(1, 4),
    mode=st.sampled_from(MODES),
    backpressure=st.booleans(),
)
def test_random_schedules_never_blame_another_launch(
    tmp_path: Path, data: st.DataObject, n_streams: int, mode: str, backpressure: bool
) -> None:
    schedule = data.draw(st.lists(st.integers(0, n_streams - 1), min_size=1, max_size=300), label="streams")
    fault_at = data.draw(st.integers(0, len(schedule) - 1), label="fault_at")
    poll = data.draw(st.lists(st.booleans(), min_size=len(schedule), max_size=len(schedule)), label="poll")
    path = tmp_path / f"r{len(list(tmp_path.iterdir()))}.vrrl"
    out = run_schedule(
        path,
        streams_of=schedule,
        fault_at=fault_at,
        n_streams=n_streams,
        mode=mode,
        poll=poll,
        backpressure=backpressure,
    )
    assert out.verdict in ("exact", "unknown"), out.detail
    if backpressure:
        assert out.verdict == "exact", out.detail


def _unknown_log(path: Path) -> tuple[int, int]:
    """Stream 1 ended one launch, then is held by an unrecorded kernel with 20 launches queued behind it (far
    more than its window without backpressure); launch K faults on stream 0. Returns (K, stream 1's first)."""
    rec = Recorder(
        path, device="twin", staging_slots=8, backpressure=False, breadcrumbs="begin+end", capacity=4096
    )
    try:
        w = Axpy.on(rec)
        gate = Hold(rec)
        other = rec.backend.new_stream()
        w.launch(0)
        w.launch(1, stream=other)
        rec.synchronize()
        rec.backend.launch(gate.kernel, 1, 1, (gate.flag.device_ptr, 30 * 10**9), stream=other)  # unrecorded
        for i in range(2, 22):
            w.launch(i, stream=other)
        w.launch(22, fault=1)
        with pytest.raises(TwinCudaError):
            rec.synchronize()
    finally:
        gate.release()
        rec.close()
    return 22, 2


def test_unresolvable_window_is_written_as_unknown_never_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    k, _ = _unknown_log(path)
    recs = log_records(path)
    faulted = sorted(with_status(recs, SlotStatus.FAULTED)["slot_idx"].tolist())
    assert faulted == [k, UNKNOWN_SLOT]
    side = read_sidecar(path)
    assert side is not None
    (note,) = side.extra["unknown_windows"]
    assert note["stream"] == 1
    assert note["arrived_seq"] == 1  # stream 1's end breadcrumb of its first launch
    assert note["unresolved_seq"] == 2


def test_cli_prints_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.vrrl"
    k, _ = _unknown_log(path)
    for cmd in (["tail", str(path)], ["dump", str(path)], ["stats", str(path)]):
        assert main(cmd) == 0
        out = capsys.readouterr().out
        assert "unknown" in out, (cmd, out)
        assert str(UNKNOWN_SLOT) not in out, cmd
    plan = read_plan(path)
    assert plan.failure is not None
    assert plan.failure.slot_idx == k  # the named failure wins over the unknown one


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_demo_with_thousands_queued_names_the_faulting_launch_and_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    """Issue 12's report: with 12,000 launches and --fault-at 1000 the FAULTED record named 11,999."""
    log = tmp_path / "run.vrrl"
    argv = ["demo", str(log), "--device", "twin", "--launches", "12000", "--fault-at", "1000"]
    assert main([*argv, "--breadcrumbs", mode, "--elements", "256"]) == 3
    capsys.readouterr()
    faulted = with_status(log_records(log), SlotStatus.FAULTED)["slot_idx"].tolist()
    assert faulted == [1000]
    registry = str(REPO / "examples" / "replay_registry.py") + ":REGISTRY"
    rc = main(["replay", str(log), "--registry", registry, "--device", "twin", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["reproduced"] is True


@pytest.mark.parametrize("mode", MODES)
def test_backpressure_keeps_the_ring_unlapped(tmp_path: Path, mode: str) -> None:
    """A host far faster than the device waits instead of lapping an 8-slot ring: no record is lost."""
    rec = Recorder(tmp_path / "run.vrrl", device="twin", staging_slots=8, breadcrumbs=mode, capacity=1 << 14)
    with rec:
        w = Axpy.on(rec)
        for i in range(600):
            w.launch(i)
    assert rec.statistics().dropped == 0
    begun = with_status(log_records(rec.path), SlotStatus.BEGIN)["slot_idx"].tolist()
    assert begun == list(range(600))


def test_a_failure_at_the_call_follows_its_own_begin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An allocation that fails in a slot body while the device is still behind (held): its FAILED_AT_LAUNCH
    record goes after the slot's begin breadcrumb, stamped no earlier, and the counts agree."""
    path = tmp_path / "run.vrrl"
    rec = Recorder(path, device="twin", staging_slots=64, capacity=4096)
    try:
        hold = Hold(rec)
        hold.launch(0)
        timer = threading.Timer(0.1, hold.release)
        timer.start()
        with pytest.raises(TwinCudaError), rec.slot(rec.opcode("alloc"), words=(1, 0, 0, 0)):
            rec.backend.alloc_device(1 << 50)
        timer.join()
        rec.synchronize()
    finally:
        hold.release()
        rec.close()
    recs = log_records(path)
    (begin,) = np.flatnonzero((recs["slot_idx"] == 1) & (recs["slot_status"] == SlotStatus.BEGIN)).tolist()
    (failed,) = np.flatnonzero(recs["slot_status"] == SlotStatus.FAILED_AT_LAUNCH).tolist()
    assert begin < failed
    assert int(recs["timestamp_ns"][failed]) >= int(recs["timestamp_ns"][begin])
    assert main(["stats", "--json", str(path)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["failures"]["total"] == 1
    assert [t["failed"] for t in s["tracks"]] == [1]


@pytest.mark.parametrize("path_kind", ["inline", "general"])
def test_device_faulting_before_the_end_breadcrumb_is_enqueued_still_blames_k(
    tmp_path: Path, path_kind: str
) -> None:
    """begin+end: the device runs K and faults before the host has enqueued K's end breadcrumb (a host
    thread descheduled between the two calls, as on a loaded machine). The end's enqueue then raises the
    sticky error: K had begun and not ended, so K is the FAULTED launch, never a FAILED_AT_LAUNCH of K."""
    rec = Recorder(
        tmp_path / "run.vrrl", device="twin", staging_slots=64, breadcrumbs="begin+end", capacity=4096,
        nvtx=path_kind == "general",  # NVTX sends every launch down the general path
    )  # fmt: skip
    w = Axpy.on(rec)
    s = rec.backend.new_stream()  # a stream object the recorder knows: the inline path takes it
    real_launch = rec.backend.launch

    def launch_then_wait_for_the_device(kernel: Any, *a: Any, **kw: Any) -> None:
        real_launch(kernel, *a, **kw)
        if kernel is w.kernel and a[2][4] == 1:  # the faulting launch: let the device get there first
            while int(rec.backend.stream_query(s)) == 600:
                pass

    general = []
    real_general = rec._launch

    def general_path(*a: Any, **kw: Any) -> None:
        general.append(a)
        real_general(*a, **kw)

    rec.backend.launch = launch_then_wait_for_the_device  # type: ignore[method-assign]
    w.launch(0, stream=s)  # first sight of the stream: the general path
    rec._launch = general_path  # type: ignore[method-assign]
    w.launch(1, stream=s)
    with pytest.raises(TwinCudaError):
        w.launch(2, fault=1, stream=s)  # its end breadcrumb's enqueue meets the fault
    rec.close()  # the error was raised and recorded once, at the launch
    assert len(general) == (2 if path_kind == "general" else 0)
    recs = log_records(rec.path)
    assert with_status(recs, SlotStatus.FAULTED)["slot_idx"].tolist() == [2]
    assert with_status(recs, SlotStatus.FAILED_AT_LAUNCH)["slot_idx"].tolist() == []


def test_a_slot_whose_body_work_faulted_is_the_faulted_launch(tmp_path: Path) -> None:
    """A slot body enqueues a kernel that faults on the device, then a call in the body meets the sticky
    error: the device had reached the slot (its begin arrived), so the slot is FAULTED, not
    FAILED_AT_LAUNCH."""
    rec = Recorder(tmp_path / "run.vrrl", device="twin", staging_slots=64, capacity=4096)
    w = Axpy.on(rec)
    w.launch(0)

    def body() -> None:
        with rec.slot(rec.opcode("body"), words=(1, 0, 0, 0)):
            rec.backend.launch(w.kernel, 1, 64, (w.y, w.x, 1.0, 64, 1))  # unrecorded, faults
            rec.backend.synchronize(None)

    with pytest.raises(TwinCudaError):
        body()
    rec.close()
    recs = log_records(rec.path)
    assert with_status(recs, SlotStatus.FAULTED)["slot_idx"].tolist() == [1]
    assert with_status(recs, SlotStatus.FAILED_AT_LAUNCH)["slot_idx"].tolist() == []
