"""The recorder under ``VRRL_DISABLE=1``: real no-ops, nothing allocated."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from vrrl_gpu.backends import Backend, get_backend
from vrrl_gpu.capture._drain import DrainStatistics
from vrrl_gpu.errors import (
    RecorderClosedError,
)
from vrrl_gpu.recorder._nvtx import _identity
from vrrl_gpu.recorder._options import F, RecorderOptions, _merge_options
from vrrl_gpu.recorder._recorder import Recorder


class _DisabledRecorder(Recorder):
    """``VRRL_DISABLE=1``: launches still happen, nothing is recorded, nothing is allocated.

    ``backend`` is created on first use only, so kernels loaded through it still run.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "",
        *,
        options: RecorderOptions | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._cells = [0, 0, False]
        self._epoch = 0
        self._path = os.fspath(path)
        self._opts = _merge_options(options, kwargs)
        self._lazy_backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._lazy_backend is None:
            self._lazy_backend = get_backend(self._opts.device)
        return self._lazy_backend

    @property
    def poisoned(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False

    @property
    def clock(self) -> dict[str, Any]:
        return {"calibrations": 0}

    def recalibrate(self) -> int:
        return 0

    def statistics(self) -> DrainStatistics:
        return DrainStatistics(0, 0, 0, 0, 0, (), (), running=False, failed=False)

    def device_ring(self) -> dict[str, int]:
        raise RecorderClosedError(
            "recording is disabled (VRRL_DISABLE=1), so there is no device ring for a kernel to record into; "
            "unset VRRL_DISABLE to record"
        )

    def opcode(self, name: str) -> int:
        return 0

    def launch(
        self,
        kernel: Any,
        grid: Any,
        block: Any,
        args: Sequence[Any],
        *,
        opcode: int = 0,
        words: Sequence[int] | None = None,
        stream: Any = None,
        shared_mem: int = 0,
        outputs: Any = None,
    ) -> None:
        if stream is None:
            kernel(grid, block, tuple(args), shared_mem=shared_mem)
        else:
            kernel(grid, block, tuple(args), shared_mem=shared_mem, stream=stream)

    def wrap(self, kernel: Any, **_: Any) -> Any:
        return kernel

    def instrument(self, kernel: Any, name: str | None = None, **_: Any) -> Any:
        """The kernel itself, not rewritten (a source or a path is loaded as it is)."""
        if callable(kernel):
            return kernel
        from vrrl_gpu.recorder._instrument import kernel_source, plain_file

        source, kname = kernel_source(kernel, name)
        return self.backend.load(plain_file(source, kname), kname)

    def slot(self, opcode: int = 0, words: Sequence[int] | None = None, **_: Any) -> Any:
        return contextlib.nullcontext(0)

    def recorded(self, opcode: int = 0, words: Sequence[int] | None = None) -> Callable[[F], F]:
        return _identity

    def graph_replay(self, graph: Any, **_: Any) -> Any:
        return contextlib.nullcontext(0)

    def launch_graph(self, graph: Any, *, stream: Any = None, **_: Any) -> int:
        graph.launch(stream)  # the user's work still runs
        return 0

    def publish(self, *a: Any, **kw: Any) -> None:
        return None

    def check(self) -> None:
        return None

    def synchronize(self) -> None:
        if self._lazy_backend is not None:  # the user's kernels still ran on it
            self._lazy_backend.synchronize()

    def close(self) -> None:
        if self._lazy_backend is not None:
            self._lazy_backend.close()

    def __repr__(self) -> str:
        return "Recorder(disabled by VRRL_DISABLE)"
