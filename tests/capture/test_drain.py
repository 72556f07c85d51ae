"""The Drainer: staging rings to the ring file, gap meta-records, flush/close, failures, and a stress race."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from vrrl_gpu import RingLog
from vrrl_gpu.capture import Drainer, DrainOptions, DrainStatistics, StagingRing, pack_reference
from vrrl_gpu.errors import BackendUnavailableError, DrainError, StagingError, VrrlIoError
from vrrl_gpu.format import MAX_CAPACITY, RECORD_DTYPE, RECORD_MAGIC, MetaOpcode, SlotStatus

U32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B97F4A7C15
TS0 = 1_700_000_000_000_000_000


def fields_for(seq: int, tag: int = 0) -> dict[str, object]:
    """Every field of the record for ``seq`` on ring ``tag``, derived from them (see ``expected``)."""
    h = (seq * GOLDEN) & ((1 << 64) - 1)
    return {
        "slot_idx": seq & U32,
        "tenant_id": tag,
        "opcode": (h >> 17) & 0xFFFF,
        "words": ((h >> 1) & U32, (h >> 33) & U32, (seq * 3) & U32, (seq ^ 0x5A5A5A5A) & U32),
        "epoch": seq >> 32,
        "slot_status": seq % 3,
        "timestamp_ns": TS0 + seq,
    }


def expected(seqs: npt.NDArray[np.uint64], tag: int = 0) -> npt.NDArray[np.void]:
    """The records ``fields_for`` describes, built with numpy (an independent path to the same bytes)."""
    h = seqs * np.uint64(GOLDEN)
    out = np.zeros(len(seqs), RECORD_DTYPE)
    out["magic"] = RECORD_MAGIC
    out["timestamp_ns"] = np.uint64(TS0) + seqs
    out["slot_idx"] = seqs & np.uint64(U32)
    out["tenant_id"] = tag
    out["opcode"] = (h >> np.uint64(17)) & np.uint64(0xFFFF)
    out["args"][:, 0] = (h >> np.uint64(1)) & np.uint64(U32)
    out["args"][:, 1] = (h >> np.uint64(33)) & np.uint64(U32)
    out["args"][:, 2] = (seqs * np.uint64(3)) & np.uint64(U32)
    out["args"][:, 3] = (seqs ^ np.uint64(0x5A5A5A5A)) & np.uint64(U32)
    out["epoch"] = seqs >> np.uint64(32)
    out["slot_status"] = seqs % np.uint64(3)
    return out


def seqs_of(records: npt.NDArray[np.void]) -> npt.NDArray[np.uint64]:
    return (records["epoch"].astype(np.uint64) << np.uint64(32)) | records["slot_idx"].astype(np.uint64)


def produce(ring: StagingRing, seq: int, tag: int = 0) -> None:
    ring.note_produced(seq)
    pack_reference(ring, seq, **fields_for(seq, tag))  # type: ignore[arg-type]


def make_ring(n: int = 16) -> StagingRing:
    return StagingRing.create(np.zeros(StagingRing.layout_size(n), np.uint8), n)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[RingLog]:
    with RingLog.open(tmp_path / "d.vrrl", capacity=4096) as lg:
        yield lg


def split(records: npt.NDArray[np.void]) -> tuple[npt.NDArray[np.void], npt.NDArray[np.void]]:
    meta = records["slot_status"] == SlotStatus.META
    return records[~meta], records[meta]


def gap_ranges(meta: npt.NDArray[np.void]) -> list[tuple[int, int]]:
    out = []
    for m in meta:
        assert int(m["opcode"]) == MetaOpcode.GAP
        a = [int(x) for x in m["args"]]
        out.append((a[0] | a[1] << 32, a[2] | a[3] << 32))
    return out


# ------------------------------------------------------------------ basics


def test_records_reach_the_log_in_order(log: RingLog) -> None:
    ring = make_ring()
    drainer = Drainer([ring], log).start()
    for s in range(40):
        produce(ring, s)
        if s % 10 == 9:
            drainer.flush()
    drainer.close()
    recs = log.records()
    assert recs.tobytes() == expected(np.arange(40, dtype=np.uint64)).tobytes()
    st = drainer.statistics()
    assert isinstance(st, DrainStatistics)
    assert (st.drained, st.dropped, st.gaps, st.last_sequence, st.positions) == (40, 0, 0, (39,), (40,))
    assert st.batches >= 4
    assert not st.running
    assert not st.failed
    assert ring.persisted_position == 40


def test_close_without_start_still_drains(log: RingLog) -> None:
    ring = make_ring()
    for s in range(5):
        produce(ring, s)
    d = Drainer([ring], log)
    d.close()
    d.close()  # idempotent
    assert len(log.records()) == 5
    assert d.closed


def test_orderly_close_loses_nothing_committed(log: RingLog) -> None:
    ring = make_ring(64)
    with Drainer([ring], log, options=DrainOptions(idle_min_s=0.5, idle_max_s=0.5, spin_polls=0)):
        for s in range(50):
            produce(ring, s)  # the thread sleeps; close() must still take all of these
    assert seqs_of(log.records()).tolist() == list(range(50))


def test_gap_meta_record_sits_where_the_records_were_lost(log: RingLog) -> None:
    ring = make_ring(8)
    d = Drainer([ring], log, clock=lambda: 123_456, options=DrainOptions(tenant_id=9))
    for s in range(3):
        produce(ring, s)
    d.flush()
    for s in range(3, 25):
        produce(ring, s)
    d.close()
    data, meta = split(log.records())
    assert seqs_of(data).tolist() == [0, 1, 2, *range(17, 25)]
    assert gap_ranges(meta) == [(3, 14)]
    assert int(meta[0]["timestamp_ns"]) == 123_456
    assert int(meta[0]["tenant_id"]) == 9
    # In the log the gap record comes right after sequence 2.
    assert int(log.records()[3]["opcode"]) == MetaOpcode.GAP
    st = d.statistics()
    assert (st.drained, st.dropped, st.gaps, st.last_sequence) == (11, 14, 1, (24,))
    assert st.peak_backlog >= 22


def test_final_drain_on_close_records_never_committed_sequences(log: RingLog) -> None:
    ring = make_ring(8)
    for s in (0, 1, 3):
        produce(ring, s)
    ring.note_produced(5)
    Drainer([ring], log).close()
    data, meta = split(log.records())
    assert seqs_of(data).tolist() == [0, 1, 3]
    assert gap_ranges(meta) == [(2, 1), (4, 2)]  # every claimed sequence is delivered or counted


def test_flush_final_false_waits_for_the_hole(log: RingLog) -> None:
    ring = make_ring(8)
    for s in (0, 2):
        produce(ring, s)
    d = Drainer([ring], log, options=DrainOptions(final_on_close=False))
    assert d.flush() == 1
    d.close()
    assert seqs_of(log.records()).tolist() == [0]
    assert ring.persisted_position == 1


def test_rings_are_merged_by_time_each_keeping_its_order(log: RingLog) -> None:
    host, dev = make_ring(16), make_ring(16)

    def put(ring: StagingRing, seq: int, tag: int, ts: int) -> None:
        f = fields_for(seq, tag)
        f["timestamp_ns"] = ts
        ring.note_produced(seq)
        pack_reference(ring, seq, **f)  # type: ignore[arg-type]

    for seq, ts in enumerate([10, 30, 50, 40]):  # the host ring's clock is not monotonic across streams
        put(host, seq, 1, ts)
    for seq, ts in enumerate([20, 35, 60]):
        put(dev, seq, 2, ts)
    with Drainer([host, dev], log):
        pass
    got = [(int(r["tenant_id"]), int(r["slot_idx"])) for r in log.records()]
    # Running maxima: host 10,30,50,50; dev 20,35,60 -> stable merge.
    assert got == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2), (1, 3), (2, 2)]


def test_options_are_validated() -> None:
    with pytest.raises(StagingError, match="batch_size"):
        DrainOptions(batch_size=0)
    with pytest.raises(StagingError, match="idle_min_s"):
        DrainOptions(idle_min_s=0.1, idle_max_s=0.01)
    ring = make_ring()
    with pytest.raises(StagingError, match="twice"):
        Drainer([ring, ring], None)  # type: ignore[arg-type]


def test_start_twice_and_after_close_are_errors(log: RingLog) -> None:
    d = Drainer([make_ring()], log).start()
    with pytest.raises(DrainError, match="already started"):
        d.start()
    d.close()
    with pytest.raises(DrainError, match="closed"):
        d.start()


def test_rings_added_later_and_host_records_in_time_order(log: RingLog) -> None:
    first = make_ring()
    with Drainer([], log, options=DrainOptions(idle_min_s=0.5, idle_max_s=0.5, spin_polls=0)) as d:
        d.add_ring(first)
        with pytest.raises(StagingError, match="already"):
            d.add_ring(first)
        second = make_ring()
        d.add_ring(second)
        produce(first, 0, tag=1)
        produce(second, 0, tag=2)
        host = expected(np.array([7], np.uint64), tag=3)
        d.write_host(host)  # the staging records committed before it go first
        d.sync()
        st = d.statistics()
        assert (st.drained, st.host_written, len(st.positions)) == (2, 1, 2)
    assert [int(r["tenant_id"]) for r in log.records()] == [1, 2, 3]


# ---------------------------------------------------------------- failures


def test_drain_thread_exception_surfaces_at_check_flush_and_close(tmp_path: Path) -> None:
    lg = RingLog.open(tmp_path / "f.vrrl", capacity=64)
    ring = make_ring()
    d = Drainer([ring], lg, options=DrainOptions(idle_max_s=1e-4)).start()
    lg.close()  # the next write fails in the thread
    produce(ring, 0)
    deadline = threading.Event()
    for _ in range(2000):
        if d.statistics().failed:
            break
        deadline.wait(0.005)
    with pytest.raises(DrainError, match="drain thread failed") as info:
        d.check()
    assert isinstance(info.value.__cause__, VrrlIoError)
    with pytest.raises(DrainError) as info2:
        d.flush()
    assert isinstance(info2.value.__cause__, VrrlIoError)
    with pytest.raises(DrainError) as info3:
        d.close()
    assert isinstance(info3.value.__cause__, VrrlIoError)
    d.close()  # idempotent: the error was reported once on close
    assert ring.persisted_position == 0  # the record stays in staging, for recovery


def test_host_writes_still_work_after_the_thread_died(tmp_path: Path) -> None:
    lg = RingLog.open(tmp_path / "h.vrrl", capacity=64)
    ring = make_ring()
    d = Drainer([ring], lg)
    d._error = RuntimeError("boom")  # as if the thread had died
    d.write_host(expected(np.array([1], np.uint64)))
    assert len(lg.records()) == 1
    with pytest.raises(DrainError, match="boom"):
        d.close()
    lg.close()
    with pytest.raises(DrainError, match="write failed") as info:
        d.write_host(expected(np.array([2], np.uint64)))
    assert isinstance(info.value.__cause__, VrrlIoError)
    with pytest.raises(DrainError, match="sync failed"):
        d.sync()


def test_flush_failure_in_the_caller_is_a_drain_error(tmp_path: Path) -> None:
    lg = RingLog.open(tmp_path / "g.vrrl", capacity=64)
    ring = make_ring()
    d = Drainer([ring], lg)
    produce(ring, 0)
    lg.close()
    with pytest.raises(DrainError, match="flush failed") as info:
        d.flush()
    assert isinstance(info.value.__cause__, VrrlIoError)


# ------------------------------------------------------------------ stress


def wait_for_slot(ring: StagingRing, seq: int) -> None:
    """The producers' rule: one writer per slot at a time, so ``seq`` waits until ``seq - N`` is committed.

    (Producers never wait for the consumer: lapping it is what the race is about.)
    """
    if seq >= ring.n_slots:
        while int(ring.commits[seq & ring.mask]) < seq - ring.n_slots + 1:
            time.sleep(0)


def run_race(
    tmp_path: Path,
    *,
    n_slots: int,
    producers: int,
    total: int,
    write: Callable[[StagingRing, int, int], None],
    chunk: int = 16,
    make: Callable[[int], StagingRing] = make_ring,
) -> tuple[npt.NDArray[np.void], DrainStatistics]:
    """``producers`` threads claim chunks of sequences and ``write(ring, first, count)`` them while a
    Drainer races them into a log; returns the log's records and the drainer's statistics."""
    ring = make(n_slots)
    claim_lock = threading.Lock()
    next_seq = [0]
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            while True:
                with claim_lock:
                    first = next_seq[0]
                    if first >= total:
                        return
                    count = min(chunk, total - first)
                    next_seq[0] = first + count
                    ring.note_produced(first + count - 1)
                write(ring, first, count)
        except BaseException as e:  # re-raised below: a failed producer fails the test
            errors.append(e)

    with RingLog.open(tmp_path / "stress.vrrl", capacity=MAX_CAPACITY) as lg:
        threads = [threading.Thread(target=producer) for _ in range(producers)]
        with Drainer([ring], lg, options=DrainOptions(batch_size=n_slots, spin_polls=1000)) as drainer:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        return lg.records(), drainer.statistics()


def check_race(
    records: npt.NDArray[np.void], stats: DrainStatistics, total: int, *, device_clock: bool = False
) -> None:
    data, meta = split(records)
    seqs = seqs_of(data)
    want = expected(seqs)
    if device_clock:
        # The twin stamps records with its own clock (CLOCK_REALTIME), not with the host's value.
        stamps = data["timestamp_ns"]
        assert bool(np.all((stamps > np.uint64(TS0)) & (stamps < np.uint64(time.time_ns()))))
        want["timestamp_ns"] = stamps
    # Not one torn or mixed record: every byte follows from the record's own sequence number.
    assert data.tobytes() == want.tobytes()
    assert bool(np.all(np.diff(seqs.astype(np.int64)) > 0))
    gaps = gap_ranges(meta)
    # Delivered and lost sequences partition 0..total-1 exactly.
    covered = np.zeros(total, np.int64)
    covered[seqs.astype(np.int64)] += 1
    for first, count in gaps:
        covered[first : first + count] += 1
    assert bool(np.all(covered == 1))
    assert stats.drained == len(data)
    assert stats.dropped == sum(c for _, c in gaps)
    assert stats.drained + stats.dropped == total
    assert stats.gaps == len(gaps)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    # Hand the GIL around often, so producers and the drainer really interleave on a small ring.
    old = sys.getswitchinterval()
    sys.setswitchinterval(2e-5)
    yield
    sys.setswitchinterval(old)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_switching")
def test_stress_numpy_producers_race_the_drainer(tmp_path: Path) -> None:
    total = 1_000_000

    def write(ring: StagingRing, first: int, count: int) -> None:
        for s in range(first, first + count):
            wait_for_slot(ring, s)
            pack_reference(ring, s, **fields_for(s))  # type: ignore[arg-type]

    records, stats = run_race(tmp_path, n_slots=128, producers=4, total=total, write=write)
    check_race(records, stats, total)
    assert stats.drained > 0
    assert stats.dropped > 0  # a 128-slot ring against four producers: the race really happened


@pytest.mark.slow
@pytest.mark.usefixtures("fast_switching")
def test_stress_twin_pack_kernels_race_the_drainer(tmp_path: Path) -> None:
    """The same race with the real pack kernel, compiled by the twin backend, on four twin streams."""
    backends = pytest.importorskip("vrrl_gpu.backends")
    try:
        backend = backends.get_backend("twin")
    except BackendUnavailableError as e:
        pytest.skip(f"the twin backend is not available here: {e}")
    total = 250_000  # a twin launch costs ~20 us of host time; the numpy race above covers 1,000,000
    allocs: list[Any] = []
    streams: dict[int, Any] = {}
    stream_lock = threading.Lock()

    def write(ring: StagingRing, first: int, count: int) -> None:
        me = threading.get_ident()
        with stream_lock:
            if me not in streams:
                streams[me] = backend.new_stream()
            if not allocs:
                raise AssertionError("ring pointers missing")
        stream = streams[me]
        ptrs = allocs[0]
        for s in range(first, first + count):
            wait_for_slot(ring, s)  # host side, before the launch: the write happens after s - N committed
            f = fields_for(s)
            backend.pack(
                ptrs,
                s,
                slot_idx=f["slot_idx"],
                tenant_id=f["tenant_id"],
                opcode=f["opcode"],
                words=f["words"],
                epoch=f["epoch"],
                slot_status=f["slot_status"],
                stream=stream,
            )
        backend.synchronize(stream)

    def ring_factory(n: int) -> StagingRing:
        alloc = backend.alloc_pinned(StagingRing.layout_size(n))
        ring = StagingRing.create(alloc.host, n)
        allocs.append(backends.RingPointers.from_staging(alloc, ring))
        allocs.append(alloc)
        return ring

    try:
        records, stats = run_race(
            tmp_path, n_slots=128, producers=4, total=total, write=write, make=ring_factory
        )
    finally:
        backend.close()
    check_race(records, stats, total, device_clock=True)
    assert stats.drained > 0
