"""The CPU twin: the Backend contract (``TestTwinBackend``, tests/backends/contract.py, the same tests the GPU
run passes), and what only the twin has: its wording of errors, live publishing into a megakernel, allocation
limits, worker exceptions, cancelling on close, the library cache, user kernel files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from tests.backends.contract import (
    FAULT_ASSERT,
    FAULT_ILLEGAL_ADDRESS,
    FAULT_TRAP,
    SCENARIOS,
    WILD_ADDRESS,
    WILD_STORE_CU,
    BackendContract,
    flag,
    launch_wait,
    make_ring,
)
from vrrl_gpu.backends import KernelHandle, TwinBackend, TwinCudaError
from vrrl_gpu.errors import BackendUnavailableError, StagingError
from vrrl_gpu.format import SlotStatus


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


class TestTwinBackend(BackendContract):
    """The contract on the twin, in CI. Scenarios that poison the context get a twin of their own."""

    @pytest.fixture(scope="class")
    def backend(self) -> Iterator[TwinBackend]:  # type: ignore[override]
        b = TwinBackend(max_workers=4)  # several OS threads race on device counters
        yield b
        b.close()

    def run_scenario(self, name: str, arg: int) -> dict[str, Any]:
        b = TwinBackend()
        try:
            return SCENARIOS[name](b, arg)
        finally:
            b.close()


def test_bound_pack_raises_the_sticky_error(fresh: TwinBackend) -> None:
    _m, _ring, ptrs = make_ring(fresh, 16)
    bound = fresh.bind_pack(ptrs, stream=None, tenant_id=0, ts_offset=0)
    fresh._poison(TwinCudaError(700, "earlier fault"))
    with pytest.raises(TwinCudaError) as ei:
        bound(0, 0, 1, (0, 0, 0, 0), 0, 1)
    assert ei.value.cuda_error_code == 700


def test_a_bound_pack_behind_a_parked_stream_grows_its_pool_and_every_record_is_its_own(
    fresh: TwinBackend,
) -> None:
    """More packs queued than the prebuilt pool holds (the stream parked): the pool grows instead of
    rewriting a block a queued launch still has to read, so each record keeps its own values."""
    n, k = 8192, 3000
    _m, ring, ptrs = make_ring(fresh, n)
    s = fresh.new_stream()
    bound = fresh.bind_pack(ptrs, stream=s, tenant_id=4, ts_offset=0)
    f, gate = flag(fresh)
    launch_wait(fresh, f, stream=s)
    for q in range(k):
        bound(q, q + 7, 9, (q, 0, 0, 0), q % 3, 0)
    assert s.pending == k + 1  # all still queued behind the wait kernel
    assert cast(Any, bound)._pool >= k  # it grew (the general path, which allocates, was not taken)
    gate[0] = 1
    fresh.synchronize(s)
    got = ring.records[:k]
    assert list(ring.commits[:k]) == list(range(1, k + 1))
    assert got["slot_idx"].tolist() == [q + 7 for q in range(k)]
    assert got["args"][:, 0].tolist() == list(range(k))
    assert got["epoch"].tolist() == [q % 3 for q in range(k)]


# ---- device-side recording from user kernels (the contract has the all-published case) -------------


def test_megakernel_records_the_slots_published_while_it_runs(fresh: TwinBackend) -> None:
    _mem, ring, ptrs = make_ring(fresh, 256)
    seq_counter = fresh.alloc_counter(slots=256)
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
def test_a_twin_fault_is_worded_like_cupy_and_names_the_kernel(
    fresh: TwinBackend, fault_kind: int, code: int
) -> None:
    # The contract checks the codes and the stickiness; this is what only the twin's error carries.
    f_mem, f = flag(fresh)
    axpy = fresh.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = np.ones(64, np.float32)
    launch_wait(fresh, f_mem)
    fresh.launch(axpy, 1, 64, (y, y, 1.0, 64, fault_kind))
    f[0] = 1
    with pytest.raises(TwinCudaError) as info:
        fresh.synchronize()
    assert info.value.cuda_error_code == info.value.status == code
    assert info.value.sticky
    assert "(twin)" in str(info.value)
    assert "vrrl_demo_axpy" in info.value.detail
    assert fresh.sticky_error is not None
    with pytest.raises(TwinCudaError) as again:
        fresh.load("vrrl_pack.cu", "vrrl_pack")
    assert again.value.cuda_error_code == code


def test_twin_launch_errors_are_not_sticky_and_a_missing_kernel_is_500(fresh: TwinBackend) -> None:
    # The shared launch-configuration errors are in the contract; these two are the twin's own.
    axpy = fresh.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = np.zeros(4, np.float32)
    with pytest.raises(TwinCudaError) as info:
        fresh.launch(axpy, 1, 1, (y, y, 1.0, 4, 0), shared_mem=64 * 1024)
    assert (info.value.cuda_error_code, info.value.sticky) == (1, False)
    with pytest.raises(TwinCudaError) as missing:
        fresh.load("vrrl_demo.cu", "no_such_kernel")
    assert missing.value.cuda_error_code == 500
    fresh.launch(axpy, 1, 4, (y, y, 2.0, 4, 0))
    fresh.synchronize()
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
    bad.write_text('extern "C" __global__ void k(int* p) { __syncwarp(); }\n')
    from vrrl_gpu.errors import KernelCompileError

    with pytest.raises(KernelCompileError) as info:
        twin.load(bad, "k")
    assert "__syncwarp is not supported" in info.value.log


# ---- real faults in kernel code ------------------------------------------------------------------


def test_a_real_wild_store_names_the_kernel_the_signal_and_the_thread(fresh: TwinBackend) -> None:
    # The contract checks the code and the stickiness; the twin's message says what the CPU saw.
    k = fresh.load(WILD_STORE_CU, "wild_store")
    out = np.zeros(512, np.float32)
    fresh.launch(k, 2, 256, (out, WILD_ADDRESS, 512, 300))
    with pytest.raises(TwinCudaError) as info:
        fresh.synchronize()
    assert info.value.cuda_error_code == 700
    assert "wild_store: illegal memory access (SIGSEGV at address 0x" in info.value.detail
    assert "block (1,0,0) thread (44,0,0)" in info.value.detail


_OTHER_THREAD_FAULT = """
import ctypes, sys
import numpy as np
from vrrl_gpu.backends import TwinBackend
b = TwinBackend()
k = b.load(sys.argv[1], "wild_store")
out = np.zeros(64, np.float32)
b.launch(k, 1, 64, (out, 0, 64, 0xFFFFFFFE))
b.synchronize()
print("kernel ran", flush=True)
ctypes.string_at(8)  # a fault outside any kernel: not the twin's to catch
print("survived", flush=True)
"""


def test_a_fault_outside_kernel_code_still_reaches_the_previous_handler(tmp_path: Path) -> None:
    # The twin's handler must not swallow the host program's own crashes: Python's faulthandler (installed
    # before the twin's library) still reports it, and the process still dies of it.
    script = tmp_path / "crash.py"
    script.write_text(_OTHER_THREAD_FAULT)
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(script), str(WILD_STORE_CU)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert "kernel ran" in proc.stdout
    assert "survived" not in proc.stdout
    assert proc.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in proc.stderr


def test_a_wild_store_after_a_barrier_is_caught_in_the_fiber_that_made_it(
    tmp_path: Path, fresh: TwinBackend
) -> None:
    # Kernels with __syncthreads run as fibers: the fault happens on a fiber's stack, after the fiber was
    # switched out at the barrier and back in, and must still end the grid as 700 naming that thread.
    src = tmp_path / "barrier_wild.cu"
    src.write_text(
        'extern "C" __global__ void barrier_wild(float* out, unsigned long long bad, unsigned fault_at) {\n'
        "    __shared__ float tile[64];\n"
        "    tile[threadIdx.x] = 1.0f + threadIdx.x;\n"
        "    __syncthreads();\n"
        "    float* p = (threadIdx.x == fault_at) ? reinterpret_cast<float*>(bad) : out;\n"
        "    p[blockIdx.x * 64 + threadIdx.x] = tile[63 - threadIdx.x];\n"
        "}\n"
    )
    k = fresh.load(src, "barrier_wild")
    out = np.zeros(256, np.float32)
    fresh.launch(k, 4, 64, (out, 0, 0xFFFFFFFF))
    fresh.synchronize()
    assert (out.reshape(4, 64) == (64.0 - np.arange(64))).all()
    fresh.launch(k, 4, 64, (out, WILD_ADDRESS, 17))
    with pytest.raises(TwinCudaError) as info:
        fresh.synchronize()
    assert info.value.cuda_error_code == 700
    assert "barrier_wild: illegal memory access (SIGSEGV" in info.value.detail
    assert "thread (17,0,0)" in info.value.detail
