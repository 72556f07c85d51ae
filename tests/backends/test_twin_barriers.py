"""The twin's block barrier: kernels that name ``__syncthreads`` run block by block, each block's threads
as fibers (kernels/twin_shim.h), so static ``__shared__`` memory is shared by a block and ``__syncthreads``
waits for every thread of it that has not exited."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vrrl_gpu.backends import TwinBackend, TwinCudaError

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")

# Every thread writes its slot, waits, then reads its neighbour's (another fiber's) slot: without a barrier
# (or with per-thread shared memory) the neighbour's value would be missing. Threads past n leave first.
ROTATE = """
extern "C" __global__ void rotate(const int* in, int* out, unsigned int n) {
    __shared__ int tile[16][8];
    const unsigned int tx = threadIdx.x, ty = threadIdx.y;
    const unsigned int i = (blockIdx.x * blockDim.y + ty) * blockDim.x + tx;
    if (i >= n) { return; }
    tile[ty][tx] = in[i];
    __syncthreads();
    const unsigned int nx = (tx + 1) % blockDim.x;
    const unsigned int j = (blockIdx.x * blockDim.y + ty) * blockDim.x + nx;
    out[i] = j < n ? tile[ty][nx] : -1;
}
"""

TRAP_AT_BARRIER = """
extern "C" __global__ void trap_at_barrier(int* out) {
    __shared__ int x[64];
    x[threadIdx.x] = threadIdx.x;
    __syncthreads();
    if (blockIdx.x == 1 && threadIdx.x == 5) { __trap(); }
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = x[63 - threadIdx.x];
}
"""

HEADER = "static __device__ void vrrl_test_barrier() { __syncthreads(); }\n"
VIA_HEADER = """
#include "barrier_helper.h"
extern "C" __global__ void reverse(int* data) {
    __shared__ int s[32];
    s[threadIdx.x] = data[threadIdx.x];
    vrrl_test_barrier();
    data[threadIdx.x] = s[31 - threadIdx.x];
}
"""


@pytest.fixture
def twin() -> Iterator[TwinBackend]:
    b = TwinBackend(max_workers=2)
    yield b
    b.close()


def _load(twin: TwinBackend, tmp_path: Path, text: str, name: str) -> object:
    src = tmp_path / f"{name}.cu"
    src.write_text(text)
    return twin.load(src, name)


def test_a_2d_block_shares_its_tile_across_the_barrier_and_exited_threads_count_as_arrived(
    twin: TwinBackend, tmp_path: Path
) -> None:
    k = _load(twin, tmp_path, ROTATE, "rotate")
    n = 5 * 128 - 37  # the last block partly past n: those threads return before the barrier
    data = np.arange(n, dtype=np.int32) * 3 + 1
    out = np.zeros(n, np.int32)
    twin.launch(k, 5, (8, 16), (data, out, n))
    twin.synchronize()
    idx = np.arange(n)
    nxt = idx - idx % 8 + (idx % 8 + 1) % 8
    want = np.where(nxt < n, data[np.minimum(nxt, n - 1)], -1)
    assert out.tolist() == want.tolist()


def test_a_trap_between_barriers_poisons_the_context_and_the_grid_stops(
    twin: TwinBackend, tmp_path: Path
) -> None:
    k = _load(twin, tmp_path, TRAP_AT_BARRIER, "trap_at_barrier")
    out = np.zeros(4 * 64, np.int32)
    twin.launch(k, 4, 64, (out,))
    with pytest.raises(TwinCudaError) as e:
        twin.synchronize()
    assert e.value.cuda_error_code == 719
    assert "block (1,0,0) thread (5,0,0)" in e.value.detail
    assert not out[64:128].any()  # the faulting block never passed its second barrier


def test_a_barrier_in_an_included_header_is_seen(twin: TwinBackend, tmp_path: Path) -> None:
    (tmp_path / "barrier_helper.h").write_text(HEADER)
    k = _load(twin, tmp_path, VIA_HEADER, "reverse")
    data = np.arange(32, dtype=np.int32)
    twin.launch(k, 1, 32, (data,))
    twin.synchronize()
    assert data.tolist() == list(range(31, -1, -1))
