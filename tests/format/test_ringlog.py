from __future__ import annotations

import collections
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vrrl_gpu import RECORD_DTYPE, Record, RingLog
from vrrl_gpu.errors import (
    CorruptRecordError,
    LogLockedError,
    RecordValueError,
    TruncatedLogError,
    VrrlIoError,
)
from vrrl_gpu.format import HEADER_SIZE, RECORD_MAGIC, RECORD_SIZE, file_size_for, iter_record_chunks


def make_records(n: int, start: int = 0) -> np.ndarray:
    a = np.zeros(n, RECORD_DTYPE)
    seq = np.arange(start, start + n, dtype=np.uint64)
    a["timestamp_ns"] = 1_700_000_000_000_000_000 + seq
    a["slot_idx"] = seq.astype(np.uint32)
    a["opcode"] = 7
    a["args"][:, 0] = seq.astype(np.uint32)
    return a


def test_new_file_is_full_length_mode_0600_and_zeroed(tmp_path: Path) -> None:
    p = tmp_path / "a.vrrl"
    with RingLog.open(p, capacity=16) as log:
        assert log.capacity == 16
        assert log.cursor == 0
    assert p.stat().st_size == file_size_for(16)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert p.read_bytes()[32:] == bytes(64 * 16)
    assert p.read_bytes()[:8] == b"VRRL0001"


def test_open_missing_without_capacity_says_how_to_create(tmp_path: Path) -> None:
    with pytest.raises(RecordValueError, match="capacity=N"):
        RingLog.open(tmp_path / "nope.vrrl")
    with pytest.raises(VrrlIoError):
        RingLog.open(tmp_path / "nope.vrrl", readonly=True)
    assert not (tmp_path / "nope.vrrl").exists()


def test_existing_file_keeps_its_header_capacity(tmp_path: Path) -> None:
    p = tmp_path / "a.vrrl"
    with RingLog.open(p, capacity=8) as log:
        log.extend(make_records(3))
    with RingLog.open(p, capacity=1024) as log:
        assert log.capacity == 8
        assert log.cursor == 3
        assert len(log) == 3


def test_append_writes_magic_and_advances_cursor(tmp_path: Path) -> None:
    with RingLog.open(tmp_path / "a.vrrl", capacity=4) as log:
        log.append(Record(timestamp_ns=5, slot_idx=1, tenant_id=2, opcode=3, args=(1, 2, 3, 4), epoch=6))
        recs = log.records()
        assert recs["magic"].tolist() == [RECORD_MAGIC]
        assert log.cursor == 1
        assert next(iter(log)).args == (1, 2, 3, 4)


def test_extend_writes_each_span_hidden_then_whole_then_publishes_the_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RingLog.open(tmp_path / "a.vrrl", capacity=8) as log:
        log.extend(make_records(6))
        calls: list[tuple[int, int, bytes]] = []
        real = os.pwrite

        def spy(fd: int, data: object, offset: int) -> int:
            n = real(fd, data, offset)  # type: ignore[arg-type]
            calls.append((offset, n, bytes(memoryview(data).cast("B")[:8])))  # type: ignore[arg-type]
            return n

        monkeypatch.setattr(os, "pwrite", spy)
        log.extend(make_records(5, start=6))  # wraps: slots 6,7 then 0,1,2, in spans of 2 (capacity // 4)
        monkeypatch.undo()
        spans = ((6, 2, 8), (0, 2, 10), (2, 1, 11))  # first slot, slots, cursor published after
        expected: list[tuple[int, int]] = []
        for first_slot, slots, _ in spans:
            expected += [(32 + 64 * first_slot, 64 * slots), (24, 8)]  # inside one page: written once
        assert [(o, n) for o, n, _ in calls] == expected
        # While the writer holds the log its cursor counts records; the slot is that modulo the capacity.
        assert [int.from_bytes(head, "little") for o, _, head in calls if o == 24] == [c for *_, c in spans]
        assert log.cursor == 3
        assert log.records()["slot_idx"].tolist() == [3, 4, 5, 6, 7, 8, 9, 10]
    with RingLog.open(tmp_path / "a.vrrl", readonly=True) as r:
        assert r.cursor == 3, "closing stores the cursor as the format writes it"


def test_a_span_across_a_page_is_written_hidden_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RingLog.open(tmp_path / "a.vrrl", capacity=256) as log:
        log.extend(make_records(60))
        calls: list[tuple[int, int, bytes]] = []
        real = os.pwrite

        def spy(fd: int, data: object, offset: int) -> int:
            n = real(fd, data, offset)  # type: ignore[arg-type]
            calls.append((offset, n, bytes(memoryview(data).cast("B")[:4])))  # type: ignore[arg-type]
            return n

        monkeypatch.setattr(os, "pwrite", spy)
        log.extend(make_records(10, start=60))  # slots 60..69: slot 63 straddles byte 4096
        log.extend(make_records(2, start=70))  # slots 70, 71: inside the second page
        monkeypatch.undo()
        magic = (0xDEADBEEF).to_bytes(4, "little")
        at = 32 + 64 * 60
        want = [(at, 640, bytes(4)), (at, 640, magic), (24, 8, (70).to_bytes(4, "little"))]
        want += [(at + 640, 128, magic), (24, 8, (72).to_bytes(4, "little"))]
        assert calls == want  # first the magic words 0: a write cut at the page leaves nothing live
        assert log.records()["slot_idx"].tolist() == list(range(72))


def test_extend_larger_than_capacity_keeps_the_newest(tmp_path: Path) -> None:
    with RingLog.open(tmp_path / "a.vrrl", capacity=8) as log:
        log.extend(make_records(3))
        log.extend(make_records(21, start=3))
        assert log.cursor == (3 + 21) % 8
        assert log.records()["slot_idx"].tolist() == list(range(16, 24))


def test_extend_does_not_modify_the_callers_array(tmp_path: Path) -> None:
    a = make_records(4)
    with RingLog.open(tmp_path / "a.vrrl", capacity=8) as log:
        log.extend(a)
    assert (a["magic"] == 0).all()


def test_second_writer_gets_log_locked_error_and_readers_still_work(tmp_path: Path) -> None:
    p = tmp_path / "a.vrrl"
    with RingLog.open(p, capacity=8) as w:
        w.extend(make_records(2))
        with pytest.raises(LogLockedError, match="another writer"):
            RingLog.open(p, capacity=8)
        code = (
            "import sys; from vrrl_gpu import RingLog\nfrom vrrl_gpu.errors import LogLockedError\n"
            "try: RingLog.open(sys.argv[1])\n"
            "except LogLockedError: sys.exit(3)\n"
        )
        assert subprocess.run([sys.executable, "-c", code, str(p)], check=False).returncode == 3
        with RingLog.open(p, readonly=True) as r:
            assert len(r) == 2
            w.extend(make_records(1, start=2))
            assert len(r) == 3  # a reader sees what the writer published since
    with RingLog.open(p) as w2:  # the lock went with close()
        assert w2.cursor == 3


def test_readonly_never_writes_or_creates(tmp_path: Path) -> None:
    p = tmp_path / "a.vrrl"
    with RingLog.open(p, capacity=8) as log:
        log.extend(make_records(2))
    before = p.read_bytes()
    os.chmod(p, 0o400)
    with RingLog.open(p, readonly=True) as r:
        assert len(r) == 2
        with pytest.raises(VrrlIoError, match="read-only"):
            r.extend(make_records(1))
    assert p.read_bytes() == before


def test_closed_log_refuses_use_and_close_is_idempotent(tmp_path: Path) -> None:
    log = RingLog.open(tmp_path / "a.vrrl", capacity=8)
    log.close()
    log.close()
    assert log.closed
    with pytest.raises(VrrlIoError, match="closed"):
        log.records()


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 64),
    batches=st.lists(st.integers(0, 150), max_size=6),
)
def test_round_trip_of_batches_matches_the_last_capacity_records(
    tmp_path_factory: pytest.TempPathFactory, capacity: int, batches: list[int]
) -> None:
    p = tmp_path_factory.mktemp("rt") / "a.vrrl"
    total = 0
    with RingLog.open(p, capacity=capacity) as log:
        for n in batches:
            log.extend(make_records(n, start=total))
            total += n
    with RingLog.open(p, readonly=True) as log:
        got = log.records()["slot_idx"].tolist()
        assert log.cursor == total % capacity
    assert got == list(range(max(0, total - capacity), total))


class RingModel(RuleBasedStateMachine):
    """The ring against a bounded deque, across appends, batched extends, wraps, close and reopen."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "m.vrrl")
        self.capacity = 0
        self.model: collections.deque[int] = collections.deque()
        self.log: RingLog | None = None
        self.seq = 0

    @precondition(lambda self: self.log is None and self.capacity == 0)
    @rule(capacity=st.integers(1, 12))
    def create(self, capacity: int) -> None:
        self.capacity = capacity
        self.model = collections.deque(maxlen=capacity)
        self.log = RingLog.open(self.path, capacity=capacity)

    @precondition(lambda self: self.log is not None)
    @rule()
    def append(self) -> None:
        assert self.log is not None
        r = Record.from_row(make_records(1, start=self.seq)[0])
        self.log.append(r)
        self.model.append(self.seq)
        self.seq += 1

    @precondition(lambda self: self.log is not None)
    @rule(n=st.integers(0, 30))
    def extend(self, n: int) -> None:
        assert self.log is not None
        self.log.extend(make_records(n, start=self.seq))
        self.model.extend(range(self.seq, self.seq + n))
        self.seq += n

    @precondition(lambda self: self.log is not None)
    @rule()
    def close(self) -> None:
        assert self.log is not None
        self.log.close()
        self.log = None

    @precondition(lambda self: self.log is None and self.capacity > 0)
    @rule(asked=st.integers(1, 50))
    def reopen(self, asked: int) -> None:
        self.log = RingLog.open(self.path, capacity=asked)
        assert self.log.capacity == self.capacity

    @invariant()
    def matches_model(self) -> None:
        if self.capacity == 0:
            return
        with RingLog.open(self.path, readonly=True) as r:
            assert r.records()["slot_idx"].tolist() == list(self.model)
            assert r.cursor % self.capacity == self.seq % self.capacity

    def teardown(self) -> None:
        if self.log is not None:
            self.log.close()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


RingModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_ring_against_a_deque_model = RingModel.TestCase


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 40),
    n=st.integers(0, 100),
    damage=st.lists(st.integers(0, 39), max_size=5),
    cut=st.integers(0, 40),
    chunk=st.integers(1, 17),
)
def test_ringlog_and_the_chunked_reader_share_one_strict_and_salvage_reading(
    tmp_path_factory: pytest.TempPathFactory, capacity: int, n: int, damage: list[int], cut: int, chunk: int
) -> None:
    path = tmp_path_factory.mktemp("one-reader") / "r.vrrl"
    with RingLog.open(path, capacity=capacity) as log:
        log.extend(make_records(n))
    with open(path, "r+b") as f:
        for slot in {d % capacity for d in damage}:
            f.seek(HEADER_SIZE + RECORD_SIZE * slot)
            f.write((0x0BADF00D).to_bytes(4, "little"))
        f.truncate(HEADER_SIZE + RECORD_SIZE * min(capacity, cut))
    with RingLog.open(path, readonly=True) as log:
        salvaged = log.records(salvage=True)
        chunked = list(iter_record_chunks(path, chunk_records=chunk, salvage=True))
        assert np.concatenate([salvaged[:0], *chunked]).tobytes() == salvaged.tobytes()
        errors: list[tuple[type[BaseException], int | None]] = []
        for read in (lambda: log.records(), lambda: list(iter_record_chunks(path, chunk_records=chunk))):
            try:
                read()
                errors.append((type(None), None))
            except (CorruptRecordError, TruncatedLogError) as e:
                errors.append((type(e), getattr(e, "slot", None)))
        assert errors[0] == errors[1]


def _killed_before_publishing(p: Path, capacity: int, published: int, unpublished: int) -> None:
    """A log whose writer wrote ``published`` records, then ``unpublished`` more and was killed before it
    stored the cursor after them (rule 2 of format/_live.py: records first, cursor after)."""
    with RingLog.open(p, capacity=capacity) as log:
        log.extend(make_records(published))
    recs = make_records(unpublished, start=published)
    recs["magic"] = RECORD_MAGIC
    fd = os.open(p, os.O_WRONLY)
    try:
        os.pwrite(fd, recs.tobytes(), HEADER_SIZE + published * RECORD_SIZE)
    finally:
        os.close(fd)


def test_records_a_killed_writer_left_past_the_cursor_are_published_by_the_next(tmp_path: Path) -> None:
    from vrrl_gpu._cli import main

    p = tmp_path / "a.vrrl"
    _killed_before_publishing(p, 64, 10, 3)
    # The format's reader walks from the cursor: the unpublished three come first, as if the oldest.
    with RingLog.open(p, readonly=True) as log:
        assert log.records()["args"][:, 0].tolist() == [10, 11, 12, *range(10)]
    assert main(["verify", str(p)]) == 0  # not damage: the state a kill between two writes leaves
    with RingLog.open(p) as log:  # the next writer publishes them: the newest, in order
        assert log.cursor == 13
        log.extend(make_records(2, start=13))
    with RingLog.open(p, readonly=True) as log:
        assert log.records()["args"][:, 0].tolist() == list(range(15))


@pytest.mark.parametrize("case", ["wrapped", "longer-than-a-span", "not-records"])
def test_what_only_looks_unpublished_is_left_alone(tmp_path: Path, case: str) -> None:
    p = tmp_path / "a.vrrl"
    if case == "wrapped":
        with RingLog.open(p, capacity=16) as log:
            log.extend(make_records(20))  # every slot holds a record: slot 4 is the oldest, not a leftover
        cursor = 4
    elif case == "longer-than-a-span":
        _killed_before_publishing(p, 64, 10, 17)  # a span of a 64-slot ring is 16 slots: not our writer
        cursor = 10
    else:
        _killed_before_publishing(p, 64, 10, 3)
        fd = os.open(p, os.O_WRONLY)
        os.pwrite(fd, b"\x01\x02\x03\x04", HEADER_SIZE + 12 * RECORD_SIZE)  # a bad magic in the run
        os.close(fd)
        cursor = 10
    with RingLog.open(p) as log:
        assert log.cursor == cursor
