"""The real device, through CuPy. The only module of vrrl_gpu that imports CuPy (lazily, at construction).

Every CuPy call here follows shared/notes/cuda-cupy-facts.md sections 2, 3
and 6; CuPy's exceptions propagate unchanged (the recorder classifies them).
"""

from __future__ import annotations

import dataclasses
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.backends._base import (
    Backend,
    BoundLauncher,
    DeviceBuffer,
    DeviceCounter,
    HostAllocation,
    KernelHandle,
    PackLauncher,
    RingPointers,
    check_host_buffer,
    leak,
    normalize_dims,
    numpy_args,
    stream_ref,
)
from vrrl_gpu.capture._kernels import kernel_path, kernels_dir, parse_kernels, sources_digest
from vrrl_gpu.errors import (
    BackendUnavailableError,
    CudaUnavailableError,
    KernelSourceError,
    WrongDeviceError,
)

__all__ = [
    "CupyBackend",
    "import_cupy",
    "cupy_device_count",
    "cuda_start_error",
    "CUDA_START_FIXES",
    "NVRTC_OPTIONS",
]

#: NVRTC options besides the include paths. CuPy picks ``-arch=sm_XX`` for the current device and compiles a
#: cubin (never PTX for the driver to JIT: PTX from a newer NVRTC fails to load on older drivers, code 222).
NVRTC_OPTIONS = ("-std=c++17",)

# cudaHostRegisterPortable | cudaHostRegisterMapped (driver_types.h; CuPy exposes no constants for these).
_HOST_REGISTER_PORTABLE_MAPPED = 1 | 2
_CALIBRATION_ROUNDS = 9

# vrrl_pack's parameter block, naturally aligned: records, commits, mask, seq (u64), slot_idx, tenant_id,
# opcode, a0..a3, epoch, slot_status (u32), 4 bytes of padding, ts_offset (i64). Only seq .. slot_status
# change per launch.
_PACK_BLOCK = struct.Struct("<4Q9I4xq")
# numpy dtypes of the parameter codes (capture/_kernels.py), for parameters bound once.
_NUMPY_CODES = {"p": "<u8", "?": "?", "b": "<i1", "B": "<u1", "h": "<i2", "H": "<u2", "i": "<i4", "I": "<u4",
                "q": "<i8", "Q": "<u8", "f": "<f4", "d": "<f8"}  # fmt: skip
_PACK_VARYING = struct.Struct("<Q9I")
_PACK_VARYING_AT = 24
_PACK_FIELDS = ((0, "<u8"), (8, "<u8"), (16, "<u8"), (24, "<u8"), *((32 + 4 * i, "<u4") for i in range(9)),
                (72, "<i8"))  # fmt: skip


def import_cupy() -> Any:
    """The ``cupy`` module, or :class:`BackendUnavailableError` saying what to install."""
    try:
        import cupy
    except ImportError as e:
        raise BackendUnavailableError(
            f"the cupy backend needs CuPy; import failed ({e}); install vrrl_gpu[cuda13] or "
            f"vrrl_gpu[cuda12], or use device='twin'"
        ) from e
    return cupy


#: What to do when CUDA does not start, by cudaError_t (the codes a host with a GPU gives at getDeviceCount).
CUDA_START_FIXES: dict[int, str] = {
    3: "the driver did not initialise: run nvidia-smi and look for NVRM/Xid lines in dmesg; in a container, "
    "start it with the NVIDIA container runtime (--gpus all)",
    34: "libcuda.so is the toolkit's stub: remove the .../lib64/stubs directory from LD_LIBRARY_PATH",
    35: "the NVIDIA driver is older than CuPy's CUDA runtime: update the driver (R580 or newer for CUDA 13), "
    "or install CuPy for the driver's CUDA: pip uninstall cupy-cuda13x && pip install 'vrrl_gpu[cuda12]'",
    36: "the NVIDIA driver is too old for this call: update the driver, or pip install 'vrrl_gpu[cuda12]' "
    "(after uninstalling cupy-cuda13x) to match an R525-R575 driver",
    46: "every GPU is busy or in exclusive-process mode: free one, or nvidia-smi -c DEFAULT",
    100: "CUDA sees no device: check CUDA_VISIBLE_DEVICES and, in a container, --gpus",
    101: "CUDA_VISIBLE_DEVICES names a device that does not exist: fix or unset it",
    802: "the system is not ready, usually the fabric manager of an NVSwitch host (HGX H100/H200): "
    "systemctl start nvidia-fabricmanager (its version must equal the driver's)",
    803: "the kernel module and the user-space driver differ in version: reboot after a driver upgrade, or "
    "reinstall the driver",
    804: "forward-compatibility libcuda (cuda-compat) is on the library path but this GPU cannot use it: "
    "remove it from LD_LIBRARY_PATH",
    999: "CUDA reports an unknown error: run nvidia-smi, look for Xid lines in dmesg (the GPU may be lost)",
}


def cuda_start_error(exc: BaseException, host_note: str = "") -> BackendUnavailableError:
    """The typed error for a CUDA that does not start: the code, its name and the fix (CUDA_START_FIXES).

    ``host_note`` (what ``device="auto"`` saw of NVIDIA hardware) also says the twin was not substituted.
    """
    code = getattr(exc, "status", None)
    text = " ".join(str(exc).split()) or type(exc).__name__
    where = f" (an NVIDIA device is here: {host_note})" if host_note else ""
    no_twin = (
        "; the CPU twin is not used in its place (pass device='twin' to choose it)"
        if host_note
        else "; on a machine without an NVIDIA GPU use device='twin'"
    )
    if not isinstance(code, int):
        return BackendUnavailableError(
            f"CUDA does not start{where}: {text}; install the NVIDIA driver and vrrl_gpu[cuda13] (or "
            f"[cuda12]), and run `vrrl doctor`{no_twin}"
        )
    name, _, rest = text.partition(": ") if text.startswith("cuda") else (f"cudaError {code}", "", text)
    fix = CUDA_START_FIXES.get(code, "run nvidia-smi and `vrrl doctor` to see what is wrong")
    return CudaUnavailableError(
        f"CUDA does not start{where}: {name} ({code}): {rest or text}; fix: {fix}{no_twin}",
        cuda_error_code=code,
        cuda_error_name=name,
        fix=fix,
    )


def cupy_device_count() -> int:
    """The number of CUDA devices CuPy sees; 0 when CuPy, the driver or a device is missing.

    For reports only: ``get_backend("auto")`` decides from the host (``_host.probe_host``), not from this.
    """
    try:
        cupy = import_cupy()
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, no libcuda, no device: all mean "no device" to the caller
        return 0


class CupyBackend(Backend):
    """A CUDA device through CuPy (``device_id``: default the current device)."""

    name = "cupy"
    is_simulated = False

    def __init__(self, device_id: int | None = None) -> None:
        cp = import_cupy()
        self._cp = cp
        self._rt = cp.cuda.runtime
        try:
            count = int(self._rt.getDeviceCount())
        except Exception as e:  # CUDARuntimeError: name the code and the fix, keep the cause
            raise cuda_start_error(e) from e
        if count < 1:
            raise BackendUnavailableError("the cupy backend needs a CUDA device; getDeviceCount() returned 0")
        self._device_id = int(cp.cuda.Device().id if device_id is None else device_id)
        if not 0 <= self._device_id < count:
            raise BackendUnavailableError(f"expected a device id 0 ..= {count - 1}, got {self._device_id}")
        self._modules: dict[Path, Any] = {}
        # calibrate()'s mapped cell and private stream, made at the first call (outside any capture) and kept:
        # a re-calibration from the recorder's clock thread then allocates nothing.
        self._cal: tuple[HostAllocation, Any] | None = None
        self._closed = False

    @property
    def device_id(self) -> int:
        """The CUDA device this backend allocates on and compiles for."""
        return self._device_id

    def _device(self) -> Any:
        return self._cp.cuda.Device(self._device_id)

    def device_info(self) -> dict[str, Any]:
        """Name, UUID, compute capability, driver/runtime versions and CuPy's version."""
        props = self._rt.getDeviceProperties(self._device_id)
        name = props.get("name", b"")
        uuid = props.get("uuid", b"")
        return {
            "backend": "cupy",
            "simulated": False,
            "device_id": self._device_id,
            "name": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
            "uuid": uuid.hex() if isinstance(uuid, bytes) else str(uuid),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "driver_version": int(self._rt.driverGetVersion()),
            "runtime_version": int(self._rt.runtimeGetVersion()),
            "cupy_version": str(self._cp.__version__),
        }

    # ---- memory ----------------------------------------------------------------------------------

    def alloc_pinned(self, nbytes: int) -> HostAllocation:
        """``PinnedMemory(n, hostAllocMapped | hostAllocPortable)``; device pointer: pointerGetAttributes."""
        cp, rt = self._cp, self._rt
        with self._device():
            mem = cp.cuda.PinnedMemory(int(nbytes), rt.hostAllocMapped | rt.hostAllocPortable)
            dev_ptr = rt.pointerGetAttributes(mem.ptr).devicePointer
        # The numpy view holds the PinnedMemoryPointer, which holds `mem`: the pages live as long as any view.
        host = np.frombuffer(cp.cuda.PinnedMemoryPointer(mem, 0), dtype=np.uint8, count=int(nbytes))
        # PinnedMemory's finalizer calls cudaFreeHost: leak() keeps `mem` itself alive after a sticky error.
        return HostAllocation(host, int(dev_ptr), owner=mem)

    def register_host(self, buf: npt.NDArray[np.uint8]) -> HostAllocation:
        """``hostRegister(ptr, size, Portable | Mapped)`` then ``pointerGetAttributes``; close unregisters."""
        buf = check_host_buffer(buf)
        rt = self._rt
        ptr = int(buf.ctypes.data)
        with self._device():
            rt.hostRegister(ptr, buf.nbytes, _HOST_REGISTER_PORTABLE_MAPPED)
            try:
                dev_ptr = rt.pointerGetAttributes(ptr).devicePointer
            except BaseException:
                rt.hostUnregister(ptr)
                raise

        def release() -> None:
            rt.hostUnregister(ptr)

        return HostAllocation(buf, int(dev_ptr), release)

    def alloc_counter(self, slots: int = 0) -> DeviceCounter:
        """A zeroed u64 (and ``slots`` turn words) from CuPy's pool, zeroed before this returns."""
        cp, rt = self._cp, self._rt
        with self._device():
            cell = cp.zeros(1 + int(slots), dtype=cp.uint64)
            rt.deviceSynchronize()

        def read() -> int:
            with self._device():
                rt.deviceSynchronize()
                return int(cell.get()[0])

        return DeviceCounter(int(cell.data.ptr), read, owner=cell)

    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        """Zeroed device memory from CuPy's pool; copies synchronize the device first."""
        cp, rt = self._cp, self._rt
        n = int(nbytes)
        with self._device():
            mp = cp.cuda.alloc(n)
            mp.memset(0, n)
            rt.deviceSynchronize()

        def to_host() -> npt.NDArray[np.uint8]:
            out = np.empty(n, dtype=np.uint8)
            with self._device():
                rt.deviceSynchronize()
                mp.copy_to_host(out.ctypes.data, n)
            return out

        def from_host(data: npt.NDArray[np.uint8]) -> None:
            with self._device():
                rt.deviceSynchronize()
                mp.copy_from_host(data.ctypes.data, data.nbytes)
                rt.deviceSynchronize()

        return DeviceBuffer(int(mp.ptr), n, to_host, from_host)

    # ---- kernels ----------------------------------------------------------------------------------

    def load(self, source_file: str | Path, kernel_name: str) -> KernelHandle:
        """``RawModule(code=..., options=('-std=c++17', '-I<kernels>'))``, compiled now, once per device."""
        src = Path(source_file)
        path = kernel_path(str(src)) if src.name == str(source_file) else src.resolve()
        if not path.is_file():
            raise KernelSourceError(f"expected a CUDA source file at {path}, found none")
        text = path.read_text(encoding="utf-8")
        sigs = parse_kernels(text)
        if kernel_name not in sigs:
            raise KernelSourceError(
                f'expected extern "C" __global__ void {kernel_name}(...) in {path.name}, found {sorted(sigs)}'
            )
        mod = self._modules.get(path)
        if mod is None:
            # CuPy's on-disk cache is keyed by the code text, not by included headers: stamp their digest in.
            code = f"// vrrl_gpu kernels digest {sources_digest()}\n{text}"
            options = (*NVRTC_OPTIONS, f"-I{kernels_dir()}", f"-I{path.parent}")
            mod = self._cp.RawModule(code=code, options=options)
            self._modules[path] = mod
        with self._device():
            fn = mod.get_function(kernel_name)  # compiles (cubin for this device) and loads, once per device
        sig = sigs[kernel_name]
        return KernelHandle(name=kernel_name, source=path, signature=sig, native=fn, backend=self)

    def launch(
        self,
        kernel: Any,
        grid: int | Sequence[int],
        block: int | Sequence[int],
        args: Sequence[object],
        *,
        stream: Any = None,
        shared_mem: int = 0,
    ) -> None:
        """``kernel(grid, block, args, shared_mem=, stream=)``; stream None is CuPy's current stream.

        ``kernel`` may also be a ``cupy.RawKernel`` (or anything with its call
        signature): it is called as it is, its arguments untouched. Another library's stream
        (``__cuda_stream__``) is launched on as an ``ExternalStream`` of its handle.
        """
        if stream is not None and type(getattr(stream, "ptr", None)) is not int:
            stream = self.native_stream(stream)
        if not isinstance(kernel, KernelHandle):
            kernel(normalize_dims(grid, "grid"), normalize_dims(block, "block"), tuple(args),
                   shared_mem=int(shared_mem), stream=stream)  # fmt: skip
            return
        conv = numpy_args(kernel.signature, args, self._cupy_pointer)
        kernel.native(normalize_dims(grid, "grid"), normalize_dims(block, "block"), conv,
                      shared_mem=int(shared_mem), stream=stream)  # fmt: skip

    def bind_pack(self, ring: RingPointers, *, stream: Any, tenant_id: int, ts_offset: int) -> PackLauncher:
        """A prebuilt parameter block for ``vrrl_pack`` on ``stream`` (not yet run on a GPU).

        One ``CNumpyArray`` per parameter points into the block, so CuPy passes
        them as they are (no per-argument conversion); ``cuLaunchKernel`` copies
        the values at the call, so the block is rewritten for the next launch.
        """
        fn_handle = self._pack_kernel("vrrl_pack")
        with self._device():
            fn = fn_handle.native.kernel  # the cupy.cuda.function.Function of this device, looked up once
        block: Any = np.zeros(_PACK_BLOCK.size, dtype=np.uint8)
        _PACK_BLOCK.pack_into(block, 0, ring.records_ptr, ring.commits_ptr, ring.mask, 0, 0, int(tenant_id),
                              0, 0, 0, 0, 0, 0, 0, int(ts_offset))  # fmt: skip
        cpointer = self._cp.cuda.function.CNumpyArray
        args = tuple(cpointer(block[off : off + np.dtype(t).itemsize].view(t)) for off, t in _PACK_FIELDS)
        # Weakly: a recorder must not keep a stream from being destroyed (its ring is retired then).
        sref = stream_ref(self.current_stream() if stream is None else stream)
        tenant = int(tenant_id)
        one = (1, 1, 1)
        pack_into = _PACK_VARYING.pack_into

        def bound(
            seq: int, slot_idx: int, opcode: int, words: Sequence[int], epoch: int, status: int
        ) -> None:
            w0, w1, w2, w3 = words
            pack_into(block, _PACK_VARYING_AT, seq, slot_idx, tenant, opcode, w0, w1, w2, w3, epoch, status)
            fn(one, one, args, 0, sref())

        return bound

    def bind_launch(self, kernel: KernelHandle, own: int, fixed: Sequence[int]) -> BoundLauncher:
        """``fixed`` as ``CNumpyArray``s made once and the varying u32s in one block rewritten per call
        (``cuLaunchKernel`` copies the values at the call): per launch only the kernel's own ``own``
        arguments are converted (not yet run on a GPU)."""
        params = kernel.signature.params
        n_var = len(params) - own - len(fixed)
        if own < 0 or n_var < 0 or any(p.code != "I" for p in params[len(params) - n_var :]):
            raise ValueError(f"{kernel.name}: cannot bind {len(fixed)} parameters after {own} with u32s last")
        cpointer = self._cp.cuda.function.CNumpyArray
        bound_params = params[own : own + len(fixed)]
        tail = tuple(cpointer(np.array([int(v)], dtype=np.dtype(_NUMPY_CODES[p.code])))
                     for p, v in zip(bound_params, fixed, strict=True))  # fmt: skip
        block: Any = np.zeros(max(1, n_var), dtype=np.uint32)
        var = tuple(cpointer(block[i : i + 1]) for i in range(n_var))
        pack_into = struct.Struct(f"<{n_var}I").pack_into
        sub = dataclasses.replace(kernel.signature, params=params[:own])  # numpy_args caches by this object
        fn = kernel.native
        hook = self._cupy_pointer

        def bound(
            grid: Any, block_dims: Any, args: Sequence[object], varying: Sequence[int], stream: Any, shm: int
        ) -> None:
            conv = numpy_args(sub, args, hook)
            pack_into(block, 0, *varying)
            fn(normalize_dims(grid, "grid"), normalize_dims(block_dims, "block"), (*conv, *tail, *var),
               shared_mem=int(shm), stream=stream)  # fmt: skip

        return bound

    def launch_stream(self) -> Any:
        """``getDevice`` once: WrongDeviceError unless it is ours, else that device's current stream."""
        current = int(self._rt.getDevice())
        if current != self._device_id:
            self._wrong_device(current)
        return self._cp.cuda.get_current_stream(current)

    def _cupy_pointer(self, i: int, value: object) -> object | None:
        return value if isinstance(value, self._cp.ndarray) else None

    # ---- streams ----------------------------------------------------------------------------------

    def native_stream(self, stream: Any) -> Any:
        """CuPy streams as they are; another library's stream as a ``cupy.cuda.ExternalStream`` of its handle
        on this backend's device (not yet run on a GPU)."""
        if stream is None or type(getattr(stream, "ptr", None)) is int:
            return stream
        return self._cp.cuda.ExternalStream(self.stream_key(stream), self._device_id)

    def current_stream(self) -> Any:
        """CuPy's current stream (``cupy.cuda.get_current_stream()``)."""
        return self._cp.cuda.get_current_stream()

    def new_stream(self) -> Any:
        """A new non-blocking ``cupy.cuda.Stream`` on this backend's device."""
        with self._device():
            return self._cp.cuda.Stream(non_blocking=True)

    def stream_query(self, stream: Any = None) -> int:
        """``runtime.streamQuery(s.ptr)``: 0 done, 600 not ready, else the error (not ``Stream.done``)."""
        s = self.current_stream() if stream is None else stream
        return int(self._rt.streamQuery(self.stream_key(s)))

    def synchronize(self, stream: Any = None) -> None:
        """``stream.synchronize()``, or ``deviceSynchronize()`` for None; raises CuPy's CUDA error."""
        if stream is not None:
            self.native_stream(stream).synchronize()
            return
        with self._device():
            self._rt.deviceSynchronize()

    def check_device(self) -> None:
        """One Recorder per device: launching while another device is current is refused."""
        current = int(self._rt.getDevice())
        if current != self._device_id:
            self._wrong_device(current)

    def _wrong_device(self, current: int) -> None:
        raise WrongDeviceError(
            f"this recorder drives CUDA device {self._device_id}, but device {current} is current; "
            f"create one Recorder per device, or switch back: cupy.cuda.Device({self._device_id}).use()"
        )

    def is_capturing(self, stream: Any) -> bool:
        """``Stream.is_capturing()`` of CuPy (False for streams without it); an invalidated capture counts.

        CuPy raises a plain RuntimeError for ``cudaStreamCaptureStatusInvalidated``
        and ``CUDARuntimeError`` (a RuntimeError too) for a failing call: only the latter propagates.
        """
        s = self.current_stream() if stream is None else self.native_stream(stream)
        probe = getattr(s, "is_capturing", None)
        if probe is None:
            return False
        try:
            return bool(probe())
        except self._rt.CUDARuntimeError:
            raise
        except RuntimeError:
            return True  # its end_capture() raises cudaErrorStreamCaptureInvalidated

    def error_for(self, code: int) -> Exception:
        """``CUDARuntimeError(code)``, what CuPy raises at a synchronize for that code."""
        err: Exception = self._rt.CUDARuntimeError(int(code))
        return err

    def calibrate(self) -> int:
        """UNIX ns minus %globaltimer: the tightest of several host-bracketed reads into mapped memory.

        The first call allocates a mapped cell and a private stream and keeps them, so later calls (the
        recorder's periodic re-calibration, from its own thread) only launch and wait on that stream.
        """
        k = self._pack_kernel("vrrl_read_globaltimer")
        with self._device():
            if self._cal is None:
                cell = self.alloc_pinned(64)
                try:
                    stream = self.new_stream()
                except BaseException:
                    cell.close()
                    raise
                self._cal = (cell, stream)
                self.launch(k, 1, 1, (cell.device_ptr,), stream=stream)  # warm-up: module load, first launch
                stream.synchronize()
            cell, stream = self._cal
            view = cell.host[:8].view(np.uint64)
            best: tuple[int, int] | None = None
            for _ in range(_CALIBRATION_ROUNDS):
                view[0] = 0
                t0 = time.time_ns()
                self.launch(k, 1, 1, (cell.device_ptr,), stream=stream)
                stream.synchronize()
                t1 = time.time_ns()
                g = int(view[0])
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, (t0 + t1) // 2 - g)
            assert best is not None
            return best[1]

    def close(self) -> None:
        """Drop the compiled modules (CuPy unloads them when unreferenced); idempotent."""
        self._closed = True
        self._modules.clear()
        cal, self._cal = self._cal, None
        if cal is not None:
            cal[0].close()

    def abandon(self) -> None:
        """Leak the compiled modules (and the calibration cell): unloading them is a CUDA call on a dead
        context."""
        for mod in self._modules.values():
            leak(mod)
        if self._cal is not None:
            leak(self._cal)
            self._cal = None
        self._closed = True
        self._modules.clear()
