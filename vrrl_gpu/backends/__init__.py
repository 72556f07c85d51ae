"""Device backends: ``cupy`` (a real CUDA device) and ``twin`` (the same kernels compiled for the CPU).

The twin is never substituted silently: ``get_backend("auto")`` picks it only
when the host has no NVIDIA device at all (no ``/dev/nvidia*`` node, no NVML
device), and then warns (:class:`~vrrl_gpu.errors.VrrlWarning`). On a host
with a device, a CUDA that does not start raises
:class:`~vrrl_gpu.errors.CudaUnavailableError` (the code and the fix).
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
from vrrl_gpu.backends._counting import CountingBackend
from vrrl_gpu.backends._registry import BACKEND_FACTORIES, BACKEND_NAMES, BackendName, get_backend
from vrrl_gpu.backends._twin import TwinBackend, TwinGraph, TwinStream
from vrrl_gpu.backends._twin_errors import TwinCudaError

__all__ = [
    "Backend",
    "CountingBackend",
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
