"""``record_triton``: a breadcrumb with the kernel's name for every ``@triton.jit`` launch, through Triton's
launch hooks, on the launch's stream."""

from __future__ import annotations

import contextlib
import itertools
import threading
import warnings
from types import TracebackType
from typing import Any

from vrrl_gpu.errors import MissingExtraError, RecorderPoisonedError, VrrlWarning
from vrrl_gpu.recorder._recorder import Recorder
from vrrl_gpu.torch._ops import _Handle

__all__ = ["record_triton", "TritonHooks", "TritonLaunchRaised", "hook_site"]


class TritonLaunchRaised(RuntimeError):
    """Stands for the exception of a Triton launch that raised between the hooks and was caught by the
    caller: the hooks never see it, only that the exit hook did not come."""

_U32 = 0xFFFFFFFF


def hook_site() -> Any:
    """Where this Triton keeps its launch hooks: ``triton.knobs.runtime`` where it exists, else the older
    ``CompiledKernel`` class attributes."""
    try:
        import triton
    except ImportError as e:
        raise MissingExtraError(f"record_triton needs Triton ({e}): python3 -m pip install triton") from e
    runtime = getattr(getattr(triton, "knobs", None), "runtime", None)
    if runtime is not None and hasattr(runtime, "launch_enter_hook"):
        return runtime
    from triton.compiler.compiler import CompiledKernel

    return CompiledKernel


class TritonHooks:
    """What :func:`record_triton` returns; a context manager that installs the hooks and removes them."""

    def __init__(self, rec: Recorder, *, stream: Any = None, site: Any = None) -> None:
        self._rec = rec
        self._stream = stream
        self._site = site
        self._opcodes: dict[str, int] = {}
        self._natives: dict[int, Any] = {}
        self._counter = itertools.count()
        self._local = threading.local()
        self._saved: tuple[Any, Any] | None = None
        self._chained: tuple[Any, Any] | None = None
        #: Launches recorded so far.
        self.launches = 0

    # ------------------------------------------------------------------ the hooks

    def _stream_of(self, handle: Any) -> Any:
        if self._stream is not None or not isinstance(handle, int):
            return self._stream
        native = self._natives.get(handle)
        if native is None:
            native = self._natives[handle] = self._rec.backend.native_stream(_Handle(handle))
        return native

    def enter(self, metadata: Any) -> None:
        """Triton's enter hook: the begin breadcrumb, on the launch's stream (``metadata["stream"]``)."""
        rec = self._rec
        if rec.poisoned:
            return  # the launch's own CUDA error is what the caller must see
        # LazyDict.data: name and stream without evaluating the kernel's launch_metadata function.
        data = getattr(metadata, "data", metadata)
        name = str(data.get("name", "?"))
        op = self._opcodes.get(name)
        if op is None:
            op = self._opcodes[name] = rec.opcode(f"triton:{name}")
        stack: list[tuple[str, Any]] = self._local.__dict__.setdefault("stack", [])
        # Triton launches do not nest: a slot still open here is a launch whose exit hook never came (its
        # launch call raised, and the caller caught it). It is recorded as failed, not left open.
        self._close_unfinished(stack, None)
        slot = rec.slot(op, (next(self._counter) & _U32, 0, 0, 0), stream=self._stream_of(data.get("stream")))
        try:
            slot.__enter__()
        except RecorderPoisonedError:
            return
        stack.append((name, slot))
        self.launches += 1

    @staticmethod
    def _close_unfinished(stack: list[tuple[str, Any]], exc: BaseException | None) -> None:
        """FAILED_AT_LAUNCH for each launch on ``stack`` whose exit hook never came: with ``exc`` (what
        left the ``with record_triton`` block) when known, else :class:`TritonLaunchRaised`."""
        while stack:
            name, slot = stack.pop()
            err = exc if exc is not None else TritonLaunchRaised(
                f"the launch of Triton kernel {name!r} raised before Triton's exit hook (the caller caught "
                f"the exception)"
            )  # fmt: skip
            with contextlib.suppress(RecorderPoisonedError):
                slot.__exit__(type(err), err, None)

    def exit(self, metadata: Any) -> None:
        """Triton's exit hook (after the launch call returned): the end breadcrumb with ``begin+end``."""
        stack: list[tuple[str, Any]] = self._local.__dict__.get("stack", [])
        if stack:
            stack.pop()[1].__exit__(None, None, None)

    # ------------------------------------------------------------ install/remove

    def __enter__(self) -> TritonHooks:
        site = self._site if self._site is not None else hook_site()
        self._site = site
        enter: Any = getattr(site, "launch_enter_hook", None)
        exit_: Any = getattr(site, "launch_exit_hook", None)
        if callable(getattr(enter, "add", None)) and callable(getattr(enter, "remove", None)):
            enter.add(self.enter)  # a HookChain (newer Triton): other hooks stay where they are
            exit_.add(self.exit)
            return self
        # A single callable per hook: ours calls the one that was there first, which comes back at the end.
        self._saved = (enter, exit_)

        def chained_enter(metadata: Any) -> None:
            if enter is not None:
                enter(metadata)
            self.enter(metadata)

        def chained_exit(metadata: Any) -> None:
            self.exit(metadata)
            if exit_ is not None:
                exit_(metadata)

        self._chained = (chained_enter, chained_exit)
        site.launch_enter_hook = chained_enter
        site.launch_exit_hook = chained_exit
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A launch of this thread that raised out of the block: its failure record, with the exception.
        self._close_unfinished(self._local.__dict__.get("stack", []), exc)
        site = self._site
        if self._saved is None:
            site.launch_enter_hook.remove(self.enter)
            site.launch_exit_hook.remove(self.exit)
            return
        for attr, mine, prev in zip(
            ("launch_enter_hook", "launch_exit_hook"), self._chained or (None, None), self._saved, strict=True
        ):
            now = getattr(site, attr, None)
            if now is mine:
                setattr(site, attr, prev)
            else:
                # Someone set a hook over ours meanwhile: theirs stays (and still calls ours until they go).
                warnings.warn(
                    f"vrrl_gpu: {attr} was replaced while record_triton was installed; leaving the new hook",
                    VrrlWarning,
                    stacklevel=2,
                )
        self._saved = self._chained = None


def record_triton(rec: Recorder, *, stream: Any = None) -> TritonHooks:
    """``with record_triton(rec):`` a breadcrumb (opcode ``triton:<kernel name>``, words ``(launch index,
    0, 0, 0)``) before every Triton kernel launch, on the launch's stream (``stream=``: one stream for all),
    and its end after the launch call with ``begin+end``. The hooks that were installed before are kept
    and come back exactly on exit. Needs Triton; the launch itself needs a GPU.
    """
    return TritonHooks(rec, stream=stream)
