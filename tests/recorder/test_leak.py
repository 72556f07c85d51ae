"""After a sticky error the recorder leaks its staging memory for good: the object whose finalizer would
free it (CuPy's PinnedMemory, here a stand-in that reports its release) is never finalized, not at garbage
collection and not at interpreter exit. A healthy close frees the same memory (the check is not vacuous).
The CuPy backend hands PinnedMemory to the same HostAllocation(owner=...) path; verified on the twin only."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np

from tests.helpers.gpu import requires_gpu
from tests.helpers.recorder import failures, log_records
from vrrl_gpu.backends import HostAllocation
from vrrl_gpu.backends._base import leak, leaked_count

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import gc, os, sys
    import numpy as np
    import vrrl_gpu.recorder._recorder as recorder_mod
    from tests.helpers.recorder import Axpy
    from vrrl_gpu.backends import HostAllocation, TwinBackend, TwinCudaError

    class Pages(bytearray):
        # Stands in for cupy.cuda.PinnedMemory, whose finalizer calls cudaFreeHost.
        def __del__(self):
            os.write(1, b"RELEASED\\n")

    class Tracked(TwinBackend):
        def alloc_pinned(self, nbytes):
            self._check_alloc(nbytes)
            pages = Pages(nbytes + 4096)
            raw = np.frombuffer(pages, np.uint8)  # the view keeps `pages` alive, as CuPy's does `mem`
            off = (-raw.ctypes.data) % 4096
            host = raw[off : off + nbytes]
            return HostAllocation(host, host.ctypes.data, owner=pages)

    recorder_mod.get_backend = lambda name: Tracked()
    mode, path = sys.argv[1], sys.argv[2]
    rec = recorder_mod.Recorder(path, capacity=1024, staging_slots=64)
    w = Axpy.on(rec)
    w.launch(0, fault=3 if mode == "poison" else 0)
    try:
        rec.synchronize()
    except TwinCudaError as e:
        print("FAULT", e.cuda_error_code, flush=True)
    rec.close()
    del w, rec
    gc.collect()
    print("CLOSED", flush=True)
    """
)


def run_child(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "default"}
    return subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(tmp_path / f"{mode}.vrrl")],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip


def test_after_a_sticky_error_staging_is_never_freed_not_even_at_exit(tmp_path: Path) -> None:
    p = run_child(tmp_path, "poison")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["FAULT", "710", "CLOSED"]  # no RELEASED, before or after exit
    assert "Exception ignored" not in p.stderr


def test_a_healthy_close_frees_the_same_staging(tmp_path: Path) -> None:
    p = run_child(tmp_path, "ok")
    assert p.returncode == 0, p.stderr
    # The stream's ring and the device-sequenced ring, both freed before the process ends.
    assert p.stdout.split() == ["RELEASED", "RELEASED", "CLOSED"]


class Owner:
    pass


def test_leak_keeps_the_owner_alive_and_close_does_not() -> None:
    before = leaked_count()
    owner, other = Owner(), Owner()
    ref, other_ref = weakref.ref(owner), weakref.ref(other)
    a = HostAllocation(np.zeros(64, np.uint8), 0, owner=owner)
    b = HostAllocation(np.zeros(64, np.uint8), 0, owner=other)
    a.leak()
    a.leak()  # idempotent
    b.close()
    b.leak()  # closed already: nothing to leak
    del a, b, owner, other
    gc.collect()
    assert ref() is not None
    assert other_ref() is None
    assert leaked_count() == before + 1
    leak(ref())  # the same object twice is kept once
    assert leaked_count() == before + 1


def test_the_leaking_close_still_writes_the_evidence(tmp_path: Path) -> None:
    assert run_child(tmp_path, "poison").returncode == 0
    assert [f[3] for f in failures(log_records(tmp_path / "poison.vrrl"))] == [710]


CUPY_CHILD = textwrap.dedent(
    """
    import gc, sys
    from tests.helpers.recorder import Axpy
    from vrrl_gpu import Recorder
    rec = Recorder(sys.argv[1], device="cupy", capacity=1024, staging_slots=64)
    w = Axpy.on(rec)
    w.launch(0, fault=1)  # a real illegal address: the context is dead from here on
    try:
        rec.synchronize()
    except Exception as e:
        print("FAULT", getattr(e, "status", None), flush=True)
    rec.close()
    del w, rec
    gc.collect()
    print("CLOSED", flush=True)
    """
)


@requires_gpu
def test_on_a_gpu_a_dead_context_is_not_touched_at_gc_or_exit(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, "-c", CUPY_CHILD, str(tmp_path / "gpu.vrrl")],
        capture_output=True, text=True, env=env, timeout=180, cwd=ROOT, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "FAULT 700" in p.stdout
    assert "CLOSED" in p.stdout
    assert "Exception ignored" not in p.stderr  # no cudaFreeHost / cuModuleUnload from a finalizer
    assert [f[3] for f in failures(log_records(tmp_path / "gpu.vrrl"))] == [700]
