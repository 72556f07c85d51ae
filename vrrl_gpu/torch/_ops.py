"""``record_ops``: a breadcrumb for every aten op, through a ``TorchDispatchMode`` (docs/pytorch.md)."""

from __future__ import annotations

import itertools
from collections.abc import Collection
from types import TracebackType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vrrl_gpu.recorder._disabled import _DisabledRecorder
from vrrl_gpu.recorder._recorder import Recorder
from vrrl_gpu.torch._signatures import DTYPE_CODES, NO_TENSOR, OpTable, table_of

__all__ = ["record_ops", "RecordOps", "FLAG_INPLACE", "FLAG_OUT"]

_U32 = 0xFFFFFFFF
#: Bits of the flags byte (``words[2] >> 24``).
FLAG_INPLACE = 1  # the op writes its first argument (``aten::add_``)
FLAG_OUT = 2  # the op was given ``out=``
_Tensor = torch.Tensor


class _Handle:
    """A CUDA stream handle with the stream protocol, for :meth:`Backend.native_stream`."""

    __slots__ = ("handle",)

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)


def _current_raw_stream(device: torch.device) -> int:
    index: int | None = device.index  # None for a bare "cuda" device: the current one
    idx = torch.cuda.current_device() if index is None else index
    raw: Any = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # the handle, without a Stream object
    if raw is not None:
        return int(raw(idx))
    return int(torch.cuda.current_stream(idx).cuda_stream)


class RecordOps(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's mode base is untyped
    """What :func:`record_ops` returns: enter it with ``with``; ``calls`` counts the ops recorded."""

    def __init__(
        self,
        rec: Recorder,
        *,
        devices: Collection[str] | None = None,
        stream: Any = None,
        signatures: bool = True,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._rec = rec
        self._disabled = isinstance(rec, _DisabledRecorder)
        if devices is None:
            gpu = self._disabled or rec.backend.name != "twin"
            devices = ("cuda",) if gpu else ()
        if isinstance(devices, str):
            devices = (devices,)  # "cuda", not the letters of it
        #: Device types recorded; empty: every op, whatever its tensors' device (the twin's default).
        self.devices = frozenset(devices)
        self._stream = stream
        self._signatures = signatures
        self._table: OpTable | None = None if self._disabled else table_of(rec)
        self._natives: dict[int, Any] = {}
        self._counter = itertools.count()
        self._active = False
        #: How many ops this mode recorded.
        self.calls = 0

    def __enter__(self) -> RecordOps:
        if self._table is not None:
            self._active = self._table.enter()  # nested on the same recorder: the outer one records
        super().__enter__()  # type: ignore[no-untyped-call]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(exc_type, exc, tb)  # type: ignore[no-untyped-call]
        if self._table is not None:
            self._table.leave()
            self._active = False
            self._table.flush()
        self._natives.clear()  # the streams' wrappers go: their rings retire once drained

    def _stream_for(self, t: _Tensor) -> Any:
        """The backend's object for the current CUDA stream of ``t``'s device (made once per handle)."""
        handle = _current_raw_stream(t.device)
        native = self._natives.get(handle)
        if native is None:
            native = self._natives[handle] = self._rec.backend.native_stream(_Handle(handle))
        return native

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if kwargs is None:
            kwargs = {}
        rec = self._rec
        if not self._active or rec._poison is not None:
            # A poisoned recorder: the op's own CUDA error, not ours, is what the caller must see.
            return func(*args, **kwargs)
        # The per-op path: every Python call here costs about as much as the breadcrumb itself.
        first: _Tensor | None = None
        n = 0
        for a in (args, kwargs.values()) if kwargs else (args,):
            for v in a:
                if isinstance(v, _Tensor):
                    n += 1
                    if first is None:
                        first = v
                elif type(v) is list or type(v) is tuple:
                    for x in v:
                        if isinstance(x, _Tensor):
                            n += 1
                            if first is None:
                                first = x
        if self.devices:
            dev = first.device.type if first is not None else _factory_device(kwargs)
            if dev not in self.devices:
                return func(*args, **kwargs)
        table = self._table
        assert table is not None
        got = table.opcodes.get(func)
        opcode, inplace = got if got is not None else table.opcode(func)
        flags = (FLAG_INPLACE if inplace else 0) | (FLAG_OUT if "out" in kwargs else 0)
        stream = self._stream
        if first is not None:
            numel = first.numel()
            w1 = numel if numel <= _U32 else _U32
            w2 = DTYPE_CODES.get(first.dtype, 0) | min(first.dim(), 255) << 8
            if stream is None and first.is_cuda:
                stream = self._stream_for(first)
        else:
            w1, w2 = 0, NO_TENSOR
        w2 |= min(n, 255) << 16 | flags << 24
        sig = table.signature(func, args, kwargs) if self._signatures else 0
        self.calls += 1
        with rec.slot(opcode, (next(self._counter) & _U32, w1, w2, sig), stream=stream):
            return func(*args, **kwargs)


def _factory_device(kwargs: dict[str, Any]) -> str:
    d = kwargs.get("device")
    if isinstance(d, torch.device):
        return d.type
    return "cpu" if d is None else str(d).split(":", 1)[0]


def record_ops(
    rec: Recorder,
    *,
    devices: Collection[str] | None = None,
    stream: Any = None,
    signatures: bool = True,
) -> RecordOps:
    """A breadcrumb for every aten op run inside ``with record_ops(rec):`` (and its end with ``begin+end``).

    ``devices``: the device types whose ops are recorded (an op's device is its first tensor's, a factory's
    its ``device=``); default ``("cuda",)`` on a GPU backend, every op on the twin. ``stream``: the
    stream of every breadcrumb; default the current CUDA stream of the op's device (on the twin: the
    backend's current stream). ``signatures``: keep each distinct call's argument shapes, dtypes and
    scalars in the sidecar (what ``op_registry`` replays); False saves the per-op look-up.
    The words of each breadcrumb: docs/pytorch.md. An op that raises is recorded as FAILED_AT_LAUNCH
    and the exception propagates unchanged. A mode nested in another on the same recorder records nothing
    (each op once).

    >>> with record_ops(rec):   # doctest: +SKIP
    ...     loss = model(x).sum()
    """
    return RecordOps(rec, devices=devices, stream=stream, signatures=signatures)

