"""Issue 16, item 1: a shared /dev/shm full of traps never hangs or breaks a Recorder or ``vrrl recover``."""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import warnings
from pathlib import Path

import pytest

from tests.hostile.helpers import UNSHARE_REASON, can_unshare_mounts, run_in_private_mounts
from vrrl_gpu.capture import ShmSegment, StagingRing, find_orphans, list_segments
from vrrl_gpu.errors import StagingError, VrrlWarning


def _plant(d: Path) -> list[Path]:
    """Every trap a local user can leave under a segment's name."""
    fifo = d / "vrrl-0-1-fifo.stg"
    os.mkfifo(fifo)
    (d / "vrrl-0-2-dir.stg").mkdir()
    (d / "vrrl-0-3-link.stg").symlink_to("/dev/zero")
    sparse = d / "vrrl-0-4-sparse.stg"
    with open(sparse, "wb") as f:
        f.truncate(64 << 30)  # 64 GiB of holes: never to be mapped or read whole
    os.chmod(sparse, 0o600)
    loose = d / "vrrl-0-5-loose.stg"
    loose.write_bytes(bytes(4096))
    os.chmod(loose, 0o666)
    return [fifo, d / "vrrl-0-2-dir.stg", d / "vrrl-0-3-link.stg", sparse, loose]


def _bounded(fn: object, seconds: float = 20.0) -> object:
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()  # type: ignore[operator]
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hung"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


def test_traps_in_the_segment_directory_are_skipped_and_counted_without_hanging(tmp_path: Path) -> None:
    traps = _plant(tmp_path)
    real = ShmSegment.create(None, StagingRing.layout_size(8), directory=tmp_path)
    StagingRing.create(real.array, 8, log_path=str(tmp_path / "x.vrrl"))
    found = _bounded(lambda: list_segments(tmp_path))
    assert isinstance(found, list)
    skipped = [f for f in found if isinstance(f, StagingError)]
    assert len(skipped) == len(traps)
    assert all(getattr(f, "suspicious", None) is True for f in skipped)
    assert [f.path for f in found if not isinstance(f, StagingError)] == [real.path]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _bounded(lambda: find_orphans(directory=tmp_path))
    msgs = [str(w.message) for w in caught if issubclass(w.category, VrrlWarning)]
    assert len(msgs) == 1, msgs
    assert f"skipped {len(traps)} file(s)" in msgs[0]
    real.close()


@pytest.mark.parametrize(
    "name", ["vrrl-0-1-fifo.stg", "vrrl-0-2-dir.stg", "vrrl-0-3-link.stg", "vrrl-0-4-sparse.stg"]
)
def test_opening_a_trap_as_a_segment_is_refused_with_its_path(tmp_path: Path, name: str) -> None:
    _plant(tmp_path)
    with pytest.raises(StagingError, match=name):
        _bounded(lambda: ShmSegment.open(tmp_path / name))


def test_a_planted_segment_name_does_not_stop_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter(["vrrl-taken.stg", "vrrl-free.stg"])
    monkeypatch.setattr("vrrl_gpu.capture._shm._default_name", lambda: next(names))
    os.mkfifo(tmp_path / "vrrl-taken.stg")
    seg = ShmSegment.create(None, StagingRing.layout_size(8), directory=tmp_path)
    assert seg.path.endswith("vrrl-free.stg")
    seg.close()


_CHILD = """
import json, sys, warnings
from vrrl_gpu import Recorder
from vrrl_gpu._cli import main
out = {}
for staging in ("pinned", "shm"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Recorder(sys.argv[1] + "." + staging, device="twin", capacity=64, staging=staging) as rec:
            with rec.slot(rec.opcode("op"), (1, 2, 3, 4)):
                pass
    out[staging] = [str(w.message) for w in caught]
out["recover"] = main(["recover", "--all"])
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(not can_unshare_mounts(), reason=UNSHARE_REASON)
def test_recorder_and_recover_all_survive_a_trapped_dev_shm(tmp_path: Path) -> None:
    plant = "; ".join(
        [
            "mount -t tmpfs -o size=16m tmpfs /dev/shm",
            "mkfifo /dev/shm/vrrl-0-1-fifo.stg",
            "mkdir /dev/shm/vrrl-0-2-dir.stg",
            "ln -s /dev/zero /dev/shm/vrrl-0-3-link.stg",
            "truncate -s 64G /dev/shm/vrrl-0-4-sparse.stg",
            "chmod 600 /dev/shm/vrrl-0-4-sparse.stg",
        ]
    )
    child = f"{shlex.quote(sys.executable)} -c {shlex.quote(_CHILD)} {tmp_path / 'r.vrrl'}"
    cmd = f"{plant}; exec timeout 90 {child}"
    proc = run_in_private_mounts(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for staging in ("pinned", "shm"):
        trap_warnings = [m for m in out[staging] if "skipped 4 file(s)" in m]
        assert len(trap_warnings) == 1, out[staging]
    assert out["recover"] in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr


def _dead_pid() -> int:
    """A pid no process has now (a child that already exited and was reaped)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("size", [0, 100, 4096 + 64], ids=["empty", "short", "no-control-block"])
def test_a_segment_whose_creator_died_mid_creation_is_removed_quietly(tmp_path: Path, size: int) -> None:
    # Killed between the O_EXCL create and the control block (the kill tests do this): ours by owner, mode
    # and name, the pid in the name is gone, nothing was ever recorded. Warning about it forever (every
    # Recorder scans for orphans) would be noise; it is removed instead.
    seg = tmp_path / f"vrrl-{os.getuid()}-{_dead_pid()}-{'0' * 16}.stg"
    seg.write_bytes(bytes(size))
    os.chmod(seg, 0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_orphans(directory=tmp_path) == []
    assert not seg.exists()


@pytest.mark.parametrize("size", [0, 100, 4096 + 64], ids=["empty", "short", "no-control-block"])
def test_a_segment_being_created_by_a_live_process_is_skipped_quietly(tmp_path: Path, size: int) -> None:
    # Another process of ours between its O_EXCL create and its control block (a recorder starting right
    # now): neither an orphan nor damage. A warning here would fail every Recorder started at that moment.
    seg = tmp_path / f"vrrl-{os.getuid()}-{os.getpid()}-{'0' * 16}.stg"
    seg.write_bytes(bytes(size))
    os.chmod(seg, 0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_orphans(directory=tmp_path) == []
    assert seg.exists()


@pytest.mark.parametrize("case", ["another-uid-name", "not-zero", "loose-mode", "live-pid-not-zero"])
def test_what_only_looks_abandoned_is_kept_and_reported(tmp_path: Path, case: str) -> None:
    pid = os.getpid() if case.startswith("live-pid") else _dead_pid()
    uid = os.getuid() + 1 if case == "another-uid-name" else os.getuid()
    seg = tmp_path / f"vrrl-{uid}-{pid}-{'0' * 16}.stg"
    seg.write_bytes(b"garbage!" * 600 if case.endswith("not-zero") else bytes(100))
    os.chmod(seg, 0o666 if case == "loose-mode" else 0o600)
    with pytest.warns(VrrlWarning, match="not yours to read"):
        find_orphans(directory=tmp_path)
    assert seg.exists()
