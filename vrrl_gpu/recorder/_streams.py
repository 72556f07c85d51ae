"""The recorder's staging rings: one per stream, keyed so that each real stream has exactly one, and released
when the stream is gone; plus the device-sequenced ring (graph capture, in-kernel records).

Keys. A stream is named by its handle, except ``cudaStreamPerThread`` (2): under
``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1`` every thread's default stream has that handle, and the handle names
the calling thread's own stream wherever it is used, so it is keyed by (2, thread). The legacy default stream
(0, or ``cudaStreamLegacy`` 1) is one stream for all threads and is never destroyed. Objects of other
libraries (``ExternalStream``, ``__cuda_stream__``) are keyed by their handle like CuPy's own streams, so two
wrappers of one stream share its ring.

Lifetime. The recorder holds streams weakly. A stream whose object was collected (or whose thread ended)
and whose ring is drained to the end is retired: its ring leaves the drain passes and its memory goes to a
small pool that the next new stream reuses (no allocation per short-lived stream), or is released.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from vrrl_gpu.backends import Backend
from vrrl_gpu.backends._base import DeviceCounter, RingPointers, stream_ref
from vrrl_gpu.capture._drain import Drainer
from vrrl_gpu.capture._shm import ShmSegment
from vrrl_gpu.capture._staging import StagingRing
from vrrl_gpu.errors import CaptureError
from vrrl_gpu.recorder._options import RecorderOptions
from vrrl_gpu.recorder._state import _StreamState

__all__ = ["StreamTable", "IdMap", "PER_THREAD_HANDLE", "StreamKey"]

#: ``cudaStreamPerThread``: one handle for every thread's own default stream.
PER_THREAD_HANDLE = 2
#: Ring memory kept for reuse by new streams (each ring is ``StagingRing.layout_size(staging_slots)`` bytes).
POOL_SIZE = 8
#: Objects without weakref support remembered per stream on the launch path (each is kept alive).
MAX_ALIASES = 8

StreamKey = tuple[int, int]  # (handle, thread ident for per-thread default streams, else 0)
_Release = Callable[[bool], None]


class IdMap(dict[int, _StreamState]):
    """Stream object id -> state (a dict subclass, so that finalizers can refer to it weakly)."""


def _forget(ref: weakref.ref[IdMap], oid: int) -> None:
    m = ref()
    if m is not None:
        m.pop(oid, None)


class StreamTable:
    """The per-stream states (``states``, shared with the recorder) and the rings behind them."""

    def __init__(
        self,
        states: dict[StreamKey, _StreamState],
        by_id: IdMap,
        backend: Backend,
        opts: RecorderOptions,
        log_path: str,
        drainer: Drainer,
        ts_offset: int,
    ) -> None:
        self.states = states
        self.by_id = by_id
        self._ts_offset = ts_offset
        self._backend = backend
        self._opts = opts
        self._log_path = os.path.abspath(log_path)
        self._drainer = drainer
        self._pool: list[tuple[StagingRing, RingPointers, _Release]] = []
        self.device_ring: tuple[StagingRing, RingPointers, DeviceCounter, _Release] | None = None
        #: Streams retired so far (their rings drained, then pooled or released).
        self.retired = 0
        #: The sidecar stream-table entries of retired streams (their slots stay attributable to them).
        self.retired_entries: list[dict[str, Any]] = []
        self._next_index = 0  # each stream's index (sidecar, notes): never reused, even after retiring

    # ------------------------------------------------------------------ keys

    def key_of(self, stream: Any) -> StreamKey:
        handle = int(self._backend.stream_key(stream))
        return (handle, threading.get_ident() if handle == PER_THREAD_HANDLE else 0)

    def get(self, stream: Any, key: StreamKey) -> _StreamState | None:
        """The state of ``key``, following ``stream`` if the state's object is gone (a reused handle, a new
        wrapper of the same stream, or a new thread with a reused ident): same ring, sequences go on."""
        st = self.states.get(key)
        if st is not None and st.gone:
            st.point_at(stream)
        return st

    def open(self, stream: Any, key: StreamKey) -> _StreamState:
        """A new state with its ring (caller checked that ``stream`` is not capturing)."""
        self.sweep()
        native = self._backend.native_stream(stream)
        ring, ptrs, release = self._pool.pop() if self._pool else self.new_ring()
        try:
            pack = self._backend.bind_pack(
                ptrs, stream=native, tenant_id=self._opts.tenant_id, ts_offset=self._ts_offset
            )
        except BaseException:
            self._pool.append((ring, ptrs, release))
            raise
        window: list[Any] = [None] * self._opts.staging_slots
        st = _StreamState(
            key=key[0],
            index=self._next_index,
            stream_ref=stream_ref(stream),
            ring=ring,
            ptrs=ptrs,
            release=release,
            window=window,
            pack=pack,
            thread=threading.current_thread() if key[0] == PER_THREAD_HANDLE else None,
            produced=ring.producer_cell(),
            native=native if native is not stream else None,
        )
        # Backpressure holds the host a window behind the consumer; without it nothing waits.
        st.limit = ring.consumer_position + len(window) - 1 if self._opts.backpressure else 1 << 62
        self._next_index += 1
        self.states[key] = st
        self._drainer.add_ring(ring)
        return st

    def remember(self, stream: Any, st: _StreamState) -> None:
        """Let the launch path find ``st`` by ``stream``'s identity. The id leaves ``by_id`` when the object
        dies (a finalizer runs before its memory can be reused), so an id key always means its own object.
        Per-thread default streams are not remembered: one object may stand for every thread's stream."""
        if st.thread is not None or id(stream) in self.by_id:
            return
        try:
            # The finalizer holds the map weakly: a stream that outlives the recorder must not keep its rings.
            weakref.finalize(stream, _forget, weakref.ref(self.by_id), id(stream))
        except TypeError:
            if len(st.aliases) >= MAX_ALIASES:
                return  # past the bound the slow path answers
            st.aliases.append(stream)  # held, so that its id stays its own
        self.by_id[id(stream)] = st

    # ------------------------------------------------------------- retiring

    def sweep(self) -> int:
        """Retire the states of streams that are gone, finished and drained. Returns how many."""
        gone = [(k, st) for k, st in self.states.items() if st.gone and self._finished(st)]
        if not gone:
            return 0
        if any(st.ring.consumer_position < st.next_seq for _, st in gone):
            self._drainer.flush()  # they finished: what they wrote is in staging, take it now
        n = 0
        for key, st in gone:
            if st.ring.consumer_position < st.next_seq:
                continue  # not arrived yet (an end breadcrumb still in flight): next sweep
            self._drainer.remove_ring(st.ring)
            # A launch that found this state before it retired must not use its ring: the general path then.
            st.fast = False
            st.hot = None
            del self.states[key]
            entry = {"index": st.index, "key": st.key, "runs": [list(r) for r in st.runs]}
            self.retired_entries.append(entry)
            for oid in [oid for oid, s in self.by_id.items() if s is st]:
                del self.by_id[oid]  # other live wrappers of the handle: their next launch opens a new ring
            if len(self._pool) < POOL_SIZE:
                ring = StagingRing.create(
                    st.ring.buffer, st.ring.n_slots, log_path=self._log_path, owner_pid=os.getpid()
                )
                self._pool.append((ring, st.ptrs, st.release))
            else:
                st.release(True)
            n += 1
        self.retired += n
        return n

    def _finished(self, st: _StreamState) -> bool:
        # With begin+end, every breadcrumb drained means every launch ended; with begin, only a wait says so.
        return not st.outstanding or (
            self._opts.breadcrumbs == "begin+end" and st.ring.consumer_position >= st.next_seq
        )

    def release_all(self, cuda_ok: bool, release: Callable[[_Release, bool], None]) -> None:
        """At close: every ring (``release`` wraps each call so one failure does not stop the rest)."""
        for st in self.states.values():
            release(st.release, cuda_ok)
        for _ring, _ptrs, rel in self._pool:
            release(rel, cuda_ok)
        self._pool.clear()
        if self.device_ring is not None:
            release(self.device_ring[3], cuda_ok)

    # ----------------------------------------------------------------- rings

    def new_ring(self) -> tuple[StagingRing, RingPointers, _Release]:
        n = self._opts.staging_slots
        size = StagingRing.layout_size(n)
        if self._opts.staging == "shm":
            seg = ShmSegment.create(None, size)
            try:
                alloc = self._backend.register_host(seg.array)
            except BaseException:
                seg.close()
                seg.unlink()
                raise
            ring = StagingRing.create(seg.array, n, log_path=self._log_path, owner_pid=os.getpid())

            def release(cuda_ok: bool) -> None:
                try:
                    if cuda_ok:
                        alloc.close()
                    else:
                        alloc.leak()  # no cudaHostUnregister on a dead context
                finally:
                    # The records are in the log by now; the segment is plain host memory and a file.
                    seg.close()
                    seg.unlink()

        else:
            alloc = self._backend.alloc_pinned(size)
            ring = StagingRing.create(alloc.host, n, log_path=self._log_path, owner_pid=os.getpid())

            def release(cuda_ok: bool) -> None:
                if cuda_ok:
                    alloc.close()
                else:
                    alloc.leak()  # else PinnedMemory's finalizer would call cudaFreeHost on a dead context

        return ring, RingPointers.from_staging(alloc, ring), release

    def ensure_device_ring(self) -> tuple[StagingRing, RingPointers, DeviceCounter]:
        if self.device_ring is None:
            ring, ptrs, release = self.new_ring()
            try:
                counter = self._backend.alloc_counter(slots=ring.n_slots)
            except BaseException:
                release(True)
                raise

            def release_all(cuda_ok: bool) -> None:
                try:
                    if cuda_ok:
                        counter.close()
                    else:
                        counter.leak()
                finally:
                    release(cuda_ok)

            self.device_ring = (ring, ptrs, counter, release_all)
            self._drainer.add_ring(ring)
        ring, ptrs, counter, _ = self.device_ring
        return ring, ptrs, counter

    def capture_ring(self) -> tuple[StagingRing, RingPointers, DeviceCounter]:
        """The device-sequenced ring for a launch under capture; never made here (that would allocate)."""
        if self.device_ring is None:
            raise CaptureError(
                "a recorded launch is being captured into a CUDA graph, but this recorder has no "
                "device-sequenced ring and making one now would allocate and synchronize inside the capture "
                "(invalidating it); create the Recorder with capture=True (the default)"
            )
        ring, ptrs, counter, _ = self.device_ring
        return ring, ptrs, counter

    def capture_state(self, key: StreamKey, stream: Any) -> _StreamState:
        """For a stream first seen while it captures: no ring of its own (making one would allocate)."""
        ring, ptrs, _counter = self.capture_ring()
        native = self._backend.native_stream(stream)
        return _StreamState(
            key=key[0],
            index=-1,
            stream_ref=stream_ref(stream),
            ring=ring,
            ptrs=ptrs,
            release=lambda ok: None,
            window=[None],
            capturing=1,  # its launches always take the device-sequenced path (it has no pack of its own)
            native=native if native is not stream else None,
        )
