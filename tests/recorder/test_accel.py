"""The launch path's two implementations (recorder/_hot.py in Python, recorder/_fast.c when it builds) run the
same suite here: the same records for the same launches, failures and checks, and the attribution matrix's
quick cases. Plus the accelerator's loader (falls back without a compiler) and its lock (RLock semantics).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.attribution import matrix, run_case
from tests.helpers.recorder import Axpy, log_records, with_status
from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu.backends import TwinCudaError
from vrrl_gpu.errors import KernelArgumentError, RecordValueError
from vrrl_gpu.recorder import _accel

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")

IMPLS = ("c", "python")


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "c":
        monkeypatch.delenv("VRRL_NO_ACCEL", raising=False)
        used, why = _accel.built()
        if not used:
            pytest.skip(f"the C accelerator is not available here: {why}")
    else:
        monkeypatch.setenv("VRRL_NO_ACCEL", "1")
    return str(request.param)


def _fields(path: Path) -> list[tuple[int, ...]]:
    """Every record without its timestamp (the rest is the same in both implementations)."""
    recs = log_records(path)
    return [
        (int(r["slot_idx"]), int(r["opcode"]), *map(int, r["args"]), int(r["epoch"]), int(r["slot_status"]),
         int(r["failure_class"]), int(r["backend_error_code"]))
        for r in recs
        if int(r["opcode"]) < 0xFFFFFF00  # meta-records carry pids and nonces
    ]  # fmt: skip


def _session(path: Path, mode: str) -> dict[str, Any]:
    """Launches through every path of the inline route and out of it; what each call did."""
    seen: dict[str, Any] = {}
    rec = Recorder(path, device="twin", breadcrumbs=mode, capture_check="declared", capacity=4096,
                   staging_slots=64)  # fmt: skip
    try:
        w = Axpy.on(rec)
        s = rec.backend.new_stream()
        seen["hot"] = type(rec._state_of(s).hot).__name__
        for i in range(5):
            w.launch(i, stream=s)
        rec.epoch = 7
        w.launch(5, stream=s, tag=9)
        lw = rec.launcher(w.kernel, opcode=w.opcode, stream=s, words=(42, 0, 1, 2))
        seen["launcher"] = type(lw).__name__
        for _ in range(3):
            lw(1, 32, (w.y, w.x, 1.0, 32, 0))
        lw(1, 32, (w.y, w.x, 1.0, 32, 0), shared_mem=0)
        with pytest.raises(RecordValueError):
            rec.launch(w.kernel, 1, 32, (w.y, w.x, 1.0, 32, 0), opcode=w.opcode, words=(1, 2, 3), stream=s)
        with pytest.raises(RecordValueError):
            rec.launch(w.kernel, 1, 32, (w.y, w.x, 1.0, 32, 0), opcode=-1, stream=s)
        with pytest.raises(TypeError):
            lw(1, 32)
        # Words as numpy integers and lists take the checked route; the records are the same.
        w.rec.launch(w.kernel, 1, 32, (w.y, w.x, 1.0, 32, 0), opcode=w.opcode,
                     words=[np.uint32(3), 4, 5, 6], stream=s)  # fmt: skip
        # A launch the backend refuses at the call (a block of 2048 threads): FAILED_AT_LAUNCH, raised as is.
        with pytest.raises(TwinCudaError) as err:
            w.launch(6, stream=s, block=2048)
        seen["code"] = err.value.cuda_error_code
        w.launch(7, stream=s)
        rec.synchronize()
        seen["next_seq"] = rec._state_of(s).next_seq
    finally:
        rec.close()
    return seen


@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_both_implementations_write_the_same_records(tmp_path: Path, mode: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    used, why = _accel.built()
    if not used:
        pytest.skip(f"the C accelerator is not available here: {why}")
    got = {}
    for name in IMPLS:
        monkeypatch.setenv("VRRL_NO_ACCEL", "1" if name == "python" else "0")
        path = tmp_path / f"{name}.vrrl"
        seen = _session(path, mode)
        got[name] = (seen, _fields(path))
    (c_seen, c_recs), (py_seen, py_recs) = got["c"], got["python"]
    assert (c_seen["hot"], c_seen["launcher"]) == ("Hot", "Bound")  # the C types were used
    assert (py_seen["hot"], py_seen["launcher"]) == ("function", "function")
    assert c_seen["code"] == py_seen["code"] == 1
    assert c_seen["next_seq"] == py_seen["next_seq"]
    assert c_recs == py_recs
    # 13 begins (the refused launch's too), an end for each launch that ran, its FAILED_AT_LAUNCH record.
    assert len(c_recs) == 13 + (12 if mode == "begin+end" else 0) + 1


def test_a_recorded_launch_and_its_launcher_record_the_same(tmp_path: Path, impl: str) -> None:
    logs = []
    for how in ("launch", "launcher"):
        path = tmp_path / f"{how}.vrrl"
        with Recorder(path, device="twin", capture_check="declared", capacity=4096, staging_slots=64) as rec:
            w = Axpy.on(rec)
            s = rec.backend.new_stream()
            args = (w.y, w.x, 2.0, 32, 0)
            if how == "launch":
                for i in range(4):
                    rec.launch(w.kernel, 1, 32, args, opcode=w.opcode, words=(i, 1, 0, 0), stream=s)
            else:
                for i in range(4):
                    rec.launcher(w.kernel, opcode=w.opcode, stream=s, words=(i, 1, 0, 0))(1, 32, args)
        logs.append(_fields(path))
    assert logs[0] == logs[1]
    assert [r[2] for r in logs[0]] == [0, 1, 2, 3]


def test_a_launcher_needs_a_stream_and_follows_a_declared_capture(tmp_path: Path, impl: str) -> None:
    with Recorder(tmp_path / "r.vrrl", device="twin", capture_check="declared", capacity=4096) as rec:
        w = Axpy.on(rec)
        with pytest.raises(KernelArgumentError):
            rec.launcher(w.kernel, opcode=w.opcode, stream=None)
        s = rec.backend.new_stream()
        lw = rec.launcher(w.kernel, opcode=w.opcode, stream=s)
        with rec.capturing(s):
            s.begin_capture()
            lw(1, 32, (w.y, w.x, 1.0, 32, 0))  # inside the declared capture: the device-sequenced path
            graph = s.end_capture()
        assert len(graph) == 2  # its breadcrumb kernel and the launch, both captured
        lw(1, 32, (w.y, w.x, 1.0, 32, 0))  # after it: the inline path again
        assert rec._state_of(s).next_seq == 1


def test_a_closed_recorder_refuses_through_the_inline_path(tmp_path: Path, impl: str) -> None:
    rec = Recorder(tmp_path / "r.vrrl", device="twin", capture_check="declared", capacity=4096)
    w = Axpy.on(rec)
    s = rec.backend.new_stream()
    lw = rec.launcher(w.kernel, opcode=w.opcode, stream=s)
    lw(1, 32, (w.y, w.x, 1.0, 32, 0))
    rec.close()
    from vrrl_gpu.errors import RecorderClosedError

    with pytest.raises(RecorderClosedError):
        lw(1, 32, (w.y, w.x, 1.0, 32, 0))
    with pytest.raises(RecorderClosedError):
        w.launch(1, stream=s)


QUICK = [c for c in matrix() if c.ratio == 10]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in QUICK])
def test_attribution_matrix_quick_cases(tmp_path: Path, impl: str, case: Any) -> None:
    out = run_case(tmp_path / "run.vrrl", case)
    assert out.verdict in ("exact", "unknown"), out.detail
    if case.backpressure:
        assert out.verdict == "exact", out.detail


SLOT_CASES = [c for c in QUICK if c.streams > 1 and not c.poll]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in SLOT_CASES])
def test_attribution_matrix_through_slots(tmp_path: Path, impl: str, case: Any) -> None:
    """The matrix's workload as unrecorded launches inside ``rec.slot`` (the inline slot path on every
    stream object, its end breadcrumb waiting under backpressure): the same verdicts as ``rec.launch``."""
    out = run_case(tmp_path / "run.vrrl", case, via="slot")
    assert out.verdict in ("exact", "unknown"), out.detail
    if case.backpressure:
        assert out.verdict == "exact", out.detail


def _slot_session(path: Path, mode: str, general: bool) -> dict[str, Any]:
    """Slots through every route of the inline slot path and out of it (``general``: every slot by the
    general ``_Slot``, the reference); what each did."""
    from vrrl_gpu.recorder._slot import _Slot

    seen: dict[str, Any] = {}
    rec = Recorder(path, device="twin", breadcrumbs=mode, capture_check="declared", capacity=4096,
                   staging_slots=64)  # fmt: skip

    def slot(opcode: Any, words: Any = None, *, stream: Any = None, outputs: Any = None) -> Any:
        return _Slot(rec, opcode, words, stream, outputs) if general else rec.slot(
            opcode, words, stream=stream, outputs=outputs)  # fmt: skip

    try:
        w = Axpy.on(rec)
        s = rec.backend.new_stream()
        args = (w.y, w.x, 1.0, 32, 0)
        w.launch(0, stream=s)  # the stream's first sight
        seen["slot"] = type(slot(w.opcode, stream=s)).__name__
        seen["with_outputs"] = type(slot(w.opcode, stream=s, outputs=w.y)).__name__
        got = []
        for i in range(3):
            with slot(w.opcode, (i, 1, 2, 3), stream=s) as k:
                rec.backend.launch(w.kernel, 1, 32, args, stream=s)
            got.append(k)
        with slot(w.opcode, stream=s) as k:  # a recorded launch inside a slot: its own slot, in between
            w.launch(9, stream=s)
        got.append(k)
        with slot(w.opcode, words=[np.uint32(5), 6, 7, 8], stream=s) as k:  # checked words
            pass
        got.append(k)
        with pytest.raises(RecordValueError), slot(w.opcode, (1, 2, 3), stream=s):
            pass
        with pytest.raises(RecordValueError), slot(-1, stream=s):
            pass
        # The body raises: FAILED_AT_LAUNCH, raised as is.
        with pytest.raises(ValueError, match="body"), slot(w.opcode, (7, 0, 0, 0), stream=s):
            raise ValueError("body")
        with slot(w.opcode, stream=s, outputs=w.y):
            pass
        with slot(w.opcode, (4, 0, 0, 0)):  # the current stream
            rec.backend.launch(w.kernel, 1, 32, args)
        rec.epoch = 3
        with slot(w.opcode, (5, 0, 0, 0), stream=s) as k:
            pass
        got.append(k)
        with rec.capturing(s):
            s.begin_capture()
            with slot(w.opcode, (6, 0, 0, 0), stream=s):  # captured: the device-sequenced path
                rec.backend.launch(w.kernel, 1, 32, args, stream=s)
            seen["graph"] = len(s.end_capture())
        with slot(w.opcode, (8, 0, 0, 0), stream=s) as k:
            pass
        got.append(k)
        seen["slots"] = got
        rec.synchronize()
        seen["next_seq"] = rec._state_of(s).next_seq
    finally:
        rec.close()
    from vrrl_gpu.errors import RecorderClosedError

    with pytest.raises(RecorderClosedError), slot(w.opcode, stream=s):
        pass
    return seen


@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_a_slot_records_the_same_by_every_implementation(tmp_path: Path, mode: str, impl: str) -> None:
    """rec.slot on a known stream (the inline slot path, C or Python) writes exactly what the general
    ``_Slot`` writes, through every route: words checked or not, bad words and opcodes, a body that
    raises, outputs, the current stream, an epoch, a declared capture, a recorded launch inside a slot."""
    inline = _slot_session(tmp_path / "inline.vrrl", mode, general=False)
    reference = _slot_session(tmp_path / "general.vrrl", mode, general=True)
    assert inline["slot"] == ("Slot" if impl == "c" else "HotSlot")
    assert inline["with_outputs"] == reference["slot"] == "_Slot"
    assert inline["slots"] == reference["slots"] == [1, 2, 3, 4, 6, 10, 12]
    assert inline["graph"] == reference["graph"] == (3 if mode == "begin+end" else 2)
    assert inline["next_seq"] == reference["next_seq"]
    # Two streams: the drain interleaves them in any order.
    assert sorted(_fields(tmp_path / "inline.vrrl")) == sorted(_fields(tmp_path / "general.vrrl"))
    failed = [r for r in _fields(tmp_path / "inline.vrrl") if r[7] == int(SlotStatus.FAILED_AT_LAUNCH)]
    assert [r[2] for r in failed] == [7]  # the slot whose body raised, by its words


def test_without_a_compiler_the_python_path_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VRRL_NO_ACCEL", raising=False)
    monkeypatch.setenv("CC", "vrrl-no-such-compiler")
    monkeypatch.setenv("VRRL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_accel.EXTENSION, "state", {})
    assert _accel.module() is None
    used, why = _accel.built()
    assert not used
    assert "no C compiler" in why
    with Recorder(tmp_path / "r.vrrl", device="twin", capture_check="declared", capacity=4096) as rec:
        w = Axpy.on(rec)
        s = rec.backend.new_stream()
        w.launch(0, stream=s)
        assert type(rec._state_of(s).hot).__name__ == "function"
        assert "launch" not in rec.__dict__  # the method itself
    assert len(_fields(tmp_path / "r.vrrl")) == 1


def test_the_accelerator_builds_into_the_cache_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    monkeypatch.delenv("VRRL_NO_ACCEL", raising=False)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("VRRL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_accel.EXTENSION, "state", {})
    m = _accel.module()
    if m is None:
        pytest.skip(f"the C accelerator does not build here: {_accel.built()[1]}")
    built = sorted((tmp_path / "cache" / "accel").iterdir())
    assert [p.name.startswith("_vrrl_fast-") for p in built] == [True]  # no staged file left behind
    monkeypatch.setattr(_accel.EXTENSION, "state", {})
    assert _accel.module() is not None
    assert sorted((tmp_path / "cache" / "accel").iterdir()) == built  # reused, not rebuilt


def test_the_accelerators_lock_is_an_rlock() -> None:
    m = _accel.module()
    if m is None:
        pytest.skip(f"the C accelerator is not available here: {_accel.built()[1]}")
    lock = m.RLock()
    with lock, lock:
        assert lock._is_owned()
    assert not lock._is_owned()
    with pytest.raises(RuntimeError):
        lock.release()
    assert lock.acquire(blocking=False)
    got: list[bool] = []

    def other() -> None:
        got.append(lock.acquire(timeout=0.05))  # held by the main thread: times out
        with lock:  # blocks (the GIL released) until the main thread lets go
            got.append(True)

    t = threading.Thread(target=other)
    t.start()
    time.sleep(0.2)
    assert got == [False]
    lock.release()
    t.join(5)
    assert got == [False, True]
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 1.0)


def _accel_lock() -> Any:
    m = _accel.module()
    if m is None:
        pytest.skip(f"the C accelerator is not available here: {_accel.built()[1]}")
    return m.RLock()


def test_the_accelerators_lock_excludes_under_contention() -> None:
    """Four threads, each taking the lock (reentrantly) 2,000 times around a read-yield-write of a shared
    counter: no update is lost, so no two held it at once; every waiter got it in the end."""
    lock = _accel_lock()
    state = {"n": 0, "inside": 0, "overlap": 0}

    def worker() -> None:
        for i in range(2000):
            with lock:
                state["inside"] += 1
                state["overlap"] += state["inside"] > 1
                n = state["n"]
                if i % 7 == 0:
                    time.sleep(0)  # let the others run (and wait) while this one holds it
                with lock:
                    state["n"] = n + 1
                state["inside"] -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert state == {"n": 8000, "inside": 0, "overlap": 0}
    assert lock.acquire(blocking=False)  # free again, and takeable
    lock.release()


def test_a_timed_wait_on_the_accelerators_lock_gets_it_when_let_go() -> None:
    lock = _accel_lock()
    lock.acquire()
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=10)))
    t.start()
    time.sleep(0.1)
    assert got == []  # still waiting
    lock.release()
    t.join(5)
    assert got == [True]
    assert not lock._is_owned()  # the other thread's now
    assert not lock.acquire(timeout=0.01)


def test_a_signal_interrupts_a_wait_on_the_accelerators_lock() -> None:
    """The main thread waits for a lock another thread holds; a signal handler that raises ends the wait
    with its exception, as for threading.RLock, and the lock still works afterwards."""
    import signal

    lock = _accel_lock()
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            done.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)

    class Interrupted(Exception):
        pass

    def raise_(signum: int, frame: object) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGALRM, raise_)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupted):
            lock.acquire()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        done.set()
        t.join(5)
    assert lock.acquire(timeout=5)
    lock.release()


def test_an_end_breadcrumb_that_meets_the_fault_blames_the_launch(tmp_path: Path, impl: str) -> None:
    """begin+end on the inline path: the device faults in K before K's end breadcrumb is enqueued; that
    enqueue raises the sticky error, and K is the FAULTED launch (not FAILED_AT_LAUNCH), in both paths."""
    rec = Recorder(
        tmp_path / "run.vrrl", device="twin", staging_slots=64, breadcrumbs="begin+end", capacity=4096
    )
    w = Axpy.on(rec)
    s = rec.backend.new_stream()
    real_launch = rec.backend.launch

    def launch_then_wait_for_the_device(kernel: Any, *a: Any, **kw: Any) -> None:
        real_launch(kernel, *a, **kw)
        if kernel is w.kernel and a[2][4] == 1:
            while int(rec.backend.stream_query(s)) == 600:
                pass

    rec.backend.launch = launch_then_wait_for_the_device  # type: ignore[method-assign]
    w.launch(0, stream=s)
    assert type(rec._state_of(s).hot).__name__ == ("Hot" if impl == "c" else "function")
    with pytest.raises(TwinCudaError):
        w.launch(1, fault=1, stream=s)
    rec.close()
    recs = log_records(rec.path)
    statuses = [(int(r["slot_idx"]), int(r["slot_status"])) for r in recs if int(r["opcode"]) == w.opcode]
    assert (1, int(SlotStatus.FAULTED)) in statuses
    assert all(st != int(SlotStatus.FAILED_AT_LAUNCH) for _, st in statuses)


def test_a_slot_is_entered_and_exited_every_way_a_context_manager_is(tmp_path: Path, impl: str) -> None:
    """A with statement, contextlib.ExitStack (the type's unbound __enter__/__exit__), explicit calls of the
    bound ones: each slot gets its begin and its end, a body's exception still reaches the slot's exit; a
    wrong call of either is a TypeError, not a slot entered or ended."""
    import contextlib

    with Recorder(tmp_path / "r.vrrl", device="twin", breadcrumbs="begin+end", capacity=4096,
                  staging_slots=64) as rec:  # fmt: skip
        w = Axpy.on(rec)
        s = rec.backend.new_stream()
        with rec.slot(w.opcode, (0, 0, 0, 0), stream=s):
            pass
        x = rec.slot(w.opcode, (1, 0, 0, 0), stream=s)
        assert type(x).__name__ == ("Slot" if impl == "c" else "HotSlot")
        with contextlib.ExitStack() as stack:
            stack.enter_context(x)

        def failing_body() -> None:
            with contextlib.ExitStack() as stack:
                stack.enter_context(rec.slot(w.opcode, (2, 0, 0, 0), stream=s))
                raise KeyError("the body failed")

        with pytest.raises(KeyError):
            failing_body()
        x = rec.slot(w.opcode, (3, 0, 0, 0), stream=s)
        x.__enter__()
        assert x.__exit__(None, None, None) in (None, False)
        x = rec.slot(w.opcode, (4, 0, 0, 0), stream=s)
        type(x).__enter__(x)
        type(x).__exit__(x, None, None, None)
        x = rec.slot(w.opcode, (5, 0, 0, 0), stream=s)
        with pytest.raises(TypeError):
            x.__exit__(None)
        with pytest.raises(TypeError):
            type(x).__enter__()
        with pytest.raises(TypeError):
            type(x).__exit__(x, None)
    recs = log_records(rec.path)
    mine = recs[recs["opcode"] == w.opcode]
    by_word: dict[int, list[int]] = {}
    for word, st in zip(mine["args"][:, 0].tolist(), mine["slot_status"].tolist(), strict=True):
        by_word.setdefault(word, []).append(st)
    begin, done = int(SlotStatus.BEGIN), int(SlotStatus.COMPLETED)
    assert by_word[0] == by_word[1] == by_word[3] == by_word[4] == [begin, done]
    assert by_word[2][0] == begin  # then the failure's record, no end
    assert len(by_word[2]) == 2
    assert done not in by_word[2]
    assert 5 not in by_word  # the wrong calls entered nothing


def test_a_finished_slot_holds_nothing(tmp_path: Path, impl: str) -> None:
    """Slots are recycled (C): once a slot is gone it keeps no reference to its stream (the launch map keeps
    the words), and slots made one after another record their own words."""
    import sys

    with Recorder(tmp_path / "r.vrrl", device="twin", capacity=4096, staging_slots=64) as rec:
        w = Axpy.on(rec)
        s = rec.backend.new_stream()
        words = [(i, 7, 0, 0) for i in range(6)]
        with rec.slot(w.opcode, words[0], stream=s):  # the stream's state made and kept from here on
            pass
        before = sys.getrefcount(s)
        for ws in words[1:]:
            slot = rec.slot(w.opcode, ws, stream=s)
            with slot:
                pass
            del slot
        assert sys.getrefcount(s) == before
    recs = log_records(rec.path)
    got = recs[recs["opcode"] == w.opcode]["args"][:, :2].tolist()
    assert got == [[i, 7] for i in range(6)]


def test_a_slot_is_reused_only_when_nobody_holds_it(tmp_path: Path, impl: str) -> None:
    """The C path parks a finished slot for the stream's next one: a slot the caller still holds is never
    handed out again (it can be entered again, with its own words), and neither a parked slot nor one made
    and dropped without being entered keeps its stream alive."""
    import gc
    import weakref

    with Recorder(tmp_path / "r.vrrl", device="twin", breadcrumbs="begin+end", capacity=4096,
                  staging_slots=64) as rec:  # fmt: skip
        w = Axpy.on(rec)
        s = rec.backend.new_stream()
        held = rec.slot(w.opcode, (1, 0, 0, 0), stream=s)
        with held:
            pass
        other = rec.slot(w.opcode, (2, 0, 0, 0), stream=s)
        assert other is not held
        with other:
            pass
        with held:  # again, with its words
            pass
        for i in (3, 4, 5):
            with rec.slot(w.opcode, (i, 0, 0, 0), stream=s):
                pass
        ref = weakref.ref(s)
        del s, held, other
        gc.collect()
        assert ref() is None  # the parked slot keeps no stream
        s2 = rec.backend.new_stream()
        with rec.slot(w.opcode, (6, 0, 0, 0), stream=s2):
            pass
        dropped = rec.slot(w.opcode, (7, 0, 0, 0), stream=s2)  # never entered
        ref2 = weakref.ref(s2)
        del dropped, s2
        gc.collect()
        assert ref2() is None
    recs = log_records(rec.path)
    mine = recs[recs["opcode"] == w.opcode]
    by_word: dict[int, list[int]] = {}
    for word, st in zip(mine["args"][:, 0].tolist(), mine["slot_status"].tolist(), strict=True):
        by_word.setdefault(word, []).append(st)
    pair = [int(SlotStatus.BEGIN), int(SlotStatus.COMPLETED)]
    assert by_word == {1: pair * 2, 2: pair, 3: pair, 4: pair, 5: pair, 6: pair}


def test_an_instrumented_calls_arguments_are_reused_only_when_the_backend_let_them_go(
    tmp_path: Path, impl: str
) -> None:
    """The C path refills the last call's ``varying`` tuple (completion slot, words, epoch) only when the
    backend kept no reference to it: tuples a backend holds (a queue, a graph node) never change, and
    every launch's record has its own words and epoch."""
    from vrrl_gpu.backends import TwinBackend

    kept: list[tuple[int, ...]] = []

    class Keeping(TwinBackend):
        """Keeps the varying tuple of every other bound launch, as a queue would."""

        def bind_launch(self, kernel: Any, own: int, fixed: Any) -> Any:
            inner = super().bind_launch(kernel, own, fixed)
            calls = [0]

            def bound(grid: Any, block: Any, args: Any, varying: Any, stream: Any, shm: int) -> None:
                calls[0] += 1
                if calls[0] % 2:
                    kept.append(varying)
                inner(grid, block, args, varying, stream, shm)

            return bound

    with Recorder(tmp_path / "r.vrrl", device=Keeping(), capacity=4096) as rec:
        k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
        op = rec.opcode("spin")
        ik = rec.instrument(k, opcode=op, words=lambda a: (a[0] + 10, 0, 0, 0))
        s = rec.backend.new_stream()
        for i in range(8):
            rec.epoch = 100 + i
            ik(1, 1, (i,), stream=s)
        rec.synchronize()
    # Calls 1, 3, 5, 7 (i = 0, 2, 4, 6) were kept: each still holds its own slot, words and epoch.
    assert [(t[1], t[-1]) for t in kept] == [(10 + i, 100 + i) for i in (0, 2, 4, 6)]
    assert len({t[0] for t in kept}) == 4
    begins = with_status(log_records(rec.path), SlotStatus.BEGIN)
    mine = begins[begins["opcode"] == op]
    assert list(zip(mine["args"][:, 0].tolist(), mine["epoch"].tolist(), strict=True)) == [
        (10 + i, 100 + i) for i in range(8)
    ]


def test_an_instrumented_kernels_remembered_stream_never_names_another_streams_state(
    tmp_path: Path, impl: str
) -> None:
    """An instrumented call remembers the last stream's state (C): after that stream died and its state
    retired, a call on the next stream (perhaps at the same address) updates that stream's state (its
    host ring no longer shows how far the device got: not outstanding), never the dead one's."""
    import gc

    rec = Recorder(tmp_path / "r.vrrl", device="twin", capture_check="declared", capacity=4096,
                   staging_slots=64)  # fmt: skip
    w = Axpy.on(rec)
    k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
    ik = rec.instrument(k, opcode=w.opcode, words=lambda a: (a[0], 0, 0, 0))
    seen = []
    for i in range(1, 25):
        s = rec.backend.new_stream()
        rec.launch(w.kernel, 1, 32, (w.y, w.x, 1.0, 32, 0), opcode=w.opcode, stream=s)
        st = rec._state_of(s)
        before = st.outstanding
        ik(1, 1, (i,), stream=s)
        ik(1, 1, (i,), stream=s)  # the remembered state's route
        rec.launch(w.kernel, 1, 32, (w.y, w.x, 1.0, 32, 0), opcode=w.opcode, stream=s)
        again = st.outstanding
        ik(1, 1, (i,), stream=s)
        seen.append((before, again, st.outstanding))
        del s, st
        gc.collect()
        if i % 4 == 0:
            rec.synchronize()  # retires the dead streams' states
    # Two live streams in turn: each call clears its own stream's state only.
    a, b = rec.backend.new_stream(), rec.backend.new_stream()
    for _ in range(3):
        for s, other in ((a, b), (b, a)):
            rec.launch(w.kernel, 1, 32, (w.y, w.x, 1.0, 32, 0), opcode=w.opcode, stream=other)
            ik(1, 1, (0,), stream=s)
            seen.append((rec._state_of(s).outstanding, rec._state_of(other).outstanding, False))
    rec.close()
    assert seen == [(True, True, False)] * 24 + [(False, True, False)] * 6
    begins = with_status(log_records(rec.path), SlotStatus.BEGIN)
    assert sorted(begins[begins["args"][:, 0] > 0]["args"][:, 0].tolist()) == sorted(list(range(1, 25)) * 3)


def test_the_remembered_stream_never_names_another_streams_state(tmp_path: Path, impl: str) -> None:
    """rec.launch and rec.slot remember the last stream's inline path (C): short-lived streams (dead, their
    states retired, new objects perhaps at their addresses) never share a state; after a capture on the
    remembered stream its launches take the inline path again."""
    import gc

    from vrrl_gpu.analysis._streams import streams_of

    rec = Recorder(tmp_path / "r.vrrl", device="twin", capture_check="declared", capacity=4096,
                   staging_slots=64)  # fmt: skip
    w = Axpy.on(rec)
    args = (w.y, w.x, 1.0, 32, 0)
    for i in range(40):
        s = rec.backend.new_stream()
        rec.launch(w.kernel, 1, 32, args, opcode=w.opcode, words=(2 * i, 0, 0, 0), stream=s)
        with rec.slot(w.opcode, (2 * i + 1, 0, 0, 0), stream=s):
            pass
        del s
        gc.collect()
        if i % 8 == 7:
            rec.synchronize()  # retires the dead streams' states
    keep = rec.backend.new_stream()
    rec.launch(w.kernel, 1, 32, args, opcode=w.opcode, words=(100, 0, 0, 0), stream=keep)
    rec.close()
    recs = log_records(rec.path)
    recs = recs[recs["opcode"] == w.opcode]
    named = streams_of(rec.path, recs)
    by_word = dict(zip(recs["args"][:, 0].tolist(), named.tolist(), strict=True))
    # Each short-lived stream has one state of its own (launch and slot on it), no two share one.
    assert [by_word[2 * i] for i in range(40)] == [by_word[2 * i + 1] for i in range(40)]
    assert len({by_word[2 * i] for i in range(40)}) == 40
    assert by_word[100] not in {by_word[2 * i] for i in range(40)}
    # A capture on the remembered stream, then the inline path again (a graph session: a recorder of its own).
    with Recorder(tmp_path / "g.vrrl", device="twin", capture_check="declared", capacity=4096) as rec:
        w = Axpy.on(rec)
        keep = rec.backend.new_stream()
        rec.launch(w.kernel, 1, 32, args, opcode=w.opcode, words=(100, 0, 0, 0), stream=keep)
        with rec.capturing(keep):
            keep.begin_capture()
            rec.launch(w.kernel, 1, 32, args, opcode=w.opcode, words=(101, 0, 0, 0), stream=keep)
            assert len(keep.end_capture()) == 2
        rec.launch(w.kernel, 1, 32, args, opcode=w.opcode, words=(102, 0, 0, 0), stream=keep)
        with rec.slot(w.opcode, (103, 0, 0, 0), stream=keep):
            pass
        assert rec._state_of(keep).next_seq == 3  # host sequences again after the capture
