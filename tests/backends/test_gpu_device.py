"""The real device path (``pytest -m gpu``): skipped with a reason without a GPU; VRRL_REQUIRE_GPU=1 fails.

Faults poison the whole CUDA context of a process, so every test that makes the device fault runs in a child
process and reports back through the host memory and the log it leaves behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.gpu import require_gpu_or_skip, requires_gpu
from vrrl_gpu import RingLog
from vrrl_gpu.backends import RingPointers
from vrrl_gpu.capture import ShmSegment, StagingRing, pack_reference
from vrrl_gpu.format import RECORD_MAGIC, FailureClass, SlotStatus

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


def make_ring(b: Any, n: int) -> tuple[Any, StagingRing, RingPointers]:
    mem = b.alloc_pinned(StagingRing.layout_size(n))
    ring = StagingRing.create(mem.host, n)
    return mem, ring, RingPointers.from_staging(mem, ring)


@requires_gpu
def test_device_info_names_a_real_gpu(gpu: Any) -> None:
    info = gpu.device_info()
    assert info["simulated"] is False
    assert info["name"]
    assert info["driver_version"] > 0
    assert not gpu.is_simulated


@requires_gpu
def test_records_are_visible_on_the_host_after_the_pack_kernel(gpu: Any) -> None:
    _mem, ring, ptrs = make_ring(gpu, 64)
    offset = gpu.calibrate()
    t0 = time.time_ns()
    gpu.pack(ptrs, 5, slot_idx=5, tenant_id=3, opcode=0xC0FFEE, words=(1, 2, 3, 4), epoch=7, slot_status=0,
             ts_offset=offset)  # fmt: skip
    gpu.synchronize()
    t1 = time.time_ns()
    assert int(ring.commits[5]) == 6
    r = ring.records[5]
    assert int(r["magic"]) == RECORD_MAGIC
    assert (int(r["slot_idx"]), int(r["tenant_id"]), int(r["opcode"]), int(r["epoch"])) == (5, 3, 0xC0FFEE, 7)
    assert list(r["args"]) == [1, 2, 3, 4]
    ts = int(r["timestamp_ns"])
    assert t0 - CLOCK_SLACK_NS <= ts <= t1 + CLOCK_SLACK_NS
    # Byte for byte what the reference packer writes.
    ref_buf = np.zeros(StagingRing.layout_size(64), np.uint8)
    ref = StagingRing.create(ref_buf, 64)
    pack_reference(ref, 5, slot_idx=5, tenant_id=3, opcode=0xC0FFEE, words=(1, 2, 3, 4), epoch=7,
                   slot_status=0, timestamp_ns=ts)  # fmt: skip
    lo = ring.commits_offset
    assert ring.buffer[lo:].tobytes() == ref_buf[lo:].tobytes()


@requires_gpu
def test_ordering_under_many_launches(gpu: Any) -> None:
    n, k = 8192, 5000
    _mem, ring, ptrs = make_ring(gpu, n)
    stream = gpu.new_stream()
    for s in range(k):
        gpu.pack(ptrs, s, slot_idx=s, tenant_id=0, opcode=1, words=(s, 0, 0, 0), epoch=0, stream=stream)
    gpu.synchronize(stream)
    assert (ring.commits[:k] == np.arange(1, k + 1, dtype=np.uint64)).all()
    rec = ring.records[:k]
    assert (rec["args"][:, 0] == np.arange(k)).all()
    assert (np.diff(rec["timestamp_ns"].astype(np.int64)) >= 0).all()  # %globaltimer in stream order


@requires_gpu
def test_overflow_keeps_the_newest_and_counts_the_rest(gpu: Any) -> None:
    _mem, ring, ptrs = make_ring(gpu, 64)
    for s in range(1000):
        gpu.pack(ptrs, s, slot_idx=s, tenant_id=0, opcode=1, words=(s, 0, 0, 0), epoch=0)
    gpu.synchronize()
    res = ring.consume(final=True)
    assert list(res.records["slot_idx"]) == list(range(936, 1000))
    assert res.dropped == 936


@requires_gpu
def test_stream_query_reports_not_ready_then_done(gpu: Any) -> None:
    stream = gpu.new_stream()
    gpu.launch(gpu.load("vrrl_demo.cu", "vrrl_demo_spin"), 1, 1, (300_000_000,), stream=stream)
    assert gpu.stream_query(stream) == 600
    gpu.synchronize(stream)
    assert gpu.stream_query(stream) == 0


@requires_gpu
def test_device_sequenced_records_and_fail_and_exit_keep_the_context_alive(gpu: Any) -> None:
    _mem, ring, ptrs = make_ring(gpu, 4096)
    counter = gpu.alloc_counter()
    after = gpu.alloc_pinned(4 * 256)
    k = gpu.load("vrrl_demo.cu", "vrrl_demo_record_many")
    gpu.launch(k, 4, 64, (ptrs.records_ptr, ptrs.commits_ptr, ptrs.mask, counter, 0, 5, 42, 8, 100,
                          after.device_ptr))  # fmt: skip
    gpu.synchronize()  # `exit` ended one thread, not the context
    total = counter.read()
    assert total == 255 * 8 + 1
    rec = ring.records[:total]
    assert (ring.commits[:total] == np.arange(1, total + 1, dtype=np.uint64)).all()
    claimed = rec[rec["slot_status"] == SlotStatus.DEVICE_CLAIMED]
    assert {(int(a), int(b)) for a, b in claimed["args"][:, :2]} == {
        (g, j) for g in range(256) if g != 100 for j in range(8)
    }
    reported = rec[rec["slot_status"] == SlotStatus.DEVICE_REPORTED]
    assert len(reported) == 1
    assert int(reported[0]["failure_class"]) == FailureClass.PROGRAM_BUG
    assert int(reported[0]["backend_error_code"]) == 77
    assert int(after.host.view(np.uint32)[100]) == 0


@requires_gpu
def test_megakernel_records_every_published_slot(gpu: Any) -> None:
    _mem, ring, ptrs = make_ring(gpu, 1024)
    seq_counter = gpu.alloc_counter()
    next_item = gpu.alloc_counter()
    work = gpu.alloc_pinned(8192)
    slots = work.host[:4096].view(np.uint32)
    published = work.host[4096:4104].view(np.uint64)
    stop = work.host[4608:4612].view(np.uint32)
    data = gpu.alloc_device(4 * 256)
    items = np.arange(500, dtype=np.uint32) % 256
    slots[:500] = items
    published[0] = 500  # all published, and stop set, before the launch: the kernel cannot wait forever
    stop[0] = 1
    w = work.device_ptr
    k = gpu.load("vrrl_demo.cu", "vrrl_demo_megakernel")
    gpu.launch(k, 8, 32, (w, w + 4096, w + 4608, next_item, data, 256, ptrs.records_ptr, ptrs.commits_ptr,
                          ptrs.mask, seq_counter, 0, 0, 9, 1, NO_POISON))  # fmt: skip
    gpu.synchronize()
    assert seq_counter.read() == 500
    rec = ring.records[:500]
    assert sorted(rec["args"][:, 0].tolist()) == list(range(500))
    assert (rec["slot_idx"] == items[rec["args"][:, 0]]).all()
    assert (data.to_host().view(np.float32) == np.bincount(items, minlength=256)).all()


@requires_gpu
def test_shm_staging_after_host_register(gpu: Any) -> None:
    n = 256
    seg = ShmSegment.create(None, StagingRing.layout_size(n))
    try:
        ring = StagingRing.create(seg.array, n)
        reg = gpu.register_host(seg.array)
        ptrs = RingPointers.from_staging(reg, ring)
        for s in range(10):
            gpu.pack(ptrs, s, slot_idx=s, tenant_id=1, opcode=2, words=(s, 0, 0, 0), epoch=0)
        gpu.synchronize()
        # A second, independent mapping of the file sees what the device wrote.
        other = ShmSegment.open(seg.path)
        try:
            seen = StagingRing.attach(other.array)
            assert list(seen.commits[:10]) == list(range(1, 11))
            assert list(seen.records[:10]["slot_idx"]) == list(range(10))
        finally:
            other.close()
        reg.close()
    finally:
        seg.close()
        seg.unlink()


_FAULT_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from vrrl_gpu.format import RingLog
    from vrrl_gpu.capture import StagingRing
    from vrrl_gpu.backends import RingPointers
    from vrrl_gpu.backends._cupy import CupyBackend

    fault_kind, log_path = int(sys.argv[1]), sys.argv[2]
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
    print(json.dumps({"error": error, "query": query, "commits": [int(c) for c in ring.commits[:12]]}))
    """
)


@requires_gpu
@pytest.mark.parametrize(("fault_kind", "codes"), [(1, {700}), (2, {710, 715, 719})])
def test_records_written_before_a_device_fault_survive_and_reach_the_log(
    tmp_path: Path, fault_kind: int, codes: set[int]
) -> None:
    log_path = tmp_path / "fault.vrrl"
    proc = subprocess.run(
        [sys.executable, "-c", _FAULT_CHILD, str(fault_kind), str(log_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] is not None, "the fault never surfaced"
    assert out["error"]["status"] in codes, out["error"]
    assert out["query"] in codes
    assert out["commits"][:11] == list(range(1, 12))  # everything up to the faulting launch's breadcrumb
    assert out["commits"][11] == 0  # queued after the fault: never ran
    with RingLog.open(log_path, readonly=True) as log:
        recs = log.records()
    assert list(recs["slot_idx"]) == list(range(11))
    assert int(recs[-1]["slot_idx"]) == 10  # the last breadcrumb names the launch that faulted
