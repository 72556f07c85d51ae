"""rec.instrument: kernels rewritten to write their own breadcrumbs, run on the twin and compiled with NVRTC.

On the twin: the same output instrumented and not, exactly one BEGIN (and with begin+end one COMPLETED)
per launch with the launch's opcode, words and epoch, device-claimed sequences, one backend launch and no
query per call. Refusals say why. NVRTC compiles every instrumented kernel to a cubin (no GPU needed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu.backends import CountingBackend, TwinBackend, TwinCudaError
from vrrl_gpu.capture import kernel_source, parse_kernels
from vrrl_gpu.errors import InstrumentError, KernelArgumentError
from vrrl_gpu.recorder._instrument import INSTRUMENT_PARAMS, instrument_source, plain_file

from ..capture.test_kernels import _nvrtc_compile
from ..helpers.recorder import log_records, with_status

MODES = ("begin", "begin+end")

# A kernel of nobody's: early returns on two paths, a loop, several blocks.
EARLY_RETURN = """
extern "C" __global__ void scale_some(float* out, const float* in, unsigned int n, float k) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;  // the tail of the last block
    }
    if (in[i] < 0.0f) {
        out[i] = 0.0f;
        return;
    }
    float acc = 0.0f;
    for (int r = 0; r < 3; ++r) { acc += in[i] * k; }
    out[i] = acc;
}
"""

# Shared memory and barriers (the twin runs a block's threads as fibers for them).
BLOCK_SUM = """
extern "C" __global__ void block_sum(const float* in, float* out, unsigned int n) {
    __shared__ float buf[256];
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[threadIdx.x] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) { buf[threadIdx.x] += buf[threadIdx.x + s]; }
        __syncthreads();
    }
    if (threadIdx.x == 0) { out[blockIdx.x] = buf[0]; }
}
"""


@pytest.fixture
def make_rec(tmp_path: Path) -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(**kw: Any) -> Recorder:
        kw.setdefault("device", "twin")
        kw.setdefault("capacity", 8192)
        kw.setdefault("staging_slots", 256)
        rec = Recorder(tmp_path / f"run{len(made)}.vrrl", **kw)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        with contextlib.suppress(Exception):
            rec.close()


def _device_crumbs(rec: Recorder, status: SlotStatus) -> Any:
    recs = log_records(rec.path)
    return with_status(recs, status)


@pytest.mark.parametrize("mode", MODES)
def test_instrumented_axpy_matches_the_plain_one_with_one_breadcrumb_per_launch(
    make_rec: Callable[..., Recorder], mode: str
) -> None:
    rec = make_rec(breadcrumbs=mode)
    b = rec.backend
    k = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
    op = rec.opcode("axpy")
    ik = rec.instrument(k, opcode=op, words=lambda a: (a[3], 7, 0, 0))
    n = 1000
    x = b.alloc_device(4 * n)
    x.from_host(np.arange(n, dtype=np.float32) - 500)
    plain, inst = b.alloc_device(4 * n), b.alloc_device(4 * n)
    grid = (n + 127) // 128
    for launch in range(4):
        rec.epoch = launch
        k(grid, 128, (plain, x, 0.5, n, 0))
        ik(grid, 128, (inst, x, 0.5, n, 0))
    assert np.array_equal(plain.to_host(), inst.to_host())
    assert np.count_nonzero(inst.to_host().view(np.float32)) == n - 1  # the kernel really ran 4 times
    rec.close()
    begins = _device_crumbs(rec, SlotStatus.BEGIN)
    ends = _device_crumbs(rec, SlotStatus.COMPLETED)
    assert len(begins) == 4
    assert begins["opcode"].tolist() == [op] * 4
    assert begins["args"].tolist() == [[n, 7, 0, 0]] * 4
    assert begins["epoch"].tolist() == [0, 1, 2, 3]
    if mode == "begin":
        assert len(ends) == 0
        assert begins["slot_idx"].tolist() == [0, 1, 2, 3]
    else:
        assert ends["epoch"].tolist() == [0, 1, 2, 3]
        # Begin and end claim their sequences from one device counter, in order.
        assert sorted(begins["slot_idx"].tolist() + ends["slot_idx"].tolist()) == list(range(8))
        for b_seq, e_seq in zip(begins["slot_idx"], ends["slot_idx"], strict=True):
            assert b_seq < e_seq


@pytest.mark.parametrize("mode", MODES)
def test_early_returns_still_reach_the_end_record(
    make_rec: Callable[..., Recorder], tmp_path: Path, mode: str
) -> None:
    rec = make_rec(breadcrumbs=mode)
    b = rec.backend
    src = tmp_path / "scale.cu"
    src.write_text(EARLY_RETURN)
    plain = b.load(src, "scale_some")
    ik = rec.instrument(src, "scale_some", opcode=rec.opcode("scale"))
    n = 300  # 3 blocks of 128: the last one partly past n
    data = np.linspace(-1, 1, n, dtype=np.float32)
    x = b.alloc_device(4 * n)
    x.from_host(data)
    o1, o2 = b.alloc_device(4 * n), b.alloc_device(4 * n)
    for _ in range(3):
        plain(3, 128, (o1, x, n, 2.0))
        ik(3, 128, (o2, x, n, 2.0))
    want = np.where(data < 0, 0, data * 2 * 3).astype(np.float32)
    assert np.allclose(o2.to_host().view(np.float32), want)
    assert np.array_equal(o1.to_host(), o2.to_host())
    rec.close()
    assert len(_device_crumbs(rec, SlotStatus.BEGIN)) == 3
    assert len(_device_crumbs(rec, SlotStatus.COMPLETED)) == (3 if mode == "begin+end" else 0)


@pytest.mark.parametrize("mode", MODES)
def test_an_instrumented_call_is_one_launch_and_no_query(tmp_path: Path, mode: str) -> None:
    cb = CountingBackend(TwinBackend())
    rec = Recorder(tmp_path / "c.vrrl", device=cb, breadcrumbs=mode, capture_check="declared")
    try:
        k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
        ik = rec.instrument(k, opcode=rec.opcode("spin"))
        s = cb.new_stream()
        ik(1, 1, (0,), stream=s)
        for _ in range(3):
            cb.reset()
            ik(1, 1, (0,), stream=s)
            assert dict(cb.calls) == {"bound_launch": 1}
    finally:
        rec.close()


def test_a_launch_failure_of_an_instrumented_kernel_is_recorded_at_the_call(
    make_rec: Callable[..., Recorder],
) -> None:
    rec = make_rec()
    k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
    ik = rec.instrument(k, opcode=rec.opcode("spin"), words=(1, 2, 3, 4))
    with pytest.raises(TwinCudaError) as ei:
        ik(1, 2048, (0,))  # more threads per block than CUDA allows: refused at the call, not sticky
    assert ei.value.cuda_error_code == 1
    ik(1, 1, (0,))
    with pytest.raises(KernelArgumentError, match="cooperative"):
        ik(1, 1, (0,), enable_cooperative_groups=True)
    rec.close()
    bad = _device_crumbs(rec, SlotStatus.FAILED_AT_LAUNCH)
    assert bad["args"].tolist() == [[1, 2, 3, 4]]
    assert len(_device_crumbs(rec, SlotStatus.BEGIN)) == 1


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("template <typename T> __global__ void k(T* p) { p[0] = 1; }", "template"),
        ('__global__ void k(float* p) { p[0] = 1; }', 'not declared extern "C"'),
        ('extern "C" __global__ void other(float* p) { }', "no extern"),
        ('extern "C" __global__ void k(float* p) { asm volatile("exit;"); }', "exits threads"),
        ('extern "C" __global__ void k(float* p) { auto g = cooperative_groups::this_grid(); g.sync(); }',
         "synchronizes the grid"),
        ('extern "C" __global__ void k(float*) { }', "has no name"),
        ('struct S { int a; };\nextern "C" __global__ void k(S s) { }', "cannot pass by value"),
    ],
)  # fmt: skip
def test_what_cannot_be_instrumented_is_refused_with_the_reason(source: str, why: str) -> None:
    with pytest.raises(InstrumentError, match=r"rec\.wrap") as ei:
        instrument_source(source, "k")
    assert why in str(ei.value)


def test_the_rewrite_keeps_launch_bounds_comments_and_the_other_kernels() -> None:
    src = (
        '// extern "C" __global__ void k(int* decoy) { } in a comment\n'
        'extern "C" __global__ void helper(int* p) { p[0] = 1; }\n'
        'extern "C" __global__ void __launch_bounds__(256) k(int* p, const char* tag) {\n'
        '    const char* s = "}{";  // braces in a string\n'
        "    p[threadIdx.x] = s[0];\n"
        "}\n"
    )
    out = instrument_source(src, "k")
    sigs = parse_kernels(out)
    assert set(sigs) == {"helper", "k"}
    assert [p.name for p in sigs["k"].params] == ["p", "tag", *(n for _t, n in INSTRUMENT_PARAMS)]
    assert "__launch_bounds__(256) void k(" in out
    assert "k__vrrl_body(p, tag);" in out
    assert '"}{"' in out


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("vrrl_demo.cu", "vrrl_demo_axpy"),
        ("vrrl_demo.cu", "vrrl_demo_spin"),
        ("vrrl_demo.cu", "vrrl_demo_wait"),
        ("vrrl_pack.cu", "vrrl_read_globaltimer"),
        (None, "scale_some"),
        (None, "block_sum"),
    ],
)
def test_instrumented_kernels_compile_with_nvrtc(file: str | None, name: str, arch: str) -> None:
    src = {"scale_some": EARLY_RETURN, "block_sum": BLOCK_SUM}[name] if file is None else kernel_source(file)
    out = instrument_source(src, name)
    cubin = _nvrtc_compile(out, f"{name}.cu", arch)
    assert cubin[:4] == b"\x7fELF"
    assert name.encode() in cubin


def test_disabled_recorder_instruments_nothing_and_still_runs_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VRRL_DISABLE", "1")
    rec = Recorder(tmp_path / "off.vrrl", device="twin")
    src = tmp_path / "scale.cu"
    src.write_text(EARLY_RETURN)
    k = rec.instrument(src, "scale_some", opcode=1)
    assert [p.name for p in k.signature.params] == ["out", "in", "n", "k"]  # the kernel as written
    b = rec.backend
    x, o = b.alloc_device(16), b.alloc_device(16)
    x.from_host(np.array([1, 2, -1, 4], np.float32))
    k(1, 4, (o, x, 4, 1.0))
    assert o.to_host().view(np.float32).tolist() == [3, 6, 0, 12]
    handle = b.load("vrrl_demo.cu", "vrrl_demo_spin")
    assert rec.instrument(handle, opcode=1) is handle
    rec.close()
    assert not (tmp_path / "off.vrrl").exists()


@pytest.mark.parametrize("mode", MODES)
def test_shared_memory_and_barrier_kernels_run_instrumented_on_the_twin(
    make_rec: Callable[..., Recorder], mode: str
) -> None:
    """The twin runs each block's threads as fibers with a real barrier (kernels/twin_shim.h): a tree
    reduction in __shared__ memory gives numpy's block sums, instrumented or not."""
    rec = make_rec(breadcrumbs=mode)
    b = rec.backend
    plain = b.load(plain_file(BLOCK_SUM, "block_sum"), "block_sum")
    ik = rec.instrument(BLOCK_SUM, "block_sum", opcode=rec.opcode("sum"))
    n, blocks = 1000, 4
    data = np.random.default_rng(1).random(n, dtype=np.float32)
    x = b.alloc_device(4 * n)
    x.from_host(data.view(np.uint8))
    o1, o2 = b.alloc_device(4 * blocks), b.alloc_device(4 * blocks)
    for _ in range(2):
        plain(blocks, 256, (x, o1, n))
        ik(blocks, 256, (x, o2, n))
    want = [data[i * 256 : (i + 1) * 256].sum() for i in range(blocks)]
    assert np.allclose(o1.to_host().view(np.float32), want, rtol=1e-5)
    assert np.array_equal(o1.to_host(), o2.to_host())
    rec.close()
    assert len(_device_crumbs(rec, SlotStatus.BEGIN)) == 2
    assert len(_device_crumbs(rec, SlotStatus.COMPLETED)) == (2 if mode == "begin+end" else 0)
