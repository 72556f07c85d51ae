"""Recorded launches under CUDA graph capture: nothing allocates, synchronizes or zeroes inside the capture,
and every replay of the graph claims its own device sequences (nothing lost, nothing reused).

The twin models capture as CUDA does (tests/backends/test_twin_capture.py), so on the twin these tests
fail if the recorder makes a call the capture forbids. The ``cupy`` cases run the same on a GPU (-m gpu).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.recorder import Axpy, N, log_records, recorders, with_status
from vrrl_gpu import MetaOpcode, Recorder, SlotStatus
from vrrl_gpu.errors import CaptureError
from vrrl_gpu.format import META_OPCODE_BASE

DEVICES = ("twin", pytest.param("cupy", marks=pytest.mark.gpu))


@pytest.fixture
def make_rec(tmp_path: Path) -> Iterator[Callable[..., Recorder]]:
    with recorders(tmp_path, capacity=8192, staging_slots=256) as make:
        yield make


def ones(w: Axpy) -> None:
    w.x.from_host(np.ones(N, np.float32))
    w.y.from_host(np.zeros(N, np.float32))


def captured_sequence(rec: Recorder, w: Axpy, stream: Any, k: int) -> Any:
    stream.begin_capture()
    assert rec.backend.is_capturing(stream)
    for i in range(k):
        w.launch(i, stream=stream, tag=7)
    return stream.end_capture()


def device_claimed(path: str | Path, status: SlotStatus = SlotStatus.BEGIN) -> Any:
    """The axpy records that came through the device-sequenced ring (their slot_idx is the claimed seq)."""
    recs = with_status(log_records(path), status)
    return recs[(recs["args"][:, 2] == 7) & (recs["opcode"] < META_OPCODE_BASE)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_replays_claim_distinct_device_sequences_and_lose_nothing(
    make_rec: Callable[..., Recorder], device: str, mode: str
) -> None:
    rec = make_rec(device, breadcrumbs=mode)
    w = Axpy.on(rec)
    ones(w)
    stream = rec.backend.new_stream()  # first seen by the recorder inside the capture: no ring of its own
    k, replays = 5, 40
    graph = captured_sequence(rec, w, stream, k)
    assert not rec.backend.is_capturing(stream)
    graph.upload(stream)
    for _ in range(replays):
        graph.launch(stream)
    rec.synchronize()
    y = w.y.to_host().view(np.float32)
    rec.close()

    assert np.all(y == k * replays)  # every replay ran every captured kernel
    begins = device_claimed(rec.path)
    assert len(begins) == k * replays
    # One sequence per breadcrumb per replay, claimed on the device: all distinct, none skipped.
    ends = device_claimed(rec.path, SlotStatus.COMPLETED) if mode == "begin+end" else begins[:0]
    claimed = sorted(begins["slot_idx"].tolist() + ends["slot_idx"].tolist())
    per_launch = 2 if mode == "begin+end" else 1
    assert claimed == list(range(k * replays * per_launch))
    assert Counter(begins["args"][:, 0].tolist()) == dict.fromkeys(range(k), replays)
    if mode == "begin+end":
        assert Counter(ends["args"][:, 0].tolist()) == dict.fromkeys(range(k), replays)
    recs = log_records(rec.path)
    assert not np.any(recs["opcode"] == int(MetaOpcode.GAP))
    assert rec.statistics().dropped == 0


@pytest.mark.parametrize("device", DEVICES)
def test_a_stream_with_a_ring_captured_later_and_check_sync_during_the_capture(
    make_rec: Callable[..., Recorder], device: str
) -> None:
    rec = make_rec(device)
    w = Axpy.on(rec)
    ones(w)
    stream = rec.backend.new_stream()
    w.launch(100, stream=stream)  # host-sequenced: the stream has its ring now
    rec.synchronize()
    stream.begin_capture()
    w.launch(0, stream=stream, tag=7)
    rec.check()  # neither may query or wait on the capturing stream (that would invalidate the capture)
    rec.synchronize()
    w.launch(1, stream=stream, tag=7)
    graph = stream.end_capture()
    for _ in range(3):
        graph.launch(stream)
    rec.synchronize()
    y = w.y.to_host().view(np.float32)
    rec.close()
    assert np.all(y == 1 + 2 * 3)
    assert sorted(device_claimed(rec.path)["slot_idx"].tolist()) == list(range(6))
    host_seq = with_status(log_records(rec.path), SlotStatus.BEGIN)
    assert host_seq[host_seq["args"][:, 0] == 100]["slot_idx"].tolist() == [0]


@pytest.mark.parametrize("device", DEVICES)
def test_without_a_device_ring_a_captured_launch_is_refused_and_the_capture_survives(
    make_rec: Callable[..., Recorder], device: str
) -> None:
    rec = make_rec(device, capture=False)
    w = Axpy.on(rec)
    stream = rec.backend.new_stream()
    stream.begin_capture()
    with pytest.raises(CaptureError, match="capture=True"):
        w.launch(0, stream=stream)
    w.kernel(1, N, (w.y, w.x, 1.0, N, 0), stream=stream)  # the user's own launch still captures
    graph = stream.end_capture()  # not invalidated: the recorder made no forbidden call
    graph.launch(stream)
    rec.synchronize()
    assert rec.device_ring()["mask"] > 0  # made on demand, outside any capture
