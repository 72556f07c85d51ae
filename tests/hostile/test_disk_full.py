"""Issue 16, item 11: a full disk never leaves part of a record in the live range, and says which path."""

from __future__ import annotations

import errno
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.analysis_logs import records, run_rows
from tests.hostile.helpers import UNSHARE_REASON, can_unshare_mounts, run_in_private_mounts
from vrrl_gpu import RingLog
from vrrl_gpu._cli import main
from vrrl_gpu.errors import VrrlIoError


@pytest.mark.parametrize("seed", range(6))
def test_a_short_write_then_enospc_rolls_the_batch_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(seed)
    cap = 16
    p = tmp_path / "full.vrrl"
    first = records(run_rows(int(rng.integers(1, 9))))
    with RingLog.open(p, capacity=cap) as log:
        log.extend(first)
        before_cursor = log.cursor
        real = os.pwrite
        budget = {"bytes": int(rng.integers(1, 64 * 6))}  # the disk fills somewhere inside the batch

        def pwrite(fd: int, data: object, offset: int) -> int:
            view = memoryview(data).cast("B")  # type: ignore[arg-type]
            if (len(view) == 4 or offset == 24) and budget["bytes"] <= 0:
                return real(fd, view, offset)  # rewriting a magic word or the cursor needs no new blocks
            if budget["bytes"] <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            n = real(fd, view[: budget["bytes"]], offset)
            budget["bytes"] -= n
            return n

        monkeypatch.setattr("vrrl_gpu.format._ringlog.os.pwrite", pwrite)
        batch = records(run_rows(3, tenant_base=7))
        with pytest.raises(VrrlIoError, match=str(p)):
            log.extend(batch)
        monkeypatch.undo()
        assert log.cursor == before_cursor
    with RingLog.open(p, readonly=True) as log:
        scan = log.scan()
    assert scan.header.cursor == before_cursor
    assert not scan.wrapped
    got = scan.records
    # Nothing of the failed batch is live; only old records it overwrote (the oldest) may be gone.
    overwritten = max(0, first.shape[0] + batch.shape[0] - cap)
    assert got.shape[0] >= first.shape[0] - overwritten
    assert got.tobytes() == first[first.shape[0] - got.shape[0] :].tobytes()
    assert main(["verify", str(p)]) == 0
    capsys.readouterr()


_CHILD = """
import json, os, sys
import numpy as np
from vrrl_gpu import RingLog
from vrrl_gpu.errors import VrrlIoError
from vrrl_gpu.format import RECORD_DTYPE
d = sys.argv[1]
out = {}
try:
    RingLog.open(os.path.join(d, "big.vrrl"), capacity=8192)
    out["big"] = "created"
except VrrlIoError as e:
    out["big"] = str(e)
out["left"] = sorted(os.listdir(d))
log = RingLog.open(os.path.join(d, "small.vrrl"), capacity=1024)
fd = os.open(os.path.join(d, "filler"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, bytes(4096))
except OSError:
    os.close(fd)
recs = np.zeros(3000, RECORD_DTYPE)
recs["timestamp_ns"] = np.arange(3000)
log.extend(recs)
log.sync()
out["records"] = int(log.records().shape[0])
log.close()
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(not can_unshare_mounts(), reason=UNSHARE_REASON)
def test_on_a_tiny_tmpfs_space_is_reserved_at_creation_so_writes_never_run_short(tmp_path: Path) -> None:
    d = tmp_path / "tiny"
    d.mkdir()
    cmd = (
        f"mount -t tmpfs -o size=256k tmpfs {d}; "
        f"exec timeout 90 {shlex.quote(sys.executable)} -c {shlex.quote(_CHILD)} {d}"
    )
    proc = run_in_private_mounts(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert str(d / "big.vrrl") in out["big"], out
    assert "cannot reserve" in out["big"], out
    assert out["left"] == [], "a log that could not be made leaves nothing behind"
    assert out["records"] == 1024
