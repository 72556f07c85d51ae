"""The Recorder on the CPU twin: attribution of every fault kind on one and three streams in both
breadcrumb modes, where a fault surfaces, launch-time failures, sticky poisoning, VRRL_DISABLE, the sidecar,
the slot and decorator paths, wrap, publish with a persistent kernel, options, rollback of a failed setup,
and the watchdog.

Everything here runs on the twin (verified on the twin only); tests/test_recorder_gpu.py has the GPU versions.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import inspect
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vrrl_gpu.recorder._recorder as recorder_mod
from tests.helpers.recorder import (
    KERNEL_FAULTS,
    Axpy,
    Hold,
    N,
    failures,
    log_records,
    sidecar_file,
    with_status,
)
from vrrl_gpu import FailureClass, MetaOpcode, Recorder, RecorderOptions, RingLog, SlotStatus, classify
from vrrl_gpu.backends import TwinCudaError
from vrrl_gpu.errors import (
    KernelArgumentError,
    RecorderClosedError,
    RecorderPoisonedError,
    RecordValueError,
    VrrlWarning,
)
from vrrl_gpu.format import read_sidecar

PB = int(FailureClass.PROGRAM_BUG)
TQ = int(FailureClass.TRANSIENT_QUEUE)
FAULTED = int(SlotStatus.FAULTED)
AT_LAUNCH = int(SlotStatus.FAILED_AT_LAUNCH)
HUNG = int(SlotStatus.HUNG)
MODES = ("begin", "begin+end")


@pytest.fixture
def make_rec(tmp_path: Path) -> Iterator[Callable[..., Recorder]]:
    """Recorders on the twin, closed at the end, their twins stopped (a poisoned one leaves its running)."""
    made: list[Recorder] = []

    def make(name: str = "run.vrrl", **kw: Any) -> Recorder:
        kw.setdefault("device", "twin")
        kw.setdefault("capacity", 4096)
        kw.setdefault("staging_slots", 256)
        rec = Recorder(tmp_path / name, **kw)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        with contextlib.suppress(Exception):
            rec.close()
        rec.backend.close()


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def wait_drained(rec: Recorder, n: int) -> None:
    wait_for(lambda: rec.statistics().drained >= n, f"{n} records drained")


def spy_raises(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[BaseException]:
    """Patch obj.name to remember every exception it raises (to check they come out unchanged)."""
    raised: list[BaseException] = []
    orig = getattr(obj, name)

    def spy(*a: Any, **kw: Any) -> Any:
        try:
            return orig(*a, **kw)
        except BaseException as e:
            raised.append(e)
            raise

    monkeypatch.setattr(obj, name, spy)
    return raised


def spy_bound_pack(monkeypatch: pytest.MonkeyPatch, backend: Any) -> tuple[list[int], list[BaseException]]:
    """Patch backend.bind_pack so the packs it binds from now on count their calls and remember what they
    raise (the recorder binds a stream's pack when it first sees the stream)."""
    calls: list[int] = []
    raised: list[BaseException] = []
    orig = backend.bind_pack

    def bind(*a: Any, **kw: Any) -> Any:
        bound = orig(*a, **kw)

        def spy(*pa: Any) -> None:
            calls.append(pa[0])
            try:
                bound(*pa)
            except BaseException as e:
                raised.append(e)
                raise

        return spy

    monkeypatch.setattr(backend, "bind_pack", bind)
    return calls, raised


def poll_check_until_raises(rec: Recorder) -> BaseException:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            rec.check()
        except TwinCudaError as e:
            return e
        time.sleep(0.002)
    raise AssertionError("check() never saw the fault")


# ---- attribution ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n_streams", [1, 3])
@pytest.mark.parametrize("kind", [*KERNEL_FAULTS, "oom"])
def test_attribution(make_rec: Callable[..., Recorder], kind: str, n_streams: int, mode: str) -> None:
    """The failure record names the launch that misbehaved; with three streams, the stream held busy by a
    waiting kernel is blamed for a sticky fault too (its crash window) and the idle one is not."""
    rec = make_rec(breadcrumbs=mode)
    per = 2 if mode == "begin+end" else 1
    w = Axpy.on(rec)
    hold = Hold(rec)
    alloc_op = rec.opcode("alloc")
    streams: list[Any] = [None] + [rec.backend.new_stream() for _ in range(n_streams - 1)]
    slot = 0
    for s_no, s in enumerate(streams):  # round 1: every stream works, then all are idle
        for _ in range(3):
            w.launch(slot, stream=s, tag=s_no)
            slot += 1
    rec.synchronize()
    busy_slot = None
    if n_streams == 3:  # stream 1 is held busy; stream 2 stays idle
        busy_slot = slot
        hold.launch(slot, stream=streams[1])
        slot += 1
        wait_drained(rec, per * 9 + 1)  # the waiting kernel's begin arrived: it is running
    for _ in range(3):
        w.launch(slot)
        slot += 1
    culprit = slot
    if kind == "oom":
        with pytest.raises(TwinCudaError) as ei, rec.slot(alloc_op, words=(culprit, 0, 0, 0)):
            rec.backend.alloc_device(1 << 50)
        assert ei.value.cuda_error_code == 2
        w.launch(culprit + 1)  # not sticky: the recorder keeps working
        hold.release()
        rec.synchronize()
        rec.close()
        recs = log_records(rec.path)
        assert failures(recs) == [(culprit, AT_LAUNCH, TQ, 2)]
        (bad,) = with_status(recs, SlotStatus.FAILED_AT_LAUNCH)
        assert (int(bad["opcode"]), list(bad["args"])) == (alloc_op, [culprit, 0, 0, 0])
        assert not rec.poisoned
        return
    fault, code = KERNEL_FAULTS[kind]
    w.launch(culprit, fault=fault)
    with pytest.raises(TwinCudaError) as ei:
        rec.synchronize()
    assert ei.value.cuda_error_code == code
    assert rec.poisoned
    hold.release()
    rec.close()
    recs = log_records(rec.path)
    expected = {(culprit, FAULTED, PB, code)}
    if busy_slot is not None:
        expected.add((busy_slot, FAULTED, PB, code))
    got = failures(recs)
    assert sorted(got) == sorted(expected), got
    faulted = {int(r["slot_idx"]): r for r in with_status(recs, SlotStatus.FAULTED)}
    assert int(faulted[culprit]["opcode"]) == w.opcode
    assert list(faulted[culprit]["args"]) == [culprit, fault, 0, 0]
    completed = with_status(recs, SlotStatus.COMPLETED)
    assert culprit not in set(completed["slot_idx"].tolist())
    if mode == "begin+end":  # everything before the fault on the faulting stream completed
        assert set(range(3)) <= set(completed["slot_idx"].tolist())


def test_stream_that_finished_is_not_blamed_with_begin_end(make_rec: Callable[..., Recorder]) -> None:
    """With begin+end, a stream whose last launch ended is idle even if nobody checked it since."""
    rec = make_rec(breadcrumbs="begin+end")
    w = Axpy.on(rec)
    other = rec.backend.new_stream()
    w.launch(0)
    rec.synchronize()
    w.launch(1, stream=other)
    w.launch(2, stream=other)
    wait_drained(rec, 2 + 4)  # both launches on `other` began and ended
    w.launch(3, fault=1)
    with pytest.raises(TwinCudaError):
        rec.synchronize()
    rec.close()
    assert failures(log_records(rec.path)) == [(3, FAULTED, PB, 700)]


@pytest.mark.parametrize("where", ["check", "synchronize", "close", "launch"])
def test_fault_surfaces_at(
    make_rec: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """An asynchronous fault is attributed wherever it surfaces: a poll, a wait, close(), or a later
    launch (the twin, like CUDA, fails every launch after a sticky error). The backend's exception comes
    out as it is."""
    rec = make_rec()
    w = Axpy.on(rec)
    _packs, pack_raised = spy_bound_pack(monkeypatch, rec.backend)
    sync_raised = spy_raises(monkeypatch, rec.backend, "synchronize")
    for i in range(4):
        w.launch(i)
    w.launch(4, fault=1)
    err: BaseException
    if where == "check":
        err = poll_check_until_raises(rec)
    elif where == "synchronize":
        with pytest.raises(TwinCudaError) as ei:
            rec.synchronize()
        err = ei.value
        assert err is sync_raised[-1]
    elif where == "close":
        with pytest.raises(TwinCudaError) as ei:
            rec.close()
        err = ei.value
        assert err is sync_raised[-1]
    else:
        wait_for(lambda: rec.backend.sticky_error is not None, "the fault")  # type: ignore[attr-defined]
        with pytest.raises(TwinCudaError) as ei:
            w.launch(5)
        err = ei.value
        assert err is pack_raised[-1]  # the begin breadcrumb is the launch's first CUDA call
    assert isinstance(err, TwinCudaError)
    assert err.cuda_error_code == 700
    assert rec.poisoned
    rec.close()
    recs = log_records(rec.path)
    assert failures(recs) == [(4, FAULTED, PB, 700)]
    assert sorted(with_status(recs, SlotStatus.BEGIN)["slot_idx"].tolist()) == [0, 1, 2, 3, 4]


# ---- launch-time failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_launch_time_failure_is_not_sticky(
    make_rec: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    rec = make_rec(breadcrumbs=mode)
    w = Axpy.on(rec)
    raised = spy_raises(monkeypatch, rec.backend, "launch")
    w.launch(0)
    with pytest.raises(TwinCudaError) as ei:
        w.launch(1, block=2048)  # more than 1024 threads: refused at the call
    assert ei.value is raised[-1]  # re-raised unchanged
    assert ei.value.cuda_error_code == 1
    assert not rec.poisoned
    w.launch(2)
    rec.synchronize()
    rec.close()
    recs = log_records(rec.path)
    assert failures(recs) == [(1, AT_LAUNCH, PB, 1)]
    (bad,) = with_status(recs, SlotStatus.FAILED_AT_LAUNCH)
    assert (int(bad["opcode"]), list(bad["args"])) == (w.opcode, [1, 0, 0, 0])
    if mode == "begin+end":
        assert sorted(with_status(recs, SlotStatus.COMPLETED)["slot_idx"].tolist()) == [0, 2]


def test_sticky_error_at_the_call_blames_the_crash_window(
    make_rec: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sticky error raised by the launch call itself, while earlier work is in flight, names the earlier
    launch: the call only noticed the dead context."""
    rec = make_rec()
    w = Axpy.on(rec)
    hold = Hold(rec)
    hold.launch(0)
    wait_drained(rec, 1)
    w.launch(1)
    orig = rec.backend.launch
    boom = TwinCudaError(700, "injected at the call")

    def failing(kernel: Any, *a: Any, **kw: Any) -> None:
        if kernel is w.kernel:
            raise boom
        orig(kernel, *a, **kw)

    monkeypatch.setattr(rec.backend, "launch", failing)
    with pytest.raises(TwinCudaError) as ei:
        w.launch(2)
    assert ei.value is boom
    assert rec.poisoned
    hold.release()
    rec.close()
    # Slot 0 is the waiting kernel: the device had reached it (slot 1's begin is queued behind it).
    assert failures(log_records(rec.path)) == [(0, FAULTED, PB, 700)]


# ---- sticky poisoning ---------------------------------------------------------------------------------


def test_poisoned_recorder_refuses_every_call_and_close_still_writes(
    make_rec: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = make_rec(breadcrumbs="begin+end")
    packs, _ = spy_bound_pack(monkeypatch, rec.backend)
    w = Axpy.on(rec)
    wrapped = rec.wrap(w.kernel, opcode=w.opcode)
    decorated = rec.recorded(w.opcode)(lambda: None)
    for i in range(3):
        w.launch(i)
    w.launch(3, fault=2)
    with pytest.raises(TwinCudaError) as ei:
        rec.synchronize()
    original = ei.value
    assert rec.poisoned
    assert "poisoned" in repr(rec)

    packs_before = len(packs)
    calls: list[str] = []
    for name in ("launch", "synchronize", "stream_query", "alloc_pinned", "alloc_counter", "close", "pack"):
        orig = getattr(rec.backend, name)

        def counting(*a: Any, _n: str = name, _o: Any = orig, **kw: Any) -> Any:
            calls.append(_n)
            return _o(*a, **kw)

        monkeypatch.setattr(rec.backend, name, counting)
    attempts: list[Callable[[], object]] = [
        lambda: w.launch(4),
        lambda: wrapped(1, N, (w.y, w.x, 1.0, N, 0)),
        decorated,
        lambda: rec.slot(w.opcode).__enter__(),
        rec.check,
        rec.synchronize,
        rec.device_ring,
    ]
    for attempt in attempts:
        with pytest.raises(RecorderPoisonedError) as pe:
            attempt()
        assert pe.value.__cause__ is original
    rec.publish(77, w.opcode, (1, 2, 3, 4))  # host-written: still allowed
    rec.close()  # drains and writes, raises nothing more
    rec.close()  # idempotent
    assert calls == []  # no CUDA call after the sticky error
    assert len(packs) == packs_before
    recs = log_records(rec.path)
    assert failures(recs) == [(3, FAULTED, PB, 719)]
    assert sorted(with_status(recs, SlotStatus.COMPLETED)["slot_idx"].tolist()) == [0, 1, 2]
    assert with_status(recs, SlotStatus.PUBLISHED)["slot_idx"].tolist() == [77]
    metas = with_status(recs, SlotStatus.META)["opcode"].tolist()
    assert int(MetaOpcode.SESSION_END) in metas
    with pytest.raises(RecorderClosedError):
        w.launch(5)


# ---- VRRL_DISABLE ---------------------------------------------------------------------------------------


class FakeKernel:
    """Records its calls, like a RawKernel would run them."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *a: Any, **kw: Any) -> None:
        self.calls.append((a, kw))


def test_disabled_recorder_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRRL_DISABLE", "1")
    threads = threading.active_count()
    path = tmp_path / "off.vrrl"
    with Recorder(path, device="twin", capacity=64, watchdog=1.0) as rec:
        k = FakeKernel()
        rec.launch(k, 2, 32, [1, 2], opcode=5, words=(1, 2, 3, 4))
        rec.launch(k, 1, 1, (3,), opcode=5, stream="s", shared_mem=16)
        assert k.calls == [
            ((2, 32, (1, 2)), {"shared_mem": 0}),
            ((1, 1, (3,)), {"shared_mem": 16, "stream": "s"}),
        ]
        assert rec.wrap(k, opcode=5, words=lambda a: (0, 0, 0, 0)) is k
        with rec.slot(5, (1, 2, 3, 4)) as slot:
            assert slot == 0

        def f(x: int) -> int:
            return x + 1

        assert rec.recorded(5)(f) is f
        rec.publish(0, 5, (0, 0, 0, 0), 0)
        rec.epoch = 3
        assert rec.next_epoch() == 4
        rec.check()
        rec.synchronize()
        assert threading.active_count() == threads  # no drain thread, no watchdog
    rec.close()
    assert list(tmp_path.iterdir()) == []  # nothing on disk, not even the sidecar
    assert "disabled" in repr(rec)


def test_disabled_recorder_still_runs_twin_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels loaded through rec.backend run when recording is off (the examples rely on this)."""
    monkeypatch.setenv("VRRL_DISABLE", "1")
    with Recorder(tmp_path / "off.vrrl", device="twin") as rec:
        b = rec.backend
        k = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
        x, y = b.alloc_device(4 * N), b.alloc_device(4 * N)
        x.from_host(np.arange(N, dtype=np.float32))
        rec.launch(k, 1, N, (y, x, 2.0, N, 0), opcode=1)
        rec.wrap(k, opcode=1)(1, N, (y, x, 1.0, N, 0))
        rec.synchronize()
        np.testing.assert_array_equal(y.to_host().view(np.float32), 3.0 * np.arange(N, dtype=np.float32))
        assert rec.statistics().drained == 0
        assert not rec.poisoned
    assert not any(p.suffix in (".vrrl", ".json") for p in tmp_path.iterdir())


# ---- sidecar, opcodes, epochs, statistics ----------------------------------------------------------------


def test_sidecar_contents(make_rec: Callable[..., Recorder]) -> None:
    rec = make_rec(tenant_id=7, breadcrumbs="begin+end")
    gemm = rec.opcode("gemm")
    assert rec.opcode("gemm") == gemm  # stable
    softmax = rec.opcode("softmax")
    sc = read_sidecar(rec.path)
    assert sc is not None
    assert sc.host == socket.gethostname()
    assert sc.pid == os.getpid()
    assert sc.user == getpass.getuser()
    assert sc.backend == "twin"
    assert sc.breadcrumbs == "begin+end"
    assert sc.tenant_id == 7
    assert sc.opcode_names == {gemm: "gemm", softmax: "softmax"}
    assert sc.device["simulated"] is True
    assert "twin" in sc.device["name"]
    assert {"uuid", "driver_version", "runtime_version", "compute_capability"} <= set(sc.device)
    assert sc.start_time_ns > 0
    assert oct(sidecar_file(rec.path).stat().st_mode & 0o777) == oct(0o600)
    rec.close()
    # A recorder that reopens the log keeps the names it found.
    rec2 = make_rec()
    rec2.opcode("third")
    sc2 = read_sidecar(rec2.path)
    assert sc2 is not None
    assert set(sc2.opcode_names.values()) == {"gemm", "softmax", "third"}


def test_opcode_range_is_checked(make_rec: Callable[..., Recorder]) -> None:
    rec = make_rec()
    w = Axpy.on(rec)
    with pytest.raises(RecordValueError, match="reserved"):
        rec.launch(w.kernel, 1, N, (w.y, w.x, 1.0, N, 0), opcode=int(MetaOpcode.GAP))
    with pytest.raises(RecordValueError, match="words"):
        rec.launch(w.kernel, 1, N, (w.y, w.x, 1.0, N, 0), opcode=1, words=(1, 2, 3))
    rec.close()
    assert failures(log_records(rec.path)) == []


def test_epoch_and_next_epoch(make_rec: Callable[..., Recorder]) -> None:
    rec = make_rec()
    w = Axpy.on(rec)
    w.launch(0)
    rec.epoch = 41
    w.launch(1)
    assert rec.next_epoch() == 42
    with rec.slot(w.opcode):
        pass
    rec.epoch = 2**32 - 1
    assert rec.next_epoch() == 0  # wraps like the u32 it is
    for bad in (-1, 2**32):
        with pytest.raises(RecordValueError):
            rec.epoch = bad
    rec.close()
    begins = with_status(log_records(rec.path), SlotStatus.BEGIN)
    assert dict(zip(begins["slot_idx"].tolist(), begins["epoch"].tolist(), strict=True)) == {
        0: 0,
        1: 41,
        2: 42,
    }


def test_statistics(make_rec: Callable[..., Recorder]) -> None:
    rec = make_rec(breadcrumbs="begin+end")
    w = Axpy.on(rec)
    for i in range(10):
        w.launch(i)
    rec.synchronize()
    wait_drained(rec, 20)
    s = rec.statistics()
    assert (s.drained, s.dropped, s.running, s.failed) == (20, 0, True, False)
    assert s.last_sequence == (None, 19)  # the device-sequenced ring (made at start, for captures) has none
    rec.close()
    s = rec.statistics()
    assert not s.running
    assert s.drained == 20
    assert s.host_written >= 3  # SESSION_START, CALIBRATION, SESSION_END
    assert len(with_status(log_records(rec.path), SlotStatus.BEGIN)) == 10


# ---- slot, recorded, wrap ----------------------------------------------------------------------


class LibraryError(Exception):
    """What a library call made inside a slot might raise."""


@pytest.mark.parametrize("mode", MODES)
def test_slot_and_decorator_when_the_body_raises(make_rec: Callable[..., Recorder], mode: str) -> None:
    rec = make_rec(breadcrumbs=mode)
    op = rec.opcode("library_call")
    boom = LibraryError("cuBLAS said no")
    slots: list[int] = []

    def body() -> None:
        with rec.slot(op, words=(1, 2, 3, 4)) as idx:
            slots.append(idx)
            raise boom

    with pytest.raises(LibraryError) as ei:
        body()
    assert ei.value is boom
    assert slots == [0]

    @rec.recorded(op, words=(5, 6, 7, 8))
    def step(x: int) -> int:
        """Doubles x, or fails."""
        if x < 0:
            raise boom
        return 2 * x

    assert step.__name__ == "step"
    assert step.__doc__ == "Doubles x, or fails."
    assert step(3) == 6  # slot 1
    with pytest.raises(LibraryError) as ei2:
        step(-1)  # slot 2
    assert ei2.value is boom
    with rec.slot(op) as idx:  # the recorder keeps working: slot 3
        assert idx == 3
    rec.synchronize()
    rec.close()
    recs = log_records(rec.path)
    c = classify(boom)
    assert failures(recs) == [
        (0, AT_LAUNCH, int(c.failure_class), c.code),
        (2, AT_LAUNCH, int(c.failure_class), c.code),
    ]
    bad = with_status(recs, SlotStatus.FAILED_AT_LAUNCH)
    assert [list(a) for a in bad["args"]] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    done = sorted(with_status(recs, SlotStatus.COMPLETED)["slot_idx"].tolist())
    assert done == ([1, 3] if mode == "begin+end" else [])
    assert sorted(with_status(recs, SlotStatus.BEGIN)["slot_idx"].tolist()) == [0, 1, 2, 3]


def test_wrap_has_rawkernel_signature_and_computes_words(make_rec: Callable[..., Recorder]) -> None:
    rec = make_rec()
    w = Axpy.on(rec)
    x = np.arange(N, dtype=np.float32)
    w.x.from_host(x)
    wrapped = rec.wrap(w.kernel, opcode=w.opcode, words=lambda args: (int(args[3]), int(args[4]), 9, 0))
    params = inspect.signature(wrapped).parameters
    assert list(params)[:3] == ["grid", "block", "args"]
    assert params["shared_mem"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["stream"].kind is inspect.Parameter.KEYWORD_ONLY
    assert wrapped.__wrapped__ is w.kernel  # type: ignore[attr-defined]
    s = rec.backend.new_stream()
    wrapped((1,), (N,), (w.y, w.x, 1.0, N, 0))
    # The twin's default stream does not order other streams (no legacy implicit sync): without this the
    # next launch's y += x races this one's.
    rec.synchronize()
    wrapped(1, N, [w.y, w.x, 1.0, N, 0], shared_mem=0, stream=s)
    fixed = rec.wrap(w.kernel, opcode=w.opcode, words=(1, 1, 1, 1))
    fixed(1, N, (w.y, w.x, 1.0, N, 0), stream=s)
    rec.synchronize()
    np.testing.assert_array_equal(w.y.to_host().view(np.float32), 3 * x)
    rec.close()
    begins = with_status(log_records(rec.path), SlotStatus.BEGIN)
    assert sorted((int(r["slot_idx"]), tuple(r["args"].tolist())) for r in begins) == [
        (0, (N, 0, 9, 0)),
        (1, (N, 0, 9, 0)),
        (2, (1, 1, 1, 1)),
    ]


# ---- publish and the device-sequenced ring -----------------------------------------------------


def test_publish_and_megakernel_device_claims(make_rec: Callable[..., Recorder]) -> None:
    """Slots the host published and the persistent kernel claimed are told apart; the slot it reported as bad
    and those published after it (never reached: the kernel's only thread had exited) stand out."""
    rec = make_rec()
    b = rec.backend
    mk = b.load("vrrl_demo.cu", "vrrl_demo_megakernel")
    work = b.alloc_pinned(4 * 16)
    published = b.alloc_pinned(8)
    stop = b.alloc_pinned(8)
    next_item = b.alloc_device(8)
    data = b.alloc_device(4 * 8)
    ring = rec.device_ring()
    assert rec.device_ring() == ring  # one device-sequenced ring
    item_op, mk_op = rec.opcode("item"), rec.opcode("megakernel")
    slots = [100, 101, 102, 103, 104, 105]
    poison = 103
    rec.epoch = 9
    rec.launch(
        mk, 1, 1,
        (work.device_ptr, published.device_ptr, stop.device_ptr, next_item, data, 8, ring["records"],
         ring["commits"], ring["mask"], ring["counter"], ring["ts_offset"], ring["tenant_id"], item_op, 9,
         poison),
        opcode=mk_op,
    )  # fmt: skip
    ws = work.host.view(np.uint32)
    pub = published.host.view(np.uint64)
    for i, s in enumerate(slots):
        ws[i] = s
        rec.publish(s, item_op, (i, 0, 0, 0))
        pub[0] = i + 1
    wait_drained(rec, 1 + 4)  # the megakernel's begin, three claims and the report
    stop.host.view(np.uint32)[0] = 1
    rec.synchronize()
    counts = data.to_host().view(np.float32)
    rec.close()
    recs = log_records(rec.path)
    pubs = with_status(recs, SlotStatus.PUBLISHED)
    assert pubs["slot_idx"].tolist() == slots
    assert set(pubs["epoch"].tolist()) == {9}
    assert set(pubs["opcode"].tolist()) == {item_op}
    claimed = with_status(recs, SlotStatus.DEVICE_CLAIMED)
    assert claimed["slot_idx"].tolist() == [100, 101, 102]
    (reported,) = with_status(recs, SlotStatus.DEVICE_REPORTED)
    assert int(reported["slot_idx"]) == poison
    assert (int(reported["failure_class"]), int(reported["backend_error_code"])) == (PB, 0xBAD)
    reached = set(claimed["slot_idx"].tolist()) | {poison}
    assert [s for s in slots if s not in reached] == [104, 105]
    np.testing.assert_array_equal(counts, [1 if i in (100 % 8, 101 % 8, 102 % 8) else 0 for i in range(8)])


def test_publish_after_close_is_refused(make_rec: Callable[..., Recorder]) -> None:
    rec = make_rec()
    rec.close()
    with pytest.raises(RecorderClosedError):
        rec.publish(0, 1)


# ---- staging, options, setup rollback ----------------------------------------------------------


def test_shm_staging_segment_is_removed_at_close(make_rec: Callable[..., Recorder]) -> None:
    mine = f"/dev/shm/vrrl-{os.getuid()}-{os.getpid()}-*.stg"
    before = set(glob.glob(mine))
    rec = make_rec(staging="shm", breadcrumbs="begin+end")
    w = Axpy.on(rec)
    for i in range(5):
        w.launch(i)
    rec.synchronize()
    assert len(set(glob.glob(mine)) - before) == 2  # the stream's and the device-sequenced ring
    rec.close()
    assert set(glob.glob(mine)) - before == set()
    assert len(with_status(log_records(rec.path), SlotStatus.COMPLETED)) == 5


def test_shm_segment_removed_after_a_sticky_error(make_rec: Callable[..., Recorder]) -> None:
    mine = f"/dev/shm/vrrl-{os.getuid()}-{os.getpid()}-*.stg"
    before = set(glob.glob(mine))
    rec = make_rec(staging="shm")
    w = Axpy.on(rec)
    w.launch(0, fault=3)
    with pytest.raises(TwinCudaError):
        rec.synchronize()
    rec.close()
    assert set(glob.glob(mine)) - before == set()
    assert failures(log_records(rec.path)) == [(0, FAULTED, PB, 710)]


def test_options_as_dataclass_dict_or_keywords(tmp_path: Path) -> None:
    opts = RecorderOptions(
        device="twin", capacity=128, breadcrumbs="begin+end", tenant_id=3, staging_slots=64
    )
    as_dict: dict[str, Any] = {
        "device": "twin",
        "capacity": 128,
        "breadcrumbs": "begin+end",
        "tenant_id": 3,
        "staging_slots": 64,
    }
    a = Recorder(tmp_path / "a.vrrl", options=opts)
    b = Recorder(tmp_path / "b.vrrl", options=as_dict)
    c = Recorder(tmp_path / "c.vrrl", options=opts, tenant_id=4)  # keywords override
    d = Recorder(tmp_path / "d.vrrl", **as_dict)
    assert a.options == b.options == d.options == opts
    assert c.options.tenant_id == 4
    assert c.options.capacity == 128
    for r in (a, b, c, d):
        r.close()
    with RingLog.open(a.path, readonly=True) as log:
        assert log.capacity == 128


@pytest.mark.parametrize(
    "kw",
    [
        {"colour": "red"},
        {"options": {"capacity": 16, "bogus": 1}},
        {"device": "tpu"},
        {"staging": "disk"},
        {"breadcrumbs": "end"},
        {"capacity": 0},
        {"staging_slots": 100},
        {"tenant_id": -1},
        {"watchdog": 0},
    ],
)
def test_bad_options_are_rejected(tmp_path: Path, kw: dict[str, Any]) -> None:
    with pytest.raises(RecordValueError):
        Recorder(tmp_path / "x.vrrl", **kw)
    assert not (tmp_path / "x.vrrl").exists()


def test_setup_failing_half_way_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "half.vrrl"
    threads = set(threading.enumerate())

    def broken(*a: Any, **kw: Any) -> Any:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        # After the log, drain thread and meta-records. (Writing the sidecar itself is best effort.)
        m.setattr(recorder_mod.Recorder, "_make_sidecar", broken)
        with pytest.raises(OSError, match="No space"):
            Recorder(path, device="twin", capacity=64, watchdog=5.0)
    wait_for(
        lambda: not [t for t in threading.enumerate() if t not in threads and t.is_alive()],
        "threads to end",
        10,
    )
    # The log's lock was released: it can be opened for writing again, and a new recorder works.
    with RingLog.open(path) as log:
        assert log.capacity == 64
    with Recorder(path, device="twin") as rec:
        w = Axpy.on(rec)
        w.launch(0)
        backend = rec.backend
    backend.close()
    assert len(with_status(log_records(path), SlotStatus.BEGIN)) == 1


def test_setup_failing_in_the_watchdog_start_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wd.vrrl"
    threads = set(threading.enumerate())

    def broken(self: Recorder, seconds: float) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(Recorder, "_start_watchdog", broken)
    with pytest.raises(RuntimeError, match="new thread"):
        Recorder(path, device="twin", capacity=64, watchdog=1.0)
    wait_for(
        lambda: not [t for t in threading.enumerate() if t not in threads and t.is_alive()],
        "threads to end",
        10,
    )
    RingLog.open(path).close()


def test_context_manager_keeps_the_body_exception(make_rec: Callable[..., Recorder]) -> None:
    """The with-body's exception wins over a second error from close(), which becomes a warning."""
    rec = make_rec()
    w = Axpy.on(rec)
    err = KeyError("body")

    def body() -> None:
        with rec:
            w.launch(0, fault=1)
            raise err

    with pytest.raises(KeyError) as ei, pytest.warns(VrrlWarning, match="closing the recorder also failed"):
        body()
    assert ei.value is err
    # close() inside __exit__ found the fault and recorded it; nothing else escaped
    assert failures(log_records(rec.path)) == [(0, FAULTED, PB, 700)]


# ---- hang watchdog -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_watchdog_reports_a_hang(make_rec: Callable[..., Recorder], mode: str) -> None:
    reports: list[Any] = []
    seen = threading.Event()

    def on_hang(r: Any) -> None:
        reports.append(r)
        seen.set()

    rec = make_rec(breadcrumbs=mode, watchdog=0.2, on_hang=on_hang)
    w = Axpy.on(rec)
    hold = Hold(rec)
    w.launch(0)
    hold.launch(1)  # hangs until released
    if mode == "begin":
        w.launch(2)  # queued behind it: with begin-only crumbs, work waiting is what shows the hang
    assert seen.wait(20), "the watchdog never reported"
    hold.release()
    rec.synchronize()
    (r,) = reports
    assert (r.slot_idx, r.opcode, r.failure_class, r.coredump_requested) == (
        1, hold.opcode, FailureClass.TRANSIENT_QUEUE, False,
    )  # fmt: skip
    assert r.silent_seconds >= 0.2
    w.launch(3)  # the workload goes on
    rec.close()
    recs = log_records(rec.path)
    assert failures(recs) == [(1, HUNG, TQ, 0)]
    assert not rec.poisoned


def test_watchdog_asks_for_a_core_dump(
    make_rec: Callable[..., Recorder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = tmp_path / "cudacoredump.pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # the driver's end
    monkeypatch.setenv("CUDA_ENABLE_USER_TRIGGERED_COREDUMP", "1")
    monkeypatch.setenv("CUDA_COREDUMP_PIPE", str(pipe))
    monkeypatch.setenv("CUDA_COREDUMP_FILE", str(tmp_path / "gpu.nvcudmp"))
    seen = threading.Event()
    reports: list[Any] = []

    def on_hang(r: Any) -> None:
        reports.append(r)
        seen.set()

    rec = make_rec(breadcrumbs="begin+end", watchdog=0.2, on_hang=on_hang)
    hold = Hold(rec)
    try:
        hold.launch(0)
        assert seen.wait(20), "the watchdog never reported"
        assert os.read(reader, 16) == b"1"
    finally:
        hold.release()
        os.close(reader)
    assert reports[0].coredump_requested
    sc = read_sidecar(rec.path)
    assert sc is not None
    assert sc.extra["coredump"] == {"pipe": str(pipe), "expected_file": str(tmp_path / "gpu.nvcudmp")}
    rec.close()
    assert failures(log_records(rec.path)) == [(0, HUNG, TQ, 0)]


def test_watchdog_on_hang_error_surfaces_at_the_next_call(make_rec: Callable[..., Recorder]) -> None:
    seen = threading.Event()

    def on_hang(r: Any) -> None:
        seen.set()
        raise LookupError("the callback failed")

    rec = make_rec(breadcrumbs="begin+end", watchdog=0.2, on_hang=on_hang)
    hold = Hold(rec)
    hold.launch(0)
    assert seen.wait(20)
    hold.release()
    wait_for(lambda: rec._watchdog_thread is not None and not rec._watchdog_thread.is_alive(), "watchdog end")
    with pytest.raises(LookupError):
        rec.check()
    with pytest.raises(LookupError):
        rec.close()
    assert failures(log_records(rec.path)) == [(0, HUNG, TQ, 0)]


@pytest.mark.parametrize("mode", MODES)
def test_watchdog_reports_while_the_host_waits_in_synchronize(
    make_rec: Callable[..., Recorder], mode: str
) -> None:
    """The usual hang: the last launch never finishes and the host blocks in synchronize(). The watchdog
    must report it then (in both modes), and must not need the lock the waiting host holds."""
    reports: list[Any] = []
    holds: list[Hold] = []

    def on_hang(r: Any) -> None:
        reports.append(r)
        holds[0].release()  # what an operator would do: unblock (or kill) the job

    rec = make_rec(breadcrumbs=mode, watchdog=0.2, on_hang=on_hang)
    hold = Hold(rec)
    holds.append(hold)
    w = Axpy.on(rec)
    w.launch(0)
    hold.launch(1)
    waiter = threading.Thread(target=rec.synchronize, daemon=True)
    waiter.start()
    waiter.join(10)
    stuck = waiter.is_alive()
    hold.release()  # unblock in any case, so a failure does not leave the thread spinning
    waiter.join(10)
    assert not stuck, "the watchdog never reported the hang while the host waited"
    assert [r.slot_idx for r in reports] == [1]
    rec.close()
    assert failures(log_records(rec.path)) == [(1, HUNG, TQ, 0)]


def test_coredump_pipe_without_a_reader_does_not_stop_the_report(
    make_rec: Callable[..., Recorder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core dump is best effort: a pipe nobody reads (ENXIO) is noted in the sidecar, the hang is still
    reported, and the recorder goes on."""
    pipe = tmp_path / "nobody.pipe"
    os.mkfifo(pipe)
    monkeypatch.setenv("CUDA_ENABLE_USER_TRIGGERED_COREDUMP", "1")
    monkeypatch.setenv("CUDA_COREDUMP_PIPE", str(pipe))
    seen = threading.Event()
    reports: list[Any] = []

    def on_hang(r: Any) -> None:
        reports.append(r)
        seen.set()

    rec = make_rec(breadcrumbs="begin+end", watchdog=0.2, on_hang=on_hang)
    hold = Hold(rec)
    hold.launch(0)
    try:
        assert seen.wait(20), "the watchdog never reported"
    finally:
        hold.release()
    assert not reports[0].coredump_requested
    sc = read_sidecar(rec.path)
    assert sc is not None
    assert sc.extra["coredump"]["pipe"] == str(pipe)
    assert sc.extra["coredump"]["error"]
    rec.synchronize()  # no stored watchdog error
    rec.close()
    assert failures(log_records(rec.path)) == [(0, HUNG, TQ, 0)]


def test_wrap_refuses_a_cooperative_launch(make_rec: Callable[..., Recorder]) -> None:
    rec = make_rec()
    w = Axpy.on(rec)
    wrapped = rec.wrap(w.kernel, opcode=w.opcode)
    with pytest.raises(KernelArgumentError, match="cooperative"):
        wrapped(1, N, (w.y, w.x, 1.0, N, 0), enable_cooperative_groups=True)
    with pytest.raises(TypeError):
        wrapped(1, N, (w.y, w.x, 1.0, N, 0), shared_memory=16)  # a misspelt keyword is not ignored
    wrapped(1, N, (w.y, w.x, 1.0, N, 0), enable_cooperative_groups=False)
    rec.close()
    assert len(with_status(log_records(rec.path), SlotStatus.BEGIN)) == 1


# ---- vrrl demo --fault-at (the main job) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "mode", "status", "fclass", "code"),
    [
        ("illegal-address", "begin", FAULTED, PB, 700),
        ("trap", "begin+end", FAULTED, PB, 719),
        ("assert", "begin", FAULTED, PB, 710),
        ("oom", "begin+end", AT_LAUNCH, TQ, 2),
    ],
)
def test_demo_fault_at_names_the_launch(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    mode: str,
    status: int,
    fclass: int,
    code: int,
) -> None:
    """`vrrl demo --fault-at K` exits 3 once the evidence is logged; `vrrl dump` shows launch K failing."""
    from vrrl_gpu._cli import main

    log = str(tmp_path / "demo.vrrl")
    argv = ["demo", log, "--device", "twin", "--launches", "40", "--fault-at", "25", "--fault-kind", kind]
    assert main([*argv, "--breadcrumbs", mode, "--elements", "256", "--check-every", "8"]) == 3
    err = capsys.readouterr().err
    assert "the injected fault was recorded" in err
    assert main(["dump", log, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    bad = [r for r in rows if r["slot_status"] in (AT_LAUNCH, FAULTED)]
    assert [(r["slot_idx"], r["slot_status"], r["failure_class"], r["backend_error_code"]) for r in bad] == [
        (25, status, fclass, code)
    ]
    names = read_sidecar(log)
    assert names is not None
    assert names.opcode_names[bad[0]["opcode"]] == ("alloc" if kind == "oom" else "axpy")


@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_a_real_wild_store_in_a_user_kernel_names_that_launch(
    make_rec: Callable[..., Recorder], mode: str
) -> None:
    """Not the demo's simulated fault: a user kernel stores through a wild pointer, the twin's worker catches
    the SIGSEGV as a GPU would report a sticky 700, and the evidence names that launch."""
    from tests.backends.contract import WILD_ADDRESS, WILD_STORE_CU

    rec = make_rec(breadcrumbs=mode)
    k = rec.backend.load(WILD_STORE_CU, "wild_store")
    out = rec.backend.alloc_device(4 * 256)
    op = rec.opcode("wild_store")
    for i in range(6):
        fault_at = 7 if i == 3 else 0xFFFFFFFE  # thread 7 of launch 3 stores through the wild pointer
        rec.launch(k, 1, 256, (out, WILD_ADDRESS, 256, fault_at), opcode=op, words=(i, 0, 0, 0))
    with pytest.raises(TwinCudaError) as ei:
        rec.synchronize()
    assert ei.value.cuda_error_code == 700
    rec.close()
    assert failures(log_records(rec.path)) == [(3, FAULTED, PB, 700)]
