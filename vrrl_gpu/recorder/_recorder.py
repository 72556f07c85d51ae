"""The Recorder: wrap live CUDA launches, have the device write a breadcrumb for each, attribute faults.

>>> import tempfile, os
>>> from vrrl_gpu import Recorder
>>> path = os.path.join(tempfile.mkdtemp(), "run.vrrl")
>>> with Recorder(path, device="twin", capacity=1024) as rec:   # doctest: +SKIP
...     with rec.slot(rec.opcode("step"), words=(1, 0, 0, 0)):
...         pass

Each stream gets its own staging ring, so the records of one stream arrive in
stream order and the newest one that arrived names the launch the device had
reached on that stream when it failed. See docs/recorder.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import getpass
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, cast

import numpy as np

from vrrl_gpu.backends import Backend, get_backend
from vrrl_gpu.backends._base import DeviceCounter, RingPointers
from vrrl_gpu.capture._drain import Drainer, DrainOptions
from vrrl_gpu.capture._records import meta_record
from vrrl_gpu.capture._staging import StagingRing
from vrrl_gpu.errors import (
    CaptureError,
    KernelArgumentError,
    RecorderClosedError,
    RecorderPoisonedError,
    RecordValueError,
    VrrlError,
    VrrlWarning,
)
from vrrl_gpu.evidence._classify import Classification, classify
from vrrl_gpu.evidence._digest import output_digest
from vrrl_gpu.evidence._failure import FailureEvidence
from vrrl_gpu.format._layout import (
    META_OPCODE_BASE,
    UNKNOWN_SLOT,
    MetaOpcode,
    Record,
    SlotStatus,
    as_record_array,
)
from vrrl_gpu.format._ringlog import RingLog
from vrrl_gpu.format._sidecar import Sidecar, opcode_for_name, read_sidecar, write_sidecar
from vrrl_gpu.recorder import _attribution
from vrrl_gpu.recorder._clock import ClockHistory, clock_loop
from vrrl_gpu.recorder._graphs import GraphCulprit, GraphReplays
from vrrl_gpu.recorder._hot import install_launch, make_hot, make_launcher, new_lock
from vrrl_gpu.recorder._nvtx import _NVTX_DOMAIN, _load_nvtx
from vrrl_gpu.recorder._options import (
    _U32,
    F,
    RecorderOptions,
    Words,
    _merge_options,
    recorder_disabled,
)
from vrrl_gpu.recorder._slot import _Slot
from vrrl_gpu.recorder._state import _ZERO_WORDS, _Launch, _StreamState, _words
from vrrl_gpu.recorder._streams import IdMap, StreamKey, StreamTable
from vrrl_gpu.recorder._watchdog import watchdog_loop

__all__ = ["Recorder"]

_U64 = 0xFFFFFFFFFFFFFFFF


class Recorder:
    """Records every wrapped launch into a VRRL v1 log at ``path``.

    Use as ``with Recorder(path, device="twin") as rec: ...`` or call
    :meth:`close`. With ``VRRL_DISABLE=1`` in the environment the constructor
    returns a recorder whose methods are true no-ops.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Recorder:
        if cls is Recorder and recorder_disabled():
            # The no-op subclass lives beside this one and imports it, hence the late import.
            from vrrl_gpu.recorder._disabled import _DisabledRecorder

            return _DisabledRecorder()
        return super().__new__(cls)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        options: RecorderOptions | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        opts = _merge_options(options, kwargs)
        self._cells: list[Any] = [0, 0, True]  # the launch path's state: see _slot_counter, _epoch, _usable
        self._opts = opts
        self._path = os.fspath(path)
        # threading.RLock, or the accelerator's (the same semantics, and the launch path takes it in C).
        self._lock = new_lock()
        # The watchdog writes the sidecar while the host may hold _lock (blocked in synchronize).
        self._sidecar_lock = threading.Lock()
        self._sidecar_warned = False
        self._closed = False
        self._poison = None
        self._slot_counter = 0
        self._epoch = 0
        self._streams: dict[StreamKey, _StreamState] = {}
        # The launch path finds a stream's state by the stream object's identity: no query, no hashing.
        self._by_id = IdMap()
        self._stream_table_written = -1e9
        self._probe_capture = opts.capture_check == "probe"
        self._end_crumbs = opts.breadcrumbs == "begin+end"
        self._backpressure = opts.backpressure
        self._instr_done: Any = None
        self._instr_slots: Any = None
        # An instrumented launch since the last fault: the device-sequenced ring shows how far it got.
        self._instr_outstanding = False
        self._opcode_names: dict[int, str] = {}
        # The error a backpressure wait already attributed: the launch path must not attribute it twice.
        self._attributed: BaseException | None = None
        self._unknown: list[dict[str, int]] = []
        self._graph_launches = False
        self._graphs = GraphReplays()
        self._captures_seen: dict[int, Any] = {}
        self._last_arrival = time.monotonic()
        self._hang_reported: set[int] = set()
        self._watchdog_stop = threading.Event()
        self._watchdog_thread: threading.Thread | None = None
        self._watchdog_error = None
        self._nvtx: Any = _load_nvtx() if opts.nvtx else None
        # NVTX ranges and per-launch digests are work the inline launch path does not do.
        self._slow_only = self._nvtx is not None or opts.digests
        with contextlib.ExitStack() as undo:
            self._backend: Backend = get_backend(opts.device)
            undo.callback(self._backend.close)
            if opts.nvml:
                from vrrl_gpu.evidence._classify import start_nvml_watch

                # NVML keeps no Xid history: watch from the start so a later 719/999 can be cross-checked.
                start_nvml_watch()
            if opts.recover_orphans:
                _recover_orphans_of(self._path, opts.tenant_id)
            self._log = RingLog.open(self._path, capacity=opts.capacity)
            undo.callback(self._log.close)
            self._ts_offset = int(self._backend.calibrate())
            # GAP meta-records carry this recorder's tenant, so merged multi-rank logs have no phantom 0.
            drain = dataclasses.replace(
                opts.drain or DrainOptions(), tenant_id=opts.tenant_id, on_write_error=opts.on_disk_full
            )
            self._drainer = Drainer([], self._log, options=drain)
            self._drainer.start()
            undo.callback(self._drainer.close)
            self._table = StreamTable(
                self._streams, self._by_id, self._backend, opts, self._path, self._drainer, self._ts_offset
            )
            if opts.capture:
                # Inside a graph capture nothing may allocate, zero or synchronize: make it all now.
                self._ensure_device_ring()
                self._backend._pack_kernel("vrrl_pack_devseq")
            # The nonce names this session in the sidecar: its stream table covers the records after it.
            self._session_nonce = int.from_bytes(os.urandom(8), "little") or 1
            nonce = self._session_nonce
            self._write_meta(MetaOpcode.SESSION_START, (os.getpid(), nonce & _U32, nonce >> 32, 0))
            offset = self._ts_offset & 0xFFFFFFFFFFFFFFFF  # two's complement: the offset may be negative
            self._write_meta(MetaOpcode.CALIBRATION, (offset & _U32, offset >> 32, 0, 0))
            self._clock = ClockHistory(self._ts_offset, time.time_ns())
            self._clock_lock = threading.Lock()
            self._sidecar = self._make_sidecar()
            self._write_stream_table()
            if opts.watchdog is not None:
                self._start_watchdog(opts.watchdog)
                undo.callback(self._stop_watchdog)
            self._clock_stop = threading.Event()
            self._clock_thread: threading.Thread | None = None
            if opts.recalibrate is not None:
                self._clock_thread = threading.Thread(
                    target=clock_loop, args=(self, opts.recalibrate, self._clock_stop), name="vrrl-clock",
                    daemon=True,
                )  # fmt: skip
                self._clock_thread.start()
                undo.callback(self._stop_clock)
            install_launch(self, Recorder.launch, Recorder.slot)
            undo.pop_all()

    # ------------------------------------------------- the launch path's state
    # Kept in one list, ``_cells = [slot counter, epoch, usable]``, that the inline launch path
    # (recorder/_hot.py, _fast.c) reads and writes by index; everything else uses these properties.
    # ``usable`` is "not closed, not poisoned, no watchdog error", kept up to date by the three setters.

    @property
    def _slot_counter(self) -> int:
        return int(self._cells[0])

    @_slot_counter.setter
    def _slot_counter(self, value: int) -> None:
        self._cells[0] = value

    @property
    def _epoch(self) -> int:
        return int(self._cells[1])

    @_epoch.setter
    def _epoch(self, value: int) -> None:
        self._cells[1] = value

    @property
    def _closed(self) -> bool:
        return self.__dict__.get("_closed_", False)  # type: ignore[no-any-return]

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self.__dict__["_closed_"] = value
        self._refresh_usable()

    @property
    def _poison(self) -> BaseException | None:
        return self.__dict__.get("_poison_")

    @_poison.setter
    def _poison(self, value: BaseException | None) -> None:
        self.__dict__["_poison_"] = value
        self._refresh_usable()

    @property
    def _watchdog_error(self) -> BaseException | None:
        return self.__dict__.get("_watchdog_error_")

    @_watchdog_error.setter
    def _watchdog_error(self, value: BaseException | None) -> None:
        self.__dict__["_watchdog_error_"] = value
        self._refresh_usable()

    def _refresh_usable(self) -> None:
        d = self.__dict__
        usable = not d.get("_closed_") and d.get("_poison_") is None
        self._cells[2] = usable and d.get("_watchdog_error_") is None

    # ----------------------------------------------------------------- public

    @property
    def path(self) -> str:
        return self._path

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def options(self) -> RecorderOptions:
        return self._opts

    @property
    def epoch(self) -> int:
        return self._epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        if not 0 <= int(value) <= _U32:
            raise RecordValueError(f"epoch must be a u32, got {value}")
        self._epoch = int(value)

    def next_epoch(self) -> int:
        """Advance the epoch (e.g. once per training step) and return the new value."""
        self.epoch = (self._epoch + 1) & _U32
        return self._epoch

    @property
    def poisoned(self) -> bool:
        return self._poison is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def clock(self) -> dict[str, Any]:
        """What the clock calibrations found: offsets, drift (ns and ppm), largest step, rounds skipped."""
        return self._clock.summary()

    def recalibrate(self) -> int:
        """Measure the host/device clock offset again now; returns the step (ns) since the last calibration.

        Writes a CALIBRATION meta-record (args: new offset, step, each an i64 as two u32 halves) and corrects
        the timestamps of every device-written record drained after it. The recorder does this by itself
        every ``recalibrate`` seconds. Raises :class:`~vrrl_gpu.errors.CaptureError` while a recorded
        stream is capturing a graph (calibrating synchronizes, which would invalidate the capture).
        """
        with self._clock_lock:
            self._require_usable()
            if self._any_capture():
                raise CaptureError(
                    "cannot re-calibrate the clock while a recorded stream is capturing a graph; "
                    "call recalibrate() after the capture ends"
                )
            offset = int(self._backend.calibrate())
            step = self._clock.add(time.time_ns(), offset)
            o, d = offset & _U64, step & _U64  # two's complement: both may be negative
            # Written (after a flush of what is staged) before the correction changes, so the records before
            # this meta-record carry the old correction and those after it the new one.
            self._write_meta(MetaOpcode.CALIBRATION, (o & _U32, o >> 32, d & _U32, d >> 32))
            self._drainer.set_ts_correction(offset - self._ts_offset)
            return step

    def _any_capture(self) -> bool:
        """A recorded stream is capturing: declared (rec.capturing), or as the runtime says (a stream query
        that is legal during a capture). Streams first seen capturing have no ring, only _captures_seen."""
        states = {id(st): st for st in [*self._streams.values(), *list(self._by_id.values())]}
        if any(st.capturing for st in states.values()):
            return True
        for oid, stream in list(self._captures_seen.items()):
            if self._backend.is_capturing(stream):
                return True
            self._captures_seen.pop(oid, None)
        return any(
            not st.gone and not st.foreign and self._backend.is_capturing(st.stream) for st in states.values()
        )

    def opcode(self, name: str) -> int:
        """A stable u32 for ``name``; the name is saved in the sidecar so ``vrrl dump`` shows it."""
        op = opcode_for_name(name)
        known = self._opcode_names.get(op)
        if known is None:
            with self._lock:
                self._opcode_names[op] = name
                with self._sidecar_lock:
                    self._sidecar.opcode_names = dict(self._opcode_names)
                    self._save_sidecar()
        elif known != name:
            raise RecordValueError(
                f"opcode names {known!r} and {name!r} hash to the same opcode {op:#x}; rename one of them"
            )
        return op

    def launch(
        self,
        kernel: Any,
        grid: Any,
        block: Any,
        args: Sequence[Any],
        *,
        opcode: int,
        words: Sequence[int] | None = None,
        stream: Any = None,
        shared_mem: int = 0,
        outputs: Any = None,
    ) -> None:
        """Enqueue the pack kernel, then ``kernel``, on the same stream (default: the current one).

        A launch that raises gets a FAILED_AT_LAUNCH record, and the exception
        is re-raised unchanged.
        """
        # The common case (a known stream object) is its state's inline path, recorder/_hot.py (C when the
        # accelerator loads): each Python call here costs about as much as the work. It sends everything
        # else to _launch, the general path (same records), with the lock held, as does this.
        st = self._by_id.get(id(stream))
        if st is not None:
            hot = st.hot
            if hot is not None:
                return hot(kernel, grid, block, args, opcode, words, stream, shared_mem, outputs)  # type: ignore[no-any-return]
        w = _ZERO_WORDS if words is None else _words(words)
        with self._lock:
            return self._launch(kernel, grid, block, args, opcode, w, stream, shared_mem, outputs)

    def launcher(
        self,
        kernel: Any,
        *,
        opcode: int,
        stream: Any,
        words: Sequence[int] | None = None,
        outputs: Any = None,
    ) -> Callable[..., None]:
        """``launch`` with the kernel, opcode, words, stream and outputs bound: ``f(grid, block, args,
        shared_mem=0)`` records each call exactly like ``rec.launch(kernel, grid, block, args, opcode=opcode,
        words=words, stream=stream, shared_mem=shared_mem, outputs=outputs)``, at the least host cost.

        ``stream`` must be a stream object (not None: the current stream is a query per call, use
        ``rec.launch`` for that); the launcher holds it. The stream's first-sight checks happen here.
        """
        if stream is None:
            raise KernelArgumentError(
                "rec.launcher needs an explicit stream (rec.launch follows the current one)"
            )
        op = _checked_opcode(opcode)
        w = _words(words)
        with self._lock:
            hot = self._first_sight(stream).hot
        if hot is None:  # a capturing stream, NVTX or digests: every call takes the general path

            def general(grid: Any, block: Any, args: Sequence[Any], shared_mem: int = 0) -> None:
                self.launch(kernel, grid, block, args, opcode=op, words=w, stream=stream,
                            shared_mem=shared_mem, outputs=outputs)  # fmt: skip

            return general
        return make_launcher(hot, kernel, op, w, stream, outputs)

    def _room(self, st: _StreamState, seq: int) -> bool:
        """Backpressure: is sequence ``seq`` within the window? (Refreshes the stream's limit from the
        consumer, which only moves forward; False sends the launch down the general path, which waits.)"""
        if not self._backpressure:
            return True
        st.limit = st.ring.consumer_position + st.wmask
        return seq < st.limit

    def _launch(
        self,
        kernel: Any,
        grid: Any,
        block: Any,
        args: Sequence[Any],
        opcode: int,
        w: Words,
        stream: Any,
        shared_mem: int,
        outputs: Any,
        captured: bool | None = None,
    ) -> None:
        """:meth:`launch`'s general path (caller holds the lock): a new or capturing stream, backpressure,
        NVTX, a bad opcode or an unusable recorder. ``captured``: what a capture probe already said."""
        st, info = self._open_slot(stream, opcode, w, outputs, captured)
        nvtx = self._nvtx
        if nvtx is not None:
            self._nvtx_push(info)
        launched = False
        try:
            self._backend.launch(kernel, grid, block, args, stream=st.stream, shared_mem=shared_mem)
            launched = True
            if self._end_crumbs:
                self._end(st, info)
        except BaseException as exc:
            self._launch_failed(st, info, exc, launched=launched)
            raise
        finally:
            if nvtx is not None:
                nvtx.pop_range(domain=_NVTX_DOMAIN)
        if outputs is not None and self._opts.digests and not info.captured:
            self._write_digest(st, info)

    def _write_digest(self, st: _StreamState, info: _Launch) -> None:
        """``digests`` mode: wait for the launch's stream, then a host COMPLETED record with the outputs'
        digest (caller holds the lock). A fault found by the wait is attributed like at a synchronize."""
        try:
            self._backend.synchronize(st.stream)
        except BaseException as exc:
            self._async_fault(exc)
            raise
        digest = output_digest(info.outputs, stream=st.stream)
        rec = Record(
            timestamp_ns=time.time_ns(),
            slot_idx=info.slot_idx,
            tenant_id=self._opts.tenant_id,
            opcode=info.opcode,
            args=info.words,
            epoch=info.epoch,
            slot_status=_COMPLETED,
            output_digest=0 if digest is None else digest,
        )
        self._drainer.write_host(as_record_array([rec]))

    def wrap(
        self,
        kernel: Any,
        *,
        opcode: int,
        words: Callable[[tuple[Any, ...]], Sequence[int]] | Sequence[int] | None = None,
        outputs: Callable[[tuple[Any, ...]], Any] | None = None,
    ) -> Callable[..., None]:
        """A callable with ``RawKernel.__call__``'s signature that records each call.

        ``words`` may be a function of the kernel's ``args`` tuple.
        """

        def call(
            grid: Any,
            block: Any,
            args: Sequence[Any],
            *,
            shared_mem: int = 0,
            stream: Any = None,
            enable_cooperative_groups: bool = False,
        ) -> None:
            if enable_cooperative_groups:
                # Dropping it would launch a grid.sync() kernel non-cooperatively: undefined behaviour.
                raise KernelArgumentError(
                    "rec.wrap cannot launch cooperatively (enable_cooperative_groups=True); call the "
                    "RawKernel itself inside `with rec.slot(opcode):` to record it"
                )
            a = tuple(args)
            w = words(a) if callable(words) else words
            out = outputs(a) if outputs is not None else None
            self.launch(
                kernel,
                grid,
                block,
                a,
                opcode=opcode,
                words=w,
                stream=stream,
                shared_mem=shared_mem,
                outputs=out,
            )

        call.__wrapped__ = kernel  # type: ignore[attr-defined]
        return call

    def slot(
        self, opcode: int, words: Sequence[int] | None = None, *, stream: Any = None, outputs: Any = None
    ) -> contextlib.AbstractContextManager[int]:
        """Record whatever the body launches (ElementwiseKernel, library calls…) as one slot.

        A breadcrumb is enqueued before the body (and, with ``begin+end``,
        after it). An exception from the body is written as FAILED_AT_LAUNCH
        and propagates unchanged. Yields the slot index. ``outputs`` (digested
        into failure evidence, and with ``digests`` into a COMPLETED record)
        may be a callable with no arguments, called when the body ends.
        """
        if outputs is None:
            # A known stream object: its inline path (recorder/_hot.py, C when the accelerator loads) writes
            # the breadcrumbs, with the general _Slot for every uncommon case (same records).
            st = self._by_id.get(id(stream))
            if st is not None and st.hot is not None:
                return st.hot.slot(opcode, words, stream)  # type: ignore[no-any-return]
        return _Slot(self, opcode, words, stream, outputs)

    def recorded(self, opcode: int, words: Sequence[int] | None = None) -> Callable[[F], F]:
        """Decorator form of :meth:`slot`: each call of the function is one recorded slot."""

        def deco(fn: F) -> F:
            @functools.wraps(fn)
            def inner(*a: Any, **kw: Any) -> Any:
                with self.slot(opcode, words):
                    return fn(*a, **kw)

            return cast(F, inner)

        return deco

    def instrument(
        self,
        kernel: Any,
        name: str | None = None,
        *,
        opcode: int,
        words: Callable[[tuple[Any, ...]], Sequence[int]] | Sequence[int] | None = None,
    ) -> Callable[..., None]:
        """A launcher with ``RawKernel.__call__``'s signature whose kernel writes its own breadcrumbs.

        ``kernel``: CUDA source text (with ``name``), a ``.cu`` path, a kernel from ``rec.backend.load``
        or a ``cupy.RawKernel``. The source is rewritten (recorder/_instrument.py) and compiled once; each
        call is one launch, its records in the device-sequenced ring. Raises InstrumentError, saying why,
        for kernels it cannot rewrite (use :meth:`wrap` for those).
        """
        from vrrl_gpu.recorder._instrument import instrument

        return instrument(self, kernel, name, _checked_opcode(opcode), words)

    @contextlib.contextmanager
    def capturing(self, stream: Any = None) -> Iterator[None]:
        """Declare that the body captures ``stream`` (default: the current one) into a CUDA graph.

        Launches recorded on it inside the body claim their sequences on the
        device, so every replay of the graph writes distinct records. The
        stream's ring and the device-sequenced ring are made here, before the
        capture (nothing may be allocated inside one). Begin and end the
        capture yourself inside the body (``stream.begin_capture()`` …
        ``stream.end_capture()``). Needed with ``capture="declared"``; with
        ``"probe"`` the recorder finds captures itself, at a query per launch.
        """
        with self._lock:
            self._require_usable()
            st = self._state_of(stream)
            self._ensure_device_ring()
            st.capturing += 1
            st.fast = False
        try:
            yield
        finally:
            with self._lock:
                st.capturing -= 1
                st.fast = not st.capturing and not self._slow_only and st.index >= 0

    @contextlib.contextmanager
    def graph_replay(self, graph: Any, *, stream: Any = None, name: str = "cuda_graph") -> Iterator[int]:
        """Record the body's launch of ``graph`` (a CUDA graph captured with recorded launches) as one
        replay; yields its number (0 for the graph's first recorded replay).

        The replay gets a begin (and end) breadcrumb on ``stream`` with the
        words ``(replay, graph, 0, 0)`` and the opcode of ``name``. A fault in
        the replay is attributed to the captured node that was running, and
        the sidecar's ``graph_faults`` names the replay it ran in; with no
        recorded node running, the replay itself is the FAULTED launch.

        >>> with rec.graph_replay(g, stream=s) as k:   # doctest: +SKIP
        ...     g.replay()
        """
        with self._lock:
            graph_no, replay = self._graphs.next_replay(graph)
            op = self.opcode(name)
            self._graphs.opcodes.add(op)
        with self.slot(op, words=(replay & _U32, graph_no & _U32, 0, 0), stream=stream):
            yield replay

    def launch_graph(self, graph: Any, *, stream: Any = None, name: str = "cuda_graph") -> int:
        """``graph.launch(stream)`` (CuPy's ``Graph``, the twin's graph) as a recorded replay
        (:meth:`graph_replay`); returns the replay number."""
        with self.graph_replay(graph, stream=stream, name=name) as replay:
            graph.launch(stream)
        return replay

    def publish(
        self,
        slot_idx: int,
        opcode: int,
        words: Sequence[int] | None = None,
        epoch: int | None = None,
        tenant_id: int | None = None,
    ) -> None:
        """A host-written PUBLISHED record: work handed to a persistent kernel through slot ``slot_idx``.

        The kernel's own DEVICE_CLAIMED record (written through
        ``kernels/vrrl_record.cuh``) for the same slot shows it was picked up.
        """
        with self._lock:
            self._require_open()
            rec = Record(
                timestamp_ns=time.time_ns(),
                slot_idx=int(slot_idx),
                tenant_id=self._opts.tenant_id if tenant_id is None else int(tenant_id),
                opcode=int(opcode),
                args=_words(words),
                epoch=self._epoch if epoch is None else int(epoch),
                slot_status=int(SlotStatus.PUBLISHED),
            )
            self._drainer.write_host(as_record_array([rec]))

    def device_ring(self) -> dict[str, int]:
        """Pointers for kernels that record from inside them (``kernels/vrrl_record.cuh``).

        A device-sequenced ring. Keys: records, commits, mask, counter, ts_offset, tenant_id — pass them
        to ``vrrl_make_ring`` in your kernel.
        """
        with self._lock:
            self._require_usable()
            _ring, ptrs, counter = self._ensure_device_ring()
            return {
                "records": ptrs.records_ptr,
                "commits": ptrs.commits_ptr,
                "mask": ptrs.mask,
                "counter": int(counter.device_ptr),
                "ts_offset": self._ts_offset,
                "tenant_id": self._opts.tenant_id,
            }

    def _ensure_device_ring(self) -> tuple[StagingRing, RingPointers, DeviceCounter]:
        return self._table.ensure_device_ring()

    def check(self) -> None:
        """Poll every stream without waiting; on a CUDA error attribute it, record it and re-raise it."""
        with self._lock:
            self._require_usable()
            self._raise_drain_errors()
            for st in list(self._streams.values()):
                if st.gone or st.foreign:
                    continue  # no handle to query from here; synchronize() waits for them device-wide
                if self._backend.is_capturing(st.stream):
                    continue  # a query would invalidate the capture; its work runs when the graph does
                code = int(self._backend.stream_query(st.stream))
                if code == 0:
                    st.outstanding = False
                elif code != 600:
                    exc = self._backend.error_for(code)
                    self._async_fault(exc)
                    raise exc

    def synchronize(self) -> None:
        """Wait for every stream; on a CUDA error attribute it, record it and re-raise it."""
        with self._lock:
            self._require_usable()
            self._raise_drain_errors()
            uncovered: list[_StreamState] = []
            capturing = False
            for st in list(self._streams.values()):
                if st.gone or st.foreign:
                    uncovered.append(st)
                    continue
                if self._backend.is_capturing(st.stream):
                    capturing = True
                    continue  # waiting would invalidate the capture
                try:
                    self._backend.synchronize(st.stream)
                except BaseException as exc:
                    self._async_fault(exc)
                    raise
                st.outstanding = False
            if uncovered and not capturing:
                # Destroyed streams and other threads' default streams have no handle to wait on from here.
                try:
                    self._backend.synchronize(None)
                except BaseException as exc:
                    self._async_fault(exc)
                    raise
                for st in uncovered:
                    st.outstanding = False
            self._table.sweep()

    def statistics(self) -> Any:
        """The drain thread's statistics snapshot (drained, dropped, batches, peak backlog…)."""
        return self._drainer.statistics()

    def close(self) -> None:
        """Wait for outstanding work, drain everything, fsync and release. Idempotent.

        A CUDA error found while waiting is attributed and recorded like in
        :meth:`synchronize`, then re-raised after everything is released.
        """
        with self._lock:
            if self._closed:
                return
            error: BaseException | None = None
            hung = False
            if self._poison is None:
                try:
                    hung = self._wait_bounded(self._opts.close_timeout)
                    if not hung:
                        self.synchronize()
                except BaseException as exc:
                    error = exc
            self._closed = True
        self._stop_watchdog()
        self._stop_clock()
        with self._sidecar_lock:
            self._sidecar.clock = self._clock.summary()
            self._save_sidecar()
        try:
            self._write_meta(MetaOpcode.SESSION_END, (os.getpid(), 0, 0, 0))
            self._drainer.close()
            self._write_stream_table()
        except BaseException as exc:
            error = error or exc
        # After a sticky error, freeing pinned memory is a CUDA call that fails: leak rather than raise.
        # A hung kernel may still write into staging: leak that too rather than free memory in use.
        release_cuda = self._poison is None and not hung
        self._table.release_all(release_cuda, _release)
        if self._instr_done is not None:
            done = self._instr_done
            _release(lambda ok: done.close() if ok else done.leak(), release_cuda)
        try:
            self._log.sync()
        except VrrlError as exc:
            error = error or exc
        self._log.close()
        if release_cuda:
            self._backend.close()
        else:
            self._backend.abandon()
        if error is not None:
            raise error
        if self._watchdog_error is not None:
            raise self._watchdog_error

    def _wait_bounded(self, timeout: float | None) -> bool:
        return _attribution.wait_bounded(self, timeout)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        # The body's exception wins; a second error from close() must not hide it.
        try:
            self.close()
        except BaseException as close_exc:
            if close_exc is not exc:
                warnings.warn(
                    f"vrrl_gpu: closing the recorder also failed: {close_exc}", VrrlWarning, stacklevel=2
                )

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("poisoned" if self._poison else "open")
        return f"Recorder({self._path!r}, device={self._backend.name!r}, {state})"

    # --------------------------------------------------------------- internals

    def _require_open(self) -> None:
        if self._closed:
            raise RecorderClosedError(f"the recorder of {self._path} is closed; create a new Recorder")

    def _require_usable(self) -> None:
        self._require_open()
        if self._poison is not None:
            raise RecorderPoisonedError(
                f"a sticky CUDA error ({self._poison}) made the context unusable; the log {self._path} holds "
                f"the evidence. Restart the process to use the GPU again"
            ) from self._poison
        if self._watchdog_error is not None:
            raise self._watchdog_error

    def _raise_drain_errors(self) -> None:
        self._drainer.check()

    def _first_sight(self, stream: Any) -> _StreamState:
        """The recorder's checks, then ``stream``'s state (caller holds the lock); a failure to make the
        stream's ring is attributed like any enqueue (a sticky error is an earlier fault)."""
        self._require_usable()
        try:
            return self._state_of(stream)
        except BaseException as exc:
            self._enqueue_failed(exc)
            raise

    def _state_of(self, stream: Any) -> _StreamState:
        """The state of ``stream`` (None: the current one) on the launch path: a dict lookup once known."""
        if stream is None:
            stream = self._backend.launch_stream()  # checks the current device (one query on CuPy)
        # An id leaves _by_id when its object dies (a finalizer), so a key is never a reused id.
        st = self._by_id.get(id(stream))
        if st is not None:
            return st
        return self._stream_state(stream)

    def _stream_state(self, stream: Any) -> _StreamState:
        """First sight of a stream object: the device check, its key, and its ring when the stream is new."""
        be = self._backend
        be.check_device()
        s = be.current_stream() if stream is None else stream
        key = self._table.key_of(s)
        st = self._table.get(s, key)
        if st is None:
            if be.is_capturing(s):
                # Held while it captures (recalibrate() must not synchronize then), dropped once it ends.
                self._captures_seen[id(s)] = s
                return self._table.capture_state(key, s)
            st = self._table.open(s, key)
            now = time.monotonic()
            if now - self._stream_table_written >= _STREAM_TABLE_INTERVAL_S:
                # Rate-limited: with thousands of short-lived streams a write per stream is quadratic. A
                # fault and close() write it too; a stream missing from a table cut short reads as unknown.
                self._stream_table_written = now
                self._write_stream_table()
        self._table.remember(s, st)
        st.fast = not st.capturing and not self._slow_only
        if st.hot is None and st.pack is not None and not self._slow_only:
            st.hot = make_hot(self, st)
        return st

    def _capture_ring(self) -> tuple[StagingRing, RingPointers, DeviceCounter]:
        return self._table.capture_ring()

    def _pack_devseq(self, st: _StreamState, info: _Launch, status: SlotStatus) -> None:
        self._graph_launches = True
        _ring, ptrs, counter = self._capture_ring()
        self._backend.pack_devseq(
            ptrs,
            counter,
            tenant_id=self._opts.tenant_id,
            opcode=info.opcode,
            words=info.words,
            epoch=info.epoch,
            slot_status=int(status),
            ts_offset=self._ts_offset,
            stream=st.stream,
        )

    def _pack(self, st: _StreamState, info: _Launch, status: int) -> int:
        cells = st.cells  # [next_seq, limit, fast, outstanding]
        seq: int = cells[0]
        window = st.window
        mask = st.wmask
        if self._backpressure and seq - st.ring.consumer_position >= mask:
            self._wait_for_device(st, seq)
        pack = st.pack
        assert pack is not None
        pack(seq, info.slot_idx, info.opcode, info.words, info.epoch, status)
        cells[0] = seq + 1
        # StagingRing.note_produced without its comparison: this stream's sequences are claimed in order,
        # one producer under the lock (the inline path stores the cell the same way).
        st.produced[0] = seq + 1
        begin = seq if status == _BEGIN else info.begin_seq
        window[seq & mask] = (seq, info.slot_idx, info.opcode, info.words, info.epoch, info.outputs, begin)
        return seq

    def _wait_for_device(self, st: _StreamState, seq: int) -> None:
        """Backpressure: hold the host until the device is less than the window behind sequence ``seq``.

        Keeps every sequence that can still arrive resolvable, and the ring
        unlapped. A CUDA error seen meanwhile is attributed here and raised.
        """
        delay = 20e-6
        while True:
            self._drainer.flush()
            if seq - st.ring.consumer_position < st.mask:
                return
            code = int(self._backend.stream_query(st.stream))
            if code == 0:
                # Idle stream: whatever it wrote is committed now; what is still missing never arrives.
                self._drainer.flush()
                return
            if code != 600:
                exc = self._backend.error_for(code)
                self._attributed = exc
                self._async_fault(exc)
                raise exc
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)

    def _open_slot(
        self, stream: Any, opcode: int, words: Words, outputs: Any, captured: bool | None = None
    ) -> tuple[_StreamState, _Launch]:
        """Checks, then the stream's ring and the begin breadcrumb (caller holds the lock).

        The launch path, in one function on purpose: each Python call on it costs about as much as the
        work it does. The slow cases (a new stream, a capture, backpressure, a bad opcode) call out.
        """
        cells = self._cells  # [slot counter, epoch, usable]: the properties' storage, read once here
        if not cells[2]:
            self._require_usable()
        try:
            st = self._by_id.get(id(stream)) if stream is not None else None
            if st is None:
                st = self._state_of(stream)
            if type(opcode) is not int or not 0 <= opcode < META_OPCODE_BASE:
                opcode = _checked_opcode(opcode)
            slot = cells[0] % UNKNOWN_SLOT  # never UNKNOWN_SLOT itself
            info = _Launch(slot, opcode, words, cells[1], -1, outputs)
            if captured is None:
                probe = self._probe_capture
                captured = bool(st.capturing) or (probe and self._backend.is_capturing(st.stream))
            if captured:
                # A host-chosen sequence would be frozen into every replay of the graph: the device claims it.
                info.captured = True
                self._pack_devseq(st, info, SlotStatus.BEGIN)
                cells[0] += 1
                return st, info
            info.begin_seq = self._pack(st, info, _BEGIN)
        except BaseException as exc:
            self._enqueue_failed(exc)
            raise
        cells[0] += 1
        st.note_slot(slot)
        st.cells[3] = True  # outstanding
        return st, info

    def _end(self, st: _StreamState, info: _Launch) -> None:
        if self._end_crumbs:
            if info.begin_seq >= 0:
                info.end_seq = self._pack(st, info, _COMPLETED)
            elif info.captured:
                self._pack_devseq(st, info, SlotStatus.COMPLETED)

    def _enqueue_failed(self, exc: BaseException) -> None:
        """Enqueuing a breadcrumb (or making a stream's ring) raised: a sticky error is an earlier fault."""
        if exc is self._attributed:
            return
        cls = self._classify(exc)
        if cls.fatal:
            self._async_fault(exc, classification=cls)

    def _launch_failed(
        self, st: _StreamState, info: _Launch, exc: BaseException, *, launched: bool = False
    ) -> None:
        _attribution.launch_failed(self, st, info, exc, launched=launched)

    def _await_arrival(self, st: _StreamState, seq: int, limit_s: float = 5.0) -> None:
        _attribution.await_arrival(self, st, seq, limit_s)

    def _async_fault(
        self,
        exc: BaseException,
        *,
        classification: Classification | None = None,
        stop: tuple[_StreamState, int] | None = None,
    ) -> int:
        return _attribution.async_fault(self, exc, classification=classification, stop=stop)

    def _blame_device_window(
        self, exc: BaseException, cls: Classification, newer_than: int, graphs: list[GraphCulprit]
    ) -> int:
        return _attribution.blame_device_window(self, exc, cls, newer_than, graphs)

    def _crash_window(self, st: _StreamState, stop: int | None = None) -> _Launch | None:
        return _attribution.crash_window(self, st, stop)

    def _write_evidence(
        self, info: _Launch, ev: FailureEvidence, st: _StreamState | None = None, not_before: int = 0
    ) -> None:
        _attribution.write_evidence(self, info, ev, st, not_before)

    def _write_stream_table(self) -> None:
        """The sidecar's stream table (docs/recorder.md): each stream's slots as runs, and the session."""
        with self._sidecar_lock:
            extra = self._sidecar.extra
            extra["session"] = {"nonce": self._session_nonce, "pid": os.getpid()}
            extra["streams"] = [
                *self._table.retired_entries,  # streams that are gone keep their entries
                *({"index": st.index, "key": st.key, "runs": [list(r) for r in st.runs]}
                  for st in list(self._streams.values())),
            ]  # fmt: skip
            if self._unknown:
                extra["unknown_windows"] = list(self._unknown)
            if self._graph_launches:
                extra["graph_launches"] = True
            self._save_sidecar()

    def _nvtx_push(self, info: _Launch) -> None:
        assert self._nvtx is not None
        name = self._opcode_names.get(info.opcode, f"{info.opcode:#x}")
        self._nvtx.push_range(message=f"{name} #{info.slot_idx}", domain=_NVTX_DOMAIN)

    def _write_meta(self, opcode: MetaOpcode, args: Words) -> None:
        self._drainer.write_host(
            meta_record(opcode, args, timestamp_ns=time.time_ns(), tenant_id=self._opts.tenant_id)
        )

    def _log_sync_quietly(self) -> None:
        with contextlib.suppress(VrrlError):
            self._drainer.sync()

    def _classify(self, exc: BaseException) -> Classification:
        return classify(exc, nvml=self._opts.nvml)

    def _save_sidecar(self) -> None:
        """Best effort: a sidecar that cannot be written (read-only directory, full disk) must not stop the
        recording, whose log is what matters; said once per recorder."""
        try:
            write_sidecar(self._path, self._sidecar)
        except OSError as e:
            if not self._sidecar_warned:
                self._sidecar_warned = True
                warnings.warn(
                    f"{e}; recording without it (opcode names will show as numbers)",
                    VrrlWarning,
                    stacklevel=3,
                )

    def _make_sidecar(self) -> Sidecar:
        info = dict(self._backend.device_info())
        old = None
        with contextlib.suppress(VrrlError):
            old = read_sidecar(self._path)
        if old is not None:
            self._opcode_names.update(old.opcode_names)
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return Sidecar(
            opcode_names=dict(self._opcode_names),
            host=socket.gethostname(),
            pid=os.getpid(),
            user=user,
            device=info,
            cupy_version=str(info.get("cupy_version", "")),
            tenant_id=self._opts.tenant_id,
            start_time_ns=time.time_ns(),
            breadcrumbs=self._opts.breadcrumbs,
            backend=self._backend.name,
            extra=_job_identity(),
        )

    # ---------------------------------------------------------------- watchdog

    def _start_watchdog(self, seconds: float) -> None:
        self._watchdog_thread = threading.Thread(
            target=watchdog_loop, args=(self, seconds), name="vrrl-watchdog", daemon=True
        )
        self._watchdog_thread.start()

    def _stop_clock(self) -> None:
        self._clock_stop.set()
        t = self._clock_thread
        if t is not None and t is not threading.current_thread():
            # Bounded: a calibration stuck behind a hung kernel must not hang close() (a daemon thread).
            t.join(timeout=5.0)

    def _stop_watchdog(self) -> None:
        self._watchdog_stop.set()
        t = self._watchdog_thread
        if t is not None and t is not threading.current_thread():
            t.join()


_BEGIN = int(SlotStatus.BEGIN)
_COMPLETED = int(SlotStatus.COMPLETED)


#: At most one stream-table write per this many seconds when streams are created.
_STREAM_TABLE_INTERVAL_S = 0.25



def _checked_opcode(opcode: Any) -> int:
    if isinstance(opcode, bool) or not isinstance(opcode, (int, np.integer)):
        raise RecordValueError(f"opcode must be an int, got {type(opcode).__name__} {opcode!r}")
    op = int(opcode)
    if not 0 <= op < META_OPCODE_BASE:
        raise RecordValueError(
            f"opcode must be 0 ..= {META_OPCODE_BASE - 1:#x} (higher: reserved for meta-records), "
            f"got {opcode!r}; use rec.opcode('name') for a stable one"
        )
    return op


def _release(release: Callable[[bool], None], release_cuda: bool) -> None:
    try:
        release(release_cuda)
    except Exception as exc:  # a destructor-like path: warn, never raise over the real error
        warnings.warn(f"vrrl_gpu: releasing staging memory failed: {exc}", VrrlWarning, stacklevel=3)


#: Where launchers put a process's rank and the job's size: torchrun, Slurm, Open MPI, MPICH.
_RANK_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
_WORLD_VARS = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def _job_identity() -> dict[str, Any]:
    """``rank`` and ``world_size`` from the launcher's environment, for ``vrrl fleet`` (docs/analysis.md)."""
    out: dict[str, Any] = {}
    for key, names in (("rank", _RANK_VARS), ("world_size", _WORLD_VARS)):
        for n in names:
            v = os.environ.get(n, "").strip()
            if v.isascii() and v.isdigit() and len(v) <= 9:
                out[key] = int(v)
                break
    return out


def _recover_orphans_of(path: str, tenant_id: int) -> None:
    from vrrl_gpu.capture._recover import recover_orphans

    recover_orphans(path, tenant_id=tenant_id)
