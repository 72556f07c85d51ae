"""Attribution of instrumented launches (rec.instrument): a fault in an instrumented kernel names that launch,
from the device-sequenced ring its kernel wrote its BEGIN into, whether the fault shows at a synchronize or at
the next launch. With begin+end, a fault after the instrumented kernels finished blames none of them."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.recorder import log_records, recorders, with_status
from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu.backends import TwinCudaError

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")

MAYBE_TRAP = """
extern "C" __global__ void maybe_trap(float* out, unsigned int n, unsigned int bad, unsigned int tag) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { out[i] = (float)i; }
    if (bad != 0u && i == n - 1) { __trap(); }
}
"""
MODES = ("begin", "begin+end")
BAD = 5  # the launch (of 0 .. 5) that traps; its words are (k, 0, 0, 0)


@pytest.fixture
def make_rec(tmp_path: Path) -> Iterator[Callable[..., Recorder]]:
    with recorders(tmp_path, capacity=4096, staging_slots=256) as make:
        yield make


def _setup(rec: Recorder, tmp_path: Path) -> tuple[Callable[..., None], object, object]:
    src = tmp_path / "maybe_trap.cu"
    src.write_text(MAYBE_TRAP)
    ik = rec.instrument(src, "maybe_trap", opcode=rec.opcode("maybe_trap"), words=lambda a: (a[3], 0, 0, 0))
    s = rec.backend.new_stream()
    out = rec.backend.alloc_device(4 * 100)
    return lambda k: ik(2, 64, (out, 100, int(k == BAD), k), stream=s), s, out  # type: ignore[misc]


def _faulted(rec: Recorder) -> list[tuple[int, list[int]]]:
    recs = log_records(rec.path)
    return [(int(r["slot_idx"]), [int(x) for x in r["args"]]) for r in with_status(recs, SlotStatus.FAULTED)]


def _begin_slot_of(rec: Recorder, k: int) -> int:
    begins = with_status(log_records(rec.path), SlotStatus.BEGIN)
    (slot,) = [int(r["slot_idx"]) for r in begins if int(r["args"][0]) == k]
    return slot


@pytest.mark.parametrize("mode", MODES)
def test_a_fault_in_an_instrumented_kernel_names_that_launch_at_synchronize(
    make_rec: Callable[..., Recorder], tmp_path: Path, mode: str
) -> None:
    rec = make_rec(breadcrumbs=mode)
    launch, _s, _out = _setup(rec, tmp_path)
    for k in range(BAD + 1):
        launch(k)
    with pytest.raises(TwinCudaError) as e:
        rec.synchronize()
    assert e.value.cuda_error_code == 719
    rec.close()  # poisoned: closes without raising again
    assert _faulted(rec) == [(_begin_slot_of(rec, BAD), [BAD, 0, 0, 0])]


@pytest.mark.parametrize("mode", MODES)
def test_a_fault_seen_at_the_next_instrumented_call_blames_the_faulting_launch_not_the_call(
    make_rec: Callable[..., Recorder], tmp_path: Path, mode: str
) -> None:
    rec = make_rec(breadcrumbs=mode)
    launch, s, _out = _setup(rec, tmp_path)
    for k in range(BAD + 1):
        launch(k)
    deadline = time.monotonic() + 30
    while rec.backend.stream_query(s) == 600 and time.monotonic() < deadline:
        time.sleep(0.001)  # the trap has run once the stream is no longer busy
    with pytest.raises(TwinCudaError):
        launch(BAD + 1)
    rec.close()  # poisoned: closes without raising again
    assert _faulted(rec) == [(_begin_slot_of(rec, BAD), [BAD, 0, 0, 0])]
    failed = with_status(log_records(rec.path), SlotStatus.FAILED_AT_LAUNCH)
    assert len(failed) == 0  # the call that saw the error is not its culprit


def test_with_begin_end_a_fault_after_the_instrumented_kernels_finished_blames_none_of_them(
    make_rec: Callable[..., Recorder], tmp_path: Path
) -> None:
    rec = make_rec(breadcrumbs="begin+end")
    launch, s, out = _setup(rec, tmp_path)
    for k in range(3):
        launch(k)
    rec.synchronize()  # every instrumented launch wrote its end record
    plain = rec.backend.load(tmp_path / "maybe_trap.cu", "maybe_trap")
    rec.backend.launch(plain, 2, 64, (out, 100, 1, 0), stream=s)  # not recorded
    with pytest.raises(TwinCudaError):
        rec.synchronize()
    rec.close()  # poisoned: closes without raising again
    assert _faulted(rec) == []
    assert len(with_status(log_records(rec.path), SlotStatus.COMPLETED)) == 3
