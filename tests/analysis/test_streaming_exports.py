"""The exporters at scale: numpy-built text equals the per-row reference, chunk by chunk equals all at once,
dump --json and export jsonl are the same rows, CSV splits args, outputs read back with pyarrow/csv/json."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.analysis_logs import AWKWARD_NAMES, recorder_like_log
from vrrl_gpu._cli import main
from vrrl_gpu.analysis import _export, export_log
from vrrl_gpu.analysis._launches import find_launches
from vrrl_gpu.analysis._streams import streams_of
from vrrl_gpu.analysis.exporters import CSV_FIELDS, ROW_FIELDS, chrome_trace, opcode_names_of, record_rows
from vrrl_gpu.analysis.exporters._text import Lines, choice_table, datetime_text
from vrrl_gpu.format import RingLog, SlotStatus

N = 3001  # not a multiple of the small chunk sizes below


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recorder_like_log(tmp_path_factory.mktemp("big") / "run.vrrl", N)


def _reference(log: Path) -> list[dict[str, Any]]:
    """The rows as the per-row reference builds them (one dict per record, names and streams resolved)."""
    with RingLog.open(log, readonly=True) as lg:
        recs = lg.records()
    return list(record_rows(recs, opcode_names=opcode_names_of(log), streams=streams_of(log, recs)))


def test_jsonl_is_the_reference_rows(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    assert export_log(log, out, "jsonl") == N
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    ref = _reference(log)
    assert rows == ref
    assert all(list(r) == list(ROW_FIELDS) for r in rows)
    assert {r["opcode_name"] for r in rows} >= set(AWKWARD_NAMES)
    assert {r["stream"] for r in rows} >= {0, 1, 2, None}
    # json.dumps' own text for these rows, byte for byte
    assert out.read_text(encoding="utf-8") == "".join(json.dumps(r) + "\n" for r in ref)


def test_dump_json_and_export_jsonl_are_the_same_rows(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.jsonl"
    assert main(["export", str(log), "--format", "jsonl", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["dump", "--json", str(log)]) == 0
    assert capsys.readouterr().out == out.read_text(encoding="utf-8")


def test_csv_splits_args_and_reads_back(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    export_log(log, out, "csv")
    table = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert table[0] == list(CSV_FIELDS)
    assert [f"arg{i}" for i in range(4)] == [c for c in CSV_FIELDS if c.startswith("arg")]
    ref = _reference(log)
    assert len(table) == 1 + len(ref)
    for row, r in zip(table[1:], ref, strict=True):
        d = dict(zip(CSV_FIELDS, row, strict=True))
        assert [int(d[f"arg{i}"]) for i in range(4)] == r["args"]
        assert int(d["timestamp_ns"]) == r["timestamp_ns"]
        assert int(d["output_digest"]) == r["output_digest"]
        assert d["stream"] == ("" if r["stream"] is None else str(r["stream"]))
        name = r["opcode_name"]
        # A cell a spreadsheet would run as a formula is kept as text.
        expected = "" if name is None else ("'" + name if name[:1] in "=+-@" else name)
        assert d["opcode_name"] == expected
        assert d["slot_status_name"] == r["slot_status_name"]


def test_csv_reads_with_pyarrow(log: Path, tmp_path: Path) -> None:
    pcsv = pytest.importorskip("pyarrow.csv", reason="pyarrow (the parquet extra) is not installed")
    out = tmp_path / "x.csv"
    export_log(log, out, "csv")
    t = pcsv.read_csv(out)
    with RingLog.open(log, readonly=True) as lg:
        recs = lg.records()
    assert t.column_names == list(CSV_FIELDS)
    assert t.column("timestamp_ns").to_pylist() == recs["timestamp_ns"].tolist()
    for i in range(4):
        assert t.column(f"arg{i}").to_pylist() == recs["args"][:, i].tolist()


def test_parquet_round_trips(log: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")
    out = tmp_path / "x.parquet"
    export_log(log, out, "parquet")
    table = pq.read_table(out)
    assert table.column("time").cast("int64").to_pylist() == table.column("timestamp_ns").to_pylist()
    t = table.drop_columns(["time"]).to_pylist()
    ref = _reference(log)
    assert len(t) == len(ref)
    for got, r in zip(t, ref, strict=True):
        assert {k: got[k] for k in ROW_FIELDS} == r


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "chrome", "vrrl"])
def test_chunk_by_chunk_is_the_same_output(
    log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    if fmt == "parquet":
        pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")
    whole, parts = tmp_path / f"whole.{fmt}", tmp_path / f"parts.{fmt}"
    monkeypatch.setattr(_export, "CHUNK_RECORDS", 1 << 16)
    export_log(log, whole, fmt)
    monkeypatch.setattr(_export, "CHUNK_RECORDS", 97)  # 31 chunks; launches open across every boundary
    export_log(log, parts, fmt)
    if fmt == "parquet":
        assert pq.read_table(parts).equals(pq.read_table(whole))
    elif fmt == "chrome":
        a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (whole, parts))
        key = lambda e: json.dumps(e, sort_keys=True)  # noqa: E731 - the events' order is free
        assert sorted(map(key, a["traceEvents"])) == sorted(map(key, b["traceEvents"]))
        assert a["otherData"] == b["otherData"]
    elif fmt == "vrrl":
        with RingLog.open(whole, readonly=True) as x, RingLog.open(parts, readonly=True) as y:
            assert x.records().tobytes() == y.records().tobytes()
    else:
        assert parts.read_bytes() == whole.read_bytes()


def test_chrome_pairs_launches_across_chunks(
    log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_export, "CHUNK_RECORDS", 64)
    out = tmp_path / "t.json"
    export_log(log, out, "chrome")
    doc = json.loads(out.read_text(encoding="utf-8"))
    with RingLog.open(log, readonly=True) as lg:
        recs = lg.records()
    ref = chrome_trace(
        recs, opcode_names=opcode_names_of(log), streams=streams_of(log, recs), source=str(log)
    )
    launches = [e for e in doc["traceEvents"] if e.get("cat") == "launch"]
    ls = find_launches(recs)  # the whole log at once: what the pairs must be
    assert len(launches) == len(ls)
    assert sum(e["ph"] == "X" for e in launches) == int((ls.completed & (ls.end_ts >= ls.ts)).sum())
    x_slots = sorted(e["args"]["slot_idx"] for e in launches if e["ph"] == "X")
    assert x_slots == sorted(ls.slot[ls.completed].tolist())
    key = lambda e: json.dumps(e, sort_keys=True)  # noqa: E731
    assert sorted(map(key, doc["traceEvents"])) == sorted(map(key, ref["traceEvents"]))
    (crash,) = [e for e in doc["traceEvents"] if e.get("cat") == "crash"]
    assert crash["args"]["fault_record"] == N - 1
    assert crash["args"]["launch_record"] == int(ls.index[-1])


# ------------------------------------------------------------- the text engine


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, (1 << 64) - 1), min_size=1, max_size=50))
def test_lines_format_u64_like_python(values: list[int]) -> None:
    v = np.array(values, np.uint64)
    text = Lines(len(values)).uint(v).lit(" ").hex(v).lit(" ").hex(v, width=16).lit("\n").render()
    assert text.tobytes().decode() == "".join(f"{x} {x:x} {x:016x}\n" for x in values)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, (1 << 32) - 1), min_size=1, max_size=50), st.integers(0, 2**31))
def test_lines_format_u32_and_nulls_like_python(values: list[int], seed: int) -> None:
    v = np.array(values, np.uint32)
    null = np.random.default_rng(seed).random(len(values)) < 0.3
    text = (
        Lines(len(values))
        .uint(v, null=null, null_text=b"null")
        .lit(",")
        .fixed(v % 1000, 3)
        .lit("\n")
        .render()
    )
    expected = "".join(
        f"{'null' if z else x},{x % 1000:03d}\n" for x, z in zip(values, null.tolist(), strict=True)
    )
    assert text.tobytes().decode() == expected


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=30), st.sampled_from([0, 1, 5, 70_000]))
def test_lines_pick_names_of_any_width(idx: list[int], wide: int) -> None:
    # The keep-mask compares byte positions; a name wider than its precomputed range must still render.
    names = [b"", b"gemm", b"x" * wide]
    text = Lines(len(idx)).lit("<").pick(np.array(idx), choice_table(names)).lit(">\n").render()
    assert text.tobytes() == b"".join(b"<" + names[i] + b">\n" for i in idx)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 2, 3]), st.integers(0, (1 << 64) - 1), st.booleans()), min_size=1
    ),
    st.integers(1, 12),
)
def test_lines_mix_nul_texts_with_padded_parts(rows: list[tuple[int, int, bool]], width: int) -> None:
    # Padded parts are kept as "not NUL"; a text holding a NUL (a name, a literal, a part with garbage left
    # of its text) must keep its exact bytes beside them, and a null with empty text must leave nothing.
    names = [b"", b"a\0b", b"\0", b"gemm"]
    idx = np.array([r[0] for r in rows])
    v = np.array([r[1] for r in rows], np.uint64)
    null = np.array([r[2] for r in rows])
    small = v % np.uint64(10**width)
    garbage = np.full((len(rows), 4), ord("#"), np.uint8)
    garbage[:, 3] = ord("0") + (idx % 10).astype(np.uint8)
    lines = Lines(len(rows)).lit("\0[").pick(idx, choice_table(names)).lit("|").uint(v, null=null)
    lines.lit("|").hex(v, null=null, null_text=b"-").lit("|").fixed(small, width).lit("|")
    lines.part(garbage, np.ones(len(rows), np.intp)).lit("|").hex(small, width=width).lit("]\n")
    expected = b"".join(
        b"\0["
        + names[i]
        + f"|{'' if z else x}|{'-' if z else f'{x:x}'}|{x % 10**width:0{width}d}|{i % 10}|".encode()
        + f"{x % 10**width:0{width}x}]\n".encode()
        for i, x, z in rows
    )
    assert lines.render().tobytes() == expected


def test_datetime_text_covers_the_u64_range() -> None:
    from vrrl_gpu._cli._output import format_timestamp

    ts = np.array([0, 1_700_000_000_123_456_789, (1 << 63) - 1, 1 << 63, (1 << 64) - 1], np.uint64)
    for padded in (False, True):
        lines = Lines(len(ts)).part(*datetime_text(ts), padded=padded).lit("\n")
        got = lines.render().tobytes().decode().splitlines()
        assert got == [format_timestamp(int(t)) for t in ts.tolist()]


# ------------------------------------------------------- info and verify, streamed


def test_semantic_findings_chunk_by_chunk_are_the_whole_log_s(tmp_path: Path) -> None:
    from vrrl_gpu.analysis._verify import semantic_findings
    from vrrl_gpu.format import HEADER_SIZE, RECORD_DTYPE

    n = 400
    p = recorder_like_log(tmp_path / "v.vrrl", n)
    raw = np.memmap(p, RECORD_DTYPE, mode="r+", offset=HEADER_SIZE, shape=(n,))
    rng = np.random.default_rng(5)
    hit = rng.choice(np.arange(5, n - 5), size=40, replace=False)
    raw["magic"][hit[:10]] = 0  # empty slots between live records
    raw["slot_status"][hit[10:20]] = 99
    raw["failure_class"][hit[20:25]] = 77
    raw["timestamp_ns"][hit[25:35]] = raw["timestamp_ns"][hit[25:35]] - np.uint64(60 * 10**9)
    raw["timestamp_ns"][hit[35:]] = 0
    raw["slot_status"][n - 5] = SlotStatus.META  # META with a user opcode
    raw.flush()
    del raw
    whole = semantic_findings(p, chunk_slots=1 << 16)
    assert {f.what.split(" ")[0] for f in whole} >= {"record", "slot_status", "failure_class", "timestamp"}
    for k in (1, 7, 64):
        assert semantic_findings(p, chunk_slots=k) == whole
    empty = next(f for f in whole if f.what.startswith("record magic is 0"))
    assert empty.count == 10
    assert list(empty.slots) == sorted(hit[:10].tolist())


def test_info_streamed_counts_what_a_whole_read_counts(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(log)]) == 0
    info = json.loads(capsys.readouterr().out)
    with RingLog.open(log, readonly=True) as lg:
        scan = lg.scan()
    recs = scan.records
    assert info["records"] == recs.shape[0] == N
    assert info["wrapped"] is scan.wrapped
    assert info["first_timestamp_ns"] == int(recs["timestamp_ns"].min())
    assert info["failures"] == int((recs["failure_class"] != 0).sum())
    assert info["meta_records"] == int((recs["slot_status"] == SlotStatus.META).sum()) > 0
