"""Is there an NVIDIA device on this host at all? Asked without CUDA, so a broken CUDA cannot answer "no".

``device="auto"`` may pick the CPU twin only when this says no device: device
nodes (``/dev/nvidia*``) and NVML (when ``pynvml`` imports) are both asked,
because CUDA itself fails in the very cases we must not hide (a driver older
than the runtime, a stopped fabric manager).
"""

from __future__ import annotations

import contextlib
import glob
from dataclasses import dataclass

__all__ = ["HostDevices", "probe_host", "device_nodes", "nvml_device_count"]

#: Where the NVIDIA kernel driver puts its device nodes (a container gets them from the runtime).
DEVICE_NODE_GLOB = "/dev/nvidia*"


@dataclass(frozen=True)
class HostDevices:
    """What the host shows of NVIDIA hardware: device node paths, NVML's count (None: NVML not asked)."""

    nodes: tuple[str, ...]
    nvml_count: int | None
    nvml_note: str

    @property
    def present(self) -> bool:
        """True when any sign of an NVIDIA device is here."""
        return bool(self.nodes) or bool(self.nvml_count)

    def describe(self) -> str:
        """One phrase: what was seen."""
        nodes = ", ".join(self.nodes[:4]) + (" ..." if len(self.nodes) > 4 else "") if self.nodes else "none"
        nvml = self.nvml_note if self.nvml_count is None else f"{self.nvml_count} device(s)"
        return f"device nodes: {nodes}; NVML: {nvml}"


def device_nodes() -> tuple[str, ...]:
    """The ``/dev/nvidia*`` paths, sorted."""
    return tuple(sorted(glob.glob(DEVICE_NODE_GLOB)))


def nvml_device_count() -> tuple[int | None, str]:
    """(count, note): NVML's device count, or (None, why) when pynvml is missing or NVML does not start."""
    try:
        import pynvml
    except ImportError:
        return None, "pynvml not installed"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA driver, so no device
        return None, f"nvmlInit failed ({e})"
    try:
        return int(pynvml.nvmlDeviceGetCount()), "ok"
    except Exception as e:  # NVML started but cannot count: report it, and count the host as having one
        return 1, f"nvmlDeviceGetCount failed ({e})"
    finally:
        # Shutting down a library we only queried: a failure there changes nothing we report.
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def probe_host() -> HostDevices:
    """Device nodes and NVML, asked now (cheap: a glob and, with pynvml, one NVML init)."""
    count, note = nvml_device_count()
    return HostDevices(device_nodes(), count, note)
