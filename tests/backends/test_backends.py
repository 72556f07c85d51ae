"""The backend interface: selection (never a silent twin), argument conversion, and the CuPy backend's calls
checked against a recording fake of CuPy (the real device path is in test_gpu_device.py)."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import vrrl_gpu
from tests.helpers.gpu import gpu_status
from vrrl_gpu.backends import Backend, RingPointers, TwinBackend, TwinCudaError, _host, _registry, get_backend
from vrrl_gpu.backends import _cupy as cupy_mod
from vrrl_gpu.backends._base import HostAllocation, KernelHandle, normalize_dims, numpy_args, pack_args
from vrrl_gpu.capture import StagingRing, kernel_source, parse_kernels
from vrrl_gpu.errors import BackendUnavailableError, CudaUnavailableError, KernelArgumentError, VrrlWarning

PACK = parse_kernels(kernel_source("vrrl_pack.cu"))["vrrl_pack"]
NO_GPU = not gpu_status()[0]
NO_NVIDIA_HOST = not _host.probe_host().present


# ---- selection -----------------------------------------------------------------------------------


def test_twin_by_name_is_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = get_backend("twin")
    assert isinstance(b, TwinBackend)
    assert b.is_simulated
    b.close()


@pytest.mark.skipif(not NO_NVIDIA_HOST, reason="this host has an NVIDIA device: auto must not pick the twin")
def test_auto_on_this_host_without_a_device_picks_the_twin_and_says_so_loudly() -> None:
    # The dev VM has CuPy and a CUDA toolkit, no GPU (getDeviceCount fails with 35) and no device nodes: twin.
    with pytest.warns(VrrlWarning, match="CPU TWIN, NOT A GPU"):
        b = get_backend("auto")
    assert b.name == "twin"
    b.close()


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is present")
def test_cupy_without_a_device_raises_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailableError, match="twin"):
        get_backend("cupy")


class _CudaError(RuntimeError):
    """Shaped like CuPy's CUDARuntimeError: ``status`` and "cudaErrorName: text"."""

    def __init__(self, status: int, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.status = status


def _host_with(monkeypatch: pytest.MonkeyPatch, nodes: tuple[str, ...], nvml: int | None) -> None:
    seen = _host.HostDevices(nodes, nvml, "ok" if nvml is not None else "none")
    monkeypatch.setattr(_registry, "probe_host", lambda: seen)


def _cupy_failing_with(monkeypatch: pytest.MonkeyPatch, err: BaseException) -> None:
    fake = _FakeCupy()

    def count() -> int:
        raise err

    fake.cuda.runtime.getDeviceCount = count
    monkeypatch.setattr(cupy_mod, "import_cupy", lambda: fake)


@pytest.mark.parametrize(
    ("status", "name", "fix_word"),
    [(35, "cudaErrorInsufficientDriver", "driver"), (802, "cudaErrorSystemNotReady", "fabricmanager"),
     (999, "cudaErrorUnknown", "Xid")],
)  # fmt: skip
def test_auto_on_a_gpu_host_raises_the_cuda_error_instead_of_running_the_twin(
    monkeypatch: pytest.MonkeyPatch, status: int, name: str, fix_word: str
) -> None:
    _host_with(monkeypatch, ("/dev/nvidia0", "/dev/nvidiactl"), None)
    _cupy_failing_with(monkeypatch, _CudaError(status, name, "what CUDA says"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no twin warning either: nothing fell back
        with pytest.raises(CudaUnavailableError) as info:
            get_backend("auto")
    e = info.value
    assert isinstance(e, BackendUnavailableError)
    assert (e.cuda_error_code, e.status, e.cuda_error_name) == (status, status, name)
    assert fix_word in e.fix
    assert fix_word in str(e)
    assert "/dev/nvidia0" in str(e)
    assert "not used in its place" in str(e)
    assert isinstance(e.__cause__, _CudaError)
    again = pickle.loads(pickle.dumps(e))
    assert (type(again), again.cuda_error_code, again.fix, str(again)) == (type(e), status, e.fix, str(e))


def test_auto_with_only_an_nvml_device_also_refuses_the_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    _host_with(monkeypatch, (), 8)
    _cupy_failing_with(monkeypatch, _CudaError(35, "cudaErrorInsufficientDriver", "x"))
    with pytest.raises(CudaUnavailableError, match="8 device"):
        get_backend("auto")


def test_auto_on_a_gpu_host_without_cupy_raises_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _host_with(monkeypatch, ("/dev/nvidia0",), None)

    def no_cupy() -> Any:
        raise BackendUnavailableError("the cupy backend needs CuPy; import failed (No module named 'cupy')")

    monkeypatch.setattr(cupy_mod, "import_cupy", no_cupy)
    with pytest.raises(BackendUnavailableError, match=r"vrrl_gpu\[cuda13\].*not used in its place"):
        get_backend("auto")


def test_auto_on_a_host_without_nvidia_hardware_runs_the_twin_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    _host_with(monkeypatch, (), None)
    _cupy_failing_with(monkeypatch, _CudaError(35, "cudaErrorInsufficientDriver", "x"))  # never asked
    with pytest.warns(VrrlWarning, match="no NVIDIA device.*CPU TWIN, NOT A GPU"):
        b = get_backend("auto")
    assert isinstance(b, TwinBackend)
    b.close()


def test_auto_on_a_working_gpu_host_picks_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    _host_with(monkeypatch, ("/dev/nvidia0",), 1)
    monkeypatch.setattr(cupy_mod, "import_cupy", _FakeCupy)
    assert isinstance(get_backend("auto"), cupy_mod.CupyBackend)


def test_host_probe_reads_device_nodes_and_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_host.glob, "glob", lambda pattern: ["/dev/nvidiactl", "/dev/nvidia0"])
    assert _host.device_nodes() == ("/dev/nvidia0", "/dev/nvidiactl")
    calls: list[str] = []
    nvml = SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlDeviceGetCount=lambda: 4,
        nvmlShutdown=lambda: calls.append("shutdown"),
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert _host.nvml_device_count() == (4, "ok")
    assert calls == ["init", "shutdown"]

    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    nvml.nvmlInit = no_driver
    count, note = _host.nvml_device_count()
    assert count is None
    assert "Not Found" in note
    host = _host.probe_host()
    assert host.present
    assert "/dev/nvidia0" in host.describe()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    monkeypatch.setattr(_host.glob, "glob", lambda pattern: [])
    assert not _host.probe_host().present
    assert "pynvml not installed" in _host.probe_host().describe()


def test_unknown_backend_name_raises() -> None:
    with pytest.raises(BackendUnavailableError, match="auto"):
        get_backend("metal")


def test_both_backends_implement_the_whole_interface() -> None:
    assert not TwinBackend.__abstractmethods__
    assert not cupy_mod.CupyBackend.__abstractmethods__
    assert issubclass(cupy_mod.CupyBackend, Backend)
    assert vrrl_gpu.get_backend is get_backend
    assert "TwinCudaError" in vrrl_gpu.backends.__all__
    assert "TwinCudaError" not in vrrl_gpu.errors.__all__  # it lives beside the twin


def test_only_the_cupy_backend_module_imports_cupy() -> None:
    pkg = Path(vrrl_gpu.__file__).parent / "backends"
    importers = {p.name for p in pkg.glob("*.py") if "import cupy" in p.read_text()}
    assert importers == {"_cupy.py"}
    code = (
        "import sys, vrrl_gpu, vrrl_gpu.backends; vrrl_gpu.get_backend('twin').close(); "
        "print('cupy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- argument conversion -------------------------------------------------------------------------


def test_pack_args_lays_out_one_8_byte_cell_per_parameter() -> None:
    args = (0x1000, 0x2000, 7, 2**63, 1, 2, 3, 4, 5, 6, 2**32 - 1, 8, 9, -5)
    raw = pack_args(PACK, args, lambda i, v: None)
    assert len(raw) == 8 * 14
    cells = [raw[8 * i : 8 * i + 8] for i in range(14)]
    assert struct.unpack("<Q", cells[0])[0] == 0x1000
    assert struct.unpack("<Q", cells[3])[0] == 2**63
    assert struct.unpack("<I4x", cells[10])[0] == 2**32 - 1
    assert struct.unpack("<q", cells[13])[0] == -5


def test_pointer_arguments_accept_ints_none_and_device_ptr_objects() -> None:
    holder = SimpleNamespace(device_ptr=0xABC)
    raw = pack_args(PACK, (None, holder, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), lambda i, v: None)
    assert struct.unpack("<QQ", raw[:16]) == (0, 0xABC)
    with pytest.raises(KernelArgumentError, match="address"):
        pack_args(PACK, (-1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), lambda i, v: None)
    with pytest.raises(KernelArgumentError, match="argument 4"):
        pack_args(PACK, (0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0), lambda i, v: None)
    with pytest.raises(KernelArgumentError, match="argument 4"):
        pack_args(PACK, (0, 0, 0, 0, True, 0, 0, 0, 0, 0, 0, 0, 0, 0), lambda i, v: None)


def test_numpy_args_gives_exact_width_scalars_for_cupy() -> None:
    out = numpy_args(PACK, (1, 2, 3, 4, 5, np.uint32(6), 7, 8, 9, 10, 11, 12, 13, -14), lambda i, v: None)
    assert [type(v) for v in out] == [np.uint64] * 4 + [np.uint32] * 9 + [np.int64]
    assert int(out[13]) == -14  # type: ignore[call-overload]
    native = object()
    out2 = numpy_args(PACK, (native, *range(13)), lambda i, v: v if v is native else None)
    assert out2[0] is native


@pytest.mark.parametrize(
    ("value", "want"),
    [(5, (5, 1, 1)), ((2, 3), (2, 3, 1)), ([1, 2, 3], (1, 2, 3)), (0, (1, 1, 1)), ((4, 0, 2), (4, 1, 2))],
)
def test_normalize_dims_pads_and_clamps_like_cupy(value: Any, want: tuple[int, int, int]) -> None:
    assert normalize_dims(value, "grid") == want


@pytest.mark.parametrize("value", [(), (1, 2, 3, 4), -1, (1, -2), "8", 1.5])
def test_normalize_dims_rejects_bad_shapes(value: Any) -> None:
    with pytest.raises(KernelArgumentError):
        normalize_dims(value, "block")


def test_ring_pointers_from_a_staging_ring() -> None:
    buf = np.zeros(StagingRing.layout_size(64), np.uint8)
    ring = StagingRing.create(buf, 64)
    alloc = HostAllocation(buf, 0x10000)
    p = RingPointers.from_staging(alloc, ring)
    assert p == RingPointers(0x10000 + 4096 + 8 * 64, 0x10000 + 4096, 63)


def test_twin_cuda_error_reads_like_cupy_and_pickles() -> None:
    e = TwinCudaError(700, "k: somewhere")
    assert str(e) == "cudaErrorIllegalAddress: an illegal memory access was encountered (twin)"
    assert e.cuda_error_code == e.status == 700
    assert e.sticky
    assert not TwinCudaError(1).sticky
    back = pickle.loads(pickle.dumps(e))
    assert (back.cuda_error_code, back.detail, str(back)) == (700, "k: somewhere", str(e))
    assert "unrecognized" in str(TwinCudaError(4242))
    assert isinstance(e, RuntimeError)


# ---- the CuPy backend against a recording fake ---------------------------------------------------


class _FakeKernel:
    def __init__(self, calls: list[tuple[Any, ...]], name: str) -> None:
        self.calls = calls
        self.name = name

    def __call__(self, grid: Any, block: Any, args: Any, **kw: Any) -> None:
        self.calls.append(("launch", self.name, grid, block, args, kw))


class _FakeCupy:
    """Just enough of CuPy for the backend's calls; records every call."""

    def __init__(self) -> None:
        calls: list[tuple[Any, ...]] = []
        self.calls = calls
        self.__version__ = "14.2.0-fake"
        self._pinned: list[Any] = []

        class PinnedMemory:
            def __init__(pm, size: int, flags: int) -> None:
                pm.buf = np.zeros(size, np.uint8)
                pm.ptr = pm.buf.ctypes.data
                calls.append(("PinnedMemory", size, flags))

        def pinned_pointer(mem: Any, offset: int) -> Any:
            return memoryview(mem.buf)[offset:]

        def pointer_attrs(ptr: int) -> Any:
            calls.append(("pointerGetAttributes", ptr))
            return SimpleNamespace(devicePointer=ptr + 0x7000_0000_0000)

        class RawModule:
            def __init__(rm, *, code: str, options: tuple[str, ...]) -> None:
                calls.append(("RawModule", code[:40], options))

            def get_function(rm, name: str) -> _FakeKernel:
                calls.append(("get_function", name))
                return _FakeKernel(calls, name)

        class Device:
            def __init__(d, i: int | None = None) -> None:
                d.id = 0 if i is None else i

            def __enter__(d) -> Any:
                return d

            def __exit__(d, *a: object) -> None:
                pass

        runtime = SimpleNamespace(
            hostAllocMapped=2,
            hostAllocPortable=1,
            getDeviceCount=lambda: 1,
            pointerGetAttributes=pointer_attrs,
            hostRegister=lambda p, n, f: calls.append(("hostRegister", p, n, f)),
            hostUnregister=lambda p: calls.append(("hostUnregister", p)),
            streamQuery=lambda p: calls.append(("streamQuery", p)) or 600,
            deviceSynchronize=lambda: calls.append(("deviceSynchronize",)),
        )
        self.cuda = SimpleNamespace(
            runtime=runtime,
            PinnedMemory=PinnedMemory,
            PinnedMemoryPointer=pinned_pointer,
            Device=Device,
            get_current_stream=lambda: SimpleNamespace(ptr=0),
        )
        self.RawModule = RawModule
        self.ndarray = type("ndarray", (), {})


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> _FakeCupy:
    fake = _FakeCupy()
    monkeypatch.setattr(cupy_mod, "import_cupy", lambda: fake)
    return fake


def test_cupy_alloc_pinned_uses_mapped_portable_flags_and_the_attribute_pointer(fake_cupy: _FakeCupy) -> None:
    b = cupy_mod.CupyBackend()
    m = b.alloc_pinned(8192)
    assert ("PinnedMemory", 8192, 2 | 1) in fake_cupy.calls
    assert m.device_ptr == m.host.ctypes.data + 0x7000_0000_0000
    assert m.nbytes == 8192
    m.host[:4] = 7  # writable


def test_cupy_register_host_maps_portable_and_unregisters_on_close(fake_cupy: _FakeCupy) -> None:
    b = cupy_mod.CupyBackend()
    buf = np.zeros(4096, np.uint8)
    reg = b.register_host(buf)
    ptr = buf.ctypes.data
    assert ("hostRegister", ptr, 4096, 3) in fake_cupy.calls
    assert reg.device_ptr == ptr + 0x7000_0000_0000
    reg.close()
    reg.close()
    assert fake_cupy.calls.count(("hostUnregister", ptr)) == 1


def test_cupy_load_and_pack_launch_with_uint64_pointers_on_the_given_stream(fake_cupy: _FakeCupy) -> None:
    b = cupy_mod.CupyBackend()
    ring = RingPointers(0x1000, 0x2000, 15)
    stream = SimpleNamespace(ptr=0x55)
    b.pack(
        ring, 3, slot_idx=3, tenant_id=1, opcode=2, words=(4, 5, 6, 7), epoch=8, ts_offset=-9, stream=stream
    )
    b.pack(ring, 4, slot_idx=4, tenant_id=1, opcode=2, words=(4, 5, 6, 7), epoch=8)
    modules = [c for c in fake_cupy.calls if c[0] == "RawModule"]
    assert len(modules) == 1  # compiled once, reused
    assert "-std=c++17" in modules[0][2]
    assert any(o.startswith("-I") and o.endswith("kernels") for o in modules[0][2])
    launches = [c for c in fake_cupy.calls if c[0] == "launch"]
    _, name, grid, block, args, kw = launches[0]
    assert (name, grid, block) == ("vrrl_pack", (1, 1, 1), (1, 1, 1))
    assert kw == {"shared_mem": 0, "stream": stream}
    assert type(args[0]) is np.uint64
    assert int(args[0]) == 0x1000
    assert type(args[13]) is np.int64
    assert int(args[13]) == -9
    assert launches[1][5]["stream"] is None  # None: CuPy's current stream


def test_cupy_stream_query_passes_the_raw_code_through(fake_cupy: _FakeCupy) -> None:
    b = cupy_mod.CupyBackend()
    assert b.stream_query(SimpleNamespace(ptr=0x99)) == 600
    assert ("streamQuery", 0x99) in fake_cupy.calls


def test_stream_key_and_error_for(fake_cupy: _FakeCupy) -> None:
    twin = TwinBackend()
    try:
        assert twin.stream_key(None) == 0
        s = twin.new_stream()
        assert twin.stream_key(s) == s.ptr != 0
        e = twin.error_for(719)
        assert isinstance(e, TwinCudaError)
        assert e.cuda_error_code == 719
    finally:
        twin.close()
    b = cupy_mod.CupyBackend()
    assert b.stream_key(SimpleNamespace(ptr=0x77)) == 0x77


def test_cupy_error_for_is_cupys_runtime_error() -> None:
    runtime = pytest.importorskip("cupy_backends.cuda.api.runtime")
    b = cupy_mod.CupyBackend.__new__(cupy_mod.CupyBackend)
    b._rt = runtime  # no device needed to build the exception
    e = b.error_for(700)
    assert type(e).__name__ == "CUDARuntimeError"
    assert e.status == 700  # type: ignore[attr-defined]


def test_cupy_bound_pack_points_cupy_at_the_exact_parameter_values() -> None:
    """Without a GPU: the prebuilt block that CupyBackend.bind_pack hands to CuPy's Function.__call__ holds,
    at each CNumpyArray's pointer, vrrl_pack's parameter at its exact width (the launch needs a GPU)."""
    import contextlib
    import ctypes

    cupy = pytest.importorskip("cupy")
    from vrrl_gpu.backends._cupy import CupyBackend

    calls: list[tuple[Any, ...]] = []
    be = object.__new__(CupyBackend)
    be._cp = cupy
    be._device_id = 0
    be._device = contextlib.nullcontext  # type: ignore[method-assign]
    fn = SimpleNamespace(kernel=lambda *a: calls.append(a))
    be._pack_kernel = lambda name: SimpleNamespace(native=fn)  # type: ignore[method-assign,assignment,return-value]
    ring = RingPointers(records_ptr=0x7F00_0000_1000, commits_ptr=0x7F00_0000_0000, mask=4095)
    stream = SimpleNamespace(ptr=0x1234)
    bound = be.bind_pack(ring, stream=stream, tenant_id=7, ts_offset=-(10**9))
    values = []
    for seq in (5, 2**40 + 3):
        bound(seq, 9, 0xABCDEF01, (1, 2, 3, 2**32 - 1), 11, 1)
        grid, block, args, shared, s = calls[-1]
        assert (grid, block, shared, s) == ((1, 1, 1), (1, 1, 1), 0, stream)
        assert all(isinstance(a, cupy.cuda.function.CPointer) for a in args)
        widths = "QQQQIIIIIIIIIq"
        values.append(
            tuple(
                {"Q": ctypes.c_uint64, "I": ctypes.c_uint32, "q": ctypes.c_int64}[w].from_address(a.ptr).value
                for a, w in zip(args, widths, strict=True)
            )
        )
    base = (ring.records_ptr, ring.commits_ptr, 4095)
    rest = (9, 7, 0xABCDEF01, 1, 2, 3, 2**32 - 1, 11, 1, -(10**9))
    assert values == [(*base, 5, *rest), (*base, 2**40 + 3, *rest)]


def test_cupy_bound_launch_converts_only_the_kernels_own_arguments_per_call() -> None:
    """Without a GPU: CupyBackend.bind_launch hands CuPy the bound parameters as CNumpyArrays made once (the
    same objects every call) and the varying u32s through one block rewritten per call, at their exact
    widths; the kernel's own arguments are converted like launch() converts them."""
    import contextlib
    import ctypes

    cupy = pytest.importorskip("cupy")
    from vrrl_gpu.backends._cupy import CupyBackend

    calls: list[tuple[Any, ...]] = []
    be = object.__new__(CupyBackend)
    be._cp = cupy
    be._device_id = 0
    be._device = contextlib.nullcontext  # type: ignore[method-assign]
    sig = parse_kernels(
        'extern "C" __global__ void k(float* out, int n, unsigned long long* ring, long long ts, '
        "unsigned int op, unsigned int slot, unsigned int epoch) {}"
    )["k"]
    widths = {"<u8": ctypes.c_uint64, "<i8": ctypes.c_int64, "<u4": ctypes.c_uint32}
    order = ("<u8", "<i8", "<u4", "<u4", "<u4")

    def native(grid: Any, block: Any, args: tuple[Any, ...], **kw: Any) -> None:
        # What cuLaunchKernel would copy: the values behind the pointers at the call.
        values = tuple(widths[w].from_address(a.ptr).value for a, w in zip(args[2:], order, strict=True))
        calls.append((grid, block, args, kw, values))

    handle = KernelHandle(name="k", source=Path("k.cu"), signature=sig, native=native, backend=be)
    bound = be.bind_launch(handle, 2, (0x7F00_0000_1000, -(10**9), 0xABCDEF01))
    s = SimpleNamespace(ptr=0x1234)
    for slot, epoch in ((3, 9), (2**32 - 1, 0)):
        bound(4, (32,), (0x5000, 77), (slot, epoch), s, 0)
    for grid, block, args, kw, _values in calls:
        assert (grid, block, kw) == ((4, 1, 1), (32, 1, 1), {"shared_mem": 0, "stream": s})
        assert args[0] == np.uint64(0x5000)
        assert type(args[1]) is np.int32
        assert args[1] == 77
        assert all(isinstance(a, cupy.cuda.function.CPointer) for a in args[2:])
    fixed = (0x7F00_0000_1000, -(10**9), 0xABCDEF01)
    assert [c[4] for c in calls] == [(*fixed, 3, 9), (*fixed, 2**32 - 1, 0)]
    assert [a.ptr for a in calls[0][2][2:]] == [a.ptr for a in calls[1][2][2:]]  # bound once


# ---- stream keys -------------------------------------------------------------------------------------


class _ProtocolStream:
    """A stream of another library that speaks only the CUDA Python stream protocol."""

    def __init__(self, handle: int, version: int = 0) -> None:
        self._answer = (version, handle)

    def __cuda_stream__(self) -> tuple[int, int]:
        return self._answer


def test_stream_key_takes_ptr_or_the_cuda_stream_protocol() -> None:
    with TwinBackend() as b:
        assert b.stream_key(SimpleNamespace(ptr=0x7F00)) == 0x7F00
        assert b.stream_key(SimpleNamespace(ptr=np.uint64(0x7F10))) == 0x7F10
        assert b.stream_key(_ProtocolStream(0xABC0)) == 0xABC0
        assert b.stream_key(None) == b.stream_key(b.current_stream()) == b.current_stream().ptr
        s = b.new_stream()
        assert b.stream_key(s) == s.ptr != b.stream_key(None)
        with pytest.raises(KernelArgumentError, match="version 0"):
            b.stream_key(_ProtocolStream(0xABC0, version=1))
        with pytest.raises(KernelArgumentError, match="__cuda_stream__"):
            b.stream_key(object())


def test_every_abstract_method_states_its_contract() -> None:
    for name in sorted(Backend.__abstractmethods__):
        doc = getattr(Backend, name).__doc__ or ""
        assert len(doc.split()) >= 8, f"Backend.{name} has no contract in its docstring"
    assert "sticky" in (Backend.__doc__ or "")


def test_cupy_launch_stream_checks_the_device_with_one_query() -> None:
    """Without a GPU: CupyBackend.launch_stream asks getDevice once, refuses another device, and takes that
    device's current stream (CuPy's runtime stubbed)."""
    from vrrl_gpu.backends._cupy import CupyBackend
    from vrrl_gpu.errors import WrongDeviceError

    asked: list[str] = []
    current = {"dev": 0}
    streams = {0: SimpleNamespace(ptr=0), 1: SimpleNamespace(ptr=0)}

    def get_device() -> int:
        asked.append("getDevice")
        return current["dev"]

    def get_current_stream(dev: int = -1) -> Any:
        asked.append(f"get_current_stream({dev})")
        return streams[dev]

    be = object.__new__(CupyBackend)
    be._device_id = 0
    be._rt = SimpleNamespace(getDevice=get_device)
    be._cp = SimpleNamespace(cuda=SimpleNamespace(get_current_stream=get_current_stream))
    assert be.launch_stream() is streams[0]
    assert asked == ["getDevice", "get_current_stream(0)"]
    current["dev"] = 1
    with pytest.raises(WrongDeviceError, match="device 1 is current"):
        be.launch_stream()
