"""A replay registry for the kernels of ``vrrl demo`` (kernels/vrrl_demo.cu): crash, replay, minimise.

Walk-through (``--device twin`` runs the CUDA kernels on the CPU twin; drop it on a GPU machine)::

    vrrl demo crash.vrrl --device twin --launches 200 --fault-at 150
    vrrl replay crash.vrrl --registry examples/replay_registry.py:REGISTRY --device twin
    vrrl replay crash.vrrl --registry examples/replay_registry.py:REGISTRY --device twin \
        --minimize -o small.vrrl

``vrrl demo`` records every launch of ``vrrl_demo_axpy`` as opcode ``axpy``
with words ``(i, n, fault_kind, 0)``; launch ``--fault-at`` gets a non-zero
``fault_kind`` and faults on the device (700 for an illegal address). An
allocation that cannot succeed (``--fault-kind oom``) is recorded as opcode
``alloc``. A registry maps those opcode names to callables
``fn(words, epoch, tenant_id, slot_idx)`` that perform the same launch again
from nothing but the recorded words.

The callables launch on the replay's own Recorder backend
(:func:`vrrl_gpu.current_recorder`), so an asynchronous fault is seen and
attributed by the replay's recorder and lands in the replay log. Without a
recorder (``--device none``) they make a backend of their own and
synchronise after each launch themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vrrl_gpu import get_backend
from vrrl_gpu.reproduce import current_recorder

# Module state lives only as long as one replay trial: each trial is a fresh process.
_STATE: dict[Any, Any] = {}

BLOCK = 256


def _backend() -> Any:
    rec = current_recorder()
    if rec is not None:
        return rec.backend
    if "backend" not in _STATE:
        _STATE["backend"] = get_backend("auto")
    return _STATE["backend"]


def _buffers(backend: Any, n: int) -> tuple[Any, Any]:
    """The demo's x and y vectors (n float32 each), allocated once per trial and size; x as the demo makes
    it (1, 2, ..., 7, 1, ...), so the outputs, and their digests, are the recorded run's."""
    key = ("xy", id(backend), n)
    if key not in _STATE:
        x, y = backend.alloc_device(4 * n), backend.alloc_device(4 * n)
        x.from_host((np.arange(n, dtype=np.float32) % 7 + 1).astype(np.float32).view(np.uint8))
        _STATE[key] = (x, y)
    return _STATE[key]  # type: ignore[no-any-return]


def _kernel(backend: Any) -> Any:
    key = ("axpy", id(backend))
    if key not in _STATE:
        _STATE[key] = backend.load("vrrl_demo.cu", "vrrl_demo_axpy")
    return _STATE[key]


def axpy(words: tuple[int, int, int, int], epoch: int, tenant_id: int, slot_idx: int) -> Any:
    """One ``vrrl_demo_axpy`` launch: y += 1.0 * x over n elements; ``fault_kind`` as recorded."""
    _i, n, fault_kind, _ = words
    backend = _backend()
    x, y = _buffers(backend, n)
    backend.launch(_kernel(backend), (n + BLOCK - 1) // BLOCK, BLOCK, (y, x, 1.0, n, fault_kind))
    if current_recorder() is None:
        backend.synchronize()  # no recorder to synchronise after the launch: surface a fault here
    return y  # digested after the launch (vrrl replay --compare-digests; the demo's --digests records them)


def alloc(words: tuple[int, int, int, int], epoch: int, tenant_id: int, slot_idx: int) -> Any:
    """The demo's impossible allocation (``--fault-kind oom``): fails at the call."""
    _backend().alloc_device(1 << 50)


REGISTRY = {"axpy": axpy, "alloc": alloc}
