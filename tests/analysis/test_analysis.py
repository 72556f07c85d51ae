"""The pure analysis functions: launches, stats, crash windows, diff alignment, chunked reads, k-way merge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.analysis_logs import (
    GEMM,
    NAMES,
    REDUCE,
    SOFTMAX,
    T0,
    gap,
    rec,
    records,
    run_rows,
    write_log,
)
from vrrl_gpu import RECORD_DTYPE, FailureClass, MetaOpcode, RingLog, SlotStatus
from vrrl_gpu.analysis import (
    LogFollower,
    compute_stats,
    crash_windows,
    diff_records,
    find_launches,
    gap_drops,
    merge_logs,
    unclaimed_slots,
)
from vrrl_gpu.errors import CorruptRecordError, RecordValueError
from vrrl_gpu.format import iter_record_chunks

S = SlotStatus


# ------------------------------------------------------------------ launches


def test_launches_pair_begin_and_end_records_by_tenant_and_slot() -> None:
    r = records(
        [
            rec(0, 0, tenant=0),
            rec(1, 0, tenant=1),  # same slot index, other track: another launch
            rec(5, 0, tenant=1, status=S.COMPLETED),
            rec(7, 0, tenant=0, status=S.COMPLETED),
            rec(9, 1, tenant=0),
        ]
    )
    ls = find_launches(r)
    assert ls.index.tolist() == [0, 1, 4]
    assert ls.completed.tolist() == [True, True, False]
    assert (ls.end_ts[:2] - ls.ts[:2]).tolist() == [7, 4]
    assert ls.end_ts[2] == 0
    assert ls.group.tolist() == [0, 1, 1, 0, 2]


def test_a_reused_slot_index_opens_a_new_launch() -> None:
    r = records(
        [
            rec(0, 0),
            rec(1, 0, status=S.COMPLETED),
            rec(2, 0, opcode=SOFTMAX),  # a second session starting its slots at 0 again
            rec(3, 0, opcode=SOFTMAX, status=S.FAULTED, fc=FailureClass.PROGRAM_BUG, code=700),
        ]
    )
    ls = find_launches(r)
    assert len(ls) == 2
    assert ls.opcode.tolist() == [GEMM, SOFTMAX]
    assert ls.completed.tolist() == [True, False]
    assert ls.failed.tolist() == [False, True]
    assert ls.fail_code.tolist() == [0, 700]


def test_foreign_logs_without_begin_records_still_have_launches(vectors: Path) -> None:
    # The shared vectors come from another VRRL writer: failure records are the only record of their slot.
    with RingLog.open(vectors / "small.vrrl", readonly=True) as log:
        r = log.records()
    ls = find_launches(r)
    assert len(ls) == 5
    assert ls.failed.tolist() == [True, False, False, False, False]
    assert ls.fail_code[0] == 700


def test_meta_records_are_never_launches_and_gaps_sum_their_counts() -> None:
    r = records([rec(0, 0), gap(1, 3), gap(2, (1 << 32) + 2), rec(3, 1)])
    assert len(find_launches(r)) == 2
    assert gap_drops(r) == (2, 3 + (1 << 32) + 2)


def test_unclaimed_megakernel_slots() -> None:
    r = records(
        [
            rec(0, 10, status=S.PUBLISHED),
            rec(1, 11, status=S.PUBLISHED),
            rec(2, 12, status=S.PUBLISHED),
            rec(3, 10, status=S.DEVICE_CLAIMED),
            rec(4, 12, status=S.DEVICE_CLAIMED),
            rec(5, 10, status=S.DEVICE_REPORTED),
        ]
    )
    assert unclaimed_slots(r) == [(0, 11)]


def test_a_wrong_array_is_refused() -> None:
    with pytest.raises(RecordValueError, match="RECORD_DTYPE"):
        find_launches(np.zeros(3, np.uint32))  # type: ignore[arg-type]


# --------------------------------------------------------------------- stats


def test_stats_count_launches_failures_gaps_and_coverage() -> None:
    rows = run_rows(10, tenants=2, fault_after=7)
    rows.append(gap(50_000, 4))
    s = compute_stats(records(rows), opcode_names=NAMES, buckets=4)
    assert s["launches"] == 8
    by_name = {o["name"]: o for o in s["opcodes"]}
    assert {n: o["launches"] for n, o in by_name.items()} == {"gemm": 3, "softmax": 3, "reduce": 2}
    assert by_name["softmax"]["failed"] == 1  # launch 7 is softmax
    assert by_name["gemm"]["mean_duration_ns"] == 500
    assert s["failures"]["total"] == 1
    assert s["failures"]["by_class"] == {"ProgramBug": 1}
    assert s["failures"]["by_class_and_code"][0]["code"] == 700
    assert "700" in s["failures"]["by_class_and_code"][0]["code_name"]
    assert s["gaps"] == {"gap_records": 1, "dropped_records": 4}
    assert sum(b["launches"] for b in s["rate"]["buckets"]) == 8
    assert len(s["rate"]["buckets"]) == 4
    tracks = {t["tenant_id"]: t for t in s["tracks"]}
    assert tracks[0]["coverage"] == 1.0
    assert tracks[1]["begin"] == 4
    assert tracks[1]["completed"] == 3
    assert tracks[1]["open"] == 1
    assert [w["slot_idx"] for w in s["crash_windows"]] == [7]


def test_stats_of_an_empty_log() -> None:
    s = compute_stats(np.empty(0, RECORD_DTYPE))
    assert s["records"] == 0
    assert s["launches"] == 0
    assert s["rate"]["buckets"] == []
    assert s["tracks"] == []
    assert s["first_timestamp_ns"] is None


def test_stats_refuse_zero_buckets() -> None:
    with pytest.raises(RecordValueError, match="buckets"):
        compute_stats(records(run_rows(3)), buckets=0)


# -------------------------------------------------------------- crash window


def test_the_crash_window_is_the_last_open_launch_of_the_faulting_track() -> None:
    r = records(
        [
            rec(0, 0, tenant=0),
            rec(10, 0, tenant=0, status=S.COMPLETED),
            rec(20, 1, tenant=0, opcode=REDUCE),  # running when the device faulted
            rec(25, 2, tenant=1),  # another stream, not the fault's
            rec(90, 0, tenant=0, status=S.FAULTED, fc=FailureClass.DEVICE_LOSS, code=700),
        ]
    )
    (w,) = crash_windows(r)
    assert (w.tenant_id, w.slot_idx, w.opcode) == (0, 1, REDUCE)
    assert (w.start_ns - T0, w.end_ns - T0) == (20, 90)
    assert w.fault_slot_idx == 0  # the host attributed it elsewhere; the device had reached slot 1
    assert w.backend_error_code == 700


def test_no_crash_window_without_a_fault() -> None:
    assert crash_windows(records(run_rows(5))) == []


# ---------------------------------------------------------------------- diff


def _run(n: int = 12, **kw: object) -> np.ndarray:
    return records(run_rows(n, **kw))  # type: ignore[arg-type]


def test_diff_of_equal_logs_agrees() -> None:
    res = diff_records(_run(), _run())
    assert res.agree
    assert res.compared == 12
    assert res.first is None


def test_diff_reports_the_first_opcode_divergence_then_all() -> None:
    a = _run()
    b = a.copy()
    b["opcode"][b["slot_idx"] == 5] = 0x7777
    b["opcode"][b["slot_idx"] == 9] = 0x7777
    res = diff_records(a, b)
    assert not res.agree
    assert res.counts == {"opcode": 2}
    assert res.first is not None
    assert (res.first.kind, res.first.a_slot, res.first.a, res.first.b) == ("opcode", 5, REDUCE, 0x7777)


def test_diff_compares_args_digest_and_failures() -> None:
    a = _run(10, fault_after=6)
    b = a.copy()
    b["args"][1, 2] = 99  # the first launch's COMPLETED record carries args too; only launch records count
    b["args"][2, 0] = 99  # launch 1's BEGIN
    b["output_digest"][-1] = 0x1234
    res = diff_records(a, b)
    assert res.counts == {"args": 1, "digest": 1}
    c = a.copy()
    c["failure_class"][-1] = FailureClass.DEVICE_LOSS
    assert diff_records(a, c).counts == {"failure": 1}


def test_diff_epochs_are_relative_to_the_first_launch() -> None:
    a = _run()
    b = a.copy()
    b["epoch"] += 100  # a replay that started at another epoch
    assert diff_records(a, b).agree
    b["epoch"][b["slot_idx"] == 11] += 1
    res = diff_records(a, b)
    assert res.counts == {"epoch": 1}


def test_diff_aligns_per_track_so_interleaving_does_not_matter() -> None:
    a = _run(8)
    # The same launches drained in another interleaving of the two tracks.
    b = np.concatenate([a[a["tenant_id"] == 1], a[a["tenant_id"] == 0]])
    assert diff_records(a, b).agree
    assert not diff_records(a, b, by_track=False).agree


def test_diff_counts_launches_one_side_lacks() -> None:
    a = _run(12)
    b = _run(9)
    res = diff_records(a, b)
    assert res.counts == {"missing": 3}
    assert res.first is not None
    assert res.first.b is None
    assert res.first.a["slot_idx"] == 9


def test_diff_megakernel_claims() -> None:
    a = records(
        [rec(0, 1, status=S.PUBLISHED), rec(1, 1, status=S.DEVICE_CLAIMED), rec(2, 2, status=S.PUBLISHED)]
    )
    b = records(
        [rec(0, 1, status=S.PUBLISHED), rec(2, 2, status=S.PUBLISHED), rec(3, 2, status=S.DEVICE_CLAIMED)]
    )
    res = diff_records(a, b)
    assert res.unclaimed_a == [(0, 2)]
    assert res.unclaimed_b == [(0, 1)]
    assert res.counts == {"claim": 2}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 5), st.sampled_from([0, 1, 3, 8]), st.integers(0, 2)),
        max_size=40,
    )
)
def test_diff_of_a_log_with_itself_always_agrees(spec: list[tuple[int, int, int, int]]) -> None:
    r = records(
        rec(i, slot, tenant=t, status=status, opcode=GEMM + op if status != 8 else MetaOpcode.GAP)
        for i, (t, slot, status, op) in enumerate(spec)
    )
    res = diff_records(r, r.copy())
    assert res.agree
    ls = find_launches(r)
    assert res.compared == len(ls)
    # A non-meta record belongs to the launch of its key opened at or before it; only records that come
    # before their key's first launch (an end record without its begin) belong to none.
    g = ls.group
    keys = r["tenant_id"].astype(np.int64) * 1000 + r["slot_idx"]
    for i in np.flatnonzero(r["slot_status"] != SlotStatus.META).tolist():
        if g[i] >= 0:
            assert ls.index[g[i]] <= i
            assert keys[ls.index[g[i]]] == keys[i]
        else:
            assert all(keys[j] != keys[i] for j in ls.index.tolist() if j < i)
            assert any(keys[j] == keys[i] for j in ls.index.tolist())
    assert bool(np.all(g[r["slot_status"] == SlotStatus.META] == -1))


# ----------------------------------------------------- chunked reads, merge


def test_chunked_reads_follow_publish_order_of_a_wrapped_log(tmp_path: Path) -> None:
    rows = [rec(i, i) for i in range(11)]
    p = write_log(tmp_path / "w.vrrl", rows, capacity=8)
    with RingLog.open(p, readonly=True) as log:
        whole = log.records()
    chunks = list(iter_record_chunks(p, chunk_records=3))
    assert max(c.shape[0] for c in chunks) <= 3
    assert np.concatenate(chunks).tobytes() == whole.tobytes()
    assert whole["slot_idx"].tolist() == list(range(3, 11))


def test_chunked_reads_refuse_a_corrupt_slot(vectors: Path) -> None:
    with pytest.raises(CorruptRecordError, match="slot 2"):
        list(iter_record_chunks(vectors / "bad-record-magic.vrrl"))
    assert sum(c.shape[0] for c in iter_record_chunks(vectors / "bad-record-magic.vrrl", salvage=True)) >= 1


def test_merge_interleaves_by_timestamp_and_keeps_each_logs_order(tmp_path: Path) -> None:
    a = write_log(tmp_path / "a.vrrl", [rec(t, i, tenant=1) for i, t in enumerate([0, 10, 20, 30])])
    b = write_log(tmp_path / "b.vrrl", [rec(t, i, tenant=2) for i, t in enumerate([5, 10, 25])])
    out = list(merge_logs([a, b], batch_records=2, memory_records=1))
    recs = np.concatenate([o[0] for o in out])
    origin = np.concatenate([o[1] for o in out])
    assert (recs["timestamp_ns"] - T0).tolist() == [0, 5, 10, 10, 20, 25, 30]
    assert origin.tolist() == [0, 1, 0, 1, 0, 1, 0]  # a tie goes to the lower input index


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1000), max_size=30), min_size=1, max_size=6))
def test_merge_is_sorted_and_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory, logs: list[list[int]]
) -> None:
    d = tmp_path_factory.mktemp("m")
    paths = []
    for i, ts in enumerate(logs):
        paths.append(write_log(d / f"{i}.vrrl", [rec(t, j, tenant=i) for j, t in enumerate(sorted(ts))]))
    batches = list(merge_logs(paths, batch_records=7, memory_records=32))
    recs = np.concatenate([b[0] for b in batches]) if batches else np.empty(0, RECORD_DTYPE)
    origin = np.concatenate([b[1] for b in batches]) if batches else np.empty(0, np.int32)
    assert recs.shape[0] == sum(len(x) for x in logs)
    assert bool(np.all(np.diff(recs["timestamp_ns"].astype(np.int64)) >= 0))
    assert (recs["tenant_id"] == origin).all()
    for i in range(len(logs)):
        assert recs["slot_idx"][origin == i].tolist() == list(range(len(logs[i])))


# ------------------------------------------------------------------- follow


def test_follower_sees_records_published_after_it_started(tmp_path: Path) -> None:
    p = tmp_path / "live.vrrl"
    with RingLog.open(p, capacity=8) as writer:
        writer.extend(records([rec(i, i) for i in range(3)]))
        f = LogFollower(p)
        assert f.last(2)["slot_idx"].tolist() == [1, 2]
        assert f.poll().shape[0] == 0
        writer.extend(records([rec(i, i) for i in range(3, 9)]))  # wraps the ring of 8
        assert f.poll()["slot_idx"].tolist() == [3, 4, 5, 6, 7, 8]
        writer.extend(records([rec(9, 9)]))
        assert f.poll()["slot_idx"].tolist() == [9]
        assert f.last(100)["slot_idx"].tolist() == list(range(2, 10))


def test_merge_memory_stays_bounded_by_the_budget_not_the_input(tmp_path: Path) -> None:
    import tracemalloc

    n_logs, per = 40, 1500
    paths = []
    for i in range(n_logs):
        r = np.zeros(per, RECORD_DTYPE)
        r["timestamp_ns"] = T0 + np.arange(per) * n_logs + i
        r["tenant_id"] = i
        paths.append(write_log(tmp_path / f"{i}.vrrl", r))
    input_bytes = n_logs * per * RECORD_DTYPE.itemsize  # 3.75 MiB
    tracemalloc.start()
    try:
        count = 0
        last = 0
        for batch, _origin in merge_logs(paths, batch_records=512, memory_records=640):
            count += batch.shape[0]
            assert int(batch["timestamp_ns"][0]) >= last
            last = int(batch["timestamp_ns"][-1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n_logs * per
    assert peak < input_bytes / 4, f"peak {peak} bytes for {input_bytes} bytes of input"
