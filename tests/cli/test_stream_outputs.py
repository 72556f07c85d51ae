"""Outputs that are streams: ``-o -`` is standard output, a FIFO or a device is written in place and never
replaced, ``dump`` gives TSV when piped and a table page by page on a terminal."""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers.analysis_logs import recorder_like_log
from vrrl_gpu._cli import main
from vrrl_gpu._cli._table import DUMP_COLUMNS

REPO = Path(__file__).resolve().parents[2]
N = 501


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recorder_like_log(tmp_path_factory.mktemp("s") / "run.vrrl", N)


def _vrrl(*argv: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "vrrl_gpu", *argv], capture_output=True, env=env, timeout=120, **kw
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "chrome", "parquet"])
def test_dash_output_is_stdout(log: Path, tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")
    ref = tmp_path / f"ref.{fmt}"
    assert main(["export", str(log), "--format", fmt, "-o", str(ref)]) == 0
    p = _vrrl("export", str(log), "--format", fmt, "-o", "-", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "-").exists()
    assert p.stdout == ref.read_bytes()
    assert b"record(s)" in p.stderr  # the summary line is kept off the data


def test_dev_stdout_needs_no_force_and_appends_to_the_shells_file(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_bytes(b"kept\n")
    with open(out, "ab") as f:
        p = subprocess.run(
            [sys.executable, "-m", "vrrl_gpu", "export", str(log), "--format", "jsonl", "-o", "/dev/stdout"],
            stdout=f,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )
    assert p.returncode == 0, p.stderr
    lines = out.read_bytes().splitlines()
    assert lines[0] == b"kept"  # written through the shell's descriptor, never truncated or replaced
    assert len(lines) == 1 + N


def test_fifo_output_is_streamed_and_not_replaced(log: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=read)
    t.start()
    assert main(["export", str(log), "--format", "jsonl", "-o", str(fifo)]) == 0
    t.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    rows = [json.loads(x) for x in got[0].splitlines()]
    assert len(rows) == N


def test_character_device_is_written_in_place(log: Path) -> None:
    assert main(["export", str(log), "--format", "csv", "-o", os.devnull]) == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert main(["export", str(log), "--format", "csv", "--force", "-o", os.devnull]) == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_dump_piped_is_tsv(log: Path) -> None:
    p = _vrrl("dump", str(log))
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    lines = text.splitlines()
    assert lines[0].split("\t") == list(DUMP_COLUMNS)
    assert len(lines) == 1 + N
    assert all(len(x.split("\t")) == len(DUMP_COLUMNS) for x in lines)
    assert not set(text) & set("─│┃━┏┓╇")  # no box drawing
    assert lines[1].split("\t")[0] == "0"
    assert "bell\\x07" in text  # control characters never reach the output raw
    assert "\x07" not in text
    assert f"{N:,} record(s)" in p.stderr.decode()


def test_dump_table_when_asked_or_on_a_terminal(log: Path) -> None:
    p = _vrrl("dump", "--table", str(log))
    assert p.returncode == 0, p.stderr
    assert "─" in p.stdout.decode()
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vrrl_gpu", "dump", str(log)], stdout=slave, stderr=subprocess.DEVNULL, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 1 << 16)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    assert proc.wait(timeout=120) == 0
    os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    assert "time (UTC)" in out
    assert out.count("time (UTC)") == 1  # one header, however many pages
    assert f"{N:,} record(s)" in out
    assert "softmax" in out
