"""``vrrl doctor``'s checks: what is installed, what the host shows, then the device path exercised live.

Every check yields a :class:`Check` (``ok``, ``warn``, ``fail``, ``skip`` or
``info``); a failure carries the fix (what to install or set). The live checks
run through a real backend, the CuPy one or the twin, with the same code, so
on the twin they prove the twin and say so.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vrrl_gpu.backends._base import PACK_SOURCE, Backend, RingPointers
from vrrl_gpu.backends._host import HostDevices, probe_host
from vrrl_gpu.capture._records import pack_reference
from vrrl_gpu.capture._shm import ShmSegment
from vrrl_gpu.capture._staging import StagingRing
from vrrl_gpu.errors import KernelCompileError, StagingSpaceError, VrrlError

__all__ = ["Check", "DoctorReport", "run_doctor", "cuda_version_text", "CUPY_DISTRIBUTIONS", "STATUSES"]

Status = Literal["ok", "warn", "fail", "skip", "info"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail", "skip", "info")

#: Distribution names of CuPy builds; more than one in an environment overwrite each other's files.
CUPY_DISTRIBUTIONS = (
    "cupy",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "cupy-cuda11x",
    "cupy-cuda110",
    "cupy-cuda102",
    "cupy-rocm-5-0",
    "cupy-rocm-6-0",
)
#: Spread of repeated clock calibrations above which timestamps are called imprecise (a busy host).
CALIBRATION_WARN_NS = 200_000
_INSTALL = "pip install 'vrrl_gpu[cuda13]' (driver R580+) or 'vrrl_gpu[cuda12]' (driver R525-R575)"
_RING_SLOTS = 64


@dataclass
class Check:
    """One line of the report. ``fix`` is set on every ``fail`` (and on a ``warn`` with a remedy)."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DoctorReport:
    """All checks, in the order they ran, and which backend ran the live ones."""

    device: str
    backend: str | None
    simulated: bool
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def ok(self) -> bool:
        """True when nothing failed (warnings allowed)."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``ok``, ``device`` (asked), ``backend`` (used), ``simulated``, ``checks``."""
        return {
            "ok": self.ok,
            "device": self.device,
            "backend": self.backend,
            "simulated": self.simulated,
            "checks": [asdict(c) for c in self.checks],
        }


def cuda_version_text(v: int) -> str:
    """13020 -> "13.2"; 0 -> "none" (how CUDA encodes driver and runtime versions)."""
    return f"{v // 1000}.{(v % 1000) // 10}" if v > 0 else "none"


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:400]


# ---- the environment -----------------------------------------------------------------------------


def check_python() -> Check:
    return Check("python", "info", f"{platform.python_version()} on {platform.machine()} ({sys.executable})")


def check_cupy_distributions(required: bool) -> Check:
    found = {}
    for dist in CUPY_DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    text = ", ".join(f"{k} {v}" for k, v in found.items()) or "none"
    if len(found) > 1:
        keep = "cupy-cuda13x" if "cupy-cuda13x" in found else sorted(found)[0]
        drop = " ".join(sorted(set(found) - {keep}))
        return Check(
            "cupy packages",
            "fail",
            f"{len(found)} CuPy distributions installed: {text}",
            f"they overwrite each other's files: pip uninstall -y {' '.join(sorted(found))} && pip install "
            f"{keep} (or keep one of {drop} instead, matching the driver)",
            {"installed": found},
        )
    if not found:
        status: Status = "fail" if required else "info"
        return Check(
            "cupy packages", status, "no CuPy installed", _INSTALL if required else "", {"installed": {}}
        )
    return Check("cupy packages", "ok", text, data={"installed": found})


def _try_cupy() -> tuple[Any, str]:
    from vrrl_gpu.backends._cupy import import_cupy

    try:
        return import_cupy(), ""
    except Exception as e:  # not installed, or a broken install failing inside CuPy's own import
        return None, _one_line(e.__cause__ or e)


def check_cupy(cupy: Any, why: str, required: bool) -> Check:
    if cupy is None:
        status: Status = "fail" if required else "info"
        return Check("cupy", status, f"does not import ({why})", _INSTALL if required else "")
    return Check(
        "cupy",
        "ok",
        f"{cupy.__version__} at {Path(cupy.__file__).parent}",
        data={"version": str(cupy.__version__), "path": str(Path(cupy.__file__).parent)},
    )


def check_driver_runtime(cupy: Any, required: bool) -> Check:
    if cupy is None:
        return Check("driver/runtime", "skip", "no CuPy")
    rt = cupy.cuda.runtime
    runtime = int(rt.runtimeGetVersion())
    try:
        driver = int(rt.driverGetVersion())
    except Exception as e:  # libcuda missing: CuPy raises from the driver call
        driver, note = 0, f" ({_one_line(e)})"
    else:
        note = ""
    data = {"driver_version": driver, "runtime_version": runtime}
    detail = (
        f"driver CUDA {cuda_version_text(driver)}{note}, CuPy's runtime CUDA {cuda_version_text(runtime)}"
    )
    if driver == 0:
        status: Status = "fail" if required else "info"
        return Check(
            "driver/runtime",
            status,
            detail + ": no NVIDIA driver",
            "install the NVIDIA driver (nvidia-smi must work)" if required else "",
            data,
        )
    if driver // 1000 < runtime // 1000:
        return Check(
            "driver/runtime",
            "fail",
            detail + ": the driver is older than the runtime's CUDA major",
            f"update the driver for CUDA {runtime // 1000}, or install CuPy for CUDA {driver // 1000}: "
            f"pip uninstall cupy-cuda{runtime // 1000}x && pip install 'vrrl_gpu[cuda{driver // 1000}]'",
            data,
        )
    return Check("driver/runtime", "ok", detail, data=data)


def _loaded_library(fragment: str) -> str:
    """The path of a loaded shared library whose name contains ``fragment`` (Linux /proc/self/maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if fragment in os.path.basename(path):
                    return path
    except OSError:
        pass
    return ""


def check_nvrtc(cupy: Any, required: bool) -> Check:
    if cupy is None:
        return Check("nvrtc", "skip", "no CuPy")
    try:
        major, minor = cupy.cuda.nvrtc.getVersion()
    except Exception as e:  # CuPy could not dlopen libnvrtc
        status: Status = "fail" if required else "info"
        return Check(
            "nvrtc",
            status,
            f"does not load ({_one_line(e)})",
            f"NVRTC ships in the extras: {_INSTALL}" if required else "",
        )
    path = _loaded_library("libnvrtc") or "(path unknown)"
    return Check(
        "nvrtc", "ok", f"{major}.{minor} at {path}", data={"version": f"{major}.{minor}", "path": path}
    )


def _header_dir(cupy: Any) -> tuple[str, str]:
    """(directory holding cuda_runtime.h, how it was found), as CuPy's compiler would find it."""
    try:
        from cuda.pathfinder import find_nvidia_header_directory
    except ImportError:
        pass
    else:  # CuPy 14 adds -I<this> to every compile and fails without it
        try:
            found = find_nvidia_header_directory("cudart")
        except Exception as e:  # pathfinder raises on an unknown or broken layout: report, fall through
            return "", f"cuda-pathfinder failed: {_one_line(e)}"
        return (str(found), "cuda-pathfinder") if found else ("", "cuda-pathfinder found none")
    cuda_path = cupy.cuda.get_cuda_path() if cupy is not None else None
    if cuda_path:  # CuPy 13: CUDA_PATH, or the toolkit it found
        inc = os.path.join(cuda_path, "include")
        return (inc, "CUDA path") if os.path.isfile(os.path.join(inc, "cuda_runtime.h")) else ("", inc)
    return "", "no cuda-pathfinder and no CUDA path"


def check_headers(cupy: Any, required: bool) -> Check:
    if cupy is None:
        return Check("cuda headers", "skip", "no CuPy")
    found, how = _header_dir(cupy)
    if found and os.path.isfile(os.path.join(found, "cuda_runtime.h")):
        return Check("cuda headers", "ok", f"cuda_runtime.h in {found} ({how})", data={"include": found})
    status: Status = "fail" if required else "info"
    return Check(
        "cuda headers",
        status,
        f"no cuda_runtime.h where CuPy looks ({how})",
        (
            "CuPy's compiler needs them: pip install nvidia-cuda-runtime (CUDA 13) or "
            "nvidia-cuda-runtime-cu12 "
            "(both come with the extras), or set CUDA_PATH to a toolkit"
        )
        if required
        else "",
    )


def check_host(host: HostDevices) -> Check:
    return Check(
        "nvidia host",
        "info",
        host.describe(),
        data={"nodes": list(host.nodes), "nvml_count": host.nvml_count},
    )


def _uuid_text(raw: object) -> str:
    if isinstance(raw, bytes) and len(raw) == 16:
        h = raw.hex()
        return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return str(raw)


def check_cuda_devices(cupy: Any, required: bool) -> Check:
    if cupy is None:
        return Check("cuda devices", "skip", "no CuPy")
    rt = cupy.cuda.runtime
    try:
        n = int(rt.getDeviceCount())
        devices: list[dict[str, Any]] = []
        for i in range(n):
            p = rt.getDeviceProperties(i)
            name = p.get("name", b"")
            devices.append(
                {
                    "id": i,
                    "name": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
                    "uuid": _uuid_text(p.get("uuid", b"")),
                    "compute_capability": f"{p['major']}.{p['minor']}",
                }
            )
    except Exception as e:  # CUDARuntimeError: the code says why (35, 802, 100, ...)
        from vrrl_gpu.backends._cupy import cuda_start_error

        err = cuda_start_error(e)
        status: Status = "fail" if required else "info"
        return Check(
            "cuda devices",
            status,
            f"CUDA does not start: {_one_line(e)}",
            getattr(err, "fix", "") if required else "",
            {"code": getattr(e, "status", None)},
        )
    if not devices:
        status = "fail" if required else "info"
        return Check("cuda devices", status, "none", "check CUDA_VISIBLE_DEVICES" if required else "")
    text = "; ".join(
        f"{d['id']}: {d['name']} sm_{d['compute_capability'].replace('.', '')} {d['uuid']}" for d in devices
    )
    return Check("cuda devices", "ok", text, data={"devices": devices})


# ---- the live checks -----------------------------------------------------------------------------


def _fix_for(exc: BaseException, backend: Backend) -> str:
    if isinstance(exc, KernelCompileError) or type(exc).__name__ == "CompileException":
        return "the kernels do not compile: " + (
            "install g++ (the twin compiles kernels/ with it)"
            if backend.is_simulated
            else f"NVRTC and the CUDA headers come with the extras: {_INSTALL}"
        )
    if isinstance(exc, StagingSpaceError):
        return "free space in /dev/shm (a container: --shm-size=1g), or record with staging='pinned'"
    code = getattr(exc, "cuda_error_code", getattr(exc, "status", None))
    if isinstance(code, int):
        from vrrl_gpu.backends._cupy import CUDA_START_FIXES

        return CUDA_START_FIXES.get(code, f"CUDA error {code}: run nvidia-smi, look for Xid lines in dmesg")
    return "unexpected: report it with the output of `vrrl doctor --json`"


class _Live:
    """State the live checks share: the backend, the pinned ring of the round trip."""

    def __init__(self, backend: Backend, calibrations: int) -> None:
        self.b = backend
        self.calibrations = calibrations
        self.pinned: Any = None

    def compile(self) -> Check:
        t0 = time.perf_counter()
        for name in ("vrrl_pack", "vrrl_pack_devseq", "vrrl_read_globaltimer"):
            self.b.load(PACK_SOURCE, name)
        ms = (time.perf_counter() - t0) * 1e3
        return Check(
            "compile",
            "ok",
            f"{PACK_SOURCE}: vrrl_pack, vrrl_pack_devseq, vrrl_read_globaltimer in {ms:.0f} ms",
            data={"ms": round(ms, 1)},
        )

    def pinned_memory(self) -> Check:
        nbytes = StagingRing.layout_size(_RING_SLOTS)
        mem = self.pinned = self.b.alloc_pinned(nbytes)
        mem.host[:] = 0xA5
        if mem.device_ptr == 0 or not (mem.host == 0xA5).all():
            return Check(
                "mapped pinned memory",
                "fail",
                f"{nbytes} B: device pointer {mem.device_ptr:#x}, host view not writable",
                "unexpected: report `vrrl doctor --json`",
            )
        return Check(
            "mapped pinned memory",
            "ok",
            f"{nbytes} B, device pointer {mem.device_ptr:#x}",
            data={"nbytes": nbytes},
        )

    def round_trip(self) -> Check:
        if self.pinned is None:
            return Check("pack round trip", "skip", "no pinned memory")
        ring = StagingRing.create(self.pinned.host, _RING_SLOTS)
        seq = _RING_SLOTS + 5  # wraps: the slot is seq & mask
        fields = {
            "slot_idx": 0x1234,
            "tenant_id": 7,
            "opcode": 0xC0FFEE,
            "words": (1, 0xDEADBEEF, 3, 2**32 - 1),
            "epoch": 9,
            "slot_status": 0,
        }
        self.b.pack(RingPointers.from_staging(self.pinned, ring), seq, **fields)  # type: ignore[arg-type]
        self.b.synchronize()
        i = seq & ring.mask
        commit = int(ring.commits[i])
        ts = int(ring.records[i]["timestamp_ns"])
        ref_buf = np.zeros(StagingRing.layout_size(_RING_SLOTS), np.uint8)
        ref = StagingRing.create(ref_buf, _RING_SLOTS)
        pack_reference(ref, seq, timestamp_ns=ts, **fields)  # type: ignore[arg-type]
        lo = ring.commits_offset
        got, want = self.pinned.host[lo : ref_buf.nbytes], ref_buf[lo:]
        if commit != seq + 1 or got.tobytes() != want.tobytes():
            bad = np.flatnonzero(got != want)
            where = f"first differing byte at ring offset {lo + int(bad[0])}" if bad.size else "commit only"
            return Check(
                "pack round trip",
                "fail",
                f"record {seq} read back differs from pack_reference (commit word {commit}, {where})",
                "the pack kernel wrote the wrong bytes, or the host does not see device writes to mapped "
                "memory: "
                "report `vrrl doctor --json` with the GPU and driver",
                {"commit": commit},
            )
        return Check(
            "pack round trip",
            "ok",
            f"record {seq} read back byte for byte as pack_reference writes it",
            data={"seq": seq},
        )

    def calibration(self) -> Check:
        offsets = [int(self.b.calibrate()) for _ in range(self.calibrations)]
        spread = max(offsets) - min(offsets)
        data = {"offsets_ns": offsets, "spread_ns": spread}
        if self.b.is_simulated:
            return Check(
                "clock calibration",
                "ok",
                f"{len(offsets)} calibrations, spread {spread} ns (the twin's clock is the host clock)",
                data=data,
            )
        if spread > CALIBRATION_WARN_NS:
            return Check(
                "clock calibration",
                "warn",
                f"{len(offsets)} calibrations, spread {spread:,} ns",
                "a busy host: record timestamps are good to about half this; rerun on a quiet host",
                data,
            )
        return Check(
            "clock calibration", "ok", f"{len(offsets)} calibrations, spread {spread:,} ns", data=data
        )

    def shm(self) -> Check:
        seg = ShmSegment.create(None, StagingRing.layout_size(_RING_SLOTS))
        try:
            ring = StagingRing.create(seg.array, _RING_SLOTS)
            reg = self.b.register_host(seg.array)
            try:
                self.b.pack(
                    RingPointers.from_staging(reg, ring),
                    3,
                    slot_idx=3,
                    tenant_id=0,
                    opcode=1,
                    words=(3, 0, 0, 0),
                    epoch=0,
                )
                self.b.synchronize()
            finally:
                reg.close()
            with ShmSegment.open(seg.path) as other:  # a second mapping of the file: what a recoverer sees
                seen = StagingRing.attach(other.array)
                commit, slot = int(seen.commits[3]), int(seen.records[3]["slot_idx"])
        finally:
            seg.close()
            seg.unlink()
        if (commit, slot) != (4, 3):
            return Check(
                "shm + hostRegister",
                "fail",
                f"{seg.path}: commit {commit}, slot {slot}, expected 4, 3",
                "record with staging='pinned'; report `vrrl doctor --json`",
            )
        return Check("shm + hostRegister", "ok", f"{seg.path}: registered, written by the device, read back")

    def stream_query(self) -> Check:
        s = self.b.new_stream()
        spin = self.b.load("vrrl_demo.cu", "vrrl_demo_spin")
        self.b.launch(spin, 1, 1, (200_000_000,), stream=s)
        busy = self.b.stream_query(s)
        self.b.synchronize(s)
        done = self.b.stream_query(s)
        if (busy, done) != (600, 0):
            return Check(
                "stream query",
                "fail",
                f"during a 200 ms kernel {busy}, after it {done}; expected 600, 0",
                "the recorder's hang and crash-window logic needs streamQuery: report it",
            )
        return Check("stream query", "ok", "600 (not ready) while a kernel runs, 0 after it")

    def steps(self) -> list[tuple[str, Callable[[], Check]]]:
        return [
            ("compile", self.compile),
            ("mapped pinned memory", self.pinned_memory),
            ("pack round trip", self.round_trip),
            ("clock calibration", self.calibration),
            ("shm + hostRegister", self.shm),
            ("stream query", self.stream_query),
        ]


def _start_backend(device: str) -> tuple[Backend | None, Check]:
    from vrrl_gpu.backends import get_backend

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            b = get_backend(device)
        except Exception as e:  # ours say what to fix; anything else (a CuPy error) is reported as it is
            fix = getattr(e, "fix", "") if isinstance(e, VrrlError) else ""
            return None, Check(
                "backend",
                "fail",
                f"device={device!r}: {_one_line(e)}",
                fix or f"{_INSTALL}; or run on the CPU twin: --device twin",
            )
    if b.is_simulated:
        info = b.device_info()
        why = " (device='auto' found no NVIDIA device on this host)" if caught else ""
        status: Status = "warn" if caught else "ok"
        return b, Check(
            "backend",
            status,
            f"twin: THE CPU TWIN, NOT A GPU: kernels/ compiled with "
            f"{info.get('compiler', 'the host compiler')}{why}",
            "on a GPU host: check the driver (nvidia-smi) and the device nodes" if caught else "",
            {"device_info": info},
        )
    info = b.device_info()
    return b, Check(
        "backend",
        "ok",
        f"cupy on device {info['device_id']}: {info['name']} "
        f"(sm_{info['compute_capability'].replace('.', '')})",
        data={"device_info": info},
    )


def run_doctor(device: str = "auto", *, calibrations: int = 5) -> DoctorReport:
    """Every check, for ``device`` (``auto``, ``cupy`` or ``twin``). Never raises for a failing check."""
    host = probe_host()
    required = device == "cupy" or (device == "auto" and host.present)
    cupy, why = _try_cupy() if device != "twin" or _cupy_installed() else (None, "not asked (twin)")
    env: list[tuple[str, Callable[[], Check]]] = [
        ("python", check_python),
        ("cupy packages", lambda: check_cupy_distributions(required)),
        ("cupy", lambda: check_cupy(cupy, why, required)),
        ("driver/runtime", lambda: check_driver_runtime(cupy, required)),
        ("nvrtc", lambda: check_nvrtc(cupy, required)),
        ("cuda headers", lambda: check_headers(cupy, required)),
        ("nvidia host", lambda: check_host(host)),
        ("cuda devices", lambda: check_cuda_devices(cupy, required)),
    ]
    checks = []
    for name, check in env:
        try:
            checks.append(check())
        except Exception as e:  # a broken install can fail anywhere: a report line, and the doctor goes on
            checks.append(
                Check(name, "fail", _one_line(e), "unexpected: report it with `vrrl doctor --json`")
            )
    b, started = _start_backend(device)
    checks.append(started)
    if b is None:
        checks += [Check(name, "skip", "no backend") for name in _LIVE_NAMES]
        return DoctorReport(device, None, False, checks)
    try:
        live = _Live(b, calibrations)
        for name, step in live.steps():
            try:
                checks.append(step())
            except Exception as e:  # a failing check is a report line with its fix; the next check runs
                checks.append(Check(name, "fail", _one_line(e), _fix_for(e, b)))
    finally:
        b.close()
    return DoctorReport(device, b.name, b.is_simulated, checks)


_LIVE_NAMES = (
    "compile",
    "mapped pinned memory",
    "pack round trip",
    "clock calibration",
    "shm + hostRegister",
    "stream query",
)


def _cupy_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("cupy") is not None
