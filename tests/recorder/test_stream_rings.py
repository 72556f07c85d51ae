"""Rings per stream: each thread's default stream (all of them handle 2 under
CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1) has its own ring, and streams that are gone are drained and released,
so thousands of short-lived streams keep the number of live rings (and drain passes) bounded.

The twin models both (per-thread default streams whose handle names the calling thread's own stream;
streams destroyed when dropped); the ``cupy`` cases run the same on a GPU (-m gpu)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.gpu import requires_gpu
from tests.helpers.recorder import Axpy, failures, log_records, recorders, with_status
from vrrl_gpu import FailureClass, MetaOpcode, Recorder, SlotStatus
from vrrl_gpu.format import read_sidecar

ROOT = Path(__file__).resolve().parents[2]
DEVICES = ("twin", pytest.param("cupy", marks=pytest.mark.gpu))


@pytest.fixture
def make_rec(tmp_path: Path) -> Iterator[Callable[..., Recorder]]:
    with recorders(tmp_path, capacity=16384, staging_slots=64) as make:
        yield make


def live_rings(rec: Recorder) -> int:
    return len(rec.statistics().positions)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_thousands_of_short_lived_streams_keep_the_rings_bounded(
    make_rec: Callable[..., Recorder], device: str, mode: str
) -> None:
    rec = make_rec(device, breadcrumbs=mode)
    op = rec.opcode("short")
    n, every = 2000, 50
    peak = 0
    for i in range(n):
        s = rec.backend.new_stream()
        with rec.slot(op, (i, 0, 0, 0), stream=s):
            pass
        del s  # the stream is destroyed; the recorder held it weakly
        if i % every == every - 1:
            rec.synchronize()
        peak = max(peak, live_rings(rec))
    rec.synchronize()
    # At most the streams since the last synchronize, the device-sequenced ring and the one being opened.
    assert peak <= every + 2
    rec.close()
    recs = log_records(rec.path)
    begins = with_status(recs, SlotStatus.BEGIN)
    assert sorted(begins["args"][:, 0].tolist()) == list(range(n))  # every breadcrumb drained, none twice
    if mode == "begin+end":
        assert len(with_status(recs, SlotStatus.COMPLETED)) == n
    assert not np.any(recs["opcode"] == int(MetaOpcode.GAP))
    assert rec.statistics().dropped == 0
    side = read_sidecar(rec.path)
    assert side is not None
    table = side.extra["streams"]  # retired streams keep their entries: every slot still names its stream
    assert sorted(e["index"] for e in table) == list(range(n))


def test_a_live_stream_keeps_its_ring_and_a_destroyed_ones_ring_is_reused(
    make_rec: Callable[..., Recorder],
) -> None:
    rec = make_rec()
    op = rec.opcode("x")
    keep = rec.backend.new_stream()
    with rec.slot(op, (1, 0, 0, 0), stream=keep):
        pass
    gone = rec.backend.new_stream()
    with rec.slot(op, (2, 0, 0, 0), stream=gone):
        pass
    gone_ptrs = rec._streams[(gone.ptr, 0)].ptrs
    del gone
    rec.synchronize()  # retires the destroyed stream's ring into the pool
    assert live_rings(rec) == 2  # the device-sequenced ring and keep's
    new = rec.backend.new_stream()
    with rec.slot(op, (3, 0, 0, 0), stream=new):
        pass
    assert rec._streams[(new.ptr, 0)].ptrs == gone_ptrs  # the same memory, no new allocation
    with rec.slot(op, (4, 0, 0, 0), stream=keep):
        pass
    rec.close()
    begins = with_status(log_records(rec.path), SlotStatus.BEGIN)
    assert sorted(begins["args"][:, 0].tolist()) == [1, 2, 3, 4]


def per_thread_scenario(rec: Recorder) -> dict[str, Any]:
    """Thread A: a launch parked behind a flag, then a device assert; thread B: launches that finish. Each
    on its own default stream (handle 2). The main thread releases A and synchronizes."""
    w = Axpy.on(rec)
    flag = rec.backend.alloc_pinned(64)
    flag.host[:] = 0
    wait = rec.backend.load("vrrl_demo.cu", "vrrl_demo_wait")
    op_wait = rec.opcode("wait")
    launched = threading.Barrier(3, timeout=60)
    handles: dict[str, int] = {}

    def thread_a() -> None:
        handles["a"] = int(rec.backend.current_stream().ptr)
        rec.launch(wait, 1, 1, (flag.device_ptr, 30 * 10**9), opcode=op_wait, words=(100, 0, 0, 0))
        w.launch(101, fault=3)
        launched.wait()
        launched.wait()  # stay alive until the main thread has synchronized

    def thread_b() -> None:
        handles["b"] = int(rec.backend.current_stream().ptr)
        for i in range(3):
            w.launch(200 + i)
        # B's own stream only: rec.synchronize() would wait device-wide, for A's parked launch too.
        rec.backend.synchronize(rec.backend.current_stream())
        launched.wait()
        launched.wait()

    ts = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in ts:
        t.start()
    launched.wait()
    rings = live_rings(rec)
    flag.host[:4].view(np.uint32)[0] = 1
    raised = None
    try:
        rec.synchronize()
    except Exception as e:
        raised = int(getattr(e, "status", getattr(e, "cuda_error_code", -1)))
    launched.wait()
    for t in ts:
        t.join()
    rec.close()
    recs = log_records(rec.path)
    slot_of = {int(r["args"][0]): int(r["slot_idx"]) for r in with_status(recs, SlotStatus.BEGIN)}
    return {
        "handles": sorted(set(handles.values())),
        "rings": rings,
        "raised": raised,
        "failures": [list(f) for f in failures(recs)],
        "fault_slot": slot_of.get(101),
    }


def check_per_thread(out: dict[str, Any]) -> None:
    assert out["handles"] == [2]  # both threads' default streams have the same handle
    assert out["rings"] == 1 + 2 + 1  # the device-sequenced ring, A's, B's, and the main thread's
    assert out["raised"] == 710
    # Only A's launch is blamed: B's stream had finished, and its records never mixed with A's.
    faulted, pb = int(SlotStatus.FAULTED), int(FailureClass.PROGRAM_BUG)
    assert out["failures"] == [[out["fault_slot"], faulted, pb, 710]]


def test_per_thread_default_streams_get_their_own_rings(
    make_rec: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUPY_CUDA_PER_THREAD_DEFAULT_STREAM", "1")
    rec = make_rec(breadcrumbs="begin+end")
    # Touch the main thread's default stream too: a fourth ring, keyed (2, main thread).
    with rec.slot(rec.opcode("main")):
        pass
    check_per_thread(per_thread_scenario(rec))


PER_THREAD_CHILD = textwrap.dedent(
    """
    import json, sys
    from tests.recorder.test_stream_rings import per_thread_scenario
    from vrrl_gpu import Recorder
    rec = Recorder(sys.argv[1], device="cupy", breadcrumbs="begin+end", staging_slots=64)
    with rec.slot(rec.opcode("main")):
        pass
    print(json.dumps(per_thread_scenario(rec)))
    """
)


@requires_gpu
def test_per_thread_default_streams_on_a_gpu(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUPY_CUDA_PER_THREAD_DEFAULT_STREAM": "1"}
    p = subprocess.run(
        [sys.executable, "-c", PER_THREAD_CHILD, str(tmp_path / "ptds.vrrl")],
        capture_output=True, text=True, env=env, timeout=180, cwd=ROOT, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]  # device printf may follow
    check_per_thread(json.loads(lines[-1]))


def test_the_twin_resolves_handle_2_to_the_calling_threads_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    from vrrl_gpu.backends import TwinBackend

    b = TwinBackend(per_thread_default_stream=True)
    try:
        mine = b.current_stream()
        other: list[Any] = []
        t = threading.Thread(target=lambda: other.append(b.current_stream()))
        t.start()
        t.join()
        assert mine.ptr == other[0].ptr == 2
        assert mine is not other[0]
        assert b._stream(other[0]) is mine  # used from here, the handle means this thread's stream
    finally:
        b.close()
