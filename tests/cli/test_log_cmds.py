from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vrrl_gpu._cli import main
from vrrl_gpu.analysis.exporters import CSV_FIELDS

JSON_KEYS = [
    "timestamp_ns",
    "slot_idx",
    "tenant_id",
    "opcode",
    "args",
    "epoch",
    "slot_status",
    "failure_class",
    "backend_error_code",
    "output_digest",
    "failure_class_name",
    "stream",
    "slot_status_name",
    "opcode_name",
]


def test_dump_json_is_the_format_fields_in_publish_order(
    vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dump", "--json", str(vectors / "wrapped.vrrl")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    expected = [json.loads(x) for x in (vectors / "wrapped.jsonl").read_text().splitlines()]
    assert [list(d) for d in lines] == [JSON_KEYS] * len(expected)
    derived = ("failure_class_name", "stream", "slot_status_name", "opcode_name")
    assert [{k: v for k, v in d.items() if k not in derived} for d in lines] == expected
    assert {d["stream"] for d in lines} == {None}  # the vectors have no sidecar: no stream is known
    assert lines[0]["failure_class_name"] in {
        "None",
        "DeviceLoss",
        "TransientQueue",
        "ProgramBug",
        "Unclassified",
    }


def test_dump_csv_has_the_same_columns(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "--csv", str(vectors / "small.vrrl")]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == list(CSV_FIELDS)
    assert len(rows) == 1 + 5
    assert rows[1][CSV_FIELDS.index("backend_error_code")] == "700"


def test_dump_table_names_classes_and_codes(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", str(vectors / "small.vrrl")]) == 0
    captured = capsys.readouterr()
    assert "DeviceLoss" in captured.out
    assert "700" in captured.out
    assert "5 record(s)" in captured.err  # not a terminal: TSV on stdout, the count on stderr


def test_info_json_counts_records_evidence_and_wrap(
    vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", "--json", str(vectors / "wrapped.vrrl")]) == 0
    info = json.loads(capsys.readouterr().out)
    expected = [json.loads(x) for x in (vectors / "wrapped.jsonl").read_text().splitlines()]
    assert info["capacity"] == 8
    assert info["cursor"] == 3
    assert info["records"] == len(expected)
    assert info["wrapped"] is True
    with_ev = [
        d
        for d in expected
        if d["slot_status"] or d["failure_class"] or d["backend_error_code"] or d["output_digest"]
    ]
    assert info["with_evidence"] == len(with_ev)
    failing = [d for d in expected if d["failure_class"]]
    assert info["failures"] == len(failing)
    assert sum(info["failures_by_class"].values()) == len(failing)
    assert "None" not in info["failures_by_class"]
    ts = [d["timestamp_ns"] for d in expected]
    assert info["span_ns"] == max(ts) - min(ts)
    assert main(["info", "--json", str(vectors / "small.vrrl")]) == 0
    assert json.loads(capsys.readouterr().out)["wrapped"] is False


def test_info_table_runs(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(vectors / "small.vrrl")]) == 0
    assert "capacity" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("small", 0),
        ("wrapped", 0),
        ("empty", 0),
        ("bad-record-magic", 1),
        ("truncated-body", 1),
        ("bad-magic", 2),
        ("bad-version", 2),
        ("truncated-header", 2),
        ("zero-capacity", 2),
        ("huge-capacity", 2),
    ],
)
def test_verify_exit_codes(vectors: Path, capsys: pytest.CaptureFixture[str], name: str, code: int) -> None:
    assert main(["verify", str(vectors / f"{name}.vrrl")]) == code
    captured = capsys.readouterr()
    if code == 1:
        assert "DAMAGED" in captured.out
    if code == 2:
        assert len(captured.err.strip().splitlines()) == 1


def test_verify_says_where_the_damage_is(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["verify", str(vectors / "bad-record-magic.vrrl")])
    assert "slot 2" in capsys.readouterr().out


def test_dump_salvage_reads_damaged_logs(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "--json", str(vectors / "bad-record-magic.vrrl")]) == 2
    assert main(["dump", "--json", "--salvage", str(vectors / "bad-record-magic.vrrl")]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 4
    assert "skipped 1 corrupt" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["dump"],
        ["nosuch"],
        ["dump", "--json", "--csv", "x"],
        ["info", "/nonexistent/log.vrrl"],
    ],
)
def test_bad_arguments_and_files_give_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_console_entry_point_and_module_run_without_traceback(vectors: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vrrl_gpu", "dump", str(vectors / "bad-magic.vrrl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "VRRL0001" in r.stderr


def _sound_log(tmp_path: Path, n: int = 6) -> Path:
    import time

    from vrrl_gpu import Record, RingLog

    path = tmp_path / "run.vrrl"
    t0 = time.time_ns() - 10**9
    with RingLog.open(path, capacity=16) as log:
        log.extend(
            [
                Record(
                    timestamp_ns=t0 + 1000 * i, slot_idx=i, tenant_id=0, opcode=7, args=(i, 0, 0, 0), epoch=0
                )
                for i in range(n)
            ]
        )
    return path


def _poke(path: Path, slot: int, field: str, value: int) -> None:
    import numpy as np

    from vrrl_gpu.format import HEADER_SIZE, RECORD_DTYPE

    arr = np.memmap(path, dtype=RECORD_DTYPE, mode="r+", offset=HEADER_SIZE, shape=(16,))
    arr[field][slot] = value
    arr.flush()
    del arr


@pytest.mark.parametrize(
    ("field", "value", "what"),
    [
        ("magic", 0, "record magic is 0 where a record must be (between live records)"),
        ("timestamp_ns", 1, "timestamp more than 10 s before an earlier record"),
        ("slot_status", 42, "slot_status outside SlotStatus"),
        ("failure_class", 99, "failure_class outside FailureClass"),
    ],
)
def test_verify_finds_semantic_damage_inside_the_live_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: int, what: str
) -> None:
    path = _sound_log(tmp_path)
    assert main(["verify", str(path)]) == 0
    capsys.readouterr()
    _poke(path, 3, field, value)
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out
    assert f"slot 3: {what}" in out, out


def test_verify_of_a_recorded_crash_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("the twin backend needs g++")
    log = tmp_path / "crash.vrrl"
    main(
        ["demo", str(log), "--device", "twin", "--launches", "300", "--fault-at", "200", "--elements", "256"]
    )
    capsys.readouterr()
    assert main(["verify", str(log)]) == 0, capsys.readouterr().out
