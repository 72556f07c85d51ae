"""Device backends: ``cupy`` (a real CUDA device) and ``twin`` (the same kernels compiled for the CPU).

The twin is never substituted silently: ``get_backend("auto")`` picks it only
when no CUDA device is usable, and then warns (:class:`~vrrl_gpu.errors.VrrlWarning`).
The names live in one table, :data:`BACKEND_NAMES` (``_registry.py``).
"""

from __future__ import annotations

from vrrl_gpu.backends._base import (
    Backend,
    DeviceBuffer,
    DeviceCounter,
    HostAllocation,
    KernelHandle,
    RingPointers,
    StreamLike,
)
from vrrl_gpu.backends._registry import BACKEND_FACTORIES, BACKEND_NAMES, BackendName, get_backend
from vrrl_gpu.backends._twin import TwinBackend, TwinGraph, TwinStream
from vrrl_gpu.backends._twin_errors import TwinCudaError

__all__ = [
    "Backend",
    "HostAllocation",
    "DeviceCounter",
    "DeviceBuffer",
    "KernelHandle",
    "RingPointers",
    "StreamLike",
    "TwinBackend",
    "TwinStream",
    "TwinCudaError",
    "TwinGraph",
    "get_backend",
    "BACKEND_NAMES",
    "BACKEND_FACTORIES",
    "BackendName",
]
