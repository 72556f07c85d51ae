"""Issue 16: SIGKILL recording processes at random moments (``_kill.py`` says what a case checks).

24 cases here, two of each class (pinned/shm staging x begin/begin+end x
launch/wrap/slot) at random moments; ``benchmarks/bench_kill.py`` runs 200 or
more and prints the figures per class. Verified on the twin.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile._kill import CLASSES, STAGING_SLOTS, run_case


@pytest.mark.parametrize("seed", range(2 * len(CLASSES)))
def test_a_killed_recording_leaves_a_whole_log_and_loses_at_most_a_window(tmp_path: Path, seed: int) -> None:
    r = run_case(seed, tmp_path)
    assert not r.hang, r
    assert not r.tracebacks, r.tracebacks
    assert not r.refused, r.refused
    assert r.torn == 0, r
    # Launches still queued on the (twin) device or in pinned staging die with the process: at most the
    # staging window, which backpressure keeps the host within.
    assert r.lost <= STAGING_SLOTS, r


def test_a_creator_killed_before_linking_leaves_a_temp_file_the_next_creation_removes(tmp_path: Path) -> None:
    import fcntl
    import os

    from vrrl_gpu import RingLog

    stale, young, held = (tmp_path / f".run.vrrl.{h * 12}.tmp" for h in "abc")
    planted = tmp_path / ".run.vrrl.notours.tmp"
    for p in (stale, young, held, planted):
        p.write_bytes(bytes(96))
    old = os.stat(stale).st_mtime - 3600
    for p in (stale, held, planted):
        os.utime(p, (old, old))
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a creator still at work holds its temporary file's lock
    try:
        with RingLog.open(tmp_path / "run.vrrl", capacity=8):
            pass
    finally:
        os.close(fd)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([young.name, held.name, planted.name, "run.vrrl"])
