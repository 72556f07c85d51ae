"""The per-launch and per-stream state the recorder keeps."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vrrl_gpu.backends._base import PackLauncher, RingPointers, stream_ref
from vrrl_gpu.capture._staging import StagingRing
from vrrl_gpu.errors import (
    RecordValueError,
)
from vrrl_gpu.recorder._options import _U32, Words


@dataclass(slots=True)
class _Launch:
    slot_idx: int
    opcode: int
    words: Words
    epoch: int
    begin_seq: int
    outputs: Any = None
    end_seq: int | None = None
    captured: bool = False  # recorded into a CUDA graph: the device claims each replay's sequence


@dataclass
class _StreamState:
    """One stream: its staging ring, and the launch behind each sequence that can still arrive.

    ``window[seq & mask]`` is the launch whose begin or end breadcrumb has
    sequence ``seq``, as a tuple ``(seq, slot_idx, opcode, words, epoch, outputs,
    begin_seq)`` (see :meth:`lookup`; one tuple per breadcrumb is all the launch path
    makes): with backpressure the host never runs more than ``len(window) - 1``
    sequences ahead of the consumer, so every sequence the device can still write,
    and the newest one it wrote, stay resolvable in bounded memory.
    """

    key: int  # the stream's handle
    index: int
    stream_ref: Callable[[], Any]  # weak where the object allows: the recorder keeps no stream alive
    ring: StagingRing
    ptrs: RingPointers
    release: Callable[[bool], None]
    window: list[Entry | None]
    pack: PackLauncher | None = None  # vrrl_pack bound to this stream's ring (set once the ring exists)
    capturing: int = 0  # depth of rec.capturing(stream) blocks open on this stream
    # Objects for the same stream that take no weakref, kept alive so that their id keys stay theirs.
    aliases: list[Any] = field(default_factory=list)
    thread: threading.Thread | None = None  # a per-thread default stream: the thread it belongs to
    # The backend's own object for another library's stream (a CuPy ExternalStream of a torch stream's
    # handle), held while the library's object (``stream_ref``) lives; None: that object is the backend's.
    native: Any = None

    #: The slots of this stream as arithmetic runs ``[first, stride, count]`` (the sidecar's stream table).
    runs: list[list[int]] = field(default_factory=list)
    #: The newest run (a sentinel no slot extends before the first): the launch path extends it inline.
    #: Always this one list (a new run overwrites it in place): the C launch path holds it.
    run: list[int] = field(default_factory=lambda: [-1, 0, 1])
    #: The staging ring's producer count as a one-element u64 view (``StagingRing.producer_cell``).
    produced: Any = None
    wmask: int = field(init=False, default=0)
    #: ``[next_seq, limit, fast, outstanding]`` (the properties of those names): one list that the inline
    #: launch path (recorder/_hot.py, _fast.c) reads and writes by index, not four attributes.
    cells: list[Any] = field(default_factory=lambda: [0, 0, False, False], repr=False, compare=False)
    #: The inline launch path of this stream (recorder/_hot.py), made when the stream is first seen.
    hot: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.wmask = len(self.window) - 1  # the launch path's window mask, without a len() per launch

    @property
    def next_seq(self) -> int:
        """The next host sequence of this stream's ring (every sequence below it was enqueued)."""
        return int(self.cells[0])

    @next_seq.setter
    def next_seq(self, value: int) -> None:
        self.cells[0] = value

    @property
    def limit(self) -> int:
        """Backpressure: sequences below this one need no look at the consumer (it only moves forward)."""
        return int(self.cells[1])

    @limit.setter
    def limit(self, value: int) -> None:
        self.cells[1] = value

    @property
    def fast(self) -> bool:
        """The launch path may take the inline route: not capturing, no NVTX (the recorder sets it)."""
        return bool(self.cells[2])

    @fast.setter
    def fast(self, value: bool) -> None:
        self.cells[2] = value

    @property
    def outstanding(self) -> bool:
        """A launch on this stream may have begun and not ended (its crash window is worth a look)."""
        return bool(self.cells[3])

    @outstanding.setter
    def outstanding(self, value: bool) -> None:
        self.cells[3] = value

    @property
    def stream(self) -> Any:
        """The stream object to launch on (None once it is gone: never pass that on to a backend)."""
        s = self.stream_ref()
        return s if s is None or self.native is None else self.native

    @property
    def gone(self) -> bool:
        """The stream was destroyed (its object collected) or its thread ended: nobody can launch on it."""
        if self.thread is not None:
            return not self.thread.is_alive()
        return self.stream_ref() is None

    @property
    def foreign(self) -> bool:
        """Another thread's default stream: its handle would name the calling thread's own stream."""
        return self.thread is not None and self.thread is not threading.current_thread()

    def point_at(self, stream: Any) -> None:
        """Follow ``stream`` from now on (a new object for the same handle, or a new thread's)."""
        self.stream_ref = stream_ref(stream)
        if self.thread is not None:
            self.thread = threading.current_thread()

    @property
    def mask(self) -> int:
        return len(self.window) - 1

    def lookup(self, seq: int) -> _Launch | None:
        """The launch of sequence ``seq`` if the window still holds it, else None (``end_seq`` is ``seq``
        when ``seq`` is the launch's end breadcrumb)."""
        if seq < 0:
            return None
        e = self.window[seq & (len(self.window) - 1)]
        if e is None or e[0] != seq:
            return None
        begin = e[6]
        return _Launch(e[1], e[2], e[3], e[4], begin, e[5], None if begin == seq else seq)

    def note_slot(self, slot: int) -> None:
        """Extend the stream table with ``slot`` (a few integer operations per launch)."""
        runs, run = self.runs, self.run
        if runs:  # run is runs[-1]
            if run[2] == 1:
                if slot > run[0]:
                    run[1] = slot - run[0]
                    run[2] = 2
                    return
            elif slot == run[0] + run[1] * run[2]:
                run[2] += 1
                return
            runs[-1] = list(run)  # the finished run keeps its values; ``run`` is the new one
        if len(runs) >= _MAX_RUNS:
            # Bounded: the oldest runs go (their slots' stream becomes unknown), rarely and in one step.
            del runs[: _MAX_RUNS // 2]
        run[:] = (slot, 1, 1)
        runs.append(run)


#: A launch-map entry: (seq, slot_idx, opcode, words, epoch, outputs, begin_seq).
Entry = tuple[int, int, int, Words, int, Any, int]

_ZERO_WORDS: Words = (0, 0, 0, 0)
#: Runs kept per stream in the stream table: round-robin schedules need one, irregular ones one per switch.
_MAX_RUNS = 4096


def _words(words: Sequence[int] | None) -> Words:
    if words is None:
        return _ZERO_WORDS
    if type(words) is tuple and len(words) == 4:
        a, b, c, d = words
        if (
            type(a) is int
            and type(b) is int
            and type(c) is int
            and type(d) is int
            and 0 <= a <= _U32
            and 0 <= b <= _U32
            and 0 <= c <= _U32
            and 0 <= d <= _U32
        ):
            return words
    try:
        w = tuple(int(x) for x in (words or (0, 0, 0, 0)))
    except (TypeError, ValueError) as e:
        raise RecordValueError(f"words must be 4 integers in 0 ..= {_U32}, got {words!r}") from e
    if len(w) != 4 or any(not 0 <= x <= _U32 for x in w):
        raise RecordValueError(f"words must be 4 integers in 0 ..= {_U32}, got {words!r}")
    return (w[0], w[1], w[2], w[3])
