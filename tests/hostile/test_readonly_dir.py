"""Issue 16, item 12: a writable log in a directory where the sidecar cannot be written still records."""

from __future__ import annotations

import errno
import json
import shlex
import sys
import warnings
from pathlib import Path

import pytest

from tests.helpers.recorder import log_records
from tests.hostile.helpers import UNSHARE_REASON, can_unshare_mounts, run_in_private_mounts
from vrrl_gpu import Recorder
from vrrl_gpu.errors import VrrlWarning
from vrrl_gpu.format import MetaOpcode


def test_the_sidecar_is_best_effort_one_warning_and_the_workload_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object, **__: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("vrrl_gpu.format._sidecar.tempfile.mkstemp", refuse)
    p = tmp_path / "ro.vrrl"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Recorder(p, device="twin", capacity=64) as rec:
            for name in ("a", "b", "c"):
                with rec.slot(rec.opcode(name)):
                    pass
    msgs = [str(w.message) for w in caught if issubclass(w.category, VrrlWarning)]
    assert len(msgs) == 1, msgs
    assert str(p) in msgs[0]
    assert "recording without it" in msgs[0]
    ops = log_records(p)["opcode"].tolist()
    assert int(MetaOpcode.SESSION_START) in ops
    assert int(MetaOpcode.SESSION_END) in ops
    assert not (tmp_path / "ro.vrrl.json").exists()


_CHILD = """
import json, sys, warnings
from vrrl_gpu import Recorder
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with Recorder(sys.argv[1], device="twin", capacity=64) as rec:
        with rec.slot(rec.opcode("op")):
            pass
print(json.dumps([str(w.message) for w in caught]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not can_unshare_mounts(), reason=UNSHARE_REASON)
def test_a_read_only_directory_with_a_writable_log_records(tmp_path: Path) -> None:
    from vrrl_gpu import RingLog

    real = tmp_path / "real.vrrl"
    RingLog.open(real, capacity=64).close()
    d = tmp_path / "ro"
    d.mkdir()
    (d / "log.vrrl").touch()
    # A read-only bind of the directory, and the log bound writable over it: root cannot write the sidecar.
    cmd = "; ".join(
        [
            f"mount --bind {d} {d}",
            f"mount -o remount,bind,ro {d}",
            f"mount --bind {real} {d / 'log.vrrl'}",
            f"exec timeout 90 {shlex.quote(sys.executable)} -c {shlex.quote(_CHILD)} {d / 'log.vrrl'}",
        ]
    )
    proc = run_in_private_mounts(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    msgs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(msgs) == 1, msgs
    assert "recording without it" in msgs[0]
    ops = log_records(real)["opcode"].tolist()
    assert int(MetaOpcode.SESSION_END) in ops
