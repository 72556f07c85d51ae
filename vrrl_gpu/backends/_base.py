"""The backend interface: what the recorder needs from a device, and the small types it passes around.

Two implementations: :class:`~vrrl_gpu.backends._cupy.CupyBackend` (the real
device through CuPy) and :class:`~vrrl_gpu.backends._twin.TwinBackend` (the
same ``kernels/`` sources compiled for the CPU). Everything above this layer
talks only to :class:`Backend`.

Interface (every method may raise the backend's CUDA error: CuPy's own
exceptions, unchanged, or :class:`~vrrl_gpu.backends.TwinCudaError`):

``name``, ``is_simulated``
    ``"cupy"`` / ``"twin"``; True for the twin.
``device_info() -> dict``
    ``name``, ``uuid``, ``compute_capability``, ``driver_version``,
    ``runtime_version``, ``cupy_version`` (``"twin"`` on the twin), ``backend``,
    ``simulated``.
``alloc_pinned(nbytes) -> HostAllocation``
    Page-locked, device-mapped host memory (zeroed on the twin only).
``register_host(buf) -> HostAllocation``
    Pins and maps an existing host buffer (an mmap of a /dev/shm file);
    ``close()`` unregisters it.
``alloc_counter() -> DeviceCounter``
    A zeroed u64 in device memory (the device-sequenced ring's counter).
``alloc_device(nbytes) -> DeviceBuffer``
    Zeroed device memory, for demo and test kernels.
``load(source_file, kernel_name) -> KernelHandle``
    A kernel from ``kernels/`` (a bare file name) or any ``.cu`` path;
    compiled once per device (CuPy) or once per source hash (twin).
``launch(kernel, grid, block, args, *, stream=None, shared_mem=0)``
    Enqueues and returns at once. Arguments are converted with the kernel's
    parsed signature: pointers accept an ``int`` address, ``None`` (null), or
    an object with ``device_ptr``; CuPy arrays on the CuPy backend, numpy
    arrays on the twin. Scalars accept Python or numpy numbers that fit.
``pack(ring, seq, *, slot_idx, tenant_id, opcode, words, epoch, slot_status=0, ts_offset=0, stream=None)``
    Enqueues ``vrrl_pack`` (host-sequenced record ``seq``) on ``stream``.
``pack_devseq(ring, counter, *, tenant_id, opcode, words, epoch, slot_status=0, ts_offset=0, stream=None)``
    Enqueues ``vrrl_pack_devseq`` (sequence claimed from ``counter``).
``bind_pack(ring, *, stream, tenant_id, ts_offset) -> PackLauncher``
    ``vrrl_pack`` with the arguments that never change for a stream bound
    once (a prebuilt parameter block); calling it with ``(seq, slot_idx,
    opcode, words, epoch, slot_status)`` is one launch, nothing converted.
    Values must already be valid (the recorder checks them); one caller at a time.
``current_stream()``, ``new_stream()``
    Stream objects with an int ``ptr`` (``cupy.cuda.Stream`` on CuPy).
``launch_stream()``
    The caller's current stream for a recorded launch, after checking that
    the current device is this backend's (one query; CuPy: ``getDevice``).
``stream_query(stream) -> int``
    CUDA semantics: 0 all work done, 600 not ready, anything else the error.
``synchronize(stream=None)``
    Waits for ``stream`` (or the whole device) and raises the CUDA error.
``is_capturing(stream) -> bool``
    True while ``stream`` captures into a CUDA graph (also once the capture
    is invalidated). Streams of both backends have ``begin_capture()`` and
    ``end_capture() -> graph`` with ``graph.launch(stream)``; while one
    captures, allocations, device or stream synchronization and queries of
    the capturing stream fail with 900 and invalidate the capture.
``stream_key(stream) -> int``
    A stable key for a stream (its ``ptr``), for per-stream bookkeeping.
``error_for(code) -> Exception``
    The exception this backend raises for a CUDA error code (CuPy's
    ``CUDARuntimeError``; the twin's :class:`~vrrl_gpu.backends.TwinCudaError`),
    for codes found by ``stream_query``.
``calibrate() -> int``
    ``ts_offset`` in ns: UNIX-epoch ns minus ``%globaltimer`` (0 on the twin).
``close()``
    Releases what the backend holds; idempotent. Backends are context managers.
``abandon()``
    After a sticky error, instead of ``close()``: leaks what only a CUDA call
    could free (compiled modules), so no finalizer touches the dead context.
    ``HostAllocation.leak()`` / ``DeviceCounter.leak()`` do the same for memory.
"""

from __future__ import annotations

import abc
import ctypes
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from vrrl_gpu.capture._kernels import KernelSignature
from vrrl_gpu.errors import KernelArgumentError, StagingError

__all__ = [
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
    "PackLauncher",
]

#: The source file of the pack kernels.
PACK_SOURCE = "vrrl_pack.cu"

Dim3 = tuple[int, int, int]

#: A bound pack: ``(seq, slot_idx, opcode, words, epoch, slot_status)`` -> one launch of ``vrrl_pack``.
PackLauncher = Callable[[int, int, int, Sequence[int], int, int], None]


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
    """A device the recorder can drive (see the module docstring for the contract of each method)."""

    name: str = ""
    is_simulated: bool = False

    @abc.abstractmethod
    def device_info(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def alloc_pinned(self, nbytes: int) -> HostAllocation: ...

    @abc.abstractmethod
    def register_host(self, buf: npt.NDArray[np.uint8]) -> HostAllocation: ...

    @abc.abstractmethod
    def alloc_counter(self) -> DeviceCounter: ...

    @abc.abstractmethod
    def alloc_device(self, nbytes: int) -> DeviceBuffer: ...

    @abc.abstractmethod
    def load(self, source_file: str | Path, kernel_name: str) -> KernelHandle: ...

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
    ) -> None: ...

    @abc.abstractmethod
    def current_stream(self) -> Any: ...

    @abc.abstractmethod
    def new_stream(self) -> Any: ...

    @abc.abstractmethod
    def stream_query(self, stream: Any = None) -> int: ...

    @abc.abstractmethod
    def synchronize(self, stream: Any = None) -> None: ...

    @abc.abstractmethod
    def calibrate(self) -> int: ...

    @abc.abstractmethod
    def error_for(self, code: int) -> Exception: ...

    def stream_key(self, stream: Any) -> int:
        """A stable key for ``stream`` (None: the current stream): its ``ptr``."""
        s = self.current_stream() if stream is None else stream
        return int(s.ptr)

    def check_device(self) -> None:  # noqa: B027 - a default that backends with one device keep
        """Raise :class:`~vrrl_gpu.errors.WrongDeviceError` when the caller's current device is not ours."""

    def is_capturing(self, stream: Any) -> bool:
        """True while ``stream`` is being captured into a CUDA graph (an invalidated capture included)."""
        return False

    def launch_stream(self) -> Any:
        """The caller's current stream for a recorded launch, after checking the current device is ours."""
        self.check_device()
        return self.current_stream()

    @abc.abstractmethod
    def close(self) -> None: ...

    def abandon(self) -> None:  # noqa: B027 - a default for backends whose objects need no CUDA call to free
        """After a sticky error, instead of :meth:`close`: keep what would need a CUDA call to free alive."""

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
        """``vrrl_pack`` on ``stream`` with ``ring``, ``tenant_id`` and ``ts_offset`` bound (module doc).

        This default goes through :meth:`pack`; backends override it with a prebuilt parameter block.
        """

        def bound(
            seq: int, slot_idx: int, opcode: int, words: Sequence[int], epoch: int, status: int
        ) -> None:
            self.pack(ring, seq, slot_idx=slot_idx, tenant_id=tenant_id, opcode=opcode, words=words,
                      epoch=epoch, slot_status=status, ts_offset=ts_offset, stream=stream)  # fmt: skip

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
