"""Issue 16, items 3 and 8: ``--force`` never replaces a device, a FIFO or a log a writer holds."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers.analysis_logs import NAMES, run_rows, write_log
from tests.hostile.helpers import REPO
from vrrl_gpu import RingLog
from vrrl_gpu._cli import main


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "in.vrrl", run_rows(5), capacity=32, names=NAMES)


OUTPUT_COMMANDS = [
    ["export", "--force", "--format", "jsonl", "-o", "{out}", "{log}"],
    ["export", "--force", "--format", "csv", "-o", "{out}", "{log}"],
    ["export", "--force", "--format", "chrome", "-o", "{out}", "{log}"],
    ["merge", "--force", "--format", "jsonl", "-o", "{out}", "{log}"],
    ["report", "--force", "-o", "{out}", "{log}"],
]


@pytest.mark.parametrize(
    "argv", OUTPUT_COMMANDS, ids=lambda a: f"{a[0]}-{a[3] if a[0] != 'report' else 'html'}"
)
def test_force_writes_a_fifo_as_a_stream_and_leaves_it_a_fifo(
    tmp_path: Path, log: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "n"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main([a.format(out=fifo, log=log) for a in argv]) == 0
    reader.join(20)
    assert not reader.is_alive()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "still a FIFO"
    assert got[0], "the output went through the FIFO"
    capsys.readouterr()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mknod a character device (CI runs as root)")
def test_force_never_replaces_a_character_device(
    tmp_path: Path, log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = tmp_path / "n"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    for argv in OUTPUT_COMMANDS:
        assert main([a.format(out=node, log=log) for a in argv]) == 0, argv
        st = os.lstat(node)
        assert stat.S_ISCHR(st.st_mode), argv
        assert st.st_rdev == os.makedev(1, 3)
    assert main(["merge", "--force", "-o", str(node), str(log)]) == 2  # a VRRL log needs a regular file
    assert stat.S_ISCHR(os.lstat(node).st_mode)
    assert "regular file" in capsys.readouterr().err


def test_dash_is_standard_output(log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "vrrl_gpu", "export", "--format", "jsonl", "-o", "-", str(log)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(rows) == len(run_rows(5))
    assert "record(s)" in proc.stderr
    assert not (Path.cwd() / "-").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["merge", "--force", "-o", "{held}", "{log}"],
        ["export", "--force", "--format", "jsonl", "-o", "{held}", "{log}"],
        ["report", "--force", "-o", "{held}", "{log}"],
    ],
    ids=["merge", "export", "report"],
)
def test_force_refuses_a_log_whose_writer_lock_is_held(
    tmp_path: Path, log: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    held_path = tmp_path / "held.vrrl"
    with RingLog.open(held_path, capacity=16) as held:
        ino = os.stat(held_path).st_ino
        assert main([a.format(held=held_path, log=log) for a in argv]) == 2
        err = capsys.readouterr().err
        assert "holds this file's lock" in err
        assert str(held_path) in err
        assert os.stat(held_path).st_ino == ino, "not replaced"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temp file left"
        with RingLog.open(log, readonly=True) as src:
            held.extend(src.records())  # the holder still writes to the file it holds
    # Once the writer is gone, --force replaces it.
    assert main([a.format(held=held_path, log=log) for a in argv]) == 0
    capsys.readouterr()
