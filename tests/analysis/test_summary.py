"""The chunked summary (analysis/_summary.py) against the whole-array reading stats and report had."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.analysis_logs import NAMES, T0, recorder_like_log
from vrrl_gpu import RingLog
from vrrl_gpu._cli import main
from vrrl_gpu.analysis import compute_stats, render_report
from vrrl_gpu.analysis._launches import crash_windows, failure_mask, find_launches, meta_mask
from vrrl_gpu.analysis._stats import stats_of
from vrrl_gpu.analysis._streams import streams_of
from vrrl_gpu.analysis._summary import Read, summarize, summary_windows
from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC, FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu.format._layout import UNKNOWN_SLOT

_S = SlotStatus
_STATUS = [
    _S.BEGIN, _S.BEGIN, _S.COMPLETED, _S.COMPLETED, _S.PUBLISHED, _S.DEVICE_CLAIMED,
    _S.FAILED_AT_LAUNCH, _S.FAULTED, _S.HUNG, _S.META,
]  # fmt: skip


@st.composite
def _records(draw: st.DrawFn) -> tuple[npt.NDArray[np.void], npt.NDArray[np.int32]]:
    """Records of every kind the grouping treats differently, slots repeating, some keys never opened."""
    n = draw(st.integers(0, 70))
    r = np.zeros(n, RECORD_DTYPE)
    r["magic"] = RECORD_MAGIC
    r["timestamp_ns"] = T0 + np.array(
        draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n)), np.uint64
    )
    for i in range(n):
        status = draw(st.sampled_from(_STATUS))
        r["slot_status"][i] = status
        if status == _S.META:
            r["opcode"][i] = draw(st.sampled_from([MetaOpcode.GAP, MetaOpcode.CALIBRATION]))
            r["args"][i] = (0, 0, draw(st.integers(0, 9)), 0)
            continue
        r["slot_idx"][i] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, UNKNOWN_SLOT]))
        r["tenant_id"][i] = draw(st.integers(0, 2))
        r["opcode"][i] = draw(st.sampled_from(list(NAMES)))
        r["epoch"][i] = i
        if status in (_S.FAILED_AT_LAUNCH, _S.FAULTED, _S.HUNG) or draw(st.integers(0, 12)) == 0:
            r["failure_class"][i] = draw(st.sampled_from([FailureClass.PROGRAM_BUG, FailureClass.NONE]))
            r["backend_error_code"][i] = draw(st.sampled_from([0, 700, 719]))
        r["output_digest"][i] = draw(st.integers(0, 2))
    streams = np.array(draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n)), np.int32)
    return r, streams


def _chunked(r: npt.NDArray[np.void], streams: npt.NDArray[np.int32] | None, k: int) -> Read:
    def read(with_streams: bool) -> Iterator[tuple[npt.NDArray[np.void], npt.NDArray[np.int32] | None]]:
        for lo in range(0, int(r.shape[0]), k):
            s = streams[lo : lo + k] if with_streams and streams is not None else None
            yield r[lo : lo + k], s

    return read


_COLUMNS = (
    "index",
    "tenant",
    "slot",
    "opcode",
    "epoch",
    "ts",
    "status",
    "completed",
    "end_ts",
    "claimed",
    "failed",
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_records(), k=st.sampled_from([1, 2, 3, 7, 64]), with_streams=st.booleans())
def test_chunked_summary_equals_the_whole_array_reading(
    data: tuple[npt.NDArray[np.void], npt.NDArray[np.int32]], k: int, with_streams: bool
) -> None:
    r, streams = data
    strm = streams if with_streams else None
    s = summarize(_chunked(r, strm, k))
    ls = find_launches(r)
    for name in _COLUMNS:
        np.testing.assert_array_equal(getattr(s.launches, name), getattr(ls, name), err_msg=name)
    fm = failure_mask(r)
    np.testing.assert_array_equal(s.failure_at, np.flatnonzero(fm))
    np.testing.assert_array_equal(s.failure_group, ls.group[fm])
    assert s.failures.tobytes() == r[fm].tobytes()
    assert s.gaps.tobytes() == r[meta_mask(r) & (r["opcode"] == MetaOpcode.GAP)].tobytes()
    assert summary_windows(s) == crash_windows(r, ls, strm)
    assert stats_of(s, opcode_names=NAMES, buckets=3) == compute_stats(
        r, opcode_names=NAMES, buckets=3, streams=strm
    )


def _wrapped_log(tmp_path: Path) -> Path:
    """A recorder-like log (three streams, failures, a GAP, a fault) written into a ring that wrapped."""
    src = recorder_like_log(tmp_path / "src.vrrl", 6001, seed=5)
    with RingLog.open(src, readonly=True) as log:
        r = log.records()
    p = tmp_path / "wrapped.vrrl"
    with RingLog.open(p, capacity=4096) as log:
        log.extend(r)
    (tmp_path / "wrapped.vrrl.json").write_bytes((tmp_path / "src.vrrl.json").read_bytes())
    return p


def test_stats_of_a_wrapped_log_in_chunks_equals_the_whole_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _wrapped_log(tmp_path)
    with RingLog.open(p, readonly=True) as log:
        scan = log.scan()
    assert scan.wrapped
    r = scan.records
    streams = streams_of(p, r)
    from vrrl_gpu._cli._output import opcode_names_for

    want = {"path": str(p), **compute_stats(r, opcode_names=opcode_names_for(str(p)), streams=streams)}
    assert want["crash_windows"]
    assert any(w["stream"] >= 0 for w in want["crash_windows"])
    assert main(["stats", "--json", str(p)]) == 0
    assert json.loads(capsys.readouterr().out) == want


def test_report_of_a_wrapped_log_in_chunks_equals_the_whole_log(tmp_path: Path) -> None:
    p = _wrapped_log(tmp_path)
    with RingLog.open(p, readonly=True) as log:
        h = log.scan()
    from vrrl_gpu.analysis.exporters._rows import opcode_names_of

    header = {"capacity": f"{h.header.capacity:,} slots", "cursor": h.header.cursor, "wrapped": h.wrapped}
    want = render_report(
        h.records,
        source=str(p),
        opcode_names=opcode_names_of(p),
        header=header,
        streams=streams_of(p, h.records),
    )
    out = tmp_path / "r.html"
    assert main(["report", "-o", str(out), str(p)]) == 0
    assert out.read_text(encoding="utf-8") == want


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_report_progress_bar_has_the_records_of_three_passes_and_a_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("rich", reason="rich (the cli extra) is not installed")
    p = _wrapped_log(tmp_path)
    n = 4096
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    assert main(["report", "-o", str(tmp_path / "r.html"), str(p)]) == 0
    shown = tty.getvalue()
    assert f"{3 * n}/{3 * n}" in shown  # the bar's total: the span pass and summarize's two passes
    assert "/s" in shown  # and its rate


def test_replay_list_progress_bar_counts_the_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich", reason="rich (the cli extra) is not installed")
    p = _wrapped_log(tmp_path)
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    assert main(["replay", "--list", str(p)]) == 0
    shown = tty.getvalue()
    assert "4096/4096" in shown
    assert "/s" in shown


def test_report_and_replay_list_draw_no_bar_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _wrapped_log(tmp_path)
    assert main(["report", "-o", str(tmp_path / "r.html"), str(p)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["replay", "--list", str(p)]) == 0
    assert capsys.readouterr().err == ""


def test_the_launch_rate_found_in_slices_is_the_whole_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vrrl_gpu.analysis._stats as stats_mod
    from vrrl_gpu.analysis._summary import whole

    with RingLog.open(recorder_like_log(tmp_path / "a.vrrl", 3001, seed=2), readonly=True) as log:
        s = summarize(whole(log.records()))
    ts = [int(t) for t in s.launches.ts.tolist()]
    lo, hi = min(ts), max(ts)
    width = -(-(hi - lo + 1) // 7)
    want = [0] * 7
    for t in ts:  # the buckets by hand, in Python ints
        want[min((t - lo) // width, 6)] += 1
    monkeypatch.setattr(stats_mod, "_RATE_ROWS", 5)  # 300-odd slices, the last one short
    got = stats_of(s, buckets=7)["rate"]
    assert got["bucket_ns"] == width
    assert [b["launches"] for b in got["buckets"]] == want
