"""Device backends: ``cupy`` (a real CUDA device) and ``twin`` (the same kernels compiled for the CPU).

The twin is never substituted silently: ``get_backend("auto")`` picks it only
when no CUDA device is usable, and then warns (:class:`~vrrl_gpu.errors.VrrlWarning`).
"""

from __future__ import annotations

import warnings
from typing import Literal

from vrrl_gpu.backends._base import (
    Backend,
    DeviceBuffer,
    DeviceCounter,
    HostAllocation,
    KernelHandle,
    RingPointers,
    StreamLike,
)
from vrrl_gpu.backends._twin import TwinBackend, TwinStream
from vrrl_gpu.errors import BackendUnavailableError, VrrlWarning

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
    "get_backend",
    "BACKEND_NAMES",
]

BACKEND_NAMES = ("auto", "cupy", "twin")


def get_backend(name: Literal["auto", "cupy", "twin"] | str = "auto") -> Backend:
    """A new backend. ``"auto"``: CuPy when it imports and sees a device, else the twin, loudly."""
    if name == "twin":
        return TwinBackend()
    if name == "cupy":
        from vrrl_gpu.backends._cupy import CupyBackend

        return CupyBackend()
    if name == "auto":
        from vrrl_gpu.backends._cupy import CupyBackend, cupy_device_count

        if cupy_device_count() > 0:
            return CupyBackend()
        warnings.warn(
            "vrrl_gpu: no CUDA device is usable here (no CuPy, no driver or no GPU), so device='auto' "
            "is running the CPU TWIN, NOT A GPU: records come from the kernel sources compiled for the CPU. "
            "Pass device='twin' to choose it explicitly, or install CuPy on a machine with an NVIDIA GPU.",
            VrrlWarning,
            stacklevel=2,
        )
        return TwinBackend()
    raise BackendUnavailableError(f"expected a backend name in {BACKEND_NAMES}, got {name!r}")
