"""Streams of other libraries (the ``__cuda_stream__`` protocol of cuda.core, Numba, PyTorch) on the twin:
a wrapper of one of the backend's handles records on that stream and shares its ring."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.recorder import Axpy, log_records
from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu.analysis._streams import streams_of
from vrrl_gpu.backends._twin_errors import TwinCudaError
from vrrl_gpu.errors import KernelArgumentError

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")


class ForeignStream:
    """What cuda.core's and Numba's streams offer: ``__cuda_stream__() -> (version, handle)``, no ``ptr``."""

    def __init__(self, handle: int, version: int = 0) -> None:
        self.handle = handle
        self.version = version

    def __cuda_stream__(self) -> tuple[int, int]:
        return (self.version, self.handle)


def test_a_cuda_stream_protocol_object_records_on_the_stream_it_names(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    with Recorder(path, device="twin", breadcrumbs="begin+end", capacity=1024) as rec:
        w = Axpy.on(rec)
        own = rec.backend.new_stream()
        foreign = ForeignStream(own.ptr)
        w.launch(0, stream=own)
        w.launch(1, stream=foreign)
        w.launch(2, stream=ForeignStream(own.ptr))  # another wrapper of the same handle: the same ring
        w.launch(3)  # the default stream
        with rec.slot(rec.opcode("opaque"), (4, 0, 0, 0), stream=foreign):
            pass
        assert len(rec._streams) == 2
        rec.synchronize()
    recs = log_records(path)
    begins = recs[recs["slot_status"] == SlotStatus.BEGIN]
    begins = begins[np.argsort(begins["slot_idx"], kind="stable")]  # rings drain in any order between streams
    assert begins["args"][:, 0].tolist() == [0, 1, 2, 3, 4]
    got = streams_of(path, begins)
    assert got.tolist() == [0, 0, 0, 1, 0]
    ends = recs[recs["slot_status"] == SlotStatus.COMPLETED]
    assert np.array_equal(np.sort(ends["slot_idx"]), np.sort(begins["slot_idx"]))


def test_a_fault_on_a_foreign_stream_is_attributed_to_its_launch(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    rec = Recorder(path, device="twin", capacity=1024)
    w = Axpy.on(rec)
    own = rec.backend.new_stream()
    foreign = ForeignStream(own.ptr)
    w.launch(0, stream=foreign)
    w.launch(1, stream=foreign, fault=1)
    with pytest.raises(TwinCudaError) as info:
        rec.synchronize()
    assert info.value.cuda_error_code == 700
    rec.close()
    recs = log_records(path)
    faulted = recs[recs["slot_status"] == SlotStatus.FAULTED]
    assert faulted["args"][:, 0].tolist() == [1]
    assert faulted["backend_error_code"].tolist() == [700]


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (ForeignStream(0xDEAD0), TwinCudaError),  # a handle that is no stream: CUDA's 400
        (ForeignStream(0x10, version=1), KernelArgumentError),  # a protocol version nobody defined
    ],
)
def test_a_foreign_stream_that_names_nothing_is_refused_at_the_call(
    tmp_path: Path, stream: Any, error: type[BaseException]
) -> None:
    with Recorder(tmp_path / "run.vrrl", device="twin", capacity=1024) as rec:
        w = Axpy.on(rec)
        with pytest.raises(error):
            w.launch(0, stream=stream)
        w.launch(1)  # not sticky: the recorder goes on
        rec.synchronize()
