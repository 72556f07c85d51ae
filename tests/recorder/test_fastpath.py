"""The recorded launch's cost in CUDA API calls (counted by a CountingBackend over the twin), and the checks
that the launch path no longer makes per call: the device check and the capture probe.

The counts are exact: the backend calls one recorded launch makes. Timings: benchmarks/bench_recorder.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu.backends import CountingBackend, TwinBackend, get_backend
from vrrl_gpu.errors import RecordValueError, WrongDeviceError

from ..helpers.recorder import log_records, with_status


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[Callable[..., tuple[Recorder, CountingBackend]]]:
    made: list[Recorder] = []

    def make(**kw: Any) -> tuple[Recorder, CountingBackend]:
        cb = CountingBackend(TwinBackend(), noop=kw.pop("noop", False))
        kw.setdefault("capacity", 4096)
        kw.setdefault("staging_slots", 256)
        rec = Recorder(tmp_path / f"run{len(made)}.vrrl", device=cb, **kw)
        made.append(rec)
        return rec, cb

    yield make
    for rec in made:
        with contextlib.suppress(Exception):
            rec.close()


def _spin(rec: Recorder) -> Any:
    return rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")


def _counts(cb: CountingBackend, fn: Callable[[], object]) -> tuple[int, int, dict[str, int]]:
    cb.reset()
    fn()
    return cb.launches, cb.queries, dict(cb.calls)


@pytest.mark.parametrize(("mode", "launches"), [("begin", 2), ("begin+end", 3)])
def test_a_recorded_launch_is_its_packs_and_the_launch_and_no_query(
    counted: Callable[..., tuple[Recorder, CountingBackend]], mode: str, launches: int
) -> None:
    rec, cb = counted(breadcrumbs=mode, capture_check="declared")
    k = _spin(rec)
    s = cb.new_stream()
    op = rec.opcode("spin")
    first = _counts(cb, lambda: rec.launch(k, 1, 1, (0,), opcode=op, stream=s))
    # First sight of the stream: the device check, its key, its ring bound once.
    assert first[2]["check_device"] == 1
    assert first[2]["bind_pack"] == 1
    for _ in range(3):
        n_launch, n_query, calls = _counts(cb, lambda: rec.launch(k, 1, 1, (0,), opcode=op, stream=s))
        assert (n_launch, n_query) == (launches, 0)
        assert calls == {"bound_pack": launches - 1, "launch": 1}
    wrapped = rec.wrap(k, opcode=op, words=lambda a: (a[0], 1, 2, 3))
    assert _counts(cb, lambda: wrapped(1, 1, (5,), stream=s))[:2] == (launches, 0)

    def slot() -> None:
        with rec.slot(op, stream=s):
            pass

    assert _counts(cb, slot)[:2] == (launches - 1, 0)  # a slot is its breadcrumbs; the body launches its own
    rec.close()
    begins = with_status(log_records(rec.path), SlotStatus.BEGIN)
    assert begins["slot_idx"].tolist() == list(range(6))
    assert begins["args"][4].tolist() == [5, 1, 2, 3]


def test_the_current_stream_is_one_query_and_probing_capture_one_more(
    counted: Callable[..., tuple[Recorder, CountingBackend]],
) -> None:
    rec, cb = counted(capture_check="declared")
    k = _spin(rec)
    op = rec.opcode("spin")
    rec.launch(k, 1, 1, (0,), opcode=op)
    assert _counts(cb, lambda: rec.launch(k, 1, 1, (0,), opcode=op))[:2] == (2, 1)
    assert cb.calls["launch_stream"] == 1
    probe, pcb = counted()  # capture_check="probe", the default
    kp = _spin(probe)
    sp = pcb.new_stream()
    probe.launch(kp, 1, 1, (0,), opcode=op, stream=sp)
    n_launch, n_query, calls = _counts(pcb, lambda: probe.launch(kp, 1, 1, (0,), opcode=op, stream=sp))
    assert (n_launch, n_query, calls.get("is_capturing")) == (2, 1, 1)


def test_no_op_backend_launches_nothing_but_counts(
    counted: Callable[..., tuple[Recorder, CountingBackend]],
) -> None:
    rec, cb = counted(noop=True, capture_check="declared")
    k = _spin(rec)
    s = cb.new_stream()
    op = rec.opcode("spin")
    for _ in range(5):
        rec.launch(k, 1, 1, (0,), opcode=op, stream=s)
    assert cb.calls["launch"] == 5
    assert cb.calls["bound_pack"] == 5
    assert cb.inner.stream_query(s) == 0  # nothing ever reached the twin's stream


def test_a_wrong_device_is_caught_on_the_current_stream_and_at_a_new_stream(
    counted: Callable[..., tuple[Recorder, CountingBackend]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device check runs where a query is made anyway (stream=None: the current stream) and when the
    recorder first sees a stream object; a stream it knows is launched on without asking."""
    rec, cb = counted(capture_check="declared")
    k = _spin(rec)
    op = rec.opcode("spin")
    known = cb.new_stream()
    rec.launch(k, 1, 1, (0,), opcode=op, stream=known)
    wrong = WrongDeviceError("device 1 is current")

    def check() -> None:
        raise wrong

    monkeypatch.setattr(cb.inner, "check_device", check)
    monkeypatch.setattr(cb.inner, "launch_stream", lambda: (check(), cb.inner.current_stream())[1])
    with pytest.raises(WrongDeviceError):
        rec.launch(k, 1, 1, (0,), opcode=op)  # the current stream: checked
    with pytest.raises(WrongDeviceError):
        rec.launch(k, 1, 1, (0,), opcode=op, stream=cb.new_stream())  # a stream seen for the first time
    rec.launch(k, 1, 1, (0,), opcode=op, stream=known)  # known: no query made, so nothing to catch here
    assert not rec.poisoned
    monkeypatch.undo()
    rec.close()
    assert with_status(log_records(rec.path), SlotStatus.BEGIN)["slot_idx"].tolist() == [0, 1]


def test_another_object_for_a_known_stream_shares_its_ring(
    counted: Callable[..., tuple[Recorder, CountingBackend]],
) -> None:
    """E.g. an ExternalStream made per call: same ptr, another object; one ring, its id remembered."""
    rec, cb = counted(capture_check="declared")
    k = _spin(rec)
    op = rec.opcode("spin")
    s = cb.new_stream()

    class Alias:
        ptr = s.ptr

    inner_launch = cb.inner.launch
    # The twin accepts only its own stream objects: map the alias back to the stream for the launches.
    cb.inner.launch = lambda kern, g, b, a, stream=None, shared_mem=0: inner_launch(  # type: ignore[method-assign]
        kern, g, b, a, stream=s if isinstance(stream, Alias) else stream, shared_mem=shared_mem
    )
    rec.launch(k, 1, 1, (0,), opcode=op, stream=s)
    alias = Alias()
    rec.launch(k, 1, 1, (0,), opcode=op, stream=alias)
    assert len(rec._streams) == 1
    assert _counts(cb, lambda: rec.launch(k, 1, 1, (0,), opcode=op, stream=alias))[:2] == (2, 0)
    rec.close()
    assert with_status(log_records(rec.path), SlotStatus.BEGIN)["slot_idx"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("capture", ["probe", "declared"])
def test_captures_are_caught_by_the_probe_or_by_rec_capturing(
    counted: Callable[..., tuple[Recorder, CountingBackend]], monkeypatch: pytest.MonkeyPatch, capture: str
) -> None:
    """Under capture the device claims the sequence (pack_devseq): with capture_check="probe" the recorder
    asks at each launch; with "declared" rec.capturing(stream) says so, and no launch asks anything."""
    rec, cb = counted(capture_check=capture)
    k = _spin(rec)
    op = rec.opcode("spin")
    s = cb.new_stream()
    rec.launch(k, 1, 1, (0,), opcode=op, stream=s)
    if capture == "probe":
        monkeypatch.setattr(cb.inner, "is_capturing", lambda stream: stream is s)
        ctx: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    else:
        ctx = rec.capturing(s)
    with ctx:
        n_launch, n_query, calls = _counts(cb, lambda: rec.launch(k, 1, 1, (0,), opcode=op, stream=s))
    assert calls.get("pack_devseq") == 1
    assert "bound_pack" not in calls
    assert (n_launch, n_query) == ((2, 1) if capture == "probe" else (2, 0))
    monkeypatch.undo()
    assert "pack_devseq" not in _counts(cb, lambda: rec.launch(k, 1, 1, (0,), opcode=op, stream=s))[2]
    rec.close()


@pytest.mark.parametrize("mode", ["begin", "begin+end"])
def test_a_declared_capture_on_the_twin_replays_into_distinct_device_sequences(
    counted: Callable[..., tuple[Recorder, CountingBackend]], mode: str
) -> None:
    """capture_check="declared": rec.capturing(stream) around a real twin capture; nothing is allocated and
    nothing asked inside it, and three replays of the graph write 3 x 4 distinct device-claimed records."""
    rec, cb = counted(capture_check="declared", breadcrumbs=mode)
    k = _spin(rec)
    op = rec.opcode("spin")
    s = cb.new_stream()
    with rec.capturing(s):
        cb.reset()
        s.begin_capture()
        for i in range(4):
            rec.launch(k, 1, 1, (0,), opcode=op, words=(i, 0, 0, 0), stream=s)
        graph = s.end_capture()
        inside = dict(cb.calls)
    assert inside == {"pack_devseq": 4 * (2 if mode == "begin+end" else 1), "launch": 4}
    for _ in range(3):
        graph.launch(s)
    rec.launch(k, 1, 1, (0,), opcode=op, words=(9, 0, 0, 0), stream=s)  # after the capture: host-sequenced
    rec.synchronize()
    rec.close()
    recs = log_records(rec.path)
    crumbs = with_status(recs, SlotStatus.BEGIN, SlotStatus.COMPLETED)
    captured = crumbs[crumbs["args"][:, 0] != 9]
    per = 2 if mode == "begin+end" else 1
    assert sorted(captured["slot_idx"].tolist()) == list(range(12 * per))  # device sequences, none reused
    assert sorted(captured["args"][:, 0].tolist()) == sorted([0, 1, 2, 3] * 3 * per)
    assert (with_status(recs, SlotStatus.BEGIN)["args"][:, 0] == 9).sum() == 1


def test_options_accept_a_backend_and_refuse_an_unknown_capture_mode(tmp_path: Path) -> None:
    with pytest.raises(RecordValueError, match="capture_check"):
        Recorder(tmp_path / "x.vrrl", device="twin", capture_check="sometimes")
    with pytest.raises(RecordValueError, match="Backend instance"):
        Recorder(tmp_path / "y.vrrl", device=object())
    b = get_backend("twin")
    assert get_backend(b) is b
    b.close()


@pytest.mark.parametrize("words", [(1, 2, 3), (0, 0, 0, 2**32), (0, -1, 0, 0), "abcd"])
def test_words_are_still_checked_on_the_fast_path(
    counted: Callable[..., tuple[Recorder, CountingBackend]], words: Any
) -> None:
    rec, _cb = counted(capture_check="declared")
    k = _spin(rec)
    with pytest.raises(RecordValueError):
        rec.launch(k, 1, 1, (0,), opcode=rec.opcode("spin"), words=words)


@pytest.mark.parametrize("opcode", [-1, 2**32, 1.5, True, "op"])
def test_opcodes_are_still_checked_on_the_fast_path(
    counted: Callable[..., tuple[Recorder, CountingBackend]], opcode: Any
) -> None:
    rec, cb = counted(capture_check="declared")
    k = _spin(rec)
    with pytest.raises(RecordValueError):
        rec.launch(k, 1, 1, (0,), opcode=opcode)
    assert cb.calls["bound_pack"] == 0
