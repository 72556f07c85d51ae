"""``record_graph_replays``: every ``torch.cuda.CUDAGraph.replay()`` as a recorded, numbered graph replay.

Ops captured under :func:`record_ops` write device-claimed breadcrumbs in every replay; wrapping each replay
(:meth:`Recorder.graph_replay`) tells the replays apart, so a fault in one is attributed to the op that was
running and to that replay's number (the sidecar's ``graph_faults``; docs/pytorch.md).
"""

from __future__ import annotations

import functools
import threading
from types import TracebackType
from typing import Any

import torch

from vrrl_gpu.recorder._disabled import _DisabledRecorder
from vrrl_gpu.recorder._recorder import Recorder
from vrrl_gpu.torch._ops import _current_raw_stream, _Handle

__all__ = ["record_graph_replays", "GraphReplayHook"]

# One patch of the class at a time: hooks of two recorders would wrap each other's wrapper.
_patch_lock = threading.Lock()
_installed: GraphReplayHook | None = None


class GraphReplayHook:
    """What :func:`record_graph_replays` returns: while entered, ``CUDAGraph.replay`` is recorded.

    The class attribute is replaced while the block runs and put back exactly as it was after it (process
    wide: a replay in any thread is recorded). ``replays`` counts the replays recorded.
    """

    def __init__(self, rec: Recorder, *, stream: Any = None, name: str = "cuda_graph") -> None:
        self._rec = rec
        self._stream = stream
        self._name = name
        self._saved: Any = None
        self._natives: dict[int, Any] = {}
        self._owner = False
        self.replays = 0

    def __enter__(self) -> GraphReplayHook:
        global _installed
        if isinstance(self._rec, _DisabledRecorder):
            return self  # VRRL_DISABLE: nothing patched
        with _patch_lock:
            if _installed is not None:
                return self  # an outer hook records the replays already (each replay once)
            cls = torch.cuda.CUDAGraph
            original = cls.__dict__.get("replay")
            if original is None:
                raise TypeError("torch.cuda.CUDAGraph has no replay() of its own to record")
            self._saved = original

            @functools.wraps(original)
            def replay(graph: Any, *args: Any, **kwargs: Any) -> Any:
                return self._replay(original, graph, args, kwargs)

            setattr(cls, "replay", replay)  # noqa: B010  # a method of an untyped class, replaced
            _installed = self
            self._owner = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _installed
        if not self._owner:
            return
        with _patch_lock:
            setattr(torch.cuda.CUDAGraph, "replay", self._saved)  # noqa: B010  # exactly what was there
            _installed = None
            self._owner = False
        self._natives.clear()

    def _stream_now(self) -> Any:
        if self._stream is not None:
            return self._stream
        if self._rec.backend.name == "twin":
            return None  # the twin's current stream (CPU PyTorch has no CUDA streams)
        handle = _current_raw_stream(torch.device("cuda"))  # replay() launches on the current stream
        native = self._natives.get(handle)
        if native is None:
            native = self._natives[handle] = self._rec.backend.native_stream(_Handle(handle))
        return native

    def _replay(self, original: Any, graph: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._rec.graph_replay(graph, stream=self._stream_now(), name=self._name):
            out = original(graph, *args, **kwargs)
        self.replays += 1
        return out


def record_graph_replays(rec: Recorder, *, stream: Any = None, name: str = "cuda_graph") -> GraphReplayHook:
    """Record every ``torch.cuda.CUDAGraph.replay()`` made inside the block as a numbered graph replay
    (:meth:`Recorder.graph_replay`, on the current CUDA stream unless ``stream``). Capture the graph's ops
    under :func:`record_ops` so that a fault in a replay names the op as well as the replay.

    >>> with record_graph_replays(rec):   # doctest: +SKIP
    ...     for batch in batches:
    ...         g.replay()
    """
    return GraphReplayHook(rec, stream=stream, name=name)
