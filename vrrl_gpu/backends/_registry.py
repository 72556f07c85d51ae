"""The one list of backend names: ``auto`` plus one factory per backend.

The recorder's options, the pytest plugin, the ``vrrl`` command and replay all
read :data:`BACKEND_NAMES` from here; the :data:`BackendName` literal is for
type checkers and is kept equal to the tuple by a test. Adding a backend: a
module beside this one, its factory in :data:`BACKEND_FACTORIES`, its name in
:data:`BackendName`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal

from vrrl_gpu.backends._base import Backend
from vrrl_gpu.backends._host import probe_host
from vrrl_gpu.errors import BackendUnavailableError, VrrlWarning

__all__ = ["BackendName", "BACKEND_FACTORIES", "BACKEND_NAMES", "AUTO", "get_backend"]

BackendName = Literal["auto", "cupy", "twin"]

#: The name that picks a backend at run time (see :func:`get_backend`).
AUTO = "auto"


def _cupy() -> Backend:
    # Lazy: only this factory imports the CuPy backend, so `import vrrl_gpu` never imports CuPy.
    from vrrl_gpu.backends._cupy import CupyBackend

    return CupyBackend()


def _twin() -> Backend:
    from vrrl_gpu.backends._twin import TwinBackend

    return TwinBackend()


#: Each backend's name and a callable that makes a new one (raises BackendUnavailableError when it cannot).
BACKEND_FACTORIES: Mapping[str, Callable[[], Backend]] = MappingProxyType({"cupy": _cupy, "twin": _twin})

#: Every name ``get_backend`` accepts: ``"auto"`` first, then the backends.
BACKEND_NAMES: tuple[str, ...] = (AUTO, *BACKEND_FACTORIES)


def get_backend(name: BackendName | str | Backend = AUTO) -> Backend:
    """A new backend. ``"auto"``: CuPy on a host with an NVIDIA device (its CUDA error if CUDA fails), else
    the twin, loudly. A :class:`Backend` instance is returned as it is (e.g. a ``CountingBackend``)."""
    if isinstance(name, Backend):
        return name
    factory = BACKEND_FACTORIES.get(name)
    if factory is not None:
        return factory()
    if name == AUTO:
        host = probe_host()
        if host.present:
            from vrrl_gpu.backends._cupy import cuda_start_error

            try:
                return _cupy()
            except BackendUnavailableError as e:
                # Re-raised with what the host showed: the reader must see a GPU is here, and no twin ran.
                cause = e.__cause__ if e.__cause__ is not None else e
                raise cuda_start_error(cause, host.describe()) from cause
        warnings.warn(
            f"vrrl_gpu: this host has no NVIDIA device ({host.describe()}), so device='auto' "
            "is running the CPU TWIN, NOT A GPU: records come from the kernel sources compiled for the CPU. "
            "Pass device='twin' to choose it explicitly, or install CuPy on a machine with an NVIDIA GPU.",
            VrrlWarning,
            stacklevel=2,
        )
        return _twin()
    raise BackendUnavailableError(f"expected a backend name in {BACKEND_NAMES}, got {name!r}")
