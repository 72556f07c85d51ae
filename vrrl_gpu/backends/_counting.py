"""A backend wrapper that counts what the recorder asks of a device: launches and runtime queries.

>>> from vrrl_gpu.backends import CountingBackend, TwinBackend
>>> cb = CountingBackend(TwinBackend())                 # doctest: +SKIP
>>> rec = Recorder(path, device=cb)                     # doctest: +SKIP
>>> cb.reset(); rec.launch(k, 1, 1, args, opcode=op)    # doctest: +SKIP
>>> cb.launches, cb.queries                             # doctest: +SKIP
(2, 0)

Counts are per interface call, as the recorder makes them: a ``pack`` is one
launch even though the base class implements it with ``launch``. ``noop=True``
drops every launch (counted, never forwarded), so a benchmark can time the
recorder's own Python work with the device cost taken out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.backends._base import (
    Backend,
    BoundLauncher,
    DeviceBuffer,
    DeviceCounter,
    HostAllocation,
    KernelHandle,
    PackLauncher,
    RingPointers,
)

__all__ = ["CountingBackend", "LAUNCH_CALLS", "QUERY_CALLS"]

#: Interface calls that enqueue work on the device (one CUDA launch each).
LAUNCH_CALLS = frozenset({"launch", "pack", "pack_devseq", "bound_pack", "bound_launch"})
#: Interface calls that ask the runtime something (current device or stream, capture state, status, waits).
QUERY_CALLS = frozenset(
    {"check_device", "current_stream", "launch_stream", "is_capturing", "stream_query", "synchronize"}
)


class CountingBackend(Backend):
    """Forwards every call to ``inner`` and counts it by method name in :attr:`calls`."""

    def __init__(self, inner: Backend, *, noop: bool = False) -> None:
        self.inner = inner
        self.noop = noop
        self.calls: Counter[str] = Counter()
        self.name = inner.name
        self.is_simulated = inner.is_simulated

    # ---- the counts ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every count so far."""
        self.calls.clear()

    @property
    def launches(self) -> int:
        """Calls that enqueue a kernel (launch, pack, pack_devseq, a bound pack's call)."""
        return sum(n for k, n in self.calls.items() if k in LAUNCH_CALLS)

    @property
    def queries(self) -> int:
        """Calls that ask the runtime: current device or stream, capture state, stream status, waits."""
        return sum(n for k, n in self.calls.items() if k in QUERY_CALLS)

    def _count(self, name: str) -> None:
        self.calls[name] += 1

    # ---- forwarded ------------------------------------------------------------------------------

    def device_info(self) -> dict[str, Any]:
        self._count("device_info")
        return self.inner.device_info()

    def alloc_pinned(self, nbytes: int) -> HostAllocation:
        self._count("alloc_pinned")
        return self.inner.alloc_pinned(nbytes)

    def register_host(self, buf: npt.NDArray[np.uint8]) -> HostAllocation:
        self._count("register_host")
        return self.inner.register_host(buf)

    def alloc_counter(self, slots: int = 0) -> DeviceCounter:
        self._count("alloc_counter")
        return self.inner.alloc_counter(slots)

    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        self._count("alloc_device")
        return self.inner.alloc_device(nbytes)

    def load(self, source_file: str | Path, kernel_name: str) -> KernelHandle:
        self._count("load")
        return self.inner.load(source_file, kernel_name)

    def launch(
        self,
        kernel: Any,
        grid: int | Sequence[int],
        block: int | Sequence[int],
        args: Sequence[object],
        *,
        stream: Any = None,
        shared_mem: int = 0,
    ) -> None:
        self.calls["launch"] += 1
        if not self.noop:
            self.inner.launch(kernel, grid, block, args, stream=stream, shared_mem=shared_mem)

    def pack(self, ring: RingPointers, seq: int, **kw: Any) -> None:
        self._count("pack")
        if not self.noop:
            self.inner.pack(ring, seq, **kw)

    def pack_devseq(self, ring: RingPointers, counter: DeviceCounter, **kw: Any) -> None:
        self._count("pack_devseq")
        if not self.noop:
            self.inner.pack_devseq(ring, counter, **kw)

    def bind_pack(self, ring: RingPointers, *, stream: Any, tenant_id: int, ts_offset: int) -> PackLauncher:
        self._count("bind_pack")
        bound = self.inner.bind_pack(ring, stream=stream, tenant_id=tenant_id, ts_offset=ts_offset)
        calls = self.calls
        noop = self.noop

        def counted(
            seq: int, slot_idx: int, opcode: int, words: Sequence[int], epoch: int, status: int
        ) -> None:
            calls["bound_pack"] += 1
            if not noop:
                bound(seq, slot_idx, opcode, words, epoch, status)

        return counted

    def bind_launch(self, kernel: KernelHandle, own: int, fixed: Sequence[int]) -> BoundLauncher:
        self._count("bind_launch")
        bound = self.inner.bind_launch(kernel, own, fixed)
        calls = self.calls
        noop = self.noop

        def counted(
            grid: Any, block: Any, args: Sequence[object], varying: Sequence[int], stream: Any, shm: int
        ) -> None:
            calls["bound_launch"] += 1
            if not noop:
                bound(grid, block, args, varying, stream, shm)

        return counted

    def current_stream(self) -> Any:
        self._count("current_stream")
        return self.inner.current_stream()

    def launch_stream(self) -> Any:
        self._count("launch_stream")
        return self.inner.launch_stream()

    def new_stream(self) -> Any:
        self._count("new_stream")
        return self.inner.new_stream()

    def stream_query(self, stream: Any = None) -> int:
        self._count("stream_query")
        return self.inner.stream_query(stream)

    def synchronize(self, stream: Any = None) -> None:
        self._count("synchronize")
        self.inner.synchronize(stream)

    def calibrate(self) -> int:
        self._count("calibrate")
        return self.inner.calibrate()

    def error_for(self, code: int) -> Exception:
        return self.inner.error_for(code)

    def stream_key(self, stream: Any) -> int:
        self._count("stream_key")
        return self.inner.stream_key(stream)

    def check_device(self) -> None:
        self._count("check_device")
        self.inner.check_device()

    def is_capturing(self, stream: Any) -> bool:
        self._count("is_capturing")
        return self.inner.is_capturing(stream)

    def close(self) -> None:
        self._count("close")
        self.inner.close()

    def abandon(self) -> None:
        self._count("abandon")
        self.inner.abandon()

    def __repr__(self) -> str:
        return f"CountingBackend({self.inner!r}, launches={self.launches}, queries={self.queries})"
