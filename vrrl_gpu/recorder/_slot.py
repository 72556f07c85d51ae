"""``rec.slot(...)``: the context manager around an opaque launch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vrrl_gpu.recorder._nvtx import _NVTX_DOMAIN
from vrrl_gpu.recorder._state import _words

if TYPE_CHECKING:
    from vrrl_gpu.recorder._recorder import Recorder


class _Slot:
    """``rec.slot(...)``: a class, not a generator context manager, because it is on the launch path."""

    __slots__ = ("_info", "_opcode", "_outputs", "_rec", "_st", "_stream", "_words")

    def __init__(
        self, rec: Recorder, opcode: int, words: Sequence[int] | None, stream: Any, outputs: Any
    ) -> None:
        self._rec = rec
        self._opcode = opcode
        self._words = words
        self._stream = stream
        self._outputs = outputs

    def __enter__(self) -> int:
        rec = self._rec
        w = _words(self._words)
        with rec._lock:
            st, info = rec._open_slot(self._stream, self._opcode, w, self._outputs)
        self._st, self._info = st, info
        if rec._nvtx is not None:
            rec._nvtx_push(info)
        return info.slot_idx

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        rec = self._rec
        if callable(self._outputs):
            # What the body produced, known only now (e.g. a replay's return value); a failure to get it
            # must not hide the body's own exception.
            try:
                self._info.outputs = self._outputs()
            except Exception:
                if exc is None:
                    raise
                self._info.outputs = None
        try:
            if exc is not None:
                with rec._lock:
                    # The body may have enqueued work before it raised: a fault the device met after
                    # the slot's begin is the slot's own (FAULTED), not a failure of the call.
                    rec._launch_failed(self._st, self._info, exc, launched=True)
                return
        finally:
            if rec._nvtx is not None:
                rec._nvtx.pop_range(domain=_NVTX_DOMAIN)
        if rec._end_crumbs:
            with rec._lock:
                if rec._poison is None:
                    try:
                        rec._end(self._st, self._info)
                    except BaseException as e:
                        rec._enqueue_failed(e)
                        raise
        if rec._opts.digests and self._info.outputs is not None and not self._info.captured:
            with rec._lock:
                if rec._poison is None:
                    rec._write_digest(self._st, self._info)
