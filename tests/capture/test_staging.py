"""The staging ring: layout, the reference packer, the vectorised seqlock consumer, /dev/shm segments."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vrrl_gpu.capture import (
    CONTROL_DTYPE,
    STAGING_MAGIC,
    ShmSegment,
    StagingRing,
    _shm,
    gap_record,
    list_segments,
    owner_alive,
    pack_reference,
    pid_alive,
    recovered_record,
)
from vrrl_gpu.errors import RecordValueError, RecoverError, StagingError, StagingSpaceError
from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC, MetaOpcode, SlotStatus

U32 = 0xFFFFFFFF


def fields_for(seq: int) -> dict[str, object]:
    """Every field of the record for ``seq``, derived from it (so any record can be checked alone)."""
    h = (seq * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)
    return {
        "slot_idx": seq & U32,
        "tenant_id": (h >> 7) & 0xFF,
        "opcode": (h >> 17) & 0xFFFF,
        "words": ((h >> 1) & U32, (h >> 33) & U32, (seq * 3) & U32, (seq ^ 0x5A5A5A5A) & U32),
        "epoch": seq >> 32,
        "slot_status": seq % 3,
        "timestamp_ns": 1_700_000_000_000_000_000 + seq,
    }


def produce(ring: StagingRing, seq: int, *, claim: bool = True) -> None:
    if claim:
        ring.note_produced(seq)
    pack_reference(ring, seq, **fields_for(seq))  # type: ignore[arg-type]


def expected_array(seqs: list[int] | range) -> np.ndarray:
    out = np.zeros(len(seqs), RECORD_DTYPE)
    for i, s in enumerate(seqs):
        f = fields_for(s)
        out[i] = (
            RECORD_MAGIC,
            f["timestamp_ns"],
            f["slot_idx"],
            f["tenant_id"],
            f["opcode"],
            f["words"],
            f["epoch"],
            f["slot_status"],
            0,
            0,
            0,
        )
    return out


def seqs_of(records: np.ndarray) -> list[int]:
    return [int(e) << 32 | int(s) for e, s in zip(records["epoch"], records["slot_idx"], strict=True)]


def make_ring(n: int = 8) -> StagingRing:
    return StagingRing.create(np.zeros(StagingRing.layout_size(n), np.uint8), n)


# ------------------------------------------------------------------ layout


def test_layout_matches_the_contract() -> None:
    assert StagingRing.layout_size(8) == 4096 * 2  # 4096 + 576, rounded up
    assert StagingRing.layout_size(1 << 16) == 4096 + 72 * (1 << 16)
    ring = make_ring(64)
    assert (ring.commits_offset, ring.records_offset, ring.mask) == (4096, 4096 + 8 * 64, 63)
    assert ring.records.dtype == RECORD_DTYPE
    assert ring.records.shape == (64,)
    assert ring.commits.dtype == np.dtype("<u8")
    assert ring.commits.shape == (64,)
    offsets = {name: CONTROL_DTYPE.fields[name][1] for name in CONTROL_DTYPE.names}  # type: ignore[index, union-attr]
    assert offsets == {
        "magic": 0,
        "version": 8,
        "n_slots": 12,
        "owner_pid": 16,
        "owner_uid": 20,
        "consumer_position": 24,
        "producer_count": 32,
        "created_ns": 40,
        "flags": 48,
        "log_path": 64,
    }
    assert CONTROL_DTYPE.itemsize == 4096


def test_create_writes_the_control_block() -> None:
    buf = np.full(StagingRing.layout_size(16), 0xAB, np.uint8)
    ring = StagingRing.create(buf, 16, log_path="/tmp/x.vrrl", owner_pid=4242)
    assert bytes(buf[:8]) == STAGING_MAGIC
    assert int(buf[8:12].view("<u4")[0]) == 1
    assert int(buf[12:16].view("<u4")[0]) == 16
    assert (ring.owner_pid, ring.owner_uid, ring.log_path) == (4242, os.getuid(), "/tmp/x.vrrl")
    assert not ring.commits.any()
    assert not ring.buffer[ring.records_offset :].any()
    again = StagingRing.attach(buf)
    assert (again.n_slots, again.log_path, again.consumer_position) == (16, "/tmp/x.vrrl", 0)


@pytest.mark.parametrize("n", [0, 4, 7, 12, 1 << 25, True, 8.0])
def test_bad_slot_counts_are_refused(n: object) -> None:
    with pytest.raises(StagingError, match=r"power of two|integer"):
        StagingRing.create(np.zeros(1 << 16, np.uint8), n)  # type: ignore[arg-type]


def test_bad_buffers_are_refused() -> None:
    with pytest.raises(StagingError, match="needs 8,192 bytes"):
        StagingRing.create(np.zeros(4096, np.uint8), 8)
    with pytest.raises(StagingError, match="uint8"):
        StagingRing.create(np.zeros(2048, np.uint32), 8)
    with pytest.raises(StagingError, match="aligned"):
        StagingRing.create(np.zeros(8193, np.uint8)[1:], 8)
    ro = np.zeros(8192, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(StagingError, match="read-only"):
        StagingRing.create(ro, 8)
    with pytest.raises(StagingError, match="not a vrrl staging ring"):
        StagingRing.attach(np.zeros(8192, np.uint8))
    buf = make_ring(64).buffer
    with pytest.raises(StagingError, match="truncated"):
        StagingRing.attach(buf[:8192].copy())
    buf[8] = 9
    with pytest.raises(StagingError, match="version"):
        StagingRing.attach(buf)


# ------------------------------------------------------------ reference packer


def test_pack_reference_writes_the_record_then_the_commit_word() -> None:
    ring = make_ring(8)
    produce(ring, 11)
    assert ring.records[3].tobytes() == expected_array([11]).tobytes()
    assert int(ring.commits[3]) == 12
    assert ring.records["failure_class"][3] == 0
    assert ring.records["output_digest"][3] == 0
    with pytest.raises(RecordValueError, match="out of range"):
        pack_reference(
            ring,
            0,
            slot_idx=1 << 32,
            tenant_id=0,
            opcode=0,
            words=(0, 0, 0, 0),
            epoch=0,
            slot_status=0,
            timestamp_ns=0,
        )
    with pytest.raises(RecordValueError, match="4 integers"):
        pack_reference(
            ring, 0, slot_idx=0, tenant_id=0, opcode=0, words=(0, 0), epoch=0, slot_status=0, timestamp_ns=0
        )


def test_meta_records() -> None:
    g = gap_record(5 + (7 << 32), 3 + (1 << 33), timestamp_ns=99, tenant_id=4)[0]
    assert int(g["opcode"]) == MetaOpcode.GAP
    assert int(g["slot_status"]) == SlotStatus.META
    assert list(g["args"]) == [5, 7, 3, 2]
    assert int(g["timestamp_ns"]) == 99
    assert int(g["tenant_id"]) == 4
    assert int(g["magic"]) == RECORD_MAGIC
    r = recovered_record(1234, 10, timestamp_ns=1)[0]
    assert int(r["opcode"]) == MetaOpcode.RECOVERED
    assert list(r["args"]) == [1234, 10, 0, 0]


# ---------------------------------------------------------------- consumer


def test_empty_ring_gives_nothing() -> None:
    ring = make_ring()
    r = ring.consume()
    assert (r.count, r.dropped, r.gaps, r.next_seq, r.backlog) == (0, 0, [], 0, 0)


def test_partial_commit_stops_at_the_first_uncommitted_slot() -> None:
    ring = make_ring()
    for s in (0, 1, 3, 4):
        produce(ring, s)
    ring.note_produced(2)
    r = ring.consume()
    assert seqs_of(r.records) == [0, 1]
    assert r.dropped == 0
    assert r.next_seq == 2
    assert r.records.tobytes() == expected_array([0, 1]).tobytes()
    produce(ring, 2)
    r = ring.consume()
    assert seqs_of(r.records) == [2, 3, 4]
    assert r.dropped == 0


def test_record_written_but_not_committed_is_not_taken() -> None:
    ring = make_ring()
    produce(ring, 0)
    # The record of sequence 1 is in the slot, its commit word is not: not ready.
    f = fields_for(1)
    ring.records[1] = expected_array([1])[0]
    assert f["slot_idx"] == 1
    r = ring.consume()
    assert seqs_of(r.records) == [0]
    assert r.next_seq == 1


def test_wrap_around_the_end_of_the_ring() -> None:
    ring = make_ring(8)
    for s in range(6):
        produce(ring, s)
    assert ring.consume().count == 6
    for s in range(6, 13):
        produce(ring, s)
    r = ring.consume()
    assert seqs_of(r.records) == list(range(6, 13))
    assert r.dropped == 0
    assert r.records.tobytes() == expected_array(range(6, 13)).tobytes()


def test_max_records_is_respected() -> None:
    ring = make_ring(16)
    for s in range(10):
        produce(ring, s)
    assert seqs_of(ring.consume(3).records) == [0, 1, 2]
    assert seqs_of(ring.consume(100).records) == list(range(3, 10))
    with pytest.raises(StagingError, match="at least 1"):
        ring.consume(0)


@pytest.mark.parametrize("claim", [True, False], ids=["claims-tracked", "commit-words-only"])
def test_lap_drops_exactly_the_overwritten_sequences(claim: bool) -> None:
    ring = make_ring(8)
    for s in range(3):
        produce(ring, s, claim=claim)
    assert ring.consume(2).count == 2  # position 2
    for s in range(3, 30):
        produce(ring, s, claim=claim)
    r = ring.consume()
    # 30 produced, 2 drained, the last 8 (22..29) intact: 2..21 lost.
    assert r.gaps == [(2, 20)]
    assert r.dropped == 20
    assert seqs_of(r.records) == list(range(22, 30))
    assert r.records.tobytes() == expected_array(range(22, 30)).tobytes()
    assert r.gap_positions == [0]
    assert r.next_seq == 30


def test_out_of_order_lap_jumps_to_the_oldest_intact_sequence() -> None:
    ring = make_ring(8)
    # Sequences 0..15 claimed; producers finished 9, 10, 12 and 5, 6, 7 only.
    for s in (5, 6, 7, 9, 10, 12):
        produce(ring, s, claim=False)
    r = ring.consume()
    # Slot 0 still empty: wait (a producer may still be writing 0).
    assert r.count == 0
    assert r.next_seq == 0
    produce(ring, 0, claim=False)
    r = ring.consume()
    # 0 taken; slot 1 holds 9 (> 1): lapped. The oldest sequence still present is 5.
    assert seqs_of(r.records) == [0, 5, 6, 7]
    assert r.gaps == [(1, 4)]
    assert r.gap_positions == [1]
    # Slot 0 holds 0 < 8: 8 is not written yet: wait.
    assert r.next_seq == 8


def test_claims_far_ahead_do_not_drop_intact_records() -> None:
    ring = make_ring(8)
    for s in range(8):
        produce(ring, s)
    ring.note_produced(40)  # the host enqueued far ahead of the device: nothing is overwritten yet
    r = ring.consume()
    assert seqs_of(r.records) == list(range(8))
    assert r.dropped == 0
    assert r.backlog == 41


def test_torn_copy_is_discarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer overwrites slots while the consumer copies them: the re-read catches it."""
    ring = make_ring(8)
    for s in range(8):
        produce(ring, s, claim=False)
    calls = []

    def race(first: int, count: int) -> None:
        calls.append((first, count))
        if len(calls) == 1:
            # Mid-copy, slots 3 and 4 get sequences 11 and 12 (the copy holds a mix of old and new).
            ring.records[3]["opcode"] = 0xBAD
            produce(ring, 11, claim=False)
            produce(ring, 12, claim=False)

    monkeypatch.setattr(ring, "_copy_hook", race)
    r = ring.consume()
    assert calls[0] == (0, 8)
    # 0..2 kept (words unchanged); 3 and 4 were overwritten mid-copy, so the whole copy from 3 on is
    # discarded; the consumer jumps to the oldest sequence still in the ring (5) and waits at 8.
    got = seqs_of(r.records)
    assert got == [0, 1, 2, 5, 6, 7]
    assert r.gaps == [(3, 2)]
    assert r.next_seq == 8
    assert r.records.tobytes() == expected_array(got).tobytes()
    assert int(r.records["opcode"].max()) != 0xBAD


def test_in_progress_overwrite_is_caught_by_the_invalidated_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A newer record half-written, its commit not stored yet: the producer zeroed the word first."""
    ring = make_ring(8)
    for s in range(8):
        produce(ring, s)

    def race(first: int, count: int) -> None:
        ring.commits[0] = 0  # the producer of sequence 8 invalidates slot 0 ...
        ring.records[0]["opcode"] = 0xBAD  # ... and its record write has begun

    monkeypatch.setattr(ring, "_copy_hook", race)
    r = ring.consume()
    assert r.count == 0  # the copy from slot 0 on is discarded; slot 0 is not ready any more
    assert r.next_seq == 0
    monkeypatch.setattr(ring, "_copy_hook", None)
    produce(ring, 8)
    r = ring.consume()
    assert r.gaps == [(0, 1)]
    assert seqs_of(r.records) == list(range(1, 9))
    assert r.records.tobytes() == expected_array(range(1, 9)).tobytes()


def test_older_writer_clobbering_a_newer_record_is_never_emitted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer more than N behind (a stalled stream) overwrites a newer record with an older one."""
    ring = make_ring(8)
    for s in range(8):
        produce(ring, s)
    assert ring.consume().count == 8
    for s in range(8, 16):
        produce(ring, s)
    calls = []

    def race(first: int, count: int) -> None:
        calls.append(first)
        if len(calls) == 1:
            pack_reference(ring, 2, **fields_for(2))  # type: ignore[arg-type]  # sequence 2 lands in slot 2

    monkeypatch.setattr(ring, "_copy_hook", race)
    r = ring.consume()
    # 8, 9 kept; slot 2 (sequence 10) changed under the copy: that copy is dropped. The consumer waits
    # at 10 (slot 2 now says sequence 2, an older one, so 10 might still come).
    assert seqs_of(r.records) == [8, 9]
    assert r.next_seq == 10
    r = ring.consume(final=True)
    assert r.gaps == [(10, 1)]
    assert seqs_of(r.records) == list(range(11, 16))
    assert r.records.tobytes() == expected_array(range(11, 16)).tobytes()


def test_final_drain_skips_never_committed_sequences() -> None:
    ring = make_ring(8)
    for s in (0, 1, 3, 5):
        produce(ring, s)
    ring.note_produced(7)  # 6 and 7 claimed, never committed (the device died)
    r = ring.consume()
    assert seqs_of(r.records) == [0, 1]
    assert r.next_seq == 2
    r = ring.consume(final=True)
    assert seqs_of(r.records) == [3, 5]
    assert r.gaps == [(2, 1), (4, 1), (6, 2)]  # every claimed sequence is delivered or counted
    assert r.gap_positions == [0, 1, 2]
    assert r.next_seq == 8
    assert ring.consume(final=True).count == 0


def test_corrupt_commit_word_is_an_error() -> None:
    ring = make_ring(8)
    produce(ring, 0)
    ring.commits[1] = 5  # sequence 4 can never live in slot 1
    with pytest.raises(StagingError, match="slot 1"):
        ring.consume()
    assert ring.consumer_position == 0
    assert ring.persisted_position == 0


def test_position_persistence_and_backlog() -> None:
    ring = make_ring(16)
    for s in range(5):
        produce(ring, s)
    assert ring.backlog() == 5
    r = ring.consume(2, persist=False)
    assert r.next_seq == 2
    assert ring.consumer_position == 2
    assert ring.persisted_position == 0
    ring.persist_position()
    assert ring.persisted_position == 2
    assert ring.backlog() == 3
    again = StagingRing.attach(ring.buffer)
    assert seqs_of(again.consume().records) == [2, 3, 4]
    assert again.persisted_position == 5
    assert again.backlog() == 0


# ------------------------------------------------ property: against a scalar model


class ConsumerModel(RuleBasedStateMachine):
    """Random multi-producer histories; the vectorised consumer must match a one-slot-at-a-time model."""

    @initialize(n=st.sampled_from([8, 16]))
    def setup(self, n: int) -> None:
        self.n = n
        self.ring = make_ring(n)
        self.slot_seq: dict[int, int] = {}  # slot -> sequence whose record is there, committed
        self.claimed = 0
        self.pending: list[int] = []  # claimed, not yet committed
        self.pos = 0
        self.seen: list[int] = []
        self.lost: list[int] = []

    @rule(k=st.integers(1, 12))
    def claim(self, k: int) -> None:
        for _ in range(k):
            self.ring.note_produced(self.claimed)
            self.pending.append(self.claimed)
            self.claimed += 1

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def commit_some(self, data: st.DataObject) -> None:
        picks = data.draw(st.lists(st.sampled_from(self.pending), min_size=1, max_size=6, unique=True))
        for s in picks:
            self.pending.remove(s)
            produce(self.ring, s, claim=False)
            self.slot_seq[s % self.n] = s

    def model_consume(self, limit: int, final: bool) -> tuple[list[int], list[int]]:
        s, out, lost = self.pos, [], []
        while len(out) < limit:
            w = self.slot_seq.get(s % self.n)
            if w == s:
                out.append(s)
                s += 1
                continue
            if (w is not None and w > s) or final:
                later = [v for v in self.slot_seq.values() if v >= s]
                if not later:
                    if final:
                        lost.extend(range(s, self.claimed))
                        s = max(s, self.claimed)
                    break
                lost.extend(range(s, min(later)))
                s = min(later)
                continue
            break
        self.pos = s
        return out, lost

    @rule(limit=st.integers(1, 40), final=st.booleans())
    def consume(self, limit: int, final: bool) -> None:
        r = self.ring.consume(limit, final=final)
        want, lost = self.model_consume(limit, final)
        got = seqs_of(r.records)
        assert got == want
        assert r.records.tobytes() == expected_array(got).tobytes()
        assert [s for a, c in r.gaps for s in range(a, a + c)] == lost
        assert r.dropped == len(lost)
        assert r.next_seq == self.pos
        self.seen += got
        self.lost += lost

    @invariant()
    def every_sequence_is_delivered_or_counted_once(self) -> None:
        if hasattr(self, "ring"):
            assert sorted(self.seen + self.lost) == list(range(self.pos))
            assert self.ring.persisted_position == self.pos


ConsumerModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_consumer_matches_model = ConsumerModel.TestCase


# ------------------------------------------------------------ shm segments


def test_segment_create_mode_and_reopen(tmp_path: Path) -> None:
    n = 64
    seg = ShmSegment.create(None, StagingRing.layout_size(n), directory=tmp_path)
    try:
        name = os.path.basename(seg.path)
        assert name.startswith(f"vrrl-{os.getuid()}-{os.getpid()}-")
        assert name.endswith(".stg")
        assert stat.S_IMODE(os.stat(seg.path).st_mode) == 0o600
        assert os.stat(seg.path).st_blocks * 512 >= seg.nbytes  # reserved, not sparse
        ring = StagingRing.create(seg.array, n, log_path="/logs/run.vrrl")
        for s in range(10):
            produce(ring, s)
        assert ring.consume(4).count == 4
        infos = list_segments(tmp_path)
        assert len(infos) == 1
        info = infos[0]
        assert not isinstance(info, StagingError)
        assert (info.owner_pid, info.n_slots, info.consumer_position, info.producer_count) == (
            os.getpid(),
            n,
            4,
            10,
        )
        assert info.mine
        assert info.owner_alive
        assert info.log_path == "/logs/run.vrrl"
    finally:
        seg.close()
        seg.close()  # idempotent
    assert seg.closed
    # Another process maps the same file and reads the rest.
    code = (
        "import json, sys\n"
        "from vrrl_gpu.capture import ShmSegment\n"
        "seg = ShmSegment.open(sys.argv[1])\n"
        "r = seg.ring().consume()\n"
        "print(json.dumps({'seqs': [int(x) for x in r.records['slot_idx']],"
        " 'bytes': r.records.tobytes().hex(), 'log': seg.info().log_path,"
        " 'pos': seg.ring().persisted_position}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, seg.path], check=True, capture_output=True, text=True)
    got = json.loads(out.stdout)
    assert got["seqs"] == list(range(4, 10))
    assert got["pos"] == 10
    assert got["log"] == "/logs/run.vrrl"
    assert bytes.fromhex(got["bytes"]) == expected_array(range(4, 10)).tobytes()
    with ShmSegment.open(seg.path) as again:
        assert again.info().consumer_position == 10
        again.unlink()
    assert not os.path.exists(seg.path)


def test_segment_views_outliving_close_stay_valid(tmp_path: Path) -> None:
    seg = ShmSegment.create(tmp_path / "vrrl-x.stg", StagingRing.layout_size(8))
    ring = StagingRing.create(seg.array, 8)
    seg.close()  # the ring still holds views: the mapping lives on with them
    produce(ring, 0)
    assert ring.consume().count == 1
    with pytest.raises(StagingError, match="closed"):
        _ = seg.array


def test_full_tmpfs_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_shm.os, "posix_fallocate", full)
    with pytest.raises(StagingSpaceError, match="cannot reserve") as info:
        ShmSegment.create(None, 1 << 20, directory=tmp_path)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, OSError)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_fallocate_unsupported_falls_back_to_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(_shm.os, "posix_fallocate", unsupported)
    with ShmSegment.create(None, 3 << 20, directory=tmp_path) as seg:
        assert os.stat(seg.path).st_size == 3 << 20
        assert not seg.array.any()


def test_existing_path_is_not_clobbered(tmp_path: Path) -> None:
    p = tmp_path / "vrrl-taken.stg"
    p.write_bytes(b"mine")
    with pytest.raises(OSError, match="cannot create"):
        ShmSegment.create(p, 8192)
    assert p.read_bytes() == b"mine"


def test_another_users_segment_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seg = ShmSegment.create(None, StagingRing.layout_size(8), directory=tmp_path)
    StagingRing.create(seg.array, 8)
    seg.close()
    me = os.getuid()
    monkeypatch.setattr(_shm.os, "getuid", lambda: me + 1)
    with pytest.raises(RecoverError, match=f"belongs to uid {me}, you are uid {me + 1}"):
        ShmSegment.open(seg.path)
    [info] = list_segments(tmp_path)
    assert not isinstance(info, StagingError)
    assert not info.mine


def test_list_segments_reports_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "vrrl-junk.stg").write_bytes(b"\0" * 4096)
    (tmp_path / "vrrl-short.stg").write_bytes(b"VRRLSTG1")
    (tmp_path / "other.stg").write_bytes(b"")
    found = list_segments(tmp_path)
    assert len(found) == 2
    assert all(isinstance(f, StagingError) for f in found)
    with pytest.raises(StagingError, match="at least 4096"):
        ShmSegment.open(tmp_path / "vrrl-short.stg")
    with pytest.raises(StagingError, match="not a vrrl segment"):
        ShmSegment.open(tmp_path / "vrrl-junk.stg")


def test_owner_liveness() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(-5)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    import time

    assert owner_alive(os.getpid(), time.time_ns())
    # A pid whose process started long after the segment was made was reused: the owner is gone.
    assert not owner_alive(os.getpid(), 0)
