"""The CPU twin: the same ``kernels/`` sources built by the system C++ compiler, run with CUDA semantics.

What makes it a faithful stand-in for tests:

* Asynchrony: every stream has a worker thread that runs its launches in
  order; ``launch()`` returns at once (the ctypes call releases the GIL).
* Sticky errors: a kernel fault (``__trap()`` -> 719, a simulated wild store
  -> 700, a device assert -> 710) poisons the twin context. From then on every
  launch and allocation raises the same code, ``synchronize()`` raises it,
  ``stream_query()`` returns it, and work still queued is dropped.
* Errors found at the call are not sticky: a block of more than 1024 threads
  or a grid over CUDA's limits (1), an unknown kernel name (500), an
  allocation over ``alloc_limit`` (2), registering a range twice (712).
* A Python exception in a worker thread is stored and re-raised by every
  later call (never swallowed).

Blocks and barriers: kernels whose source (or a header it includes) names
``__syncthreads`` run block by block, each block's threads as fibers on one OS
thread, so ``__syncthreads`` and static ``__shared__`` arrays work as on a GPU.

Differences from a GPU: no dynamic (``extern``) shared memory and no warp
primitives (compile errors); the threads of a grid run on at most ``max_workers`` OS threads, so
a persistent kernel makes progress with at most that many threads spinning;
the default stream is an ordinary stream (no implicit synchronization with
other streams); "device" memory is host memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.backends._base import (
    _CELL_FORMATS,
    ArgPacker,
    Backend,
    BoundLauncher,
    DeviceBuffer,
    DeviceCounter,
    HostAllocation,
    KernelHandle,
    PackLauncher,
    RingPointers,
    check_host_buffer,
    grid_exceeds_limits,
    normalize_dims,
)
from vrrl_gpu.backends._twin_errors import TwinCudaError
from vrrl_gpu.capture._kernels import KernelSignature, kernel_path, kernels_dir, parse_kernels, sources_digest
from vrrl_gpu.errors import (
    BackendUnavailableError,
    KernelCompileError,
    KernelSourceError,
    VrrlWarning,
)

__all__ = ["TwinBackend", "TwinStream", "TwinGraph", "twin_cache_dir", "TWIN_CXX_FLAGS"]

#: Flags of every twin build (part of the cache key). Hidden visibility and no GNU_UNIQUE symbols keep two
#: libraries' inline variables apart.
TWIN_CXX_FLAGS = (
    "-std=c++17",
    "-O2",
    "-shared",
    "-fPIC",
    "-pthread",
    "-fvisibility=hidden",
    "-fno-gnu-unique",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-DVRRL_TWIN",
)
_GENERATOR_VERSION = "3"
_ERRBUF = 512
_MAX_BLOCK_THREADS = 1024
_MAX_DYNAMIC_SHARED = 48 * 1024
_PAGE = 4096
_PER_THREAD = 2  # cudaStreamPerThread


def twin_cache_dir() -> Path:
    """Where compiled twin libraries are kept: ``$VRRL_CACHE_DIR/twin`` or ``~/.cache/vrrl_gpu/twin``."""
    base = os.environ.get("VRRL_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "vrrl_gpu"
    return root / "twin"


_LAUNCH_ARGTYPES = [
    ctypes.POINTER(ctypes.c_uint),  # dims[6]
    ctypes.c_void_p,  # void** args
    ctypes.c_uint,  # max_workers
    ctypes.c_void_p,  # const int* host abort flag
    ctypes.c_void_p,  # char* error message buffer
    ctypes.c_size_t,
]


@dataclass(frozen=True)
class _TwinKernel:
    fn: Any  # the ctypes trampoline
    lib: ctypes.CDLL  # keeps the library loaded
    packer: ArgPacker
    pointers: struct.Struct  # the void* array after the cells: n little-endian u64
    offsets: tuple[int, ...]  # 0, 8, 16, ...


class _Library:
    def __init__(self, path: Path, lib: ctypes.CDLL, sigs: dict[str, KernelSignature]) -> None:
        self.path = path
        self.lib = lib
        self.sigs = sigs
        self.kernels: dict[str, _TwinKernel] = {}
        for name, sig in sigs.items():
            fn = getattr(lib, f"vrrl_twin_launch__{name}")
            fn.argtypes = _LAUNCH_ARGTYPES
            fn.restype = ctypes.c_int
            sigfn = getattr(lib, f"vrrl_twin_sig__{name}")
            sigfn.argtypes = []
            sigfn.restype = ctypes.c_char_p
            compiled = (sigfn() or b"").decode()
            if compiled != sig.codes:
                raise KernelCompileError(
                    f"kernel {name}: the source parse gives parameter types {sig.codes!r} but the compiler "
                    f"says {compiled!r}; write the parameters with plain C types (see capture/_kernels.py)",
                    source="",
                    name=str(path),
                    options=TWIN_CXX_FLAGS,
                    log="",
                )
            n = len(sig.params)
            self.kernels[name] = _TwinKernel(
                fn=fn,
                lib=lib,
                packer=ArgPacker(sig),
                pointers=struct.Struct(f"<{n}Q"),
                offsets=tuple(8 * i for i in range(n)),
            )


_compiler_lock = threading.Lock()
_compiler_ids: dict[str, str] = {}


def _compiler() -> tuple[str, str]:
    cxx = os.environ.get("CXX") or "g++"
    exe = shutil.which(cxx)
    if exe is None:
        raise BackendUnavailableError(
            f"the twin backend needs a C++17 compiler; expected {cxx!r} on PATH, found none; "
            f"install g++ (apt-get install g++) or set CXX"
        )
    with _compiler_lock:
        ident = _compiler_ids.get(exe)
        if ident is None:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
            ident = _compiler_ids[exe] = (out.stdout.splitlines() or [exe])[0]
    return exe, ident


_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def _uses_barriers(source: Path, text: str, seen: set[Path] | None = None) -> bool:
    """Whether ``text`` (the file ``source``) or a header it includes with quotes names ``__syncthreads``:
    such kernels run block by block, their threads as fibers (kernels/twin_shim.h). The package's own headers
    use no barrier on the twin (vrrl_instrument.cuh names one for the GPU only)."""
    if "__syncthreads" in text:
        return True
    seen = set() if seen is None else seen
    ours = kernels_dir().resolve()
    for name in _INCLUDE.findall(text):
        for base in (source.parent, ours):
            p = (base / name).resolve()
            if p.parent == ours:
                break
            if p.is_file() and p not in seen:
                seen.add(p)
                if _uses_barriers(p, p.read_text(encoding="utf-8", errors="replace"), seen):
                    return True
                break
    return False


def _generate(source: Path, sigs: dict[str, KernelSignature], barriers: bool = False) -> str:
    lines = [
        "// Generated by vrrl_gpu.backends._twin: a cuLaunchKernel-like trampoline per __global__ function.",
        f'#include "{source}"',
        "",
    ]
    b = "true" if barriers else "false"
    for name in sigs:
        lines += [
            (
                f'extern "C" __attribute__((visibility("default"))) int vrrl_twin_launch__{name}('
                "const unsigned int* dims, void** args, unsigned int max_workers, const int* host_abort, "
                "char* err, std::size_t errlen) {"
            ),
            f"    return vrrl_twin::launch<{b}>(&{name}, dims, args, max_workers, host_abort, err, errlen);",
            "}",
            f'extern "C" __attribute__((visibility("default"))) const char* vrrl_twin_sig__{name}() {{',
            f"    return vrrl_twin::signature(&{name});",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _build(source: Path, cache_dir: Path) -> _Library:
    text = source.read_text(encoding="utf-8")
    sigs = parse_kernels(text)
    if not sigs:
        raise KernelSourceError(
            f'expected at least one extern "C" __global__ function in {source}, found none; '
            f'declare kernels as extern "C" __global__ void name(...)'
        )
    exe, ident = _compiler()
    kdir = kernels_dir()
    shim = kdir / "twin_shim.h"
    flags = (*TWIN_CXX_FLAGS, "-include", str(shim), f"-I{kdir}", f"-I{source.parent}")
    generated = _generate(source, sigs, _uses_barriers(source, text))
    key = hashlib.sha256(
        "\0".join([_GENERATOR_VERSION, ident, " ".join(flags), text, generated, sources_digest()]).encode()
    ).hexdigest()[:20]
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{source.stem}-{key}.so"
    if not target.is_file():
        with tempfile.TemporaryDirectory(prefix="vrrl-twin-") as tmp:
            cpp = Path(tmp) / f"{source.stem}_twin.cpp"
            cpp.write_text(generated, encoding="utf-8")
            out = Path(tmp) / "out.so"
            cmd = [exe, *flags, str(cpp), "-o", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise KernelCompileError(
                    f"the twin could not compile {source.name} with {exe} (exit {proc.returncode}); "
                    f"see .log / .dump() for the compiler's output",
                    source=text,
                    name=str(source),
                    options=tuple(cmd),
                    log=proc.stderr,
                )
            # Another process may build the same key at once: publish atomically, last one wins.
            staged = cache_dir / f".{target.name}.{os.getpid()}.{threading.get_ident()}"
            shutil.copyfile(out, staged)
            os.replace(staged, target)
    return _Library(target, ctypes.CDLL(str(target)), sigs)


@dataclass
class _Launch:
    kernel: KernelHandle
    dims: Any  # ctypes c_uint * 6
    block: Any  # the argument cells, then the void* array pointing at them (kept alive here)
    args_ptr: int  # address of the void* array
    workers: int


class _Worker:
    """A stream's worker thread and its queue.

    It holds no reference to its :class:`TwinStream`, so a stream the program drops is collected (like
    ``cudaStreamDestroy``: the work already queued still runs, then the thread ends).
    """

    def __init__(self, backend: TwinBackend, name: str) -> None:
        self._backend = backend
        self._q: queue.SimpleQueue[_Launch | None] = queue.SimpleQueue()
        # The condition's lock taken by hand on the launch path: ``with`` on a Condition is two Python-level
        # method calls per launch, a plain lock's acquire/release two C calls.
        self._plock = threading.Lock()
        self._cv = threading.Condition(self._plock)
        self.pending = 0
        self._err = ctypes.create_string_buffer(_ERRBUF)  # one kernel at a time per stream
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def enqueue(self, item: _Launch) -> None:
        lock = self._plock
        lock.acquire()
        self.pending += 1
        lock.release()
        self._q.put(item)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            try:
                self._backend._execute(item, self._err)
            except BaseException as e:  # stored and re-raised by the next backend call: never swallowed
                self._backend._store_worker_exception(e)
            finally:
                with self._cv:
                    self.pending -= 1
                    self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self.pending == 0, timeout)

    def retire(self) -> None:
        """Let the thread end after the work already queued (the stream was destroyed)."""
        self._q.put(None)

    def stop(self, timeout: float) -> bool:
        self._q.put(None)
        self.thread.join(timeout)
        return not self.thread.is_alive()


class TwinGraph:
    """An instantiated graph of the launches captured on a twin stream (``cudaGraphExec_t``).

    ``launch(stream)`` enqueues every captured kernel, in capture order, with
    the argument values frozen at capture time, like ``cudaGraphLaunch``.
    """

    def __init__(self, backend: TwinBackend, launches: list[_Launch]) -> None:
        self._backend = backend
        self._launches = tuple(launches)

    def __len__(self) -> int:
        return len(self._launches)

    def __repr__(self) -> str:
        return f"TwinGraph({len(self._launches)} kernel nodes)"

    def upload(self, stream: Any = None) -> None:
        """A no-op (CuPy's ``Graph.upload``): the twin has nothing to upload."""
        self._backend._check_usable()

    def launch(self, stream: Any = None) -> None:
        """Enqueue the captured launches on ``stream`` (None: the default stream)."""
        b = self._backend
        b._check_usable()
        s = b._stream(stream)
        for item in self._launches:
            s._submit(item)


class TwinStream:
    """A twin stream: one worker thread running its launches in order. ``ptr`` is a unique integer.

    Graph capture as CUDA does it (global mode): between :meth:`begin_capture`
    and :meth:`end_capture` launches are recorded into a graph instead of run;
    allocating, synchronizing the device or this stream, or querying this stream
    meanwhile raises 900 (``cudaErrorStreamCaptureUnsupported``) and invalidates
    the capture, so later launches into it and ``end_capture`` raise 901.
    """

    def __init__(self, backend: TwinBackend, ptr: int, name: str) -> None:
        self.ptr = ptr
        self._backend = backend
        self._worker = _Worker(backend, name)
        self._captured: list[_Launch] | None = None
        self._capture_invalid: TwinCudaError | None = None

    def __repr__(self) -> str:
        return f"TwinStream(ptr={self.ptr:#x}, pending={self._worker.pending})"

    def _submit(self, item: _Launch) -> None:
        if self._captured is not None:
            if self._capture_invalid is not None:
                raise TwinCudaError(901, f"launch of {item.kernel.name} into an invalidated capture")
            self._captured.append(item)
            return
        self._worker.enqueue(item)

    def _wait(self, timeout: float | None = None) -> bool:
        return self._worker.wait(timeout)

    @property
    def pending(self) -> int:
        """Launches enqueued and not finished."""
        return self._worker.pending

    # ---- graph capture ----------------------------------------------------------------------------

    def begin_capture(self) -> None:
        """Start capturing launches into a graph (``cudaStreamBeginCapture``, global mode)."""
        b = self._backend
        b._check_usable()
        if self is b._default:
            raise TwinCudaError(900, "the default (legacy) stream cannot be captured")
        if self._captured is not None:
            raise TwinCudaError(401, f"stream {self.ptr:#x} is capturing already")
        self._captured = []
        self._capture_invalid = None
        with b._lock:
            b._capturing.add(self)

    def end_capture(self) -> TwinGraph:
        """End the capture and instantiate its graph; 901 when the capture was invalidated."""
        if self._captured is None:
            raise TwinCudaError(400, f"stream {self.ptr:#x} is not capturing")
        launches, invalid = self._captured, self._capture_invalid
        self._captured = None
        self._capture_invalid = None
        with self._backend._lock:
            self._backend._capturing.discard(self)
        if invalid is not None:
            raise TwinCudaError(901, f"the capture was invalidated: {invalid}")
        return TwinGraph(self._backend, launches)

    def is_capturing(self) -> bool:
        """True while capturing; raises 901 when the capture was invalidated (CuPy raises then too)."""
        if self._captured is None:
            return False
        if self._capture_invalid is not None:
            raise TwinCudaError(901, f"the capture of stream {self.ptr:#x} was invalidated")
        return True

    def _invalidate(self, err: TwinCudaError) -> None:
        if self._captured is not None and self._capture_invalid is None:
            self._capture_invalid = err


class TwinBackend(Backend):
    """The CPU twin backend (see the module docstring). Not a GPU; ``is_simulated`` is True.

    ``max_workers``: OS threads per grid (default: the CPU count, 2 to 8).
    ``alloc_limit``: the largest single allocation in bytes; larger ones raise code 2.
    ``cache_dir``: where compiled libraries go (default :func:`twin_cache_dir`).
    ``per_thread_default_stream``: like CuPy under ``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1`` (the default
    follows that variable): the current stream is each thread's own default stream, and all of them have
    the handle 2 (``cudaStreamPerThread``), which names the calling thread's one wherever it is used.
    """

    name = "twin"
    is_simulated = True

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        alloc_limit: int = 1 << 34,
        cache_dir: str | Path | None = None,
        per_thread_default_stream: bool | None = None,
    ) -> None:
        self._max_workers = max_workers if max_workers is not None else max(2, min(8, os.cpu_count() or 2))
        if self._max_workers < 1:
            raise ValueError(f"expected max_workers >= 1, got {max_workers}")
        self._alloc_limit = int(alloc_limit)
        self._cache_dir = Path(cache_dir) if cache_dir is not None else twin_cache_dir()
        self._lock = threading.RLock()
        self._sticky: TwinCudaError | None = None
        self._worker_exc: BaseException | None = None
        self._abort = ctypes.c_int(0)
        self._abort_addr = ctypes.addressof(self._abort)
        self._libs: dict[Path, _Library] = {}
        self._registered: dict[int, int] = {}  # start -> end of host-registered ranges
        self._workers: list[_Worker] = []
        self._capturing: set[TwinStream] = set()
        self._next_ptr = 0x1000
        if per_thread_default_stream is None:
            per_thread_default_stream = os.environ.get("CUPY_CUDA_PER_THREAD_DEFAULT_STREAM") == "1"
        self._per_thread = bool(per_thread_default_stream)
        self._ptds = threading.local()
        self._closed = False
        # Live streams by handle, for other libraries' objects that name one (``__cuda_stream__``).
        self._by_handle: weakref.WeakValueDictionary[int, TwinStream] = weakref.WeakValueDictionary()
        self._default = self._make_stream(0, "vrrl-twin-stream-default")

    # ---- state ----------------------------------------------------------------------------------

    def _make_stream(self, ptr: int, name: str) -> TwinStream:
        s = TwinStream(self, ptr, name)
        with self._lock:
            # Workers of destroyed streams end once their work is done: forget those.
            self._workers = [w for w in self._workers if w.thread.is_alive()]
            self._workers.append(s._worker)
        if ptr != 0:
            weakref.finalize(s, s._worker.retire)
        if ptr != _PER_THREAD:
            self._by_handle[ptr] = s
        return s

    def _capture_guard(self, what: str) -> None:
        """What CUDA does to a call that is illegal while a stream captures: invalidate, raise 900."""
        with self._lock:
            capturing = list(self._capturing)
        if not capturing:
            return
        err = TwinCudaError(900, f"{what} while stream(s) {[hex(c.ptr) for c in capturing]} capture")
        for c in capturing:
            c._invalidate(err)
        raise err

    def _store_worker_exception(self, e: BaseException) -> None:
        with self._lock:
            if self._worker_exc is None:
                self._worker_exc = e

    def _check_worker(self) -> None:
        exc = self._worker_exc
        if exc is not None:
            raise exc

    def _check_usable(self) -> None:
        """Raise what a CUDA call would raise now: a stored worker exception, the sticky error, or closed."""
        if self._closed:
            raise BackendUnavailableError(
                "this twin backend is closed; create a new one with get_backend('twin')"
            )
        self._check_worker()
        sticky = self._sticky
        if sticky is not None:
            raise TwinCudaError(sticky.cuda_error_code, sticky.detail)

    def _poison(self, err: TwinCudaError) -> None:
        with self._lock:
            if self._sticky is None:
                self._sticky = err

    @property
    def sticky_error(self) -> TwinCudaError | None:
        """The error that poisoned this context, or None."""
        return self._sticky

    def _per_thread_stream(self) -> TwinStream:
        s: TwinStream | None = getattr(self._ptds, "stream", None)
        if s is None:
            # Held only by this thread's local storage: it goes (and its worker ends) with the thread.
            s = self._ptds.stream = self._make_stream(_PER_THREAD, f"vrrl-twin-ptds-{threading.get_ident()}")
        return s

    def _stream(self, stream: Any) -> TwinStream:
        if stream is None:
            return self._per_thread_stream() if self._per_thread else self._default
        if isinstance(stream, TwinStream) and stream._backend is self:
            if stream.ptr == _PER_THREAD:
                return self._per_thread_stream()  # the handle means the calling thread's own stream
            return stream
        if not isinstance(stream, TwinStream) and hasattr(stream, "__cuda_stream__"):
            # Another library's wrapper of one of our handles, as a CuPy ExternalStream would be.
            handle = self.stream_key(stream)
            if handle == _PER_THREAD:
                return self._per_thread_stream()
            s = self._by_handle.get(handle)
            if s is not None:
                return s
            raise TwinCudaError(400, f"handle {handle:#x} of a {type(stream).__name__} is no live stream")
        raise TypeError(
            f"expected None, a TwinStream of this backend or a __cuda_stream__ object, got {stream!r}"
        )

    def native_stream(self, stream: Any) -> Any:
        """The twin's stream that ``stream`` names (itself, or the live stream of a ``__cuda_stream__``
        object's handle); raises TwinCudaError 400 for a handle that is no live stream."""
        return None if stream is None else self._stream(stream)

    # ---- device ----------------------------------------------------------------------------------

    def device_info(self) -> dict[str, Any]:
        """The twin's identity: never mistaken for a GPU (name says so, ``simulated`` is True)."""
        _, ident = _compiler()
        host = socket.gethostname()
        return {
            "backend": "twin",
            "simulated": True,
            "name": "vrrl CPU twin (not a GPU)",
            "uuid": "twin-" + hashlib.sha256(host.encode()).hexdigest()[:16],
            "compute_capability": "twin",
            "driver_version": 0,
            "runtime_version": 0,
            "cupy_version": "twin",
            "compiler": ident,
            "max_workers": self._max_workers,
        }

    def _check_alloc(self, nbytes: int) -> int:
        self._check_usable()
        self._capture_guard(f"an allocation of {int(nbytes)} bytes")
        n = int(nbytes)
        if n <= 0:
            raise TwinCudaError(1, f"allocation of {n} bytes")
        if n > self._alloc_limit:
            raise TwinCudaError(2, f"allocation of {n} bytes over the twin's alloc_limit {self._alloc_limit}")
        return n

    @staticmethod
    def _aligned(n: int) -> npt.NDArray[np.uint8]:
        raw = np.zeros(n + _PAGE, dtype=np.uint8)
        off = (-raw.ctypes.data) % _PAGE
        return raw[off : off + n]

    def alloc_pinned(self, nbytes: int) -> HostAllocation:
        """Page-aligned, zeroed host memory; its device pointer is its address."""
        n = self._check_alloc(nbytes)
        host = self._aligned(n)
        return HostAllocation(host, host.ctypes.data)

    def register_host(self, buf: npt.NDArray[np.uint8]) -> HostAllocation:
        """Identity mapping; a range registered twice raises 712 like ``cudaHostRegister``."""
        self._check_usable()
        self._capture_guard("cudaHostRegister")
        buf = check_host_buffer(buf)
        start = buf.ctypes.data
        end = start + buf.nbytes
        with self._lock:
            if any(s < end and start < e for s, e in self._registered.items()):
                raise TwinCudaError(712, f"range {start:#x}..{end:#x} is already registered")
            self._registered[start] = end

        def release() -> None:
            with self._lock:
                self._registered.pop(start, None)

        return HostAllocation(buf, start, release)

    def alloc_counter(self, slots: int = 0) -> DeviceCounter:
        """A zeroed u64 (and ``slots`` turn words); ``read()`` synchronizes first, as a device-to-host copy
        would."""
        self._check_alloc(8 * (1 + int(slots)))
        cell = np.zeros(1 + int(slots), dtype=np.uint64)

        def read() -> int:
            self.synchronize()
            return int(cell[0])

        # `cell` is kept alive by the closure for as long as the counter exists.
        return DeviceCounter(cell.ctypes.data, read)

    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        """Zeroed "device" memory (host memory on the twin); copies synchronize first."""
        n = self._check_alloc(nbytes)
        mem = self._aligned(n)

        def to_host() -> npt.NDArray[np.uint8]:
            self.synchronize()
            out: npt.NDArray[np.uint8] = mem.copy()
            return out

        def from_host(data: npt.NDArray[np.uint8]) -> None:
            self.synchronize()
            mem[: data.nbytes] = data

        return DeviceBuffer(mem.ctypes.data, n, to_host, from_host)

    # ---- kernels ----------------------------------------------------------------------------------

    def load(self, source_file: str | Path, kernel_name: str) -> KernelHandle:
        """Compile ``source_file`` (cached by hash), then find ``kernel_name`` (500 when it is not there)."""
        self._check_usable()
        src = Path(source_file)
        path = kernel_path(str(src)) if src.name == str(source_file) else src.resolve()
        if not path.is_file():
            raise KernelSourceError(f"expected a CUDA source file at {path}, found none")
        with self._lock:
            lib = self._libs.get(path)
            if lib is None:
                lib = self._libs[path] = _build(path, self._cache_dir)
        k = lib.kernels.get(kernel_name)
        if k is None:
            raise TwinCudaError(
                500, f"no kernel {kernel_name!r} in {path.name}; it has {sorted(lib.kernels)}"
            )
        sig = lib.sigs[kernel_name]
        return KernelHandle(name=kernel_name, source=path, signature=sig, native=k, backend=self)

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
        """Check the configuration (errors raise here, not sticky), then enqueue on the stream's worker."""
        self._check_usable()
        if not isinstance(kernel.native, _TwinKernel):
            raise TypeError(f"expected a kernel loaded by a twin backend, got {kernel!r}")
        g = normalize_dims(grid, "grid")
        b = normalize_dims(block, "block")
        threads = b[0] * b[1] * b[2]
        if threads > _MAX_BLOCK_THREADS or b[2] > 64:
            raise TwinCudaError(1, f"{kernel.name}: block {b} has {threads} threads; at most 1024 (z <= 64)")
        if grid_exceeds_limits(g):
            raise TwinCudaError(1, f"{kernel.name}: grid {g} exceeds (2**31-1, 65535, 65535)")
        if not 0 <= shared_mem <= _MAX_DYNAMIC_SHARED:
            raise TwinCudaError(
                1, f"{kernel.name}: {shared_mem} bytes of dynamic shared memory; at most 49152"
            )
        s = self._stream(stream)
        tk: _TwinKernel = kernel.native
        n = tk.packer.n
        block_bytes = ctypes.create_string_buffer(16 * n + 8)
        tk.packer.pack_into(block_bytes, 0, args, _numpy_pointer)
        base = ctypes.addressof(block_bytes)
        tk.pointers.pack_into(block_bytes, 8 * n, *[base + o for o in tk.offsets])
        dims = _dims_array(g, b)
        workers = int(min(self._max_workers, threads * g[0] * g[1] * g[2]))
        s._submit(
            _Launch(kernel=kernel, dims=dims, block=block_bytes, args_ptr=base + 8 * n, workers=workers)
        )

    def bind_pack(self, ring: RingPointers, *, stream: Any, tenant_id: int, ts_offset: int) -> PackLauncher:
        """Prebuilt ``vrrl_pack`` launches for ``stream``: per call one ``pack_into`` and an enqueue."""
        self._check_usable()
        return _TwinPackLauncher(self, self._pack_kernel("vrrl_pack"), self._stream(stream), ring,
                                 tenant_id, ts_offset)  # fmt: skip

    def bind_launch(self, kernel: KernelHandle, own: int, fixed: Sequence[int]) -> BoundLauncher:
        """Prebuilt argument blocks per stream with ``fixed`` packed once: per call the kernel's own
        arguments and the varying ones are packed into a free block, which is enqueued."""
        self._check_usable()
        if not isinstance(kernel.native, _TwinKernel):
            raise TypeError(f"expected a kernel loaded by a twin backend, got {kernel!r}")
        return _TwinBoundLauncher(self, kernel, own, fixed)

    def _execute(self, item: _Launch, err: Any) -> None:
        # CUDA drops the work still queued behind a sticky error; so does the twin.
        if self._sticky is not None or self._worker_exc is not None or self._abort.value:
            return
        k: _TwinKernel = item.kernel.native
        code = k.fn(item.dims, item.args_ptr, item.workers, self._abort_addr, ctypes.addressof(err), _ERRBUF)
        if code != 0:
            self._poison(TwinCudaError(code, f"{item.kernel.name}: {err.value.decode(errors='replace')}"))

    # ---- streams ----------------------------------------------------------------------------------

    def current_stream(self) -> TwinStream:
        """The default stream (ptr 0), or this thread's own (ptr 2) with per-thread default streams."""
        return self._per_thread_stream() if self._per_thread else self._default

    def launch_stream(self) -> TwinStream:
        """The current stream: the twin has one device, so there is nothing to check."""
        return self._per_thread_stream() if self._per_thread else self._default

    def new_stream(self) -> TwinStream:
        """A new stream with its own worker thread; dropping every reference to it destroys it."""
        self._check_usable()
        with self._lock:
            ptr = self._next_ptr
            self._next_ptr += 0x10
        return self._make_stream(ptr, f"vrrl-twin-stream-{ptr:#x}")

    def is_capturing(self, stream: Any) -> bool:
        """True while ``stream`` captures, an invalidated capture included (``end_capture`` raises 901)."""
        return self._stream(stream)._captured is not None

    def stream_query(self, stream: Any = None) -> int:
        """0 when the stream's work is done, 600 while it runs, the sticky error's code after a fault."""
        self._check_worker()
        s = self._stream(stream)
        if s._captured is not None:
            s._invalidate(TwinCudaError(900, f"query of capturing stream {s.ptr:#x}"))
            return 900
        pending = s.pending  # read before the sticky state: a fault is recorded before its launch retires
        sticky = self._sticky
        if sticky is not None:
            return sticky.cuda_error_code
        return 600 if pending else 0

    def synchronize(self, stream: Any = None) -> None:
        """Wait for ``stream`` (None: every stream), then raise the sticky error or a worker's exception."""
        if self._closed:
            raise BackendUnavailableError(
                "this twin backend is closed; create a new one with get_backend('twin')"
            )
        if stream is None:
            self._capture_guard("cudaDeviceSynchronize")
            with self._lock:
                workers = list(self._workers)
        else:
            s = self._stream(stream)
            if s._captured is not None:
                err = TwinCudaError(900, f"synchronize of capturing stream {s.ptr:#x}")
                s._invalidate(err)
                raise err
            workers = [s._worker]
        for w in workers:
            w.wait()
        self._check_usable()

    def error_for(self, code: int) -> TwinCudaError:
        """A :class:`TwinCudaError` for ``code`` (with the sticky error's detail when it is that one)."""
        sticky = self._sticky
        detail = sticky.detail if sticky is not None and sticky.cuda_error_code == code else ""
        return TwinCudaError(code, detail)

    def calibrate(self) -> int:
        """0: the twin's %globaltimer is CLOCK_REALTIME already."""
        self._check_usable()
        self._capture_guard("calibration (an allocation and a synchronize)")
        return 0

    def close(self, timeout: float = 10.0) -> None:
        """Stop running kernels at their next clock read or spin hint, then stop the workers; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._abort.value = 1
        with self._lock:
            workers = list(self._workers)
        stuck = [w for w in workers if not w.stop(timeout)]
        if stuck:
            warnings.warn(
                f"twin backend closed with {len(stuck)} stream worker(s) still running a kernel that never "
                f"reads %globaltimer or spins with VRRL_SPIN_HINT; they are daemon threads and end with the "
                f"process",
                VrrlWarning,
                stacklevel=2,
            )
        with contextlib.suppress(Exception):
            self._registered.clear()


# vrrl_pack's parameters seq .. slot_status (cells 3 to 12) in the twin's 8-byte cells.
_PACK_VARYING = struct.Struct("<Q" + "I4x" * 9)
_PACK_CELLS = 14
_PACK_POOL = 1024
#: The most prebuilt blocks an instrumented kernel keeps per stream (a deeper queue: the general launch).
_BOUND_POOL_MAX = 8192


class _TwinPackLauncher:
    """``vrrl_pack`` launches for one stream from a pool of prebuilt argument blocks.

    Block ``i % pool`` is rewritten only when fewer than ``pool`` launches are
    pending on the stream: the launch that last used it has then run (a stream
    runs in order). A full pool grows (up to the ring's size); a captured launch
    takes the general path, which allocates.
    """

    def __init__(
        self,
        backend: TwinBackend,
        kernel: KernelHandle,
        stream: TwinStream,
        ring: RingPointers,
        tenant_id: int,
        ts_offset: int,
    ) -> None:
        self._backend = backend
        # Weakly: a recorder must not keep a stream from being destroyed (its ring is retired then).
        self._stream_ref = weakref.ref(stream)
        self._ring = ring
        self._tenant = int(tenant_id)
        self._ts_offset = int(ts_offset)
        # Grows (doubling, up to the ring's size) when a deep queue fills it, instead of allocating per pack.
        self._max_pool = max(1, ring.mask + 1)
        self._pool = min(_PACK_POOL, self._max_pool)
        self._kernel = kernel
        self._items: list[_Launch] = []
        self._offsets: list[int] = []
        self._bufs: list[Any] = []
        self._add_blocks(0, self._pool)
        self._next = 0

    def _add_blocks(self, at: int, count: int) -> None:
        """``count`` prebuilt blocks, inserted into the cycle before index ``at``.

        Built as arrays (one template block copied, the pointer cells computed), not block by block: a deep
        queue grows the pool while launches are being recorded, and each grown block is paid by a launch."""
        size = 16 * _PACK_CELLS
        buf = ctypes.create_string_buffer(size * count)
        base = ctypes.addressof(buf)
        tk: _TwinKernel = self._kernel.native
        dims = _dims_array((1, 1, 1), (1, 1, 1))
        ring = self._ring
        template = ctypes.create_string_buffer(8 * _PACK_CELLS)
        tk.packer.pack_into(template, 0, (ring.records_ptr, ring.commits_ptr, ring.mask, 0, 0, self._tenant,
                            0, 0, 0, 0, 0, 0, 0, self._ts_offset), _numpy_pointer)  # fmt: skip
        cells = np.frombuffer(memoryview(buf), dtype=np.uint64).reshape(count, 2 * _PACK_CELLS)
        cells[:, :_PACK_CELLS] = np.frombuffer(memoryview(template), dtype=np.uint64)
        starts = base + size * np.arange(count, dtype=np.uint64)
        cells[:, _PACK_CELLS:] = starts[:, None] + np.asarray(tk.offsets, dtype=np.uint64)[None, :]
        kernel = self._kernel
        self._items[at:at] = [
            _Launch(kernel, dims, buf, a, 1) for a in (starts + 8 * _PACK_CELLS).tolist()
        ]
        self._offsets[at:at] = range(24, size * count, size)  # cell 3 of each block: seq
        self._bufs[at:at] = [buf] * count

    def __call__(
        self, seq: int, slot_idx: int, opcode: int, words: Sequence[int], epoch: int, status: int
    ) -> None:
        be = self._backend
        if be._closed or be._sticky is not None or be._worker_exc is not None:
            be._check_usable()
        s = self._stream_ref()
        if s is None:
            raise TwinCudaError(400, "vrrl_pack on a destroyed stream")
        if s.ptr == _PER_THREAD:
            s = be._per_thread_stream()  # handle 2 names the calling thread's own stream
        w = s._worker
        if s._captured is not None or w.pending >= self._pool:
            if s._captured is None and self._pool < self._max_pool:
                # The new blocks go next in the cycle: the old block due now is reused only after them, as
                # many launches back as the grown pool holds, which `pending` then bounds again.
                grow = min(self._pool, self._max_pool - self._pool)
                self._add_blocks(self._next, grow)
                self._pool += grow
            else:
                # A captured launch keeps its block for every replay; a full pool may be read: a fresh one.
                be.pack(self._ring, seq, slot_idx=slot_idx, tenant_id=self._tenant, opcode=opcode,
                        words=words, epoch=epoch, slot_status=status, ts_offset=self._ts_offset,
                        stream=s)  # fmt: skip
                return
        j = self._next
        self._next = (j + 1) % self._pool
        w0, w1, w2, w3 = words
        buf, off = self._bufs[j], self._offsets[j]
        _PACK_VARYING.pack_into(buf, off, seq, slot_idx, self._tenant, opcode, w0, w1, w2, w3, epoch, status)
        w.enqueue(self._items[j])


class _TwinBoundLauncher:
    """:meth:`TwinBackend.bind_launch`: per stream a pool of argument blocks, reused like
    :class:`_TwinPackLauncher`'s (block ``i % pool`` only while fewer than ``pool`` launches are pending,
    so the launch that used it last has run). Anything unusual (a new launch shape, dynamic shared memory, a
    capture, a full pool, another stream kind) takes :meth:`TwinBackend.launch`, which checks it all."""

    def __init__(self, backend: TwinBackend, kernel: KernelHandle, own: int, fixed: Sequence[int]) -> None:
        tk: _TwinKernel = kernel.native
        params = kernel.signature.params
        n = len(params)
        self._backend = backend
        self._kernel = kernel
        self._tk = tk
        self._n = n
        self._own = own
        self._fixed = tuple(int(x) for x in fixed)
        n_var = n - own - len(self._fixed)
        if own < 0 or n_var < 0 or any(p.code != "I" for p in params[n - n_var :]):
            raise ValueError(f"{kernel.name}: cannot bind {len(fixed)} parameters after {own} with u32s last")
        sub = dataclasses.replace(kernel.signature, params=params[:own])
        self._own_packer = ArgPacker(sub)
        bound = params[own : own + len(fixed)]
        self._fixed_struct = struct.Struct("<" + "".join(_cell(p.code) for p in bound))
        self._var_struct = struct.Struct("<" + "I4x" * n_var)
        self._var_at = 8 * (own + len(self._fixed))
        self._pools: weakref.WeakKeyDictionary[TwinStream, list[Any]] = weakref.WeakKeyDictionary()
        self._shapes: dict[tuple[Any, Any], tuple[Any, int]] = {}

    def _pool(self, s: TwinStream) -> list[Any]:
        """``[worker, bufs, items, offsets, next, count]``: per block its buffer, queue item and offset."""
        pool = [s._worker, [], [], [], 0, 0]
        self._add_blocks(pool, 0, _PACK_POOL // 4)
        self._pools[s] = pool
        return pool

    def _add_blocks(self, pool: list[Any], at: int, count: int) -> None:
        """``count`` blocks with ``fixed`` packed, inserted into the cycle before index ``at`` (as arrays: a
        deep queue grows the pool while launches are recorded, and each grown block is paid by a launch)."""
        n, size = self._n, 16 * self._n + 8
        buf = ctypes.create_string_buffer(size * count)
        base = ctypes.addressof(buf)
        template = ctypes.create_string_buffer(8 * n)
        self._fixed_struct.pack_into(template, 8 * self._own, *self._fixed)
        raw = np.frombuffer(memoryview(buf), dtype=np.uint8).reshape(count, size)
        raw[:, : 8 * n] = np.frombuffer(memoryview(template), dtype=np.uint8)
        starts = base + size * np.arange(count, dtype=np.uint64)
        ptrs = starts[:, None] + np.asarray(self._tk.offsets, dtype=np.uint64)[None, :]
        raw[:, 8 * n : 16 * n] = ptrs.astype("<u8").view(np.uint8).reshape(count, 8 * n)
        kernel = self._kernel
        pool[1][at:at] = [buf] * count
        pool[2][at:at] = [_Launch(kernel, None, buf, a, 1) for a in (starts + 8 * n).tolist()]
        pool[3][at:at] = range(0, size * count, size)
        pool[5] += count

    def _general(self, grid: Any, block: Any, args: Sequence[object], varying: Sequence[int], stream: Any,
                 shared_mem: int) -> None:  # fmt: skip
        be = self._backend
        full = (*args, *self._fixed, *varying)
        be.launch(self._kernel, grid, block, full, stream=stream, shared_mem=shared_mem)
        if type(grid) in (int, tuple) and type(block) in (int, tuple) and len(self._shapes) < 256:
            g, b = normalize_dims(grid, "grid"), normalize_dims(block, "block")  # checked by the launch
            threads = b[0] * b[1] * b[2] * g[0] * g[1] * g[2]
            self._shapes[(grid, block)] = (_dims_array(g, b), int(min(be._max_workers, threads)))

    def __call__(self, grid: Any, block: Any, args: Sequence[object], varying: Sequence[int], stream: Any,
                 shared_mem: int) -> None:  # fmt: skip
        be = self._backend
        if be._closed or be._sticky is not None or be._worker_exc is not None:
            be._check_usable()
        plain = type(grid) in (int, tuple) and type(block) in (int, tuple)
        shape = self._shapes.get((grid, block)) if plain else None
        if shape is None or shared_mem or type(stream) is not TwinStream or stream.ptr == _PER_THREAD:
            self._general(grid, block, args, varying, stream, shared_mem)
            return
        pool = self._pools.get(stream)
        if pool is None:
            if stream._backend is not be:
                self._general(grid, block, args, varying, stream, shared_mem)
                return
            pool = self._pool(stream)
        w = pool[0]
        if stream._captured is not None or w.pending >= pool[5]:
            if stream._captured is not None or pool[5] >= _BOUND_POOL_MAX:
                self._general(grid, block, args, varying, stream, shared_mem)
                return
            # Grown like _TwinPackLauncher's: the new blocks go next in the cycle.
            self._add_blocks(pool, pool[4], min(pool[5], _BOUND_POOL_MAX - pool[5]))
        j = pool[4]
        pool[4] = (j + 1) % pool[5]
        off, buf = pool[3][j], pool[1][j]
        self._own_packer.pack_into(buf, off, args, _numpy_pointer)
        self._var_struct.pack_into(buf, off + self._var_at, *varying)
        item = pool[2][j]
        item.dims, item.workers = shape
        w.enqueue(item)


def _cell(code: str) -> str:
    return _CELL_FORMATS[code]


_DIMS_ARRAYS: dict[tuple[int, ...], Any] = {}


def _dims_array(g: tuple[int, int, int], b: tuple[int, int, int]) -> Any:
    """The six launch dimensions as a C array; shared per shape (the trampoline only reads it)."""
    key = (*g, *b)
    arr = _DIMS_ARRAYS.get(key)
    if arr is None:
        arr = (ctypes.c_uint * 6)(*key)
        if len(_DIMS_ARRAYS) < 4096:
            _DIMS_ARRAYS[key] = arr
    return arr


def _numpy_pointer(i: int, value: object) -> int | None:
    """On the twin, device memory is host memory: a numpy array's address is its device pointer."""
    if isinstance(value, np.ndarray):
        return int(value.ctypes.data)
    return None
