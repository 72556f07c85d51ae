"""Issue 16, items 2, 4, 10: logs and sidecars that are not regular files, symlinks, uninitialised logs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.analysis_logs import NAMES, run_rows, write_log
from tests.hostile.helpers import READING_COMMANDS, REPO, expand, problems, refusals, run_batch
from vrrl_gpu import RingLog
from vrrl_gpu.errors import VrrlIoError
from vrrl_gpu.format import RECORD_DTYPE, read_header
from vrrl_gpu.format._layout import HEADER_SIZE, RECORD_SIZE, file_size_for
from vrrl_gpu.format._sidecar import sidecar_path


@pytest.fixture
def good_log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "good.vrrl", run_rows(12), capacity=64, names=NAMES)


# ------------------------------------------------------------- item 4: FIFOs and devices


@pytest.mark.slow
def test_a_fifo_as_the_log_is_refused_by_every_reading_command_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "p.vrrl"
    os.mkfifo(fifo)
    results = run_batch(expand(READING_COMMANDS, str(fifo), str(tmp_path / "o")), seconds=8)
    assert len(results) == len(READING_COMMANDS)
    assert refusals(results) == []
    assert all("FIFO" in r["stderr"] for r in results), [r["stderr"] for r in results]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_a_hostile_sidecar_never_hangs_and_the_log_stays_readable(good_log: Path, kind: str) -> None:
    side = sidecar_path(good_log)
    side.unlink()
    if kind == "fifo":
        os.mkfifo(side)
    elif kind == "dev-zero":
        side.symlink_to("/dev/zero")
    else:
        side.mkdir()
    out = good_log.parent / "o"
    results = run_batch(expand(READING_COMMANDS, str(good_log), str(out)), seconds=8)
    # verify exits 0 (sound), diff 0 (the log agrees with itself), tail -f 0 after its time.
    assert problems(results) == []
    for r in results:
        assert "Traceback" not in r["stderr"]
    warned = [r for r in results if "sidecar" in r["stderr"]]
    assert warned, "a damaged sidecar is said once"
    for r in warned:
        assert r["stderr"].count("vrrl: warning:") == 1, r


def test_a_device_or_fifo_log_is_refused_by_the_library_with_the_reason(tmp_path: Path) -> None:
    fifo = tmp_path / "f.vrrl"
    os.mkfifo(fifo)
    # In a child with a deadline: a regression would block in open() for ever.
    probe = (
        "import sys\nfrom vrrl_gpu import RingLog\n"
        "for kw in ({'readonly': True}, {'capacity': 8}):\n"
        "    try:\n        RingLog.open(sys.argv[1], **kw)\n"
        "    except OSError as e:\n        print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(fifo)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc
    assert all("is a FIFO, not a regular file" in x for x in lines)
    link = tmp_path / "z.vrrl"
    link.symlink_to("/dev/zero")
    with pytest.raises(VrrlIoError, match="character device"):
        read_header(link)
    with pytest.raises(VrrlIoError, match="is a directory"):
        RingLog.open(tmp_path, readonly=True)


# ------------------------------------------------------------- item 2: symlinks


def test_writing_through_another_users_symlink_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = write_log(tmp_path / "victim.vrrl", run_rows(3), capacity=16)
    before = victim.read_bytes()
    link = tmp_path / "run2.vrrl"
    link.symlink_to(victim)
    # The link looks like another user's: lstat reports a foreign owner, as in a shared 1777 directory.
    real_lstat = os.lstat
    me = os.geteuid()

    def lstat(p: str | os.PathLike[str]) -> os.stat_result:
        st = real_lstat(p)
        if os.fspath(p) == str(link):
            fields = list(st)
            fields[stat.ST_UID] = me + 4242
            return os.stat_result(fields)
        return st

    monkeypatch.setattr("vrrl_gpu.format._safeio.os.lstat", lstat)
    with pytest.raises(VrrlIoError, match=f"symlink owned by uid {me + 4242}, not by you"):
        RingLog.open(link, capacity=16)
    assert victim.read_bytes() == before
    # Reading through it is harmless and still works.
    with RingLog.open(link, readonly=True) as log:
        assert log.records().shape[0] == len(run_rows(3))


def test_a_symlink_of_ones_own_is_followed_for_writing(tmp_path: Path) -> None:
    real = write_log(tmp_path / "real.vrrl", run_rows(2), capacity=16)
    link = tmp_path / "mine.vrrl"
    link.symlink_to(real)
    with RingLog.open(link, capacity=16) as log:
        log.extend(np.zeros(1, RECORD_DTYPE))
    with RingLog.open(real, readonly=True) as log:
        assert log.records().shape[0] == len(run_rows(2)) + 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a symlink owned by another uid (CI runs as root)")
def test_root_does_not_follow_another_users_symlink_in_a_shared_directory(tmp_path: Path) -> None:
    shared = tmp_path / "pub"
    shared.mkdir(mode=0o1777)
    victim = write_log(tmp_path / "victim.vrrl", run_rows(3), capacity=16)
    before = victim.read_bytes()
    link = shared / "run2.vrrl"
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    from vrrl_gpu._cli import main

    assert main(["demo", "--device", "twin", "--launches", "4", str(link)]) == 2
    assert victim.read_bytes() == before


# ------------------------------------------------------------- item 10: never initialised


@pytest.mark.parametrize("size", ["full", "empty"])
def test_a_log_of_zeros_left_by_a_killed_creator_is_initialised_by_the_next_writer(
    tmp_path: Path, size: str
) -> None:
    p = tmp_path / "z.vrrl"
    cap = 32
    p.write_bytes(bytes(file_size_for(cap) if size == "full" else 0))
    with RingLog.open(p, capacity=cap) as log:
        assert log.capacity == cap
        log.extend(np.zeros(3, RECORD_DTYPE))
    h = read_header(p)
    assert (h.capacity, h.cursor, h.file_size) == (cap, 3, HEADER_SIZE + RECORD_SIZE * cap)


def test_creation_is_atomic_a_crash_leaves_no_log_or_a_whole_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "new.vrrl"

    class Killed(BaseException):
        pass

    def die(*_: object) -> None:
        raise Killed

    # Die where kill -9 hurt before: after the file got its length, before its header.
    monkeypatch.setattr("vrrl_gpu.format._ringlog._pwrite_all", die)
    with pytest.raises(Killed):
        RingLog.open(p, capacity=16)
    monkeypatch.undo()
    assert not p.exists()
    assert [x.name for x in tmp_path.iterdir()] == []
    with RingLog.open(p, capacity=16) as log:
        assert log.capacity == 16
