"""The inline launch path of one stream (``rec.launch``'s common case), and the pre-bound launchers.

``make_hot(rec, st)`` returns ``hot(kernel, grid, block, args, opcode, words, stream, shared_mem, outputs)``:
the pack, the launch-map entry, the producer count, the stream-table run, the launch, all under the
recorder's lock. Anything that is not the common case (a stream that is capturing or retired, a bad opcode or
words, an unusable recorder, backpressure) goes to ``Recorder._launch``, the general path, with the lock held,
as ``rec.launch`` always did. The functions here are the reference: ``recorder/_fast.c`` (built by
``_accel.py`` when a C compiler is there) does exactly the same, call for call, and is used instead when
it loads; ``VRRL_NO_ACCEL=1`` keeps these.

Why the shapes: on this path every Python-level call, attribute chain and ``with`` costs about as much as
the work itself (``benchmarks/bench_recorder_instructions.py`` counts it), so what can be looked up once per
stream is (the lock, the window and its mask, the bound pack, the producer cell, the backend's launch), and
the lock is taken with ``acquire``/``release`` (a ``with`` makes two bound methods per launch).
"""

from __future__ import annotations

import itertools
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vrrl_gpu.format._layout import META_OPCODE_BASE, UNKNOWN_SLOT, SlotStatus
from vrrl_gpu.recorder import _accel
from vrrl_gpu.recorder._slot import _Slot
from vrrl_gpu.recorder._state import _ZERO_WORDS, _Launch, _StreamState, _words

if TYPE_CHECKING:
    from vrrl_gpu.recorder._recorder import Recorder

__all__ = [
    "DONE_SLOTS",
    "HotLaunch",
    "HotSlot",
    "install_launch",
    "make_hot",
    "make_instr",
    "make_launcher",
    "new_lock",
]

_BEGIN = int(SlotStatus.BEGIN)
_COMPLETED = int(SlotStatus.COMPLETED)
#: Per-launch completion counters of instrumented kernels (device memory, reset by the last thread).
DONE_SLOTS = 4096

HotLaunch = Callable[..., None]


def _helpers(rec: Recorder, st: _StreamState) -> tuple[Callable[..., Any], ...]:
    """The Python the inline path calls out to (both implementations call exactly these)."""

    def room(seq: int) -> bool:
        return rec._room(st, seq)

    def slow(kernel: Any, grid: Any, block: Any, args: Any, opcode: Any, w: Any, stream: Any, shared_mem: int,
             outputs: Any, captured: bool | None) -> None:  # fmt: skip
        rec._launch(kernel, grid, block, args, opcode, w, stream, shared_mem, outputs, captured=captured)

    def pack_failed(exc: BaseException) -> None:
        rec._enqueue_failed(exc)

    def launch_failed(exc: BaseException, slot: int, opcode: int, w: Any, epoch: int, seq: int, outputs: Any,
                      launched: bool) -> None:  # fmt: skip
        """The launch raised (``launched`` False), or the end breadcrumb's enqueue after it (True)."""
        rec._launch_failed(st, _Launch(slot, opcode, w, epoch, seq, outputs), exc, launched=launched)

    def slow_end(slot: int, opcode: int, w: Any, epoch: int, seq: int) -> None:
        """An inline slot's end when the inline route does not apply (``_Slot.__exit__``'s, lock held)."""
        if rec._poison is None:
            try:
                rec._end(st, _Launch(slot, opcode, w, epoch, seq))
            except BaseException as e:
                rec._enqueue_failed(e)
                raise

    def general_slot(opcode: Any, w: Any, stream: Any) -> _Slot:
        return _Slot(rec, opcode, w, stream, None)

    return room, slow, pack_failed, launch_failed, slow_end, general_slot


def make_hot(rec: Recorder, st: _StreamState) -> HotLaunch:
    """The inline path of ``st`` (see the module docstring); C when ``_accel`` loads, else Python."""
    assert st.pack is not None
    room, slow, pack_failed, launch_failed, slow_end, general_slot = _helpers(rec, st)
    be = rec._backend
    probe = be.is_capturing if rec._probe_capture else None
    end = 1 if rec._end_crumbs else 0
    fast = _accel.module()
    if fast is not None:
        hot: HotLaunch = fast.Hot(
            rec._cells, st.cells, st.run, rec._lock, st.window, st.wmask, st.pack, st.produced,
            be.launch, probe, end, _words, room, slow, pack_failed, launch_failed, st.note_slot, _ZERO_WORDS,
            _BEGIN, _COMPLETED, slow_end, general_slot,
        )  # fmt: skip
        return hot
    return _py_hot(rec, st, probe, end, room, slow, pack_failed, launch_failed, slow_end, general_slot)


def _py_hot(rec: Recorder, st: _StreamState, probe: Callable[[Any], bool] | None, end: int,
            room: Callable[..., Any], slow: Callable[..., Any], pack_failed: Callable[..., Any],
            launch_failed: Callable[..., Any], slow_end: Callable[..., Any],
            general_slot: Callable[..., Any]) -> HotLaunch:  # fmt: skip
    lock = rec._lock
    window, wmask, pack, produced = st.window, st.wmask, st.pack, st.produced
    cells, rc = st.cells, rec._cells  # [next_seq, limit, fast, outstanding], [slot counter, epoch, usable]
    launch = rec._backend.launch
    assert pack is not None

    def claim(
        opcode: Any, w: Any, stream: Any, need: int, outputs: Any
    ) -> tuple[int, int, int] | bool | None:
        """With the lock held: a new slot and its begin breadcrumb, room left for ``need`` more sequences
        after it: ``(slot, epoch, seq)``; else what the general path is told (None, or True: capturing)."""
        if not cells[2] or type(opcode) is not int or not 0 <= opcode < META_OPCODE_BASE or not rc[2]:
            return None
        if probe is not None and probe(stream):
            return True
        seq = cells[0]
        if seq + need >= cells[1] and not room(seq + need):
            return None
        counter = rc[0]
        slot = counter % UNKNOWN_SLOT  # never UNKNOWN_SLOT itself
        epoch = rc[1]
        try:
            pack(seq, slot, opcode, w, epoch, _BEGIN)
        except BaseException as exc:
            pack_failed(exc)
            raise
        window[seq & wmask] = (seq, slot, opcode, w, epoch, outputs, seq)
        cells[0] = seq + 1
        produced[0] = seq + 1
        rc[0] = counter + 1
        run = st.run
        if slot == run[0] + run[1] * run[2]:
            run[2] += 1
        else:
            st.note_slot(slot)
        cells[3] = True
        return slot, epoch, seq

    def body(kernel: Any, grid: Any, block: Any, args: Any, opcode: Any, w: Any, stream: Any,
             shared_mem: int, outputs: Any) -> None:  # fmt: skip
        """``hot`` with ``w`` already checked (``_words``): what a launcher with bound words calls."""
        lock.acquire()
        try:
            got = claim(opcode, w, stream, end, outputs)
            if type(got) is not tuple:
                return slow(kernel, grid, block, args, opcode, w, stream, shared_mem, outputs, got)  # type: ignore[no-any-return]
            slot, epoch, seq = got
            try:
                launch(kernel, grid, block, args, stream=stream, shared_mem=shared_mem)
            except BaseException as exc:
                launch_failed(exc, slot, opcode, w, epoch, seq, outputs, False)
                raise
            if end:
                s2 = seq + 1
                try:
                    pack(s2, slot, opcode, w, epoch, _COMPLETED)
                except BaseException as exc:
                    # The kernel was enqueued: the device may have run it and faulted in it.
                    launch_failed(exc, slot, opcode, w, epoch, seq, outputs, True)
                    raise
                window[s2 & wmask] = (s2, slot, opcode, w, epoch, outputs, seq)
                cells[0] = s2 + 1
                produced[0] = s2 + 1
            return None
        finally:
            lock.release()

    def slot_begin(opcode: Any, w: Any, stream: Any) -> tuple[int, int, int] | None:
        """``rec.slot``'s begin breadcrumb inline: ``(slot, epoch, seq)``, or None (the general path)."""
        lock.acquire()
        try:
            got = claim(opcode, w, stream, 0, None)
            return got if type(got) is tuple else None
        finally:
            lock.release()

    def slot_end(exc: BaseException | None, slot: int, opcode: int, w: Any, epoch: int, seq: int) -> None:
        """The end of an inline slot: its end breadcrumb, or (``exc``: the body raised) its failure."""
        lock.acquire()
        try:
            if exc is not None:
                # The body may have enqueued work before it raised: a fault the device met after the slot's
                # begin is the slot's own (FAULTED), not a failure of the call.
                launch_failed(exc, slot, opcode, w, epoch, seq, None, True)
                return
            if not end:
                return
            s2 = cells[0]
            if not cells[2] or not rc[2] or (s2 >= cells[1] and not room(s2)):
                slow_end(slot, opcode, w, epoch, seq)
                return
            try:
                pack(s2, slot, opcode, w, epoch, _COMPLETED)
            except BaseException as e:
                pack_failed(e)
                raise
            window[s2 & wmask] = (s2, slot, opcode, w, epoch, None, seq)
            cells[0] = s2 + 1
            produced[0] = s2 + 1
        finally:
            lock.release()

    paths = (slot_begin, slot_end, general_slot)

    def hot(kernel: Any, grid: Any, block: Any, args: Any, opcode: Any, words: Any, stream: Any,
            shared_mem: int, outputs: Any) -> None:  # fmt: skip
        w = _ZERO_WORDS if words is None else _words(words)
        body(kernel, grid, block, args, opcode, w, stream, shared_mem, outputs)

    def slot_of(opcode: Any, words: Any, stream: Any) -> HotSlot:
        return HotSlot(paths, opcode, words, stream)

    hot.body = body  # type: ignore[attr-defined]
    hot.slot = slot_of  # type: ignore[attr-defined]
    return hot


class HotSlot:
    """``rec.slot(...)`` on a known stream without ``outputs``: its breadcrumbs by the stream's inline path
    (no per-slot state but this object), or the general :class:`~vrrl_gpu.recorder._slot._Slot` when the
    inline route does not apply. ``_fast.c``'s ``Slot`` does the same."""

    __slots__ = ("_general", "_opcode", "_paths", "_state", "_stream", "_words")

    def __init__(self, paths: tuple[Callable[..., Any], ...], opcode: Any, words: Any, stream: Any) -> None:
        self._paths = paths
        self._opcode = opcode
        self._words = words
        self._stream = stream
        self._general: Any = None

    def __enter__(self) -> int:
        w = _ZERO_WORDS if self._words is None else _words(self._words)
        begin, _end, general = self._paths
        got = begin(self._opcode, w, self._stream)
        if got is None:
            self._general = general(self._opcode, w, self._stream)
            return self._general.__enter__()  # type: ignore[no-any-return]
        self._general = None
        self._state = (got[0], w, got[1], got[2])
        return got[0]  # type: ignore[no-any-return]

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._general is not None:
            return self._general.__exit__(exc_type, exc, tb)  # type: ignore[no-any-return]
        slot, w, epoch, seq = self._state
        self._paths[1](exc, slot, self._opcode, w, epoch, seq)
        return None


def new_lock() -> Any:
    """The recorder's lock: ``threading.RLock``, or with the accelerator its ``RLock`` (same semantics: owner,
    recursion, a blocking acquire releases the GIL and runs signal handlers), which the C launch path takes
    without a method call."""
    fast = _accel.module()
    return threading.RLock() if fast is None else fast.RLock()


def install_launch(rec: Recorder, method: Callable[..., None], slot: Callable[..., Any]) -> None:
    """With the accelerator, ``rec.launch`` and ``rec.slot`` are C callables (instance attributes over the
    methods): a known stream object's inline path is then taken without a Python frame; any other call is
    the bound method (``method``, ``slot``: the Python ``Recorder.launch`` and ``Recorder.slot``, which stay
    the reference). Not for subclasses that override them."""
    fast = _accel.module()
    if fast is None:
        return
    if getattr(type(rec), "launch", None) is method:
        rec.__dict__["launch"] = fast.Launch(rec._by_id, types.MethodType(method, rec))
    if getattr(type(rec), "slot", None) is slot:
        rec.__dict__["slot"] = fast.SlotEntry(rec._by_id, types.MethodType(slot, rec))


def make_launcher(hot: HotLaunch, kernel: Any, opcode: int, words: Any, stream: Any,
                  outputs: Any) -> Callable[..., None]:  # fmt: skip
    """``launcher(grid, block, args, shared_mem=0)``: ``hot`` with the kernel, opcode, words (checked: a
    tuple of four u32), stream and outputs bound (``rec.launcher``)."""
    fast = _accel.module()
    if fast is not None and type(hot) is fast.Hot:
        return fast.Bound(hot, kernel, opcode, words, stream, outputs)  # type: ignore[no-any-return]

    # ``words`` were checked when the launcher was made (rec.launcher): the Python path skips that per call.
    call = getattr(hot, "body", None) or hot

    def launcher(grid: Any, block: Any, args: Any, shared_mem: int = 0) -> None:
        call(kernel, grid, block, args, opcode, words, stream, shared_mem, outputs)

    return launcher


def new_slot_counter() -> Any:
    """The completion-slot counter of instrumented launches.

    ``next()`` on an ``itertools.count`` is one C call that never releases the GIL, so it is atomic: launches
    on several threads never share a slot, and need no lock. A free-threaded build (no GIL) would need a
    lock or an atomic counter here (``_accel`` loads nothing there, and this Python path would be racy)."""
    return itertools.count()


def make_instr(rec: Recorder, bound: Callable[..., None], opcode: int, words: Any,
               slots: Any) -> Callable[..., None]:  # fmt: skip
    """An instrumented kernel's call, ``RawKernel.__call__``'s signature (``InstrumentedKernel.__call__``)."""
    by_id = rec._by_id
    rc = rec._cells  # [slot counter, epoch, usable]
    wfn = words if callable(words) else None
    fixed = None if callable(words) else words

    def first(stream: Any) -> Any:
        """First sight of the stream (its checks), stream=None (the current one) or an unusable recorder."""
        with rec._lock:
            return rec._first_sight(stream)

    def failed(exc: BaseException, st: _StreamState, w: Any, epoch: int) -> None:
        with rec._lock:
            # A host slot, like every FAILED_AT_LAUNCH record (the device never claimed a sequence).
            info = _Launch(slot_idx=rec._slot_counter & 0xFFFFFFFF, opcode=opcode, words=w, epoch=epoch,
                           begin_seq=-1)  # fmt: skip
            rec._slot_counter += 1
            rec._launch_failed(st, info, exc)

    fast = _accel.module()
    if fast is not None:
        return fast.Instr(rc, rec.__dict__, by_id, bound, fixed, wfn, slots, DONE_SLOTS - 1, first, failed,  # type: ignore[no-any-return]
                          _words, _cooperative)  # fmt: skip

    def call(grid: Any, block: Any, args: Any, *, shared_mem: int = 0, stream: Any = None,
             enable_cooperative_groups: bool = False) -> None:  # fmt: skip
        """Launch the instrumented kernel (``RawKernel.__call__``'s signature); it writes its own records."""
        if enable_cooperative_groups:
            raise _cooperative()
        w = fixed
        if w is None:
            w = _words(wfn(tuple(args)))  # type: ignore[misc]
        st = by_id.get(id(stream))
        if st is None or not rc[2]:
            st = first(stream)
            stream = st.stream
        slot = next(slots) & (DONE_SLOTS - 1)
        epoch = rc[1]
        try:
            bound(grid, block, args, (slot, *w, epoch), stream, shared_mem)
        except BaseException as exc:
            failed(exc, st, w, epoch)
            raise
        # The stream's host-sequenced ring no longer shows how far the device got: never blame from it (the
        # device-sequenced ring does: Recorder._device_window).
        st.cells[3] = False
        rec._instr_outstanding = True

    call.bound = bound  # type: ignore[attr-defined]  # what the benchmarks time alone (C: a member too)
    return call


def _cooperative() -> Exception:
    from vrrl_gpu.errors import KernelArgumentError

    return KernelArgumentError(
        "an instrumented kernel cannot launch cooperatively; call the RawKernel itself inside "
        "`with rec.slot(opcode):` to record it"
    )
