"""The backend interface: what the recorder needs from a device, and the small types it passes around.

Two implementations: :class:`~vrrl_gpu.backends._cupy.CupyBackend` (the real
device through CuPy) and :class:`~vrrl_gpu.backends._twin.TwinBackend` (the
same ``kernels/`` sources compiled for the CPU). Everything above this layer
talks only to :class:`Backend`.

The contract of each method is written on the method of :class:`Backend`, and
the rules that hold for all of them (which errors, what a sticky error forbids)
on the class.

Graph capture: streams of both backends have ``begin_capture()`` and
``end_capture() -> graph`` with ``graph.launch(stream)``; while one captures,
allocations, device or stream synchronization and queries of the capturing
stream fail with 900 and invalidate the capture (:meth:`Backend.is_capturing`
stays True until ``end_capture``, which then raises 901).
"""

from __future__ import annotations

import abc
import ctypes
import struct
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from vrrl_gpu.capture._kernels import KernelSignature
from vrrl_gpu.errors import KernelArgumentError, StagingError

__all__ = [
    "BoundLauncher",
    "Dim3",
    "StreamLike",
    "HostAllocation",
    "DeviceCounter",
    "DeviceBuffer",
    "KernelHandle",
    "RingPointers",
    "Backend",
    "normalize_dims",
    "grid_exceeds_limits",
    "check_host_buffer",
    "check_arg_count",
    "pointer_value",
    "pack_args",
    "ArgPacker",
    "numpy_args",
    "PACK_SOURCE",
    "leak",
    "leaked_count",
    "stream_ref",
    "PackLauncher",
]

#: The source file of the pack kernels.
PACK_SOURCE = "vrrl_pack.cu"

Dim3 = tuple[int, int, int]

#: A bound pack: ``(seq, slot_idx, opcode, words, epoch, slot_status)`` -> one launch of ``vrrl_pack``.
PackLauncher = Callable[[int, int, int, Sequence[int], int, int], None]
#: ``bound(grid, block, args, varying, stream, shared_mem)``: a kernel with trailing parameters bound
#: (:meth:`Backend.bind_launch`); ``varying``: the last parameters' values (u32); ``args``: the kernel's own.
BoundLauncher = Callable[[Any, Any, Sequence[object], Sequence[int], Any, int], None]


@runtime_checkable
class StreamLike(Protocol):
    """A stream: anything with an integer ``ptr`` (``cupy.cuda.Stream``, ``ExternalStream``, the twin's)."""

    @property
    def ptr(self) -> int: ...


#: Everything :func:`leak` kept alive. Each also holds a reference no code ever drops (``Py_IncRef``), so
#: not even interpreter shutdown, which clears module globals like this list, runs its finalizer.
_LEAKED: list[object] = []


def leak(owner: object) -> None:
    """Keep ``owner`` alive until the process ends, its finalizer never run (no CUDA call at GC or exit).

    After a sticky error the context is dead: ``cudaFreeHost`` or ``cuModuleUnload`` from a finalizer fails
    ("Exception ignored" at exit) or may hang; the pages go back to the OS with the process instead.
    """
    if any(o is owner for o in _LEAKED):
        return
    _LEAKED.append(owner)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(owner))


def leaked_count() -> int:
    """How many objects :func:`leak` has kept alive in this process."""
    return len(_LEAKED)


def stream_ref(stream: Any) -> Callable[[], Any]:
    """A weak reference to ``stream`` (a strong one for objects that take no weakref): who holds a stream
    only to launch on it must not keep it from being destroyed."""
    try:
        return weakref.ref(stream)
    except TypeError:
        return lambda: stream


class _Closable:
    def __init__(self, release: Callable[[], None] | None, owner: object = None) -> None:
        self._release = release
        self._owner = owner
        self.closed = False

    def leak(self) -> None:
        """Never free the memory (see :func:`leak`): for after a sticky error. Marks it closed; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._release = None
        if self._owner is not None:
            leak(self._owner)

    def close(self) -> None:
        """Release the memory; idempotent (marked closed first, so a failing release is not retried)."""
        if self.closed:
            return
        self.closed = True
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HostAllocation(_Closable):
    """Device-writable host memory: ``host`` (a writable uint8 view), ``device_ptr`` (for kernels).

    ``host`` keeps the memory alive for as long as the view (or a view of it)
    exists; ``close()`` unregisters or drops the backend's own reference.
    ``owner`` is the object whose finalizer frees the memory (CuPy's
    ``PinnedMemory``); ``leak()`` keeps it alive for good.
    """

    def __init__(
        self,
        host: npt.NDArray[np.uint8],
        device_ptr: int,
        release: Callable[[], None] | None = None,
        owner: object = None,
    ) -> None:
        super().__init__(release, owner)
        self.host = host
        self.device_ptr = int(device_ptr)
        self.nbytes = int(host.nbytes)

    def __repr__(self) -> str:
        return f"HostAllocation(nbytes={self.nbytes}, device_ptr={self.device_ptr:#x}, closed={self.closed})"


class DeviceCounter(_Closable):
    """A u64 in device memory. ``read()`` waits for the device, then copies it to the host."""

    def __init__(
        self,
        device_ptr: int,
        reader: Callable[[], int],
        release: Callable[[], None] | None = None,
        owner: object = None,
    ) -> None:
        super().__init__(release, owner)
        self.device_ptr = int(device_ptr)
        self._reader = reader

    def read(self) -> int:
        """The counter's value after all work enqueued so far (synchronizes the device)."""
        return int(self._reader())

    def __repr__(self) -> str:
        return f"DeviceCounter(device_ptr={self.device_ptr:#x}, closed={self.closed})"


class DeviceBuffer(_Closable):
    """Device memory for demo and test kernels. Copies synchronize the device first."""

    def __init__(
        self,
        device_ptr: int,
        nbytes: int,
        to_host: Callable[[], npt.NDArray[np.uint8]],
        from_host: Callable[[npt.NDArray[np.uint8]], None],
        release: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(release)
        self.device_ptr = int(device_ptr)
        self.nbytes = int(nbytes)
        self._to_host = to_host
        self._from_host = from_host

    def to_host(self) -> npt.NDArray[np.uint8]:
        """A host copy of the whole buffer (uint8; ``.view(dtype)`` it)."""
        return self._to_host()

    def from_host(self, data: npt.ArrayLike) -> None:
        """Copy ``data`` (any array; its bytes) to the start of the buffer."""
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if raw.nbytes > self.nbytes:
            raise KernelArgumentError(
                f"expected at most {self.nbytes} bytes for this device buffer, got {raw.nbytes}; "
                f"allocate a larger buffer"
            )
        self._from_host(raw)

    def __repr__(self) -> str:
        return f"DeviceBuffer(nbytes={self.nbytes}, device_ptr={self.device_ptr:#x}, closed={self.closed})"


@dataclass(frozen=True)
class KernelHandle:
    """A loaded kernel: its name, source, parsed signature, and the backend's native object.

    Callable like ``cupy.RawKernel``: ``k(grid, block, args, shared_mem=0, stream=None)``
    launches it through the backend that loaded it (unrecorded).
    """

    name: str
    source: Path
    signature: KernelSignature
    native: Any
    backend: Backend | None = field(default=None, repr=False, compare=False)

    def __call__(
        self,
        grid: int | Sequence[int],
        block: int | Sequence[int],
        args: Sequence[object],
        *,
        shared_mem: int = 0,
        stream: Any = None,
    ) -> None:
        if self.backend is None:
            raise KernelArgumentError(f"kernel {self.name} was not loaded by a backend; use Backend.load()")
        self.backend.launch(self, grid, block, args, stream=stream, shared_mem=shared_mem)


@dataclass(frozen=True)
class RingPointers:
    """Where a pack kernel writes: device pointers of a staging ring's records and commit words, and N - 1."""

    records_ptr: int
    commits_ptr: int
    mask: int

    @classmethod
    def from_staging(cls, alloc: HostAllocation, ring: Any) -> RingPointers:
        """From the allocation holding a ``StagingRing`` (records_offset, commits_offset, mask)."""
        return cls(
            records_ptr=alloc.device_ptr + int(ring.records_offset),
            commits_ptr=alloc.device_ptr + int(ring.commits_offset),
            mask=int(ring.mask),
        )


_DIM_LIMITS = (2**31 - 1, 65535, 65535)


_DIMS_CACHE: dict[object, Dim3] = {}


def normalize_dims(value: int | Sequence[int], what: str) -> Dim3:
    """``grid``/``block`` as three ints; like CuPy, missing dimensions are 1 and 0 becomes 1."""
    if type(value) in (int, tuple):
        hit = _DIMS_CACHE.get(value)
        if hit is not None:
            return hit
    dims3 = _normalize_dims(value, what)
    if type(value) in (int, tuple) and len(_DIMS_CACHE) < 4096:
        _DIMS_CACHE[value] = dims3
    return dims3


def _normalize_dims(value: int | Sequence[int], what: str) -> Dim3:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        dims = [int(value)]
    elif isinstance(value, (tuple, list)) and 1 <= len(value) <= 3:
        dims = [int(v) for v in value]
    else:
        raise KernelArgumentError(f"expected {what} as an int or a tuple of 1 to 3 ints, got {value!r}")
    if any(d < 0 for d in dims):
        raise KernelArgumentError(f"expected non-negative {what} dimensions, got {tuple(dims)}")
    dims += [1] * (3 - len(dims))
    return (max(1, dims[0]), max(1, dims[1]), max(1, dims[2]))


def grid_exceeds_limits(grid: Dim3) -> bool:
    """True when a grid dimension exceeds CUDA's (2**31 - 1, 65535, 65535)."""
    return any(g > lim for g, lim in zip(grid, _DIM_LIMITS, strict=True))


def check_host_buffer(buf: object) -> npt.NDArray[np.uint8]:
    """The buffer for ``register_host``: a writable, C-contiguous, 1-D uint8 numpy array."""
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise StagingError(
            f"expected a 1-D numpy uint8 array over the host memory to register, got "
            f"{type(buf).__name__} {getattr(buf, 'dtype', '')} {getattr(buf, 'shape', '')}"
        )
    if not buf.flags.c_contiguous or not buf.flags.writeable or buf.nbytes == 0:
        raise StagingError(
            "expected a writable, C-contiguous, non-empty buffer to register (np.frombuffer over a "
            "read-write mmap), got one that is read-only, strided or empty"
        )
    return buf


# Each parameter occupies one 8-byte cell of the twin's argument block (struct formats, little-endian).
_CELL_FORMATS = {
    "p": "Q",
    "?": "?7x",
    "b": "b7x",
    "B": "B7x",
    "h": "h6x",
    "H": "H6x",
    "i": "i4x",
    "I": "I4x",
    "q": "q",
    "Q": "Q",
    "f": "f4x",
    "d": "d",
}
_INT_CODES = frozenset("bBhHiIqQ")
_U64_LIMIT = 1 << 64
_NUMPY_SCALARS: dict[str, Callable[[Any], np.generic]] = {
    "?": np.bool_,
    "b": np.int8,
    "B": np.uint8,
    "h": np.int16,
    "H": np.uint16,
    "i": np.int32,
    "I": np.uint32,
    "q": np.int64,
    "Q": np.uint64,
    "f": np.float32,
    "d": np.float64,
}

# np.iinfo costs microseconds a call: the limits of each integer code, once.
_INT_LIMITS = {c: (int(np.iinfo(np.dtype(c)).min), int(np.iinfo(np.dtype(c)).max)) for c in _INT_CODES}


def _scalar_value(sig: KernelSignature, i: int, code: str, value: object) -> int | float | bool:
    if isinstance(value, np.generic):
        value = value.item()
    if code in "fd":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif code == "?":
        if isinstance(value, (bool, int)):
            return bool(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        lo, hi = _INT_LIMITS[code]
        if lo <= value <= hi:
            return value
        raise KernelArgumentError(
            f"{sig.name} argument {i} ({sig.params[i].ctype}): expected {lo} ..= {hi}, got {value}"
        )
    raise KernelArgumentError(
        f"{sig.name} argument {i} ({sig.params[i].ctype}): expected a number of type "
        f"{np.dtype(code).name}, got {type(value).__name__} {value!r}"
    )


def pointer_value(sig: KernelSignature, i: int, value: object) -> int | None:
    """The address for a pointer parameter, or None when it is not a plain address (backend decides)."""
    if value is None:
        return 0
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        v = int(value)
        if 0 <= v < 2**64:
            return v
        raise KernelArgumentError(f"{sig.name} argument {i}: expected an address 0 ..= 2**64-1, got {v}")
    ptr = getattr(value, "device_ptr", None)
    if isinstance(ptr, int):
        return ptr
    return None


def check_arg_count(sig: KernelSignature, args: Sequence[object]) -> None:
    """Raise unless ``args`` has one value per parameter."""
    if len(args) != len(sig.params):
        names = ", ".join(p.ctype for p in sig.params)
        raise KernelArgumentError(
            f"{sig.name} expects {len(sig.params)} arguments ({names}), got {len(args)}"
        )


def pack_args(
    sig: KernelSignature, args: Sequence[object], pointer_hook: Callable[[int, object], int | None]
) -> bytes:
    """The twin's argument block: one little-endian 8-byte cell per parameter."""
    check_arg_count(sig, args)
    fmt = ["<"]
    vals: list[int | float | bool] = []
    for i, (p, a) in enumerate(zip(sig.params, args, strict=True)):
        fmt.append(_CELL_FORMATS[p.code])
        if p.code == "p":
            addr = pointer_value(sig, i, a)
            if addr is None:
                addr = pointer_hook(i, a)
            if addr is None:
                raise KernelArgumentError(
                    f"{sig.name} argument {i} ({p.ctype}): expected an address (int), None, an object with "
                    f"device_ptr or an array of this backend, got {type(a).__name__}"
                )
            vals.append(addr)
        else:
            vals.append(_scalar_value(sig, i, p.code, a))
    return struct.pack("".join(fmt), *vals)


class ArgPacker:
    """The fast path of :func:`pack_args` for one signature: a precompiled struct, the pointer positions.

    ``pack_into`` writes the 8-byte cells at ``offset``; anything the struct
    rejects (or a bool for an integer) is re-checked by :func:`pack_args`,
    which raises the descriptive :class:`KernelArgumentError`.
    """

    def __init__(self, sig: KernelSignature) -> None:
        self.sig = sig
        self.n = len(sig.params)
        self.struct = struct.Struct("<" + "".join(_CELL_FORMATS[p.code] for p in sig.params))
        self.pointer_idx = tuple(i for i, p in enumerate(sig.params) if p.code == "p")
        self.int_idx = tuple(i for i, p in enumerate(sig.params) if p.code in _INT_CODES)

    def pack_into(
        self,
        buf: Any,
        offset: int,
        args: Sequence[object],
        pointer_hook: Callable[[int, object], int | None],
    ) -> None:
        """Write the argument cells of ``args`` into ``buf`` at ``offset``."""
        if len(args) != self.n:
            check_arg_count(self.sig, args)
        vals = list(args)
        for i in self.pointer_idx:
            a = vals[i]
            if type(a) is int and 0 <= a < _U64_LIMIT:
                continue
            addr = pointer_value(self.sig, i, a)
            if addr is None:
                addr = pointer_hook(i, a)
            if addr is None:
                pack_args(self.sig, args, pointer_hook)  # raises the descriptive error
            vals[i] = addr
        for i in self.int_idx:
            if type(vals[i]) is bool:
                pack_args(self.sig, args, pointer_hook)
        try:
            self.struct.pack_into(buf, offset, *vals)
        except (struct.error, TypeError, OverflowError) as e:
            pack_args(self.sig, args, pointer_hook)  # raises with the argument named
            raise KernelArgumentError(f"{self.sig.name}: arguments do not fit the parameters: {e}") from e


class _NumpyConverter:
    """:func:`numpy_args` for one signature: a converter per parameter, chosen once."""

    def __init__(self, sig: KernelSignature) -> None:
        self.sig = sig
        self.n = len(sig.params)
        self.codes = tuple(p.code for p in sig.params)

    def __call__(
        self, args: Sequence[object], pointer_hook: Callable[[int, object], object | None]
    ) -> tuple[object, ...]:
        if len(args) != self.n:
            check_arg_count(self.sig, args)
        out: list[object] = []
        for i, code in enumerate(self.codes):
            a = args[i]
            t = type(a)
            if code == "p":
                if t is int and 0 <= a < _U64_LIMIT:  # type: ignore[operator]
                    out.append(np.uint64(a))  # type: ignore[arg-type]
                    continue
                addr = pointer_value(self.sig, i, a)
                if addr is not None:
                    out.append(np.uint64(addr))
                    continue
                native = pointer_hook(i, a)
                if native is None:
                    raise KernelArgumentError(
                        f"{self.sig.name} argument {i} ({self.sig.params[i].ctype}): expected an address "
                        f"(int), None, an object with device_ptr or a CuPy array, got {t.__name__}"
                    )
                out.append(native)
            elif t is int and code in _INT_CODES:
                lo, hi = _INT_LIMITS[code]
                if not lo <= a <= hi:  # type: ignore[operator]
                    _scalar_value(self.sig, i, code, a)  # raises with the argument named
                out.append(_NUMPY_SCALARS[code](a))
            elif t is float and code in "fd":
                out.append(_NUMPY_SCALARS[code](a))
            else:
                out.append(_NUMPY_SCALARS[code](_scalar_value(self.sig, i, code, a)))
        return tuple(out)


# Keyed by identity (hashing a signature is slower than converting); the converter keeps its signature alive.
_CONVERTERS: dict[int, _NumpyConverter] = {}


def numpy_args(
    sig: KernelSignature, args: Sequence[object], pointer_hook: Callable[[int, object], object | None]
) -> tuple[object, ...]:
    """Arguments as exact-width numpy scalars (pointers as ``np.uint64``), for CuPy's launcher.

    ``pointer_hook`` may return a native object to pass as it is (a CuPy array).
    The per-signature converter is built once (no ``np.iinfo`` per call).
    """
    conv = _CONVERTERS.get(id(sig))
    if conv is None or conv.sig is not sig:
        conv = _NumpyConverter(sig)
        if len(_CONVERTERS) < 4096:
            _CONVERTERS[id(sig)] = conv
    return conv(args, pointer_hook)


class Backend(abc.ABC):
    """A device the recorder can drive. Each method's docstring is its contract.

    Rules for every method: a CUDA failure raises the backend's own CUDA error
    (CuPy's exceptions unchanged; the twin's :class:`~vrrl_gpu.backends.TwinCudaError`),
    never a wrapped or swallowed one; bad arguments found before touching the
    device raise a typed :mod:`vrrl_gpu.errors` error. Once a *sticky* error
    (700, 710, 719, ... : ``CUDA_ERROR_TABLE[code].sticky``) has happened the
    context is dead: every later call that would reach CUDA raises that error
    again (:meth:`stream_query` returns its code instead), and nothing may be
    freed through CUDA (:meth:`abandon` replaces :meth:`close`).
    """

    name: str = ""
    is_simulated: bool = False

    @abc.abstractmethod
    def device_info(self) -> dict[str, Any]:
        """The device's identity for the sidecar: ``name``, ``uuid``, ``compute_capability``,
        ``driver_version``, ``runtime_version``, ``cupy_version`` (``"twin"`` on the twin), ``backend``,
        ``simulated``.

        Queried for the sidecar; may raise the CUDA error of a device that cannot be queried.
        """

    @abc.abstractmethod
    def alloc_pinned(self, nbytes: int) -> HostAllocation:
        """Page-locked, device-mapped host memory of ``nbytes`` (zeroed on the twin only).

        The caller owns the allocation and releases it with ``close()`` (or ``leak()`` after a
        sticky error). Raises the CUDA error of the allocation (2 out of memory), or the sticky error.
        """

    @abc.abstractmethod
    def register_host(self, buf: npt.NDArray[np.uint8]) -> HostAllocation:
        """Pin and map an existing host buffer (an mmap of a /dev/shm file) for the device.

        ``buf`` stays the caller's; the returned allocation owns the registration and
        ``close()`` unregisters it. A range registered twice raises 712; a buffer that is
        not a writable, contiguous uint8 array raises :class:`~vrrl_gpu.errors.StagingError`.
        """

    @abc.abstractmethod
    def alloc_counter(self, slots: int = 0) -> DeviceCounter:
        """A zeroed u64 in device memory, the device-sequenced ring's counter, followed by ``slots`` zeroed
        u64 turn words (one writer per slot: ``kernels/vrrl_record.cuh``); the caller owns it. A counter for
        a device-sequenced ring needs ``slots`` = the ring's slot count; a plain work counter needs none.

        ``read()`` synchronizes, so it raises a pending fault like :meth:`synchronize`.
        """

    @abc.abstractmethod
    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        """Zeroed device memory for demo and test kernels; the caller owns it (``close()``).

        Raises the allocation's CUDA error (1 for ``nbytes <= 0``, 2 out of memory) or the sticky error.
        """

    @abc.abstractmethod
    def load(self, source_file: str | Path, kernel_name: str) -> KernelHandle:
        """A kernel from ``kernels/`` (a bare file name) or any ``.cu`` path.

        Compiled once per device (CuPy) or per source hash (twin); the backend owns the
        module (freed by :meth:`close`, kept by :meth:`abandon`). A missing file raises
        :class:`~vrrl_gpu.errors.KernelSourceError`, a compile failure
        :class:`~vrrl_gpu.errors.KernelCompileError`, an unknown kernel name 500.
        """

    @abc.abstractmethod
    def launch(
        self,
        kernel: KernelHandle,
        grid: int | Sequence[int],
        block: int | Sequence[int],
        args: Sequence[object],
        *,
        stream: Any = None,
        shared_mem: int = 0,
    ) -> None:
        """Enqueue ``kernel`` on ``stream`` (None: the current stream) and return at once.

        Arguments are converted with the kernel's parsed signature (pointers: an ``int``
        address, ``None``, an object with ``device_ptr``, this backend's arrays; scalars:
        numbers that fit), else :class:`~vrrl_gpu.errors.KernelArgumentError` before anything
        is enqueued. A bad configuration raises its CUDA error here and is not sticky; a fault
        of the kernel itself is *not* raised here but later, by :meth:`synchronize` or
        :meth:`stream_query`. After a sticky error it raises that error and enqueues nothing.
        """

    @abc.abstractmethod
    def current_stream(self) -> Any:
        """The caller's current stream (``cupy.cuda.Stream`` on CuPy): an object with an int ``ptr``.

        Makes no CUDA call, so it works after a sticky error.
        """

    @abc.abstractmethod
    def new_stream(self) -> Any:
        """A new stream, owned by the caller (dropping it destroys it); raises the sticky error."""

    @abc.abstractmethod
    def stream_query(self, stream: Any = None) -> int:
        """CUDA's ``cudaStreamQuery``, without raising: 0 all work done, 600 not ready, else the error code.

        Never blocks. This is how the drain thread and the watchdog look for an
        asynchronous fault: after a sticky error it returns that code (turn it into an
        exception with :meth:`error_for`).
        """

    @abc.abstractmethod
    def synchronize(self, stream: Any = None) -> None:
        """Wait for ``stream`` (None: the whole device), then raise the CUDA error of any fault.

        The place an asynchronous fault surfaces as an exception; after a sticky error it
        raises that error at once.
        """

    @abc.abstractmethod
    def calibrate(self) -> int:
        """``ts_offset`` in ns: UNIX-epoch ns minus the device's ``%globaltimer`` (0 on the twin).

        Launches a kernel and synchronizes on CuPy, so it raises like :meth:`synchronize`. Callable from any
        thread (the recorder re-calibrates from its own); only the first call may allocate, so later ones
        are safe while another thread captures a graph on a stream of its own.
        """

    @abc.abstractmethod
    def error_for(self, code: int) -> Exception:
        """The exception this backend raises for CUDA error ``code`` (CuPy's ``CUDARuntimeError``, the
        twin's ``TwinCudaError``), for codes :meth:`stream_query` returned. Makes no CUDA call."""

    def stream_key(self, stream: Any) -> int:
        """A stable key for ``stream`` (None: the current stream), for per-stream bookkeeping.

        The stream's int ``ptr`` (CuPy, the twin), or the handle of the CUDA Python
        stream protocol: ``stream.__cuda_stream__()`` returns ``(0, address of the
        cudaStream_t)`` (cuda.core, cuda.bindings, other libraries' streams).
        """
        s = self.current_stream() if stream is None else stream
        ptr = getattr(s, "ptr", None)
        if type(ptr) is int:
            return ptr
        proto = getattr(s, "__cuda_stream__", None)
        if proto is not None:
            got = proto()
            if not (isinstance(got, tuple) and len(got) == 2 and got[0] == 0 and isinstance(got[1], int)):
                raise KernelArgumentError(
                    f"expected __cuda_stream__() to return (0, stream handle), got {got!r} "
                    f"from {type(s).__name__}; only version 0 of the CUDA stream protocol is known"
                )
            return int(got[1])
        if isinstance(ptr, (int, np.integer)) and not isinstance(ptr, bool):
            return int(ptr)
        handle = getattr(s, "cuda_stream", None)  # torch.cuda.Stream before it had __cuda_stream__ (2.6)
        if type(handle) is int:
            return handle
        raise KernelArgumentError(
            f"expected a stream with an int ptr or the __cuda_stream__ protocol, got {type(s).__name__}"
        )

    def native_stream(self, stream: Any) -> Any:
        """The stream object this backend launches on for ``stream``, which may be another library's
        (``torch.cuda.Stream``, a cuda.core ``Stream``, anything with ``__cuda_stream__``).

        The backend's own streams come back as they are. The result names the same CUDA stream
        and owns nothing: the caller keeps ``stream`` alive for as long as it launches on it.
        """
        return stream

    def check_device(self) -> None:  # noqa: B027 - a default that backends with one device keep
        """Raise :class:`~vrrl_gpu.errors.WrongDeviceError` when the caller's current device is not ours."""

    def is_capturing(self, stream: Any) -> bool:
        """True while ``stream`` is being captured into a CUDA graph (an invalidated capture included)."""
        return False

    def launch_stream(self) -> Any:
        """The caller's current stream for a recorded launch, after checking the current device is ours.

        One query (CuPy: ``getDevice``); raises :class:`~vrrl_gpu.errors.WrongDeviceError` on another device.
        """
        self.check_device()
        return self.current_stream()

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the backend owns (compiled modules, the twin's stream workers); idempotent.

        Not after a sticky error: freeing through a dead context is what :meth:`abandon` avoids.
        """

    def abandon(self) -> None:  # noqa: B027 - a default for backends whose objects need no CUDA call to free
        """After a sticky error, instead of :meth:`close`: keep what would need a CUDA call to free alive.

        Leaks compiled modules, so that no finalizer touches the dead context;
        ``HostAllocation.leak()`` / ``DeviceCounter.leak()`` do the same for memory.
        """

    def pack(
        self,
        ring: RingPointers,
        seq: int,
        *,
        slot_idx: int,
        tenant_id: int,
        opcode: int,
        words: Sequence[int],
        epoch: int,
        slot_status: int = 0,
        ts_offset: int = 0,
        stream: Any = None,
    ) -> None:
        """Enqueue ``vrrl_pack``: the device writes record ``seq`` into ``ring`` in stream order."""
        a0, a1, a2, a3 = _four(words)
        self.launch(
            self._pack_kernel("vrrl_pack"),
            (1, 1, 1),
            (1, 1, 1),
            (ring.records_ptr, ring.commits_ptr, ring.mask, seq, slot_idx, tenant_id, opcode,
             a0, a1, a2, a3, epoch, slot_status, ts_offset),
            stream=stream,
        )  # fmt: skip

    def pack_devseq(
        self,
        ring: RingPointers,
        counter: DeviceCounter,
        *,
        tenant_id: int,
        opcode: int,
        words: Sequence[int],
        epoch: int,
        slot_status: int = 0,
        ts_offset: int = 0,
        stream: Any = None,
    ) -> None:
        """Enqueue ``vrrl_pack_devseq``: the device claims the sequence from ``counter`` (device memory)."""
        a0, a1, a2, a3 = _four(words)
        self.launch(
            self._pack_kernel("vrrl_pack_devseq"),
            (1, 1, 1),
            (1, 1, 1),
            (ring.records_ptr, ring.commits_ptr, ring.mask, counter.device_ptr, tenant_id, opcode,
             a0, a1, a2, a3, epoch, slot_status, ts_offset),
            stream=stream,
        )  # fmt: skip

    def bind_pack(self, ring: RingPointers, *, stream: Any, tenant_id: int, ts_offset: int) -> PackLauncher:
        """``vrrl_pack`` on ``stream`` with ``ring``, ``tenant_id`` and ``ts_offset`` bound: the launch path.

        Calling the result with ``(seq, slot_idx, opcode, words, epoch, slot_status)``
        is one launch with nothing converted, so values must already be valid (the
        recorder checks them), and one caller at a time. This default goes through
        :meth:`pack`; backends override it with a prebuilt parameter block.
        """

        sref = stream_ref(stream)

        def bound(
            seq: int, slot_idx: int, opcode: int, words: Sequence[int], epoch: int, status: int
        ) -> None:
            self.pack(ring, seq, slot_idx=slot_idx, tenant_id=tenant_id, opcode=opcode, words=words,
                      epoch=epoch, slot_status=status, ts_offset=ts_offset, stream=sref())  # fmt: skip

        return bound

    def bind_launch(self, kernel: KernelHandle, own: int, fixed: Sequence[int]) -> BoundLauncher:
        """``kernel`` with the ``len(fixed)`` parameters after its first ``own`` bound to ``fixed`` (plain
        integers: pointers, sizes) and the rest (u32, per launch) passed as ``varying``: instrumented kernels'
        ring descriptor, converted once instead of per launch. This default is :meth:`launch` per call;
        backends override it with prebuilt parameter blocks. The values must be valid (nothing is checked)."""
        tail = tuple(int(x) for x in fixed)

        def bound(
            grid: Any, block: Any, args: Sequence[object], varying: Sequence[int], stream: Any, shm: int
        ) -> None:
            self.launch(kernel, grid, block, (*args, *tail, *varying), stream=stream, shared_mem=shm)

        return bound

    def _pack_kernel(self, name: str) -> KernelHandle:
        cache: dict[str, KernelHandle] = self.__dict__.setdefault("_pack_kernels", {})
        k = cache.get(name)
        if k is None:
            k = cache[name] = self.load(PACK_SOURCE, name)
        return k

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _four(words: Sequence[int]) -> tuple[int, int, int, int]:
    w = tuple(words)
    if len(w) != 4:
        raise KernelArgumentError(f"expected 4 argument words for a record, got {len(w)}: {w!r}")
    return (int(w[0]), int(w[1]), int(w[2]), int(w[3]))
