"""The CPU twin: byte-identical records against the reference packer, CUDA-like asynchrony and sticky errors,
device-sequenced recording from many threads, and the record-failure-and-exit helper."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrrl_gpu.backends import HostAllocation, KernelHandle, RingPointers, TwinBackend, TwinCudaError
from vrrl_gpu.capture import StagingRing, pack_reference
from vrrl_gpu.errors import BackendUnavailableError, KernelArgumentError, StagingError
from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC, FailureClass, SlotStatus

U32 = st.integers(0, 2**32 - 1)
NO_POISON = 0xFFFFFFFF
FAULT_ILLEGAL_ADDRESS, FAULT_TRAP, FAULT_ASSERT = 1, 2, 3


@pytest.fixture(scope="module")
def twin() -> Iterator[TwinBackend]:
    b = TwinBackend()
    yield b
    b.close()


@pytest.fixture
def fresh() -> Iterator[TwinBackend]:
    """A backend of its own, for tests that poison it."""
    b = TwinBackend()
    yield b
    b.close()


def make_ring(b: TwinBackend, n: int) -> tuple[HostAllocation, StagingRing, RingPointers]:
    mem = b.alloc_pinned(StagingRing.layout_size(n))
    ring = StagingRing.create(mem.host, n)
    return mem, ring, RingPointers.from_staging(mem, ring)


def flag(b: TwinBackend) -> tuple[HostAllocation, npt.NDArray[np.uint32]]:
    mem = b.alloc_pinned(64)
    return mem, mem.host[:4].view(np.uint32)


def launch_wait(b: TwinBackend, f: HostAllocation, stream: object = None) -> None:
    """Park `stream` until the flag is set (60 s safety timeout)."""
    b.launch(b.load("vrrl_demo.cu", "vrrl_demo_wait"), 1, 1, (f.device_ptr, 60 * 10**9), stream=stream)


# ---- records -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seq=st.integers(0, 2**64 - 2),
    slot_idx=U32,
    tenant_id=U32,
    opcode=U32,
    words=st.tuples(U32, U32, U32, U32),
    epoch=U32,
    slot_status=st.integers(0, 8),
)
def test_twin_pack_is_byte_identical_to_the_reference_packer(
    twin: TwinBackend,
    seq: int,
    slot_idx: int,
    tenant_id: int,
    opcode: int,
    words: tuple[int, int, int, int],
    epoch: int,
    slot_status: int,
) -> None:
    n = 8
    mem, ring, ptrs = make_ring(twin, n)
    ref_buf = np.zeros(StagingRing.layout_size(n), np.uint8)
    ref = StagingRing.create(ref_buf, n)
    t0 = time.time_ns()
    twin.pack(ptrs, seq, slot_idx=slot_idx, tenant_id=tenant_id, opcode=opcode, words=words, epoch=epoch,
              slot_status=slot_status)  # fmt: skip
    twin.synchronize()
    t1 = time.time_ns()
    ts = int(ring.records[seq & ring.mask]["timestamp_ns"])
    assert t0 <= ts <= t1  # %globaltimer is CLOCK_REALTIME on the twin, and ts_offset was 0
    pack_reference(ref, seq, slot_idx=slot_idx, tenant_id=tenant_id, opcode=opcode, words=words, epoch=epoch,
                   slot_status=slot_status, timestamp_ns=ts)  # fmt: skip
    lo = ring.commits_offset
    assert mem.host[lo : StagingRing.layout_size(n)].tobytes() == ref_buf[lo:].tobytes()


def test_pack_writes_the_record_and_commit_word_of_the_contract(twin: TwinBackend) -> None:
    # Independent of _staging: the expected bytes built from RECORD_DTYPE and raw offsets.
    n = 16
    mem = twin.alloc_pinned(4096 + 72 * n)
    ptrs = RingPointers(mem.device_ptr + 4096 + 8 * n, mem.device_ptr + 4096, n - 1)
    seq = 2**40 + 5
    t0 = time.time_ns()
    twin.pack(ptrs, seq, slot_idx=7, tenant_id=3, opcode=0xABCDEF01, words=(1, 2, 3, 2**32 - 1), epoch=11,
              slot_status=1, ts_offset=-(10**9))  # fmt: skip
    twin.synchronize()
    t1 = time.time_ns()
    commits = mem.host[4096 : 4096 + 8 * n].view("<u8")
    records = mem.host[4096 + 8 * n : 4096 + 72 * n].view(RECORD_DTYPE)
    i = seq % n
    assert commits[i] == seq + 1
    assert (np.delete(commits, i) == 0).all()
    expected = np.zeros(1, RECORD_DTYPE)
    ts_written = records[i]["timestamp_ns"]
    expected[0] = (RECORD_MAGIC, ts_written, 7, 3, 0xABCDEF01, (1, 2, 3, 2**32 - 1), 11, 1, 0, 0, 0)
    assert records[i].tobytes() == expected.tobytes()
    ts = int(records[i]["timestamp_ns"])
    assert t0 - 10**9 <= ts <= t1 - 10**9  # the offset was applied (-1 s)
    assert not records[np.arange(n) != i]["magic"].any()


@pytest.mark.parametrize("n", [8, 4096])
def test_bound_pack_writes_what_pack_writes(twin: TwinBackend, n: int) -> None:
    """The prebuilt parameter blocks (a pool smaller than the launches for n=4096, wrapping for n=8)."""
    _m1, general, p1 = make_ring(twin, n)
    _m2, bound_ring, p2 = make_ring(twin, n)
    s = twin.new_stream()
    bound = twin.bind_pack(p2, stream=s, tenant_id=3, ts_offset=-(10**9))
    k = 3000 if n > 8 else 6  # more launches than the pool holds; under n for the ring itself
    for q in range(k):
        w = (q, 2**32 - 1, q * 7 & 0xFFFF, 5)
        twin.pack(p1, q, slot_idx=q + 1, tenant_id=3, opcode=0xABCDEF01, words=w, epoch=q % 4, slot_status=1,
                  ts_offset=-(10**9), stream=s)  # fmt: skip
        bound(q, q + 1, 0xABCDEF01, w, q % 4, 1)
    twin.synchronize()
    a, b = general.records[:k].copy(), bound_ring.records[:k].copy()
    a["timestamp_ns"] = b["timestamp_ns"] = 0
    assert a.tobytes() == b.tobytes()
    assert list(bound_ring.commits[:k]) == list(range(1, k + 1))
    assert list(b["slot_idx"]) == list(range(1, k + 1))


def test_bound_pack_raises_the_sticky_error(fresh: TwinBackend) -> None:
    _m, _ring, ptrs = make_ring(fresh, 16)
    bound = fresh.bind_pack(ptrs, stream=None, tenant_id=0, ts_offset=0)
    fresh._poison(TwinCudaError(700, "earlier fault"))
    with pytest.raises(TwinCudaError) as ei:
        bound(0, 0, 1, (0, 0, 0, 0), 0, 1)
    assert ei.value.cuda_error_code == 700


def test_pack_devseq_claims_sequences_from_the_device_counter(twin: TwinBackend) -> None:
    _mem, ring, ptrs = make_ring(twin, 32)
    counter = twin.alloc_counter()
    for k in range(20):
        twin.pack_devseq(ptrs, counter, tenant_id=2, opcode=9, words=(k, 0, 0, 0), epoch=1)
    assert counter.read() == 20
    got = ring.records[:20]
    assert list(got["slot_idx"]) == list(range(20))
    assert list(got["args"][:, 0]) == list(range(20))
    assert list(ring.commits[:20]) == list(range(1, 21))


def test_many_launches_on_one_stream_run_in_order(twin: TwinBackend) -> None:
    n = 4096
    _mem, ring, ptrs = make_ring(twin, n)
    k = 3000
    for s in range(k):
        twin.pack(ptrs, s, slot_idx=s, tenant_id=0, opcode=1, words=(s, 0, 0, 0), epoch=0)
    twin.synchronize()
    rec = ring.records[:k]
    assert list(ring.commits[:k]) == list(range(1, k + 1))
    assert (rec["args"][:, 0] == np.arange(k)).all()
    assert (np.diff(rec["timestamp_ns"].astype(np.int64)) >= 0).all()


def test_overflow_laps_the_ring_keeping_the_newest(twin: TwinBackend) -> None:
    n = 8
    _mem, ring, ptrs = make_ring(twin, n)
    for s in range(21):
        twin.pack(ptrs, s, slot_idx=s, tenant_id=0, opcode=1, words=(s, 0, 0, 0), epoch=0)
    twin.synchronize()
    assert sorted(int(c) for c in ring.commits) == list(range(14, 22))
    res = ring.consume(final=True)
    assert list(res.records["slot_idx"]) == list(range(13, 21))
    assert res.dropped == 13


# ---- device-side recording from user kernels -----------------------------------------------------


def record_many(b: TwinBackend, ptrs: RingPointers, counter: object, grid: int, block: int, count: int,
                report_thread: int, after: HostAllocation) -> None:  # fmt: skip
    k = b.load("vrrl_demo.cu", "vrrl_demo_record_many")
    b.launch(k, grid, block, (ptrs.records_ptr, ptrs.commits_ptr, ptrs.mask, counter, 0, 5, 42, count,
                              report_thread, after.device_ptr))  # fmt: skip


def test_device_sequenced_recording_from_many_threads_gives_distinct_sequences() -> None:
    b = TwinBackend(max_workers=4)  # several OS threads race on the counter
    try:
        _mem, ring, ptrs = make_ring(b, 4096)
        counter = b.alloc_counter()
        after = b.alloc_pinned(4 * 256)
        record_many(b, ptrs, counter, 4, 64, 8, report_thread=NO_POISON, after=after)
        assert counter.read() == 4 * 64 * 8
        rec = ring.records[: 4 * 64 * 8]
        assert list(ring.commits[: 4 * 64 * 8]) == list(range(1, 4 * 64 * 8 + 1))
        pairs = {(int(r["args"][0]), int(r["args"][1])) for r in rec}
        assert pairs == {(g, k) for g in range(256) for k in range(8)}  # every (thread, k) exactly once
        assert (rec["slot_status"] == SlotStatus.DEVICE_CLAIMED).all()
        assert (rec["args"][:, 0] == rec["slot_idx"]).all()
    finally:
        b.close()


def test_fail_and_exit_records_the_failure_and_ends_only_that_thread(fresh: TwinBackend) -> None:
    _mem, ring, ptrs = make_ring(fresh, 1024)
    counter = fresh.alloc_counter()
    after = fresh.alloc_pinned(4 * 64)
    record_many(fresh, ptrs, counter, 2, 32, 3, report_thread=37, after=after)
    fresh.synchronize()  # no error: the context survives a reported failure
    assert fresh.stream_query() == 0
    total = counter.read()
    assert total == 63 * 3 + 1
    rec = ring.records[:total]
    reported = rec[rec["slot_status"] == SlotStatus.DEVICE_REPORTED]
    assert len(reported) == 1
    r = reported[0]
    assert (int(r["slot_idx"]), int(r["failure_class"]), int(r["backend_error_code"])) == (
        37, FailureClass.PROGRAM_BUG, 77,
    )  # fmt: skip
    assert after.host.view(np.uint32)[37] == 0  # the code after the helper never ran
    assert 37 not in set(rec[rec["slot_status"] == SlotStatus.DEVICE_CLAIMED]["slot_idx"].tolist())
    # The context is still usable afterwards.
    fresh.pack(ptrs, 10**6, slot_idx=1, tenant_id=0, opcode=1, words=(0, 0, 0, 0), epoch=0)
    fresh.synchronize()


def test_megakernel_records_the_slots_it_picks_up(fresh: TwinBackend) -> None:
    _mem, ring, ptrs = make_ring(fresh, 256)
    seq_counter = fresh.alloc_counter()
    next_item = fresh.alloc_counter()
    work = fresh.alloc_pinned(4096)
    slots = work.host[:400].view(np.uint32)
    published = work.host[512:520].view(np.uint64)
    stop = work.host[1024:1028].view(np.uint32)
    data = np.zeros(64, np.float32)
    k = fresh.load("vrrl_demo.cu", "vrrl_demo_megakernel")
    w = work.device_ptr
    fresh.launch(k, 2, 1, (w, w + 512, w + 1024, next_item, data, 64, ptrs.records_ptr, ptrs.commits_ptr,
                           ptrs.mask, seq_counter, 0, 0, 77, 3, 13))  # fmt: skip
    for i, slot in enumerate([10, 11, 12, 13, 14, 15]):
        slots[i] = slot
        published[0] = i + 1  # x86 keeps the stores in order; the kernel fences between its two loads
    stop[0] = 1
    fresh.synchronize()
    n = seq_counter.read()
    rec = ring.records[:n]
    claimed = sorted(rec[rec["slot_status"] == SlotStatus.DEVICE_CLAIMED]["slot_idx"].tolist())
    reported = rec[rec["slot_status"] == SlotStatus.DEVICE_REPORTED]["slot_idx"].tolist()
    assert reported == [13]
    assert 13 not in claimed
    assert set(claimed) <= {10, 11, 12, 14, 15}
    assert data[[10, 11, 12, 14, 15]].sum() == len(claimed)


# ---- asynchrony and sticky errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault_kind", "code"), [(FAULT_ILLEGAL_ADDRESS, 700), (FAULT_TRAP, 719), (FAULT_ASSERT, 710)]
)
def test_a_kernel_fault_surfaces_later_and_is_sticky(fresh: TwinBackend, fault_kind: int, code: int) -> None:
    f_mem, f = flag(fresh)
    _mem, ring, ptrs = make_ring(fresh, 64)
    axpy = fresh.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = np.ones(64, np.float32)
    x = np.ones(64, np.float32)
    launch_wait(fresh, f_mem)  # park the stream so nothing below has run yet
    fresh.pack(ptrs, 0, slot_idx=0, tenant_id=0, opcode=1, words=(0, 0, 0, 0), epoch=0)
    fresh.launch(axpy, 1, 64, (y, x, 1.0, 64, fault_kind))  # no error at the call: asynchronous
    fresh.pack(ptrs, 1, slot_idx=1, tenant_id=0, opcode=1, words=(0, 0, 0, 0), epoch=0)
    assert fresh.stream_query() == 600
    f[0] = 1
    with pytest.raises(TwinCudaError) as info:
        fresh.synchronize()
    assert info.value.cuda_error_code == code
    assert info.value.sticky
    assert "(twin)" in str(info.value)
    assert "vrrl_demo_axpy" in info.value.detail
    # The record written before the fault is there; the work queued after it was dropped.
    assert int(ring.commits[0]) == 1
    assert int(ring.commits[1]) == 0
    # Sticky: every later call fails with the same code.
    assert fresh.stream_query() == code
    for call in (
        lambda: fresh.launch(axpy, 1, 1, (y, x, 1.0, 1, 0)),
        lambda: fresh.alloc_pinned(64),
        lambda: fresh.alloc_counter(),
        lambda: fresh.load("vrrl_pack.cu", "vrrl_pack"),
        lambda: fresh.new_stream(),
        lambda: fresh.synchronize(),
    ):
        with pytest.raises(TwinCudaError) as again:
            call()
        assert again.value.cuda_error_code == code
    # Host memory is still readable after the fault.
    assert int(ring.records[0]["magic"]) == RECORD_MAGIC


def test_launch_configuration_errors_raise_at_the_call_and_are_not_sticky(fresh: TwinBackend) -> None:
    axpy = fresh.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = np.zeros(4, np.float32)
    x = np.ones(4, np.float32)
    for grid, block, shared in [(1, 1025, 0), (1, (32, 32, 2), 0), ((1, 65536), 1, 0), (1, 1, 64 * 1024)]:
        with pytest.raises(TwinCudaError) as info:
            fresh.launch(axpy, grid, block, (y, x, 1.0, 4, 0), shared_mem=shared)
        assert info.value.cuda_error_code == 1
        assert not info.value.sticky
    with pytest.raises(TwinCudaError) as missing:
        fresh.load("vrrl_demo.cu", "no_such_kernel")
    assert missing.value.cuda_error_code == 500
    with pytest.raises(KernelArgumentError, match="expects 5 arguments"):
        fresh.launch(axpy, 1, 4, (y, x, 1.0, 4))
    with pytest.raises(KernelArgumentError, match="4294967295"):
        fresh.launch(axpy, 1, 4, (y, x, 1.0, 2**32, 0))
    with pytest.raises(KernelArgumentError, match="float"):
        fresh.launch(axpy, 1, 4, (y, x, "2", 4, 0))
    with pytest.raises(KernelArgumentError, match="address"):
        fresh.launch(axpy, 1, 4, ("y", x, 1.0, 4, 0))
    # Still usable: none of these poisoned the context.
    fresh.launch(axpy, 1, 4, (y, x, 2.0, np.uint32(4), 0))
    fresh.synchronize()
    assert list(y) == [2.0] * 4
    assert fresh.stream_query() == 0


def test_allocation_over_the_limit_raises_2_synchronously_and_is_not_sticky() -> None:
    b = TwinBackend(alloc_limit=1 << 20)
    try:
        with pytest.raises(TwinCudaError) as info:
            b.alloc_pinned((1 << 20) + 1)
        assert info.value.cuda_error_code == 2
        assert not info.value.sticky
        with pytest.raises(TwinCudaError):
            b.alloc_device(1 << 21)
        assert b.alloc_pinned(1 << 20).nbytes == 1 << 20
        b.synchronize()
    finally:
        b.close()


def test_two_streams_run_independently(fresh: TwinBackend) -> None:
    f_mem, f = flag(fresh)
    s1, s2 = fresh.new_stream(), fresh.new_stream()
    assert len({s1.ptr, s2.ptr, fresh.current_stream().ptr}) == 3
    _mem, ring, ptrs = make_ring(fresh, 64)
    launch_wait(fresh, f_mem, stream=s1)
    fresh.pack(ptrs, 0, slot_idx=0, tenant_id=0, opcode=1, words=(1, 0, 0, 0), epoch=0, stream=s1)
    for s in range(1, 11):
        fresh.pack(ptrs, s, slot_idx=s, tenant_id=0, opcode=2, words=(2, 0, 0, 0), epoch=0, stream=s2)
    fresh.synchronize(s2)
    assert fresh.stream_query(s2) == 0
    assert fresh.stream_query(s1) == 600  # still parked behind the wait kernel
    assert int(ring.commits[0]) == 0
    assert list(ring.commits[1:11]) == list(range(2, 12))
    f[0] = 1
    fresh.synchronize()
    assert int(ring.commits[0]) == 1


def test_a_fault_on_one_stream_poisons_every_stream(fresh: TwinBackend) -> None:
    s1, s2 = fresh.new_stream(), fresh.new_stream()
    axpy = fresh.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = np.zeros(1, np.float32)
    fresh.launch(axpy, 1, 1, (y, y, 1.0, 1, FAULT_TRAP), stream=s1)
    with pytest.raises(TwinCudaError):
        fresh.synchronize(s1)
    assert fresh.stream_query(s2) == 719
    with pytest.raises(TwinCudaError):
        fresh.synchronize(s2)


def test_a_worker_exception_is_reraised_not_swallowed(
    fresh: TwinBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(item: object, err: object) -> None:
        raise ZeroDivisionError("injected into the stream worker")

    monkeypatch.setattr(fresh, "_execute", boom)
    k = fresh.load("vrrl_demo.cu", "vrrl_demo_spin")
    fresh.launch(k, 1, 1, (0,))  # accepted: the failure happens on the worker
    with pytest.raises(ZeroDivisionError, match="injected"):
        fresh.synchronize()
    with pytest.raises(ZeroDivisionError):
        fresh.launch(k, 1, 1, (0,))
    with pytest.raises(ZeroDivisionError):
        fresh.stream_query()


def test_close_stops_a_spinning_kernel_and_later_calls_raise() -> None:
    b = TwinBackend()
    b.launch(b.load("vrrl_demo.cu", "vrrl_demo_spin"), 2, 2, (3600 * 10**9,))
    assert b.stream_query() == 600
    b.close()  # would hang for an hour (and warn) if the kernel were not cancelled
    b.close()  # idempotent
    with pytest.raises(BackendUnavailableError):
        b.alloc_pinned(64)


# ---- memory, streams, identity -------------------------------------------------------------------


def test_register_host_maps_identity_and_refuses_a_second_registration(fresh: TwinBackend) -> None:
    buf = np.zeros(8192, np.uint8)
    reg = fresh.register_host(buf)
    assert reg.device_ptr == buf.ctypes.data
    assert reg.host is buf
    with pytest.raises(TwinCudaError) as info:
        fresh.register_host(buf[4096:])
    assert info.value.cuda_error_code == 712
    reg.close()
    fresh.register_host(buf).close()
    with pytest.raises(StagingError):
        fresh.register_host(np.zeros(16, np.uint32))  # type: ignore[arg-type]
    ro = np.zeros(16, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(StagingError):
        fresh.register_host(ro)


def test_pinned_memory_is_page_aligned_and_zeroed(twin: TwinBackend) -> None:
    m = twin.alloc_pinned(10000)
    assert m.device_ptr % 4096 == 0
    assert m.nbytes == 10000
    assert not m.host.any()


def test_device_buffer_round_trip_and_counter(twin: TwinBackend) -> None:
    buf = twin.alloc_device(16)
    buf.from_host(np.arange(4, dtype=np.float32))
    assert list(buf.to_host().view(np.float32)) == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(KernelArgumentError):
        buf.from_host(np.zeros(5, np.float32))
    assert twin.alloc_counter().read() == 0


def test_device_info_says_it_is_not_a_gpu(twin: TwinBackend) -> None:
    info = twin.device_info()
    assert info["simulated"] is True
    assert "not a GPU" in info["name"]
    assert info["cupy_version"] == "twin"
    assert {"uuid", "compute_capability", "driver_version", "runtime_version"} <= set(info)
    assert twin.is_simulated
    assert twin.calibrate() == 0


def test_libraries_are_cached_by_source_hash(tmp_path: Path) -> None:
    b1 = TwinBackend(cache_dir=tmp_path)
    k1 = b1.load("vrrl_pack.cu", "vrrl_pack")
    built = sorted(tmp_path.glob("*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    b2 = TwinBackend(cache_dir=tmp_path)
    k2 = b2.load("vrrl_pack.cu", "vrrl_pack")
    assert sorted(tmp_path.glob("*.so")) == built
    assert built[0].stat().st_mtime_ns == stamp
    assert isinstance(k1, KernelHandle)
    assert k1.signature == k2.signature
    b1.close()
    b2.close()


def test_a_user_kernel_file_compiles_and_a_broken_one_reports_the_compiler_log(
    tmp_path: Path, twin: TwinBackend
) -> None:
    good = tmp_path / "mine.cu"
    good.write_text(
        '#include "vrrl_record.cuh"\n'
        'extern "C" __global__ void twice(unsigned int* out, unsigned int n) {\n'
        "    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
        "    if (i < n) out[i] = 2u * i;\n"
        "}\n"
    )
    out = np.zeros(100, np.uint32)
    twin.launch(twin.load(good, "twice"), 4, 32, (out, 100))
    twin.synchronize()
    assert (out == 2 * np.arange(100)).all()
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(int* p) { __syncthreads(); }\n')
    from vrrl_gpu.errors import KernelCompileError

    with pytest.raises(KernelCompileError) as info:
        twin.load(bad, "k")
    assert "__syncthreads is not supported" in info.value.log
