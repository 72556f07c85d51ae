"""Device backends: ``cupy`` (a real CUDA device) and ``twin`` (the same kernels compiled for the CPU).

The twin is never substituted silently: ``get_backend("auto")`` picks it only
when the host has no NVIDIA device at all (no ``/dev/nvidia*`` node, no NVML
device), and then warns (:class:`~vrrl_gpu.errors.VrrlWarning`). On a host
with a device, a CUDA that does not start raises
:class:`~vrrl_gpu.errors.CudaUnavailableError` (the code and the fix).
The names live in one table, :data:`BACKEND_NAMES` (``_registry.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each lazy name of ``__all__`` is defined (a module's own name for a subpackage): each is imported on
#: first use (PEP 562), so that importing the package costs only the parts a program uses.
_HOMES: dict[str, str] = {
    name: home
    for home, names in (
        (
            "vrrl_gpu.backends._base",
            (
                "Backend",
                "DeviceBuffer",
                "DeviceCounter",
                "HostAllocation",
                "KernelHandle",
                "RingPointers",
                "StreamLike",
            ),
        ),
        ("vrrl_gpu.backends._counting", ("CountingBackend",)),
        ("vrrl_gpu.backends._registry", ("BACKEND_FACTORIES", "BACKEND_NAMES", "BackendName", "get_backend")),
        ("vrrl_gpu.backends._twin", ("TwinBackend", "TwinGraph", "TwinStream")),
        ("vrrl_gpu.backends._twin_errors", ("TwinCudaError",)),
    )
    for name in names
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
