"""Issue 16, items 5, 6, 7: hostile sidecars and names, one damage policy, the whole u64 time range."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.analysis_logs import GEMM, NAMES, records, run_rows, write_log
from tests.hostile.helpers import READING_COMMANDS, expand, problems, run_batch
from vrrl_gpu._cli import main
from vrrl_gpu.format import Sidecar, write_sidecar
from vrrl_gpu.format._sidecar import sidecar_path

#: Sidecar damage of every kind the issue found, and a few more.
DAMAGED_SIDECARS: dict[str, bytes] = {
    "invalid-json": b"{not json",
    "non-utf8": b'{"schema": "vrrl_gpu.sidecar/1", "host": "\xff\xfe"}',
    "superscript-key": json.dumps({"schema": "vrrl_gpu.sidecar/1", "opcode_names": {"\u00b2": "x"}}).encode(),
    "huge-int": b'{"schema": "vrrl_gpu.sidecar/1", "pid": ' + b"9" * 5000 + b"}",
    "lone-surrogate": b'{"schema": "vrrl_gpu.sidecar/1", "opcode_names": {"4097": "\\ud800"}}',
    "deep": b"[" * 100_000,
    "deep-object": b'{"schema": "vrrl_gpu.sidecar/1", "device": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
    "wrong-schema": b'{"schema": "other"}',
    "not-an-object": b"[1, 2, 3]",
    "big-key": json.dumps({"schema": "vrrl_gpu.sidecar/1", "opcode_names": {"9" * 30: "x"}}).encode(),
    "wrong-type": b'{"schema": "vrrl_gpu.sidecar/1", "pid": "twelve"}',
    "bad-stream-table": json.dumps(
        {"schema": "vrrl_gpu.sidecar/1", "extra": {"session": {"nonce": 1}, "streams": [{"runs": [["x"]]}]}}
    ).encode(),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(DAMAGED_SIDECARS))
def test_a_damaged_sidecar_is_one_warning_in_every_command_and_the_log_stays_readable(
    tmp_path: Path, kind: str
) -> None:
    log = write_log(tmp_path / "d.vrrl", run_rows(6), capacity=32, names=NAMES)
    sidecar_path(log).write_bytes(DAMAGED_SIDECARS[kind])
    results = run_batch(expand(READING_COMMANDS, str(log), str(tmp_path / "o")), seconds=20)
    assert problems(results) == []
    for r in results:
        assert r["stderr"].count("vrrl: warning:") <= 1, r
        assert "Traceback" not in r["stderr"]
    if kind == "bad-stream-table":
        return  # the names are sound: only commands that show streams have anything to say
    # Every command that shows names says so, once: the same policy everywhere.
    name_users = [r for r in results if _uses_names(r["argv"])]
    assert len(name_users) >= 10
    for r in name_users:
        assert r["stderr"].count("vrrl: warning:") == 1, r
    # Names fall back to hex.
    dump = next(r for r in results if r["argv"][:1] == ["dump"] and len(r["argv"]) == 2)
    assert f"{GEMM:#x}" in dump["stdout"]


def _uses_names(argv: list[str]) -> bool:
    cmd = argv[0]
    if cmd == "dump":
        return len(argv) == 2
    if cmd == "merge":
        return "jsonl" in argv
    if cmd == "replay":
        return "--json" not in argv
    return cmd in ("stats", "tail", "export", "report")


HOSTILE_NAMES = {
    "markup": "[/]",
    "markup-open": "[bold red]x[/",
    "escape": "\x1b[2J\x1b]0;owned\x07",
    "bidi": "abc\u202edcba",
    "csv-formula": '=HYPERLINK("http://x")',
    "csv-plus": "+1+1",
    "csv-at": "@SUM(A1)",
    "emoji-code": ":thumbs_up:",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_NAMES))
def test_hostile_opcode_names_are_shown_as_text_never_interpreted(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = HOSTILE_NAMES[kind]
    log = write_log(tmp_path / "n.vrrl", run_rows(2), capacity=16)
    write_sidecar(log, Sidecar(opcode_names={GEMM: name}))
    for argv in (["dump", str(log)], ["stats", str(log)], ["tail", str(log)], ["replay", "--list", str(log)]):
        assert main(argv) == 0, argv
        out = capsys.readouterr().out
        assert "\x1b" not in out
        assert "\x07" not in out
        assert "\u202e" not in out
        if kind.startswith("markup") or kind == "emoji-code":
            assert name in out, (argv, out)
    out_csv = tmp_path / "o.csv"
    assert main(["export", "--format", "csv", "-o", str(out_csv), str(log)]) == 0
    capsys.readouterr()
    rows = list(csv.reader(io.StringIO(out_csv.read_text())))
    col = rows[0].index("opcode_name")
    cells = {r[col] for r in rows[1:]}
    for c in cells:
        assert not c or c[0] not in "=+-@", cells


@pytest.mark.parametrize("path_part", ["a[/b", "[bold]x", "sp ace"])
def test_legal_paths_with_markup_work_in_every_table(
    tmp_path: Path, path_part: str, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / path_part
    d.mkdir(parents=True)
    log = write_log(d / "x[b].vrrl", run_rows(3), capacity=16, names=NAMES)
    for argv in (["info", str(log)], ["dump", str(log)], ["replay", "--list", str(log)]):
        assert main(argv) == 0, argv
        # Titles wrap at the table's width: compare without whitespace. Piped, dump's rows are TSV and
        # its title (the path and the count) goes to stderr.
        captured = capsys.readouterr()
        assert "".join(str(log).split()) in "".join((captured.out + captured.err).split())


TIME_EDGES = [0, 1, 2**63 - 1, 2**63, 2**63 + 5, 2**64 - 2, 2**64 - 1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_timestamps_across_the_whole_u64_range(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = records(run_rows(8, fault_after=5))
    edges = np.array(TIME_EDGES, dtype=np.uint64)
    picks = edges[rng.integers(0, len(TIME_EDGES), size=arr.shape[0])]
    if seed == 0:  # straddling 2^63
        picks = np.where(np.arange(arr.shape[0]) % 2 == 0, np.uint64(2**63 - 1), np.uint64(2**63 + 1))
    arr["timestamp_ns"] = np.sort(picks) if seed % 2 else picks
    log = write_log(tmp_path / "t.vrrl", arr, capacity=32, names=NAMES)
    results = run_batch(expand(READING_COMMANDS, str(log), str(tmp_path / "o")), seconds=30)
    # replay --list may say the log has nothing to replay (exit 2 as bad input), never a traceback.
    assert problems(results, ok_codes=(0, 1)) == []
