"""vrrl stats, tail, diff, merge, export (and their bad input), and the progress helper."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import vrrl_gpu.analysis._export
from tests.helpers.analysis_logs import NAMES, T0, gap, rec, run_rows, write_log
from vrrl_gpu import Record, RingLog, SlotStatus
from vrrl_gpu._cli import main
from vrrl_gpu._cli._progress import progress_bar
from vrrl_gpu.analysis._fleet_chrome import CRASH_TID_BASE
from vrrl_gpu.analysis.exporters import CSV_FIELDS, FORMATS, ROW_FIELDS
from vrrl_gpu.errors import LogLockedError


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """Two tracks, begin+end breadcrumbs, launch 27 faults; a GAP of 5 records."""
    return write_log(tmp_path / "crashed.vrrl", [*run_rows(30, fault_after=27), gap(9_999, 5)], names=NAMES)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------- stats


def test_stats_json_uses_sidecar_names(crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--json", "--buckets", "3", str(crashed)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["path"] == str(crashed)
    assert {o["name"]: o["launches"] for o in s["opcodes"]} == {"gemm": 10, "softmax": 9, "reduce": 9}
    assert s["failures"]["by_class"] == {"ProgramBug": 1}
    assert s["gaps"]["dropped_records"] == 5
    assert len(s["rate"]["buckets"]) == 3
    assert [t["tenant_id"] for t in s["tracks"]] == [0, 1]


def test_stats_text_has_every_section(crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", str(crashed)]) == 0
    out = capsys.readouterr().out
    for needle in (
        "launches per opcode",
        "failures by class and code",
        "launch rate",
        "5 record(s) dropped",
        "coverage per track",
        "crash window: tenant 1 slot 27 (gemm)",
        "cudaErrorIllegalAddress",
    ):
        assert needle in out


# ---------------------------------------------------------------------- tail


def test_tail_prints_the_newest_records(crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "-n", "3", "--json", str(crashed)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    with RingLog.open(crashed, readonly=True) as log:
        expected = [Record.from_row(r).to_dict() for r in log.records()[-3:]]
    derived = ("failure_class_name", "stream", "slot_status_name", "opcode_name")
    assert [{k: v for k, v in r.items() if k not in derived} for r in rows] == expected
    assert main(["tail", "-n", "2", str(crashed)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert len(text) == 2
    assert "faulted" in text[0]
    assert "cudaErrorIllegalAddress (700)" in text[0]
    assert "<gap>" in text[1]


_WRITER = r"""
import sys, time
import numpy as np
from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC
from vrrl_gpu.format import RingLog
path, n = sys.argv[1], int(sys.argv[2])
with RingLog.open(path, capacity=64) as log:
    for i in range(n):
        r = np.zeros(1, RECORD_DTYPE)
        r["magic"] = RECORD_MAGIC
        r["timestamp_ns"] = 1_700_000_000_000_000_000 + i
        r["slot_idx"] = i
        log.extend(r)
        if i == 1:
            open(path + ".ready", "w").close()
        time.sleep(0.02)
"""


def test_tail_follow_sees_records_another_process_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "live.vrrl"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(log), "1000"])
    try:
        deadline = time.monotonic() + 30
        while not Path(str(log) + ".ready").exists():
            assert writer.poll() is None, "the writer died"
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.01)
        with pytest.raises(LogLockedError):  # the writer holds the lock; tail -f must not need it
            RingLog.open(log)
        code = main(
            [
                "tail",
                "-f",
                "-n",
                "1",
                "--json",
                "--interval",
                "0.01",
                "--max-records",
                "20",
                "--max-seconds",
                "30",
                str(log),
            ]
        )
        assert writer.poll() is None  # still writing: we read alongside it
    finally:
        writer.terminate()
        writer.wait(timeout=30)
    assert code == 0
    slots = [json.loads(x)["slot_idx"] for x in capsys.readouterr().out.splitlines()]
    assert len(slots) == 21  # the newest one, then 20 followed
    assert slots == list(range(slots[0], slots[0] + 21))  # nothing lost, nothing twice, in order


def test_tail_follow_ends_cleanly_on_ctrl_c(
    crashed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import vrrl_gpu._cli._analysis_cmds as cmds

    def interrupt(_s: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cmds.time, "sleep", interrupt)
    assert main(["tail", "-f", "-n", "1", str(crashed)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1
    assert captured.err == ""


def test_tail_follow_stops_after_max_seconds(crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "-f", "-n", "0", "--interval", "0.01", "--max-seconds", "0.05", str(crashed)]) == 0
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------- diff


def test_diff_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_log(tmp_path / "a.vrrl", run_rows(20, fault_after=15), names=NAMES)
    same = write_log(tmp_path / "same.vrrl", run_rows(20, fault_after=15))
    other = write_log(tmp_path / "b.vrrl", run_rows(20, fault_after=12))
    assert main(["diff", str(a), str(same)]) == 0
    assert "AGREE" in capsys.readouterr().out
    assert main(["diff", str(a), str(other)]) == 1
    out = capsys.readouterr().out
    assert "first divergence: failure at launch #6 of tenant 0" in out
    assert "DIVERGE" in out
    assert main(["diff", "--json", str(a), str(other)]) == 1
    res = json.loads(capsys.readouterr().out)
    assert res["agree"] is False
    assert res["first"]["kind"] == "failure"
    assert res["counts"]["missing"] == 3  # launches 13..15 of A have no partner in B
    assert main(["diff", str(a), str(tmp_path / "nope.vrrl")]) == 2
    assert "nope.vrrl" in _one_error_line(capsys.readouterr().err)


def test_diff_lists_unclaimed_megakernel_slots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        rec(0, 1, status=SlotStatus.PUBLISHED),
        rec(1, 1, status=SlotStatus.DEVICE_CLAIMED),
        rec(2, 2, status=SlotStatus.PUBLISHED),
    ]
    a = write_log(tmp_path / "a.vrrl", rows)
    assert main(["diff", str(a), str(a)]) == 0
    assert "1 megakernel slot(s) published but never claimed by the device: tenant 0 slot 2" in (
        capsys.readouterr().out
    )


# --------------------------------------------------------------------- merge


def test_merge_300_logs_in_timestamp_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(7)
    paths: list[str] = []
    total = 0
    for i in range(300):
        n = int(rng.integers(0, 6))
        ts = np.sort(rng.integers(0, 10_000, n))
        paths.append(
            str(
                write_log(
                    tmp_path / f"rank{i}.vrrl",
                    [rec(int(t), j, tenant=i) for j, t in enumerate(ts)],
                    capacity=8,
                )
            )
        )
        total += n
    out = tmp_path / "all.vrrl"
    assert main(["merge", *paths, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"{total:,} record(s) from 300 log(s)" in captured.out
    assert captured.err == ""  # no progress bar when stderr is not a terminal, no tenant warning
    with RingLog.open(out, readonly=True) as log:
        merged = log.records()
    assert merged.shape[0] == total
    assert bool(np.all(np.diff(merged["timestamp_ns"].astype(np.int64)) >= 0))
    for i in (0, 17, 299):
        assert merged["slot_idx"][merged["tenant_id"] == i].tolist() == list(
            range(int((merged["tenant_id"] == i).sum()))
        )

    jl = tmp_path / "all.jsonl"
    assert main(["merge", *paths[:5], "-o", str(jl), "--format", "jsonl"]) == 0
    rows = [json.loads(x) for x in jl.read_text().splitlines()]
    assert all(r["origin"]["path"] == paths[r["origin"]["index"]] for r in rows)
    assert all(r["tenant_id"] == r["origin"]["index"] for r in rows)
    assert [r["timestamp_ns"] for r in rows] == sorted(r["timestamp_ns"] for r in rows)


def test_merge_refuses_existing_output_and_too_many_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_log(tmp_path / "a.vrrl", run_rows(4))
    b = write_log(tmp_path / "b.vrrl", run_rows(4))
    out = tmp_path / "out.vrrl"
    out.write_bytes(b"keep me")
    assert main(["merge", str(a), str(b), "-o", str(out)]) == 2
    assert "--force" in _one_error_line(capsys.readouterr().err)
    assert out.read_bytes() == b"keep me"
    assert main(["merge", str(a), str(b), "-o", str(out), "--force"]) == 0
    captured = capsys.readouterr()
    assert "16 record(s)" in captured.out
    assert "tenant id(s) 0, 1 occur in more than one input" in captured.err
    monkeypatch.setitem(FORMATS, "vrrl", dataclasses.replace(FORMATS["vrrl"], max_records=10))
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "big.vrrl")]) == 2
    msg = _one_error_line(capsys.readouterr().err)
    assert "16 records" in msg
    assert "--format jsonl" in msg
    assert not (tmp_path / "big.vrrl").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_merge_to_parquet_keeps_origin(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")
    a = write_log(tmp_path / "a.vrrl", run_rows(5, tenant_base=0), names=NAMES)
    b = write_log(tmp_path / "b.vrrl", run_rows(5, tenant_base=7))
    out = tmp_path / "m.parquet"
    assert main(["merge", str(a), str(b), "-o", str(out), "--format", "parquet"]) == 0
    t = pq.read_table(out).drop_columns(["time"]).to_pylist()
    assert len(t) == 20
    assert {(r["origin"]["index"], r["origin"]["path"]) for r in t} == {(0, str(a)), (1, str(b))}
    assert {r["opcode_name"] for r in t if r["origin"]["index"] == 0} == {"gemm", "softmax", "reduce"}
    assert {r["opcode_name"] for r in t if r["origin"]["index"] == 1} == {None}  # b has no sidecar


# -------------------------------------------------------------------- export


def test_export_chrome_trace_structure(crashed: Path, tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    assert main(["export", str(crashed), "--format", "chrome", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"traceEvents", "displayTimeUnit", "otherData"}
    assert doc["otherData"]["base_timestamp_ns"] == T0
    events = doc["traceEvents"]
    for e in events:
        assert e["ph"] in {"M", "X", "i"}
        assert isinstance(e["pid"], int)
        assert isinstance(e["tid"], int)
        assert isinstance(e["name"], str)
        assert e["name"]
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float))
            assert e["ts"] >= 0
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float))
            assert e["dur"] > 0
        if e["ph"] == "i":
            assert e["s"] in {"t", "p", "g"}
    threads = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    # The crash window spans launches: it has its stream's own track.
    assert threads == {0: "tenant 0", 1: "tenant 1", CRASH_TID_BASE + 1: "tenant 1 · crash window"}
    launches = [e for e in events if e.get("cat") == "launch"]
    assert sum(e["ph"] == "X" for e in launches) == 27  # begin+end pairs
    assert [e["args"]["slot_idx"] for e in launches if e["ph"] == "i"] == [27]  # no end record
    assert {e["name"] for e in launches} == {"gemm", "softmax", "reduce"}
    x = next(e for e in launches if e["ph"] == "X")
    assert x["dur"] == 0.5  # 500 ns
    (fault,) = [e for e in events if e.get("cat") == "failure"]
    assert "cudaErrorIllegalAddress (700)" in fault["name"]
    assert fault["tid"] == 1
    (g,) = [e for e in events if e.get("cat") == "gap"]
    assert g["args"]["dropped"] == 5
    assert g["s"] == "p"
    (crash,) = [e for e in events if e.get("cat") == "crash"]
    assert crash["ph"] == "X"
    assert crash["tid"] == CRASH_TID_BASE + 1
    assert crash["ts"] == 27.0
    assert crash["dur"] == 5.0


def test_export_csv_and_jsonl(crashed: Path, tmp_path: Path) -> None:
    with RingLog.open(crashed, readonly=True) as log:
        recs = log.records()
    assert main(["export", str(crashed), "--format", "jsonl", "-o", str(tmp_path / "x.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert [Record.from_dict(r) for r in rows] == [Record.from_row(r) for r in recs]
    assert list(rows[0]) == list(ROW_FIELDS)
    assert rows[0]["opcode_name"] == "gemm"
    assert rows[-1]["opcode_name"] == "<gap>"
    assert main(["export", str(crashed), "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 0
    table = list(csv.reader(io.StringIO((tmp_path / "x.csv").read_text())))
    assert table[0] == list(CSV_FIELDS)
    assert len(table) == 1 + recs.shape[0]
    assert [int(table[1][CSV_FIELDS.index(f"arg{i}")]) for i in range(4)] == [0, 0, 3, 4]
    args = [[int(row[CSV_FIELDS.index(f"arg{i}")]) for i in range(4)] for row in table[1:]]
    assert args == recs["args"].tolist()


def test_export_parquet_round_trips(crashed: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")
    out = tmp_path / "x.parquet"
    assert main(["export", str(crashed), "--format", "parquet", "-o", str(out)]) == 0
    t = pq.read_table(out)
    with RingLog.open(crashed, readonly=True) as log:
        recs = log.records()
    assert t.num_rows == recs.shape[0]
    assert t.column("timestamp_ns").to_pylist() == recs["timestamp_ns"].tolist()
    assert t.column("args").to_pylist() == recs["args"].tolist()
    assert t.column("output_digest").to_pylist() == recs["output_digest"].tolist()
    assert "origin" not in t.column_names


def test_export_parquet_without_pyarrow_says_which_extra(
    crashed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["export", str(crashed), "--format", "parquet", "-o", str(tmp_path / "x.parquet")]) == 2
    assert "vrrl_gpu[parquet]" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x.parquet").exists()


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "argv",
    [
        ["stats", "{missing}"],
        ["stats", "{bad}"],
        ["tail", "{missing}"],
        ["tail", "-f", "{bad}"],
        ["diff", "{bad}", "{good}"],
        ["merge", "{good}", "{missing}", "-o", "{out}"],
        ["merge", "{good}", "-o", "{nodir}"],
        ["export", "{bad}", "--format", "chrome", "-o", "{out}"],
        ["export", "{good}", "--format", "chrome", "-o", "{nodir}"],
        ["export", "{good}", "--format", "excel", "-o", "{out}"],
        ["report", "{missing}", "-o", "{out}"],
        ["report", "{good}", "-o", "{nodir}"],
        ["tail", "-n", "-3", "{good}"],
        ["stats", "--buckets", "0", "{good}"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], tmp_path: Path, vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_log(tmp_path / "good.vrrl", run_rows(3))
    subst = {
        "missing": str(tmp_path / "missing.vrrl"),
        "bad": str(vectors / "bad-magic.vrrl"),
        "good": str(good),
        "out": str(tmp_path / "out.x"),
        "nodir": str(tmp_path / "no" / "such" / "out.x"),
    }
    assert main([a.format(**subst) for a in argv]) == 2
    _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.x").exists()


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "vrrl_gpu", "diff", str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert p.returncode == 2
    assert p.stdout == ""
    assert _one_error_line(p.stderr).startswith("vrrl: error:")


# ------------------------------------------------------------------ progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_and_not_when_piped() -> None:
    pytest.importorskip("rich", reason="rich (the cli extra) is not installed")
    tty = _Tty()
    with progress_bar("merging", stream=tty) as update:
        update(5, 10)
        update(10, 10)
    assert "merging" in tty.getvalue()
    piped = io.StringIO()
    with progress_bar("merging", stream=piped) as update:
        update(5, None)
    assert piped.getvalue() == ""


def test_merge_progress_reports_every_batch(tmp_path: Path) -> None:
    logs = [write_log(tmp_path / f"{i}.vrrl", [rec(j, j, tenant=i) for j in range(50)]) for i in range(3)]
    seen: list[tuple[int, int | None]] = []
    s = vrrl_gpu.analysis._export.merge_to(
        logs, tmp_path / "m.vrrl", progress=lambda d, t: seen.append((d, t))
    )
    assert s.records == 150
    assert seen[-1] == (150, 150)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
