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
