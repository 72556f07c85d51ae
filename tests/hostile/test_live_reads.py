"""Issue 16, item 9: readers of a log that a writer is hammering never return a torn record.

A writer process appends to a small ring (so it laps every reader many times
over) records whose every word is a function of one counter; a record mixed
from two writes fails that check. The readers are the library's: a read-only
``RingLog`` scan, ``iter_record_chunks``, the ``tail -f`` follower, and
``vrrl dump --json``. ``VRRL_LIVE_READS`` sets how many reads (the default
keeps the suite fast; ``benchmarks/bench_kill.py`` is the long run's peer).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.hostile.helpers import REPO
from vrrl_gpu import RingLog
from vrrl_gpu.analysis._follow import LogFollower
from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC, iter_record_chunks

CAPACITY = 2048
READS = int(os.environ.get("VRRL_LIVE_READS", "600"))


def _mix(i: npt.NDArray[np.uint64], salt: int) -> npt.NDArray[np.uint64]:
    x = (i + np.uint64(salt)) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    return x ^ (x >> np.uint64(32))


def identity_records(start: int, n: int) -> npt.NDArray[np.void]:
    """Records ``start .. start + n - 1``: every word derived from the counter (``timestamp_ns - 1``)."""
    return _records_for(np.arange(start, start + n, dtype=np.uint64))


def _records_for(i: npt.NDArray[np.uint64]) -> npt.NDArray[np.void]:
    r = np.zeros(i.shape[0], RECORD_DTYPE)
    r["magic"] = RECORD_MAGIC
    r["timestamp_ns"] = i + np.uint64(1)
    lo32 = np.uint64(0xFFFFFFFF)
    r["slot_idx"] = _mix(i, 1) & lo32
    r["tenant_id"] = _mix(i, 2) & lo32
    r["opcode"] = _mix(i, 3) & np.uint64(0xFFFF)
    for k in range(4):
        r["args"][:, k] = _mix(i, 4 + k) & lo32
    r["epoch"] = _mix(i, 8) & lo32
    r["backend_error_code"] = _mix(i, 9) & lo32
    r["output_digest"] = _mix(i, 10)
    return r


def torn(got: npt.NDArray[np.void]) -> int:
    """How many records are not exactly what the writer wrote for their counter (the magic aside)."""
    if got.shape[0] == 0:
        return 0
    want = _records_for(got["timestamp_ns"].astype(np.uint64) - np.uint64(1))
    got_words = got.view(np.uint8).reshape(-1, 64)[:, 4:]
    want_words = want.view(np.uint8).reshape(-1, 64)[:, 4:]
    return int(np.count_nonzero((got_words != want_words).any(axis=1)))


_WRITER = """
import os, sys, time
import numpy as np
from tests.hostile.test_live_reads import identity_records
from vrrl_gpu import RingLog
path, stop, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(seed)
n = 0
deadline = time.monotonic() + 120
with RingLog.open(path, capacity=int(sys.argv[4])) as log:
    open(stop + ".ready", "w").close()
    while not os.path.exists(stop) and time.monotonic() < deadline:
        k = int(rng.choice([1, 7, 64, 300, 700, 2500]))
        log.extend(identity_records(n, k))
        n += k
print(n)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _start_writer(tmp_path: Path, seed: int) -> tuple[subprocess.Popen[str], Path, Path]:
    path, stop = tmp_path / "live.vrrl", tmp_path / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(stop), str(seed), str(CAPACITY)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not Path(str(stop) + ".ready").exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.01)
    return proc, path, stop


def _stop_writer(proc: subprocess.Popen[str], stop: Path) -> int:
    stop.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    return int(out.split()[-1])


def test_identity_records_detect_a_tear() -> None:
    a, b = identity_records(5, 1), identity_records(5 + CAPACITY, 1)
    mixed = a.copy()
    mixed.view(np.uint8)[56:] = b.view(np.uint8)[56:]  # the tear the issue saw: digest of a later write
    assert torn(a) == 0
    assert torn(mixed) == 1


def test_library_readers_of_a_hammered_ring_never_return_a_torn_record(tmp_path: Path) -> None:
    proc, path, stop = _start_writer(tmp_path, seed=16)
    rng = np.random.default_rng(9)
    counts = {"reads": 0, "torn": 0, "kept": 0, "moved": 0, "out_of_order": 0}
    follower = LogFollower(path)
    follower.last(0)
    try:
        for k in range(READS):
            before = RingLog.open(path, readonly=True)
            c0 = before.scan().header.cursor if k % 3 == 0 else None
            kind = k % 3
            if kind == 0:
                got = before.records()
            elif kind == 1:
                size = int(rng.integers(1, CAPACITY + 1))
                chunks = iter_record_chunks(path, chunk_records=size)
                got = np.concatenate([np.empty(0, RECORD_DTYPE), *chunks])
            else:
                got = follower.poll()
            before.close()
            with RingLog.open(path, readonly=True) as after:
                if c0 is not None and after.scan().header.cursor != c0:
                    counts["moved"] += 1
            counts["reads"] += 1
            counts["torn"] += torn(got)
            counts["kept"] += int(got.shape[0])
            ts = got["timestamp_ns"].astype(np.int64)
            counts["out_of_order"] += int(np.count_nonzero(np.diff(ts) <= 0))
    finally:
        written = _stop_writer(proc, stop)
    assert counts["torn"] == 0, counts
    assert counts["out_of_order"] == 0, counts
    # Not vacuous: the writer wrote many laps during the reads and the readers still returned records.
    assert written > 20 * CAPACITY, (written, counts)
    assert counts["kept"] > READS * 10, counts
    with RingLog.open(path, readonly=True) as log:
        final = log.scan()
    assert final.header.cursor == written % CAPACITY, "closed: the cursor is stored reduced"
    assert final.records.shape[0] == CAPACITY
    assert torn(final.records) == 0
    assert final.overwritten == 0


def test_vrrl_dump_json_of_a_hammered_ring_is_never_torn(tmp_path: Path) -> None:
    proc, path, stop = _start_writer(tmp_path, seed=61)
    torn_total = rows = 0
    try:
        for _ in range(4):
            out = subprocess.run(
                [sys.executable, "-m", "vrrl_gpu", "dump", "--json", str(path)],
                env=_env(),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert out.returncode == 0, out.stderr[-2000:]
            lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
            got = np.zeros(len(lines), RECORD_DTYPE)
            for j, d in enumerate(lines):
                for f in ("timestamp_ns", "slot_idx", "tenant_id", "opcode", "epoch", "backend_error_code"):
                    got[j][f] = d[f]
                got[j]["args"] = d["args"]
                got[j]["output_digest"] = d["output_digest"]
                got[j]["slot_status"] = d["slot_status"]
                got[j]["failure_class"] = d["failure_class"]
            torn_total += torn(got)
            rows += len(lines)
    finally:
        _stop_writer(proc, stop)
    assert torn_total == 0
    assert rows > 0


@pytest.mark.parametrize("capacity", [1, 3, 8, 64, 5000])
def test_a_log_at_rest_reads_whole_whatever_its_cursor(tmp_path: Path, capacity: int) -> None:
    # The live-read rules must not cost a log at rest a single record, nor change a byte of it.
    p = tmp_path / "rest.vrrl"
    n = 3 * capacity + 5
    with RingLog.open(p, capacity=capacity) as log:
        for start in range(0, n, 7):
            log.extend(identity_records(start, min(7, n - start)))
    with RingLog.open(p, readonly=True) as r:
        scan = r.scan()
    assert scan.header.cursor == n % capacity
    assert scan.records.tobytes() == identity_records(n - capacity, capacity).tobytes()
    chunks = list(iter_record_chunks(p, chunk_records=max(1, capacity // 3)))
    assert np.concatenate(chunks).tobytes() == scan.records.tobytes()
