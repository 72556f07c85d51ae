"""The twin models CUDA graph capture (global mode) and stream destruction, so CI tests what the recorder
does under capture: captured launches do not run, replays run them, and calls a capture forbids fail with
900 and invalidate it (later launches and end_capture: 901). Verified on the twin only; the CUDA codes are
those of the runtime's documentation (cudaStreamBeginCapture, cudaStreamCaptureModeGlobal)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from vrrl_gpu.backends import TwinBackend, TwinCudaError, TwinGraph, TwinStream

N = 64


@pytest.fixture
def twin() -> Iterator[TwinBackend]:
    b = TwinBackend()
    yield b
    b.close()


def axpy(b: TwinBackend) -> tuple[Callable[[TwinStream], None], Callable[[], np.ndarray]]:
    k = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
    x, y = b.alloc_device(4 * N), b.alloc_device(4 * N)
    x.from_host(np.ones(N, np.float32))

    def launch(s: TwinStream) -> None:
        b.launch(k, 1, N, (y, x, 1.0, N, 0), stream=s)

    return launch, lambda: y.to_host().view(np.float32)


def test_captured_launches_run_only_when_the_graph_is_launched(twin: TwinBackend) -> None:
    launch, y = axpy(twin)
    s = twin.new_stream()
    s.begin_capture()
    assert s.is_capturing()
    assert twin.is_capturing(s)
    for _ in range(3):
        launch(s)
    assert s.pending == 0  # recorded into the graph, not enqueued
    g = s.end_capture()
    assert isinstance(g, TwinGraph)
    assert len(g) == 3
    assert not s.is_capturing()
    assert np.all(y() == 0)
    other = twin.new_stream()
    for _ in range(4):
        g.launch(other)
    g.launch(s)
    twin.synchronize()
    assert np.all(y() == 15)


@pytest.mark.parametrize(
    "forbidden",
    [
        lambda b, s: b.alloc_pinned(64),
        lambda b, s: b.alloc_device(64),
        lambda b, s: b.alloc_counter(),
        lambda b, s: b.register_host(np.zeros(4096, np.uint8)),
        lambda b, s: b.synchronize(),
        lambda b, s: b.synchronize(s),
        lambda b, s: b.calibrate(),
    ],
    ids=["alloc_pinned", "alloc_device", "alloc_counter", "register_host", "device_sync", "stream_sync",
         "calibrate"],
)  # fmt: skip
def test_a_forbidden_call_raises_900_and_invalidates_the_capture(
    twin: TwinBackend, forbidden: Callable[[TwinBackend, TwinStream], object]
) -> None:
    launch, _y = axpy(twin)
    s = twin.new_stream()
    s.begin_capture()
    launch(s)
    with pytest.raises(TwinCudaError) as e:
        forbidden(twin, s)
    assert e.value.cuda_error_code == 900
    assert not e.value.sticky
    assert twin.is_capturing(s)  # still capturing, but invalidated
    with pytest.raises(TwinCudaError) as e:
        s.is_capturing()  # CuPy's Stream.is_capturing raises for an invalidated capture
    assert e.value.cuda_error_code == 901
    with pytest.raises(TwinCudaError) as e:
        launch(s)
    assert e.value.cuda_error_code == 901
    with pytest.raises(TwinCudaError) as e:
        s.end_capture()
    assert e.value.cuda_error_code == 901
    # Not sticky: the context works, the same call is fine outside a capture.
    assert twin.sticky_error is None
    assert not twin.is_capturing(s)
    forbidden(twin, s)
    launch(s)
    twin.synchronize()


def test_query_of_the_capturing_stream_returns_900_and_other_streams_are_free(twin: TwinBackend) -> None:
    launch, y = axpy(twin)
    s, other = twin.new_stream(), twin.new_stream()
    s.begin_capture()
    launch(other)
    twin.synchronize(other)  # waiting on a stream that does not capture is allowed
    assert twin.stream_query(other) == 0
    assert twin.stream_query(s) == 900
    with pytest.raises(TwinCudaError, match="Invalidated"):
        s.end_capture()
    assert np.all(y() == 1)


def test_capture_misuse(twin: TwinBackend) -> None:
    s = twin.new_stream()
    with pytest.raises(TwinCudaError) as e:
        twin.current_stream().begin_capture()
    assert e.value.cuda_error_code == 900  # the legacy default stream cannot capture
    with pytest.raises(TwinCudaError) as e:
        s.end_capture()
    assert e.value.cuda_error_code == 400
    s.begin_capture()
    with pytest.raises(TwinCudaError) as e:
        s.begin_capture()
    assert e.value.cuda_error_code == 401
    assert len(s.end_capture()) == 0


def test_a_dropped_stream_finishes_its_work_then_its_thread_ends(twin: TwinBackend) -> None:
    launch, y = axpy(twin)
    before = threading.active_count()
    for _ in range(50):
        s = twin.new_stream()
        launch(s)
        del s
    gc.collect()
    twin.synchronize()  # waits for the work of destroyed streams too, like cudaDeviceSynchronize
    assert np.all(y() == 50)
    for t in threading.enumerate():
        if t.name.startswith("vrrl-twin-stream-0x"):
            t.join(10)
    assert threading.active_count() <= before + 1
