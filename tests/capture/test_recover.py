"""Recovering staging segments of dead processes (``vrrl recover``, ``recover_orphans``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vrrl_gpu import MetaOpcode, RingLog, SlotStatus
from vrrl_gpu._cli import main
from vrrl_gpu.capture import (
    ShmSegment,
    StagingRing,
    find_orphans,
    pack_reference,
    recover_orphans,
    recover_segment,
)
from vrrl_gpu.errors import RecoverError

N_SLOTS = 1024

# A producer that commits records into a shm segment and never drains them, like a recorder whose process is
# about to be killed. Each record's words are derived from its sequence, so a torn or mixed record shows.
PRODUCER = textwrap.dedent(
    """
    import sys, time
    from vrrl_gpu.capture import ShmSegment, StagingRing, pack_reference
    directory, log, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seg = ShmSegment.create(None, StagingRing.layout_size(1024), directory=directory)
    ring = StagingRing.create(seg.array, 1024, log_path=log)
    print(seg.path, flush=True)
    for s in range(total):
        ring.note_produced(s)
        pack_reference(ring, s, slot_idx=s, tenant_id=7, opcode=0x1234,
                       words=(s, (3 * s) & 0xFFFFFFFF, (~s) & 0xFFFFFFFF, s ^ 0x5555), epoch=1,
                       slot_status=0, timestamp_ns=10**18 + s)
        if s % 50 == 49:
            print(s + 1, flush=True)
            time.sleep(0.002)
    print("done", flush=True)
    time.sleep(3600)
    """
)


def _check_records(recs: np.ndarray, at_least: int) -> None:
    """Sequences 0..M-1 in order, every field matching its sequence: nothing torn, nothing reordered."""
    m = recs.shape[0]
    assert m >= at_least
    s = np.arange(m, dtype=np.uint64)
    assert (recs["slot_idx"] == s).all()
    assert (recs["args"][:, 0] == s).all()
    assert (recs["args"][:, 1] == (3 * s) & 0xFFFFFFFF).all()
    assert (recs["args"][:, 2] == (~s) & 0xFFFFFFFF).all()
    assert (recs["args"][:, 3] == s ^ 0x5555).all()
    assert (recs["timestamp_ns"] == 10**18 + s).all()
    assert (recs["tenant_id"] == 7).all()
    assert (recs["opcode"] == 0x1234).all()


def test_sigkill_mid_run_then_vrrl_recover(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_path = tmp_path / "job.vrrl"
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(tmp_path), str(log_path), "1000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    segment = proc.stdout.readline().strip()
    seen = 0
    while seen < 300:
        seen = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)  # mid-run: it is still committing records
    assert proc.wait() == -signal.SIGKILL
    proc.stdout.close()

    assert [i.path for i in find_orphans(log_path, directory=tmp_path)] == [segment]
    assert main(["recover", "--all", "--shm-dir", str(tmp_path)]) == 0
    assert "recovered" in capsys.readouterr().out
    assert not os.path.exists(segment)

    with RingLog.open(log_path, readonly=True) as log:
        recs = log.records()
    meta = recs[0]
    assert int(meta["opcode"]) == MetaOpcode.RECOVERED
    assert int(meta["slot_status"]) == SlotStatus.META
    assert int(meta["args"][0]) == proc.pid
    body = recs[1:]
    body = body[body["opcode"] != int(MetaOpcode.GAP)]  # a record claimed but never committed at the kill
    count = int(meta["args"][1]) | int(meta["args"][2]) << 32
    assert count == body.shape[0]
    _check_records(body, at_least=seen)


def _orphan(directory: Path, log: Path, n: int, *, dead_pid: int, torn: bool = False) -> str:
    """A segment as a process with ``dead_pid`` left it: ``n`` committed records, maybe one half-written."""
    seg = ShmSegment.create(None, StagingRing.layout_size(N_SLOTS), directory=directory)
    ring = StagingRing.create(seg.array, N_SLOTS, log_path=str(log), owner_pid=dead_pid)
    for s in range(n):
        ring.note_produced(s)
        pack_reference(
            ring,
            s,
            slot_idx=s,
            tenant_id=7,
            opcode=0x1234,
            words=(s, (3 * s) & 0xFFFFFFFF, (~s) & 0xFFFFFFFF, s ^ 0x5555),
            epoch=1,
            slot_status=0,
            timestamp_ns=10**18 + s,
        )
    if torn:
        # Died between writing half of the next record and its commit word.
        ring.note_produced(n)
        ring.records[n % N_SLOTS]["slot_idx"] = n
    path = seg.path
    del ring
    seg.close()
    return path


@pytest.fixture
def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_torn_record_is_not_copied_and_gap_is_written(tmp_path: Path, dead_pid: int) -> None:
    log = tmp_path / "a.vrrl"
    seg = _orphan(tmp_path, log, 20, dead_pid=dead_pid, torn=True)
    r = recover_segment(seg)
    assert (r.recovered, r.lost, r.owner_pid) == (20, 1, dead_pid)
    with RingLog.open(log, readonly=True) as lg:
        recs = lg.records()
    assert int(recs[0]["opcode"]) == MetaOpcode.RECOVERED
    _check_records(recs[1:21], at_least=20)
    assert int(recs[21]["opcode"]) == MetaOpcode.GAP


def test_recover_orphans_takes_only_its_own_log_and_skips_duplicates(tmp_path: Path, dead_pid: int) -> None:
    a, b = tmp_path / "a.vrrl", tmp_path / "b.vrrl"
    seg_a = _orphan(tmp_path, a, 10, dead_pid=dead_pid)
    seg_b = _orphan(tmp_path, b, 5, dead_pid=dead_pid)
    # The dead process's drainer had already written the first 4 records (position not yet persisted).
    with ShmSegment.open(seg_a) as s:
        first4 = s.ring().records[:4].copy()
    with RingLog.open(a, capacity=64) as lg:
        lg.extend(first4)
    results = recover_orphans(a, directory=tmp_path)
    assert [(r.segment, r.recovered, r.duplicates) for r in results] == [(seg_a, 6, 4)]
    assert os.path.exists(seg_b)
    assert not os.path.exists(seg_a)
    with RingLog.open(a, readonly=True) as lg:
        recs = lg.records()
    assert recs.shape[0] == 4 + 1 + 6
    _check_records(np.concatenate([recs[:4], recs[5:]]), at_least=10)


def test_live_owner_is_skipped_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seg = _orphan(tmp_path, tmp_path / "live.vrrl", 3, dead_pid=os.getpid())
    with pytest.raises(RecoverError, match="still running"):
        recover_segment(seg)
    assert main(["recover", "--all", "--shm-dir", str(tmp_path)]) == 0
    assert "still running" in capsys.readouterr().err
    assert main(["recover", seg]) == 1
    assert os.path.exists(seg)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a segment to another user")
def test_other_users_segment_is_refused(
    tmp_path: Path, dead_pid: int, capsys: pytest.CaptureFixture[str]
) -> None:
    seg = _orphan(tmp_path, tmp_path / "x.vrrl", 3, dead_pid=dead_pid)
    os.chown(seg, 4242, 4242)
    with pytest.raises(RecoverError, match="uid 4242"):
        recover_segment(seg)
    assert main(["recover", seg]) == 2
    assert "uid 4242" in capsys.readouterr().err
    assert main(["recover", "--all", "--shm-dir", str(tmp_path)]) == 0
    assert "belongs to uid 4242" in capsys.readouterr().err
    assert os.path.exists(seg)


def test_into_redirects_and_usage_errors(
    tmp_path: Path, dead_pid: int, capsys: pytest.CaptureFixture[str]
) -> None:
    seg = _orphan(tmp_path, tmp_path / "orig.vrrl", 4, dead_pid=dead_pid)
    other = tmp_path / "other.vrrl"
    assert main(["recover", seg, "--into", str(other), "--json"]) == 0
    assert '"recovered": 4' in capsys.readouterr().out
    assert not (tmp_path / "orig.vrrl").exists()
    with RingLog.open(other, readonly=True) as lg:
        assert lg.records().shape[0] == 5
    assert main(["recover"]) == 2
    assert main(["recover", seg, "--all"]) == 2


RECORDER_JOB = textwrap.dedent(
    """
    import sys
    from vrrl_gpu import Recorder
    rec = Recorder(sys.argv[1], device="twin", staging="shm", staging_slots=4096)
    op = rec.opcode("step")
    for i in range(100000):
        with rec.slot(op, words=(i, 0, 0, 0)):
            pass
        if i % 20 == 19:
            rec.synchronize()  # the breadcrumbs up to here are committed in the segment
            print(i + 1, flush=True)
    """
)


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm")
def test_recorder_with_shm_staging_killed_mid_run(tmp_path: Path) -> None:
    """The issue's scenario: a Recorder (twin, shm staging) is SIGKILLed; recovery completes its log."""
    log_path = tmp_path / "job.vrrl"
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORDER_JOB, str(log_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen = 0
    while seen < 200:
        line = proc.stdout.readline()
        assert line, "the recording child ended early"
        seen = int(line)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.stdout.close()

    orphans = find_orphans(log_path)
    assert orphans, "the killed recorder left no staging segment"
    recovered = 0
    for info in orphans:
        r = recover_segment(info.path)
        recovered += r.recovered
        assert not os.path.exists(info.path)
    with RingLog.open(log_path, readonly=True) as log:
        recs = log.records()
    crumbs = recs[(recs["slot_status"] == 0) & (recs["opcode"] < 0xFFFFFF00)]
    slots = crumbs["slot_idx"].astype(np.int64)
    assert slots.shape[0] >= seen
    assert (slots == np.arange(slots.shape[0])).all()  # every committed breadcrumb once, in order
    assert (crumbs["args"][:, 0] == crumbs["slot_idx"]).all()  # none torn
    # Whatever the child's own drain had not written yet came from the segment, after a RECOVERED record.
    meta = recs[recs["opcode"] == int(MetaOpcode.RECOVERED)]
    assert int(meta["args"][:, 1].sum()) == recovered
