"""The Backend contract as one suite (in the spirit of zarr's ``testing/store.py``): every test here runs
against the twin in CI (``TestTwinBackend`` in test_twin.py) and against CuPy under ``-m gpu``
(``TestCupyBackend`` in test_gpu_device.py), so "the twin behaves like CUDA" is what the GPU run checks.

A subclass provides the ``backend`` fixture (shared by the class) and ``run_scenario``: the tests that poison
the context (a sticky fault) are scenarios, functions of a new backend that return what they saw as a JSON
object; the twin runs them in-process, CuPy in a child process (a sticky error poisons the whole process). The
child prints its result on one marked line (tests/helpers/child.py), so device printf output cannot be
taken for it.

Run a scenario by hand: ``python -m tests.backends.contract SCENARIO [ARG]`` (the CuPy backend).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.child import print_result
from tests.helpers.strategies import KNOWN_STATUSES, records
from vrrl_gpu import Record
from vrrl_gpu.backends import Backend, HostAllocation, RingPointers
from vrrl_gpu.capture import ShmSegment, StagingRing, pack_reference
from vrrl_gpu.errors import KernelArgumentError
from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC, FailureClass, SlotStatus

NO_POISON = 0xFFFFFFFF
FAULT_ILLEGAL_ADDRESS, FAULT_TRAP, FAULT_ASSERT = 1, 2, 3
#: What the after-report cells hold before a launch; the kernel would write 1 there if the thread went on.
SENTINEL = 0x5A5A5A5A
#: A user kernel with a real store through a wild pointer (no simulation macro).
WILD_STORE_CU = Path(__file__).with_name("wild_store.cu")
#: A kernel whose writers lap a small device-sequenced ring while one of them holds its write.
LAPPING_WRITERS_CU = Path(__file__).with_name("lapping_writers.cu")
#: An address no CUDA context or CPU process maps (the zero page), for the wild store.
WILD_ADDRESS = 0x10


def make_ring(b: Backend, n: int) -> tuple[HostAllocation, StagingRing, RingPointers]:
    mem = b.alloc_pinned(StagingRing.layout_size(n))
    ring = StagingRing.create(mem.host, n)  # zeroes the commit words and records (pinned memory is not)
    return mem, ring, RingPointers.from_staging(mem, ring)


def flag(b: Backend) -> tuple[HostAllocation, npt.NDArray[np.uint32]]:
    mem = b.alloc_pinned(64)
    mem.host[:] = 0
    return mem, mem.host[:4].view(np.uint32)


def launch_wait(b: Backend, f: HostAllocation, stream: object = None) -> None:
    """Park ``stream`` until the flag is set (60 s safety timeout)."""
    b.launch(b.load("vrrl_demo.cu", "vrrl_demo_wait"), 1, 1, (f.device_ptr, 60 * 10**9), stream=stream)


def code_of(exc: BaseException) -> int | None:
    """The cudaError_t of a backend's CUDA error (the twin's ``cuda_error_code``, CuPy's ``status``)."""
    code = getattr(exc, "cuda_error_code", getattr(exc, "status", None))
    return int(code) if isinstance(code, int) else None


def raised_code(call: Callable[[], object]) -> int | str | None:
    """The CUDA code ``call`` raised, the exception's type name if it had none, or None if it returned."""
    try:
        call()
    except Exception as e:  # the observation is the point: which error, if any
        code = code_of(e)
        return code if code is not None else type(e).__name__
    return None


# ---- scenarios: they poison the context, so each gets a backend of its own -----------------------------


def scenario_sticky_fault(b: Backend, fault_kind: int) -> dict[str, Any]:
    f_mem, f = flag(b)
    _mem, ring, ptrs = make_ring(b, 64)
    axpy = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = b.alloc_device(4 * 64)
    s = b.new_stream()
    launch_wait(b, f_mem, stream=s)  # park the stream: nothing below has run yet
    b.pack(ptrs, 0, slot_idx=0, tenant_id=0, opcode=1, words=(0, 0, 0, 0), epoch=0, stream=s)
    at_call = raised_code(lambda: b.launch(axpy, 1, 64, (y, y, 1.0, 64, fault_kind), stream=s))
    b.pack(ptrs, 1, slot_idx=1, tenant_id=0, opcode=1, words=(0, 0, 0, 0), epoch=0, stream=s)
    parked = b.stream_query(s)
    f[0] = 1
    at_sync = raised_code(lambda: b.synchronize(s))
    out: dict[str, Any] = {
        "at_call": at_call,
        "parked_query": parked,
        "at_sync": at_sync,
        "query_after": b.stream_query(s),
        "commits": [int(c) for c in ring.commits[:2]],
        "magic_0": int(ring.records[0]["magic"]),  # host memory still reads after the fault
        "later": {
            "launch": raised_code(lambda: b.launch(axpy, 1, 1, (y, y, 1.0, 1, 0), stream=s)),
            "alloc_pinned": raised_code(lambda: b.alloc_pinned(64)),
            "alloc_counter": raised_code(lambda: b.alloc_counter()),
            "new_stream": raised_code(lambda: b.new_stream()),
            "synchronize": raised_code(lambda: b.synchronize()),
        },
    }
    return out


def scenario_fault_poisons_every_stream(b: Backend, fault_kind: int) -> dict[str, Any]:
    s1, s2 = b.new_stream(), b.new_stream()
    axpy = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
    y = b.alloc_device(4)
    b.launch(axpy, 1, 1, (y, y, 1.0, 1, fault_kind), stream=s1)
    return {
        "s1_sync": raised_code(lambda: b.synchronize(s1)),
        "s2_query": b.stream_query(s2),
        "s2_sync": raised_code(lambda: b.synchronize(s2)),
    }


def scenario_real_wild_store(b: Backend, fault_at: int) -> dict[str, Any]:
    _mem, ring, ptrs = make_ring(b, 64)
    k = b.load(WILD_STORE_CU, "wild_store")
    out = b.alloc_device(4 * 1024)
    b.pack(ptrs, 0, slot_idx=0, tenant_id=0, opcode=1, words=(0, 0, 0, 0), epoch=0)
    b.launch(k, 4, 256, (out, 0, 1024, NO_POISON - 1))  # a clean run first: nothing faults
    clean = raised_code(lambda: b.synchronize())
    b.launch(k, 4, 256, (out, WILD_ADDRESS, 1024, fault_at))
    b.pack(ptrs, 1, slot_idx=1, tenant_id=0, opcode=1, words=(0, 0, 0, 0), epoch=0)
    return {
        "clean": clean,
        "at_sync": raised_code(lambda: b.synchronize()),
        "commits": [int(c) for c in ring.commits[:2]],
        "later_launch": raised_code(lambda: b.launch(k, 1, 1, (out, 0, 1, NO_POISON - 1))),
        "later_sync": raised_code(lambda: b.synchronize()),
    }


SCENARIOS: dict[str, Callable[[Backend, int], dict[str, Any]]] = {
    "sticky_fault": scenario_sticky_fault,
    "real_wild_store": scenario_real_wild_store,
    "fault_poisons_every_stream": scenario_fault_poisons_every_stream,
}


class BackendContract:
    """The tests every backend passes; subclasses give the ``backend`` fixture and ``run_scenario``."""

    #: The codes a ``__trap()`` may surface as (the twin: 719; GPUs: 710, 715 or 719 by architecture).
    TRAP_CODES: ClassVar[frozenset[int]] = frozenset({719})
    #: How far a calibrated record timestamp may be from the host clock around the launch.
    CLOCK_SLACK_NS: ClassVar[int] = 0
    _offsets: ClassVar[dict[int, int]] = {}

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError

    def run_scenario(self, name: str, arg: int) -> dict[str, Any]:
        raise NotImplementedError

    # ---- records ------------------------------------------------------------------------------------

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(seq=st.integers(0, 2**64 - 2), rec=records(slot_status=KNOWN_STATUSES))
    def test_pack_is_byte_identical_to_the_reference_packer(
        self, backend: Backend, seq: int, rec: Record
    ) -> None:
        n = 8
        _mem, ring, ptrs = make_ring(backend, n)
        fields: dict[str, Any] = {
            "slot_idx": rec.slot_idx,
            "tenant_id": rec.tenant_id,
            "opcode": rec.opcode,
            "words": rec.args,
            "epoch": rec.epoch,
            "slot_status": rec.slot_status,
        }
        offset = self._offset(backend)
        t0 = time.time_ns()
        backend.pack(ptrs, seq, ts_offset=offset, **fields)
        backend.synchronize()
        t1 = time.time_ns()
        i = seq & ring.mask
        ts = int(ring.records[i]["timestamp_ns"])
        assert t0 - self.CLOCK_SLACK_NS <= ts <= t1 + self.CLOCK_SLACK_NS
        ref_buf = np.zeros(StagingRing.layout_size(n), np.uint8)
        pack_reference(StagingRing.create(ref_buf, n), seq, timestamp_ns=ts, **fields)
        lo = ring.commits_offset
        assert ring.buffer[lo : ref_buf.nbytes].tobytes() == ref_buf[lo:].tobytes()
        assert int(ring.commits[i]) == seq + 1

    def _offset(self, backend: Backend) -> int:
        # One calibration per backend: the round trip checks the record, not the calibration's cost.
        key = id(backend)
        if key not in self._offsets:
            type(self)._offsets = {key: backend.calibrate()}
        return self._offsets[key]

    def test_pack_writes_the_record_and_commit_word_at_raw_offsets(self, backend: Backend) -> None:
        # Independent of _staging: the expected bytes from RECORD_DTYPE and raw offsets.
        n = 16
        mem = backend.alloc_pinned(4096 + 72 * n)
        mem.host[:] = 0
        ptrs = RingPointers(mem.device_ptr + 4096 + 8 * n, mem.device_ptr + 4096, n - 1)
        seq = 2**40 + 5
        offset = backend.calibrate() - 10**9
        t0 = time.time_ns()
        backend.pack(ptrs, seq, slot_idx=7, tenant_id=3, opcode=0xABCDEF01, words=(1, 2, 3, 2**32 - 1),
                     epoch=11, slot_status=1, ts_offset=offset)  # fmt: skip
        backend.synchronize()
        t1 = time.time_ns()
        commits = mem.host[4096 : 4096 + 8 * n].view("<u8")
        records = mem.host[4096 + 8 * n : 4096 + 72 * n].view(RECORD_DTYPE)
        i = seq % n
        assert commits[i] == seq + 1
        assert (np.delete(commits, i) == 0).all()
        ts = int(records[i]["timestamp_ns"])
        expected = np.zeros(1, RECORD_DTYPE)
        expected[0] = (RECORD_MAGIC, ts, 7, 3, 0xABCDEF01, (1, 2, 3, 2**32 - 1), 11, 1, 0, 0, 0)
        assert records[i].tobytes() == expected.tobytes()
        assert (
            t0 - 10**9 - self.CLOCK_SLACK_NS <= ts <= t1 - 10**9 + self.CLOCK_SLACK_NS
        )  # the offset applied
        assert not records[np.arange(n) != i]["magic"].any()

    @pytest.mark.parametrize("n", [8, 4096])
    def test_bound_pack_writes_what_pack_writes(self, backend: Backend, n: int) -> None:
        """``bind_pack``'s prebuilt parameters (more launches than a pool holds at n=4096; wraps at n=8)."""
        _m1, general, p1 = make_ring(backend, n)
        _m2, bound_ring, p2 = make_ring(backend, n)
        s = backend.new_stream()
        bound = backend.bind_pack(p2, stream=s, tenant_id=3, ts_offset=-(10**9))
        k = 3000 if n > 8 else 6
        for q in range(k):
            w = (q, 2**32 - 1, q * 7 & 0xFFFF, 5)
            backend.pack(p1, q, slot_idx=q + 1, tenant_id=3, opcode=0xABCDEF01, words=w, epoch=q % 4,
                         slot_status=1, ts_offset=-(10**9), stream=s)  # fmt: skip
            bound(q, q + 1, 0xABCDEF01, w, q % 4, 1)
        backend.synchronize(s)
        a, b = general.records[:k].copy(), bound_ring.records[:k].copy()
        a["timestamp_ns"] = b["timestamp_ns"] = 0
        assert a.tobytes() == b.tobytes()
        assert list(bound_ring.commits[:k]) == list(range(1, k + 1))
        assert list(b["slot_idx"]) == list(range(1, k + 1))

    def test_pack_devseq_claims_sequences_from_the_device_counter(self, backend: Backend) -> None:
        _mem, ring, ptrs = make_ring(backend, 32)
        counter = backend.alloc_counter(slots=32)
        assert counter.read() == 0
        for k in range(20):
            backend.pack_devseq(ptrs, counter, tenant_id=2, opcode=9, words=(k, 0, 0, 0), epoch=1)
        assert counter.read() == 20
        got = ring.records[:20]
        assert list(got["slot_idx"]) == list(range(20))
        assert list(got["args"][:, 0]) == list(range(20))
        assert list(ring.commits[:20]) == list(range(1, 21))

    def test_many_launches_on_one_stream_run_in_order(self, backend: Backend) -> None:
        n, k = 4096, 3000
        _mem, ring, ptrs = make_ring(backend, n)
        s = backend.new_stream()
        for q in range(k):
            backend.pack(ptrs, q, slot_idx=q, tenant_id=0, opcode=1, words=(q, 0, 0, 0), epoch=0, stream=s)
        backend.synchronize(s)
        rec = ring.records[:k]
        assert (ring.commits[:k] == np.arange(1, k + 1, dtype=np.uint64)).all()
        assert (rec["args"][:, 0] == np.arange(k)).all()
        assert (np.diff(rec["timestamp_ns"].astype(np.int64)) >= 0).all()  # %globaltimer in stream order

    def test_overflow_laps_the_ring_keeping_the_newest(self, backend: Backend) -> None:
        n = 8
        _mem, ring, ptrs = make_ring(backend, n)
        for q in range(21):
            backend.pack(ptrs, q, slot_idx=q, tenant_id=0, opcode=1, words=(q, 0, 0, 0), epoch=0)
        backend.synchronize()
        assert sorted(int(c) for c in ring.commits) == list(range(14, 22))
        res = ring.consume(final=True)
        assert list(res.records["slot_idx"]) == list(range(13, 21))
        assert res.dropped == 13

    # ---- device-side recording from user kernels -----------------------------------------------------

    def test_writers_lapping_a_device_sequenced_ring_wait_their_turn(self, backend: Backend) -> None:
        # One writer per slot: the writer of slot 0's sequence N waits for the (held) writer of sequence 0,
        # so the slot ends with its newest record, whole, and never with an older one over a newer commit.
        n_slots, laps = 64, 4
        _mem, ring, ptrs = make_ring(backend, n_slots)
        counter = backend.alloc_counter(slots=n_slots)
        k = backend.load(LAPPING_WRITERS_CU, "lapping_writers")
        n = n_slots * laps
        backend.launch(
            k, n // 64, 64,
            (ptrs.records_ptr, ptrs.commits_ptr, ptrs.mask, counter.device_ptr, n_slots + 2, n),
        )  # fmt: skip
        backend.synchronize()
        assert counter.read() == n
        newest = np.arange(n - n_slots, n, dtype=np.uint64)
        got = ring.records[:n_slots]
        order = np.argsort(newest & np.uint64(n_slots - 1))
        newest = newest[order]
        assert [int(c) for c in ring.commits[:n_slots]] == [int(x) + 1 for x in newest]
        assert [int(a) for a in got["args"][:, 0]] == [int(x) for x in newest]
        assert [int(a) for a in got["args"][:, 2]] == [~int(x) & 0xFFFFFFFF for x in newest]
        assert (got["magic"] == RECORD_MAGIC).all()

    def _record_many(self, b: Backend, n_slots: int, grid: int, block: int, count: int, report: int) -> Any:
        _mem, ring, ptrs = make_ring(b, n_slots)
        counter = b.alloc_counter(slots=n_slots)
        after = b.alloc_pinned(4 * grid * block)
        cells = after.host.view(np.uint32)
        cells[:] = SENTINEL  # not zero: pinned memory is not zeroed on CUDA, and 0 would prove nothing
        k = b.load("vrrl_demo.cu", "vrrl_demo_record_many")
        b.launch(k, grid, block, (ptrs.records_ptr, ptrs.commits_ptr, ptrs.mask, counter, 0, 5, 42, count,
                                  report, after.device_ptr))  # fmt: skip
        b.synchronize()  # `exit` ended one thread, not the context
        return ring, counter.read(), cells

    def test_device_sequenced_recording_from_many_threads_gives_distinct_sequences(
        self, backend: Backend
    ) -> None:
        ring, total, cells = self._record_many(backend, 4096, 4, 64, 8, NO_POISON)
        assert total == 4 * 64 * 8
        rec = ring.records[:total]
        assert (ring.commits[:total] == np.arange(1, total + 1, dtype=np.uint64)).all()
        pairs = {(int(a), int(b)) for a, b in rec["args"][:, :2]}
        assert pairs == {(g, k) for g in range(256) for k in range(8)}  # every (thread, k) exactly once
        assert (rec["slot_status"] == SlotStatus.DEVICE_CLAIMED).all()
        assert (rec["args"][:, 0] == rec["slot_idx"]).all()
        assert (cells == SENTINEL).all()

    def test_fail_and_exit_records_the_failure_and_ends_only_that_thread(self, backend: Backend) -> None:
        ring, total, cells = self._record_many(backend, 4096, 4, 64, 8, report=100)
        assert backend.stream_query() == 0  # no error: the context survives a reported failure
        assert total == 255 * 8 + 1
        rec = ring.records[:total]
        assert (ring.commits[:total] == np.arange(1, total + 1, dtype=np.uint64)).all()
        claimed = rec[rec["slot_status"] == SlotStatus.DEVICE_CLAIMED]
        assert {(int(a), int(b)) for a, b in claimed["args"][:, :2]} == {
            (g, j) for g in range(256) if g != 100 for j in range(8)
        }
        reported = rec[rec["slot_status"] == SlotStatus.DEVICE_REPORTED]
        assert len(reported) == 1
        r = reported[0]
        assert (int(r["slot_idx"]), int(r["failure_class"]), int(r["backend_error_code"])) == (
            100, FailureClass.PROGRAM_BUG, 77,
        )  # fmt: skip
        assert (cells == SENTINEL).all()  # the store after the helper never ran
        _m, ring2, ptrs = make_ring(backend, 8)  # still usable
        backend.pack(ptrs, 0, slot_idx=1, tenant_id=0, opcode=1, words=(0, 0, 0, 0), epoch=0)
        backend.synchronize()
        assert int(ring2.commits[0]) == 1

    def test_megakernel_records_every_published_slot_and_reports_the_poisoned_ones(
        self, backend: Backend
    ) -> None:
        _mem, ring, ptrs = make_ring(backend, 1024)
        seq_counter = backend.alloc_counter(slots=1024)
        next_item = backend.alloc_counter()
        work = backend.alloc_pinned(8192)
        work.host[:] = 0
        slots = work.host[:4096].view(np.uint32)
        published = work.host[4096:4104].view(np.uint64)
        stop = work.host[4608:4612].view(np.uint32)
        data = backend.alloc_device(4 * 256)
        items = np.arange(500, dtype=np.uint32) % 256
        slots[:500] = items
        published[0] = 500  # all published, and stop set, before the launch: no thread can wait forever
        stop[0] = 1
        w = work.device_ptr
        k = backend.load("vrrl_demo.cu", "vrrl_demo_megakernel")
        backend.launch(k, 8, 32, (w, w + 4096, w + 4608, next_item, data, 256, ptrs.records_ptr,
                                  ptrs.commits_ptr, ptrs.mask, seq_counter, 0, 0, 9, 1, 13))  # fmt: skip
        backend.synchronize()
        assert seq_counter.read() == 500
        rec = ring.records[:500]
        assert sorted(rec["args"][:, 0].tolist()) == list(range(500))  # every item exactly once
        assert (rec["slot_idx"] == items[rec["args"][:, 0]]).all()
        reported = rec[rec["slot_status"] == SlotStatus.DEVICE_REPORTED]
        assert sorted(reported["args"][:, 0].tolist()) == [13, 13 + 256]
        assert set(reported["slot_idx"].tolist()) == {13}
        expected = np.bincount(items, minlength=256).astype(np.float32)
        expected[13] = 0  # the poisoned items did no work
        assert (data.to_host().view(np.float32) == expected).all()

    # ---- streams -------------------------------------------------------------------------------------

    def test_stream_query_reports_not_ready_then_done(self, backend: Backend) -> None:
        s = backend.new_stream()
        backend.launch(backend.load("vrrl_demo.cu", "vrrl_demo_spin"), 1, 1, (300_000_000,), stream=s)
        assert backend.stream_query(s) == 600
        backend.synchronize(s)
        assert backend.stream_query(s) == 0

    def test_two_streams_run_independently(self, backend: Backend) -> None:
        f_mem, f = flag(backend)
        s1, s2 = backend.new_stream(), backend.new_stream()
        assert len({backend.stream_key(s1), backend.stream_key(s2), backend.stream_key(None)}) == 3
        _mem, ring, ptrs = make_ring(backend, 64)
        launch_wait(backend, f_mem, stream=s1)
        backend.pack(ptrs, 0, slot_idx=0, tenant_id=0, opcode=1, words=(1, 0, 0, 0), epoch=0, stream=s1)
        for q in range(1, 11):
            backend.pack(ptrs, q, slot_idx=q, tenant_id=0, opcode=2, words=(2, 0, 0, 0), epoch=0, stream=s2)
        backend.synchronize(s2)
        assert backend.stream_query(s2) == 0
        assert backend.stream_query(s1) == 600  # still parked behind the wait kernel
        assert int(ring.commits[0]) == 0
        assert list(ring.commits[1:11]) == list(range(2, 12))
        f[0] = 1
        backend.synchronize(s1)
        assert int(ring.commits[0]) == 1

    # ---- memory --------------------------------------------------------------------------------------

    def test_shm_staging_after_host_register_is_seen_by_a_second_mapping(self, backend: Backend) -> None:
        n = 256
        seg = ShmSegment.create(None, StagingRing.layout_size(n))
        try:
            ring = StagingRing.create(seg.array, n)
            reg = backend.register_host(seg.array)
            ptrs = RingPointers.from_staging(reg, ring)
            for q in range(10):
                backend.pack(ptrs, q, slot_idx=q, tenant_id=1, opcode=2, words=(q, 0, 0, 0), epoch=0)
            backend.synchronize()
            reg.close()
            with ShmSegment.open(seg.path) as other:
                seen = StagingRing.attach(other.array)
                assert list(seen.commits[:10]) == list(range(1, 11))
                assert list(seen.records[:10]["slot_idx"]) == list(range(10))
        finally:
            seg.close()
            seg.unlink()

    def test_device_buffer_round_trip(self, backend: Backend) -> None:
        buf = backend.alloc_device(16)
        assert not buf.to_host().any()  # zeroed
        buf.from_host(np.arange(4, dtype=np.float32))
        assert list(buf.to_host().view(np.float32)) == [0.0, 1.0, 2.0, 3.0]
        with pytest.raises(KernelArgumentError):
            buf.from_host(np.zeros(5, np.float32))

    def test_device_info_has_the_contract_keys(self, backend: Backend) -> None:
        info = backend.device_info()
        keys = {"backend", "simulated", "name", "uuid", "compute_capability", "driver_version",
                "runtime_version", "cupy_version"}  # fmt: skip
        assert keys <= set(info)
        assert (info["backend"], info["simulated"]) == (backend.name, backend.is_simulated)

    # ---- errors --------------------------------------------------------------------------------------

    def test_launch_configuration_errors_raise_at_the_call_and_are_not_sticky(self, backend: Backend) -> None:
        axpy = backend.load("vrrl_demo.cu", "vrrl_demo_axpy")
        y = backend.alloc_device(16)
        x = backend.alloc_device(16)
        x.from_host(np.ones(4, np.float32))
        for grid, block in [(1, 1025), (1, (32, 32, 2)), ((1, 65536), 1)]:
            assert raised_code(lambda g=grid, bl=block: backend.launch(axpy, g, bl, (y, x, 1.0, 4, 0))) == 1
        with pytest.raises(KernelArgumentError, match="expects 5 arguments"):
            backend.launch(axpy, 1, 4, (y, x, 1.0, 4))
        with pytest.raises(KernelArgumentError, match="4294967295"):
            backend.launch(axpy, 1, 4, (y, x, 1.0, 2**32, 0))
        with pytest.raises(KernelArgumentError, match="float"):
            backend.launch(axpy, 1, 4, (y, x, "2", 4, 0))
        with pytest.raises(KernelArgumentError, match="address"):
            backend.launch(axpy, 1, 4, ("y", x, 1.0, 4, 0))
        # Still usable: none of these poisoned the context.
        backend.launch(axpy, 1, 4, (y, x, 2.0, np.uint32(4), 0))
        backend.synchronize()
        assert list(y.to_host().view(np.float32)) == [2.0] * 4
        assert backend.stream_query() == 0

    @pytest.mark.parametrize("fault_kind", [FAULT_ILLEGAL_ADDRESS, FAULT_TRAP, FAULT_ASSERT])
    def test_a_kernel_fault_surfaces_later_and_poisons_every_later_call(self, fault_kind: int) -> None:
        codes = {FAULT_ILLEGAL_ADDRESS: {700}, FAULT_TRAP: set(self.TRAP_CODES), FAULT_ASSERT: {710}}[
            fault_kind
        ]
        out = self.run_scenario("sticky_fault", fault_kind)
        assert out["at_call"] is None  # asynchronous: the launch returned
        assert out["parked_query"] == 600
        assert out["at_sync"] in codes
        code = out["at_sync"]
        assert out["query_after"] == code
        assert out["commits"] == [
            1,
            0,
        ]  # the record before the fault is there; work queued after it never ran
        assert out["magic_0"] == RECORD_MAGIC
        assert out["later"] == dict.fromkeys(out["later"], code), "every later call fails with the same code"

    @pytest.mark.parametrize("fault_at", [300, NO_POISON], ids=["one-thread", "every-thread"])
    def test_a_real_wild_store_in_a_user_kernel_is_a_sticky_illegal_address(self, fault_at: int) -> None:
        out = self.run_scenario("real_wild_store", fault_at)
        assert out["clean"] is None
        assert out["at_sync"] == 700
        assert out["commits"] == [1, 0], "the record before the fault is there; the one after never ran"
        assert out["later_launch"] in (None, 700)  # a launch may be refused at once or surface at the sync
        assert out["later_sync"] == 700

    def test_a_fault_on_one_stream_poisons_every_stream(self) -> None:
        out = self.run_scenario("fault_poisons_every_stream", FAULT_TRAP)
        assert out["s1_sync"] in self.TRAP_CODES
        assert out["s2_query"] == out["s1_sync"]
        assert out["s2_sync"] == out["s1_sync"]


def _main(argv: list[str]) -> int:
    """The child of CuPy scenario tests: run one scenario on a new CupyBackend, print MARKER + JSON."""
    from vrrl_gpu.backends._cupy import CupyBackend

    name, arg = argv[0], int(argv[1])
    b = CupyBackend()
    print_result(SCENARIOS[name](b, arg))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
