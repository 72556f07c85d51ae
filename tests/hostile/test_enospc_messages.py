"""Issue 16, item 15: every CLI writer on a full disk exits 2 with one line that names the path.

The disk is a 256 KiB tmpfs in a private mount namespace, filled before the
commands run (root with unshare(1), as in CI; skipped with the reason elsewhere).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from tests.hostile.helpers import UNSHARE_REASON, can_unshare_mounts, run_in_private_mounts
from vrrl_gpu._cli import main


def _writers(log: Path, d: Path) -> list[list[str]]:
    cmds = [
        ["export", "--format", fmt, "-o", str(d / f"e.{fmt}"), str(log)] for fmt in ("chrome", "csv", "jsonl")
    ]
    cmds += [
        ["merge", "-o", str(d / "m.vrrl"), str(log)],
        ["merge", "--format", "jsonl", "-o", str(d / "m.jsonl"), str(log)],
        ["report", "-o", str(d / "r.html"), str(log)],
        ["demo", "--device", "twin", "--launches", "20", "--capacity", "4096", str(d / "demo.vrrl")],
    ]
    return cmds


@pytest.mark.slow
@pytest.mark.skipif(not can_unshare_mounts(), reason=UNSHARE_REASON)
def test_every_writer_on_a_full_disk_says_which_path_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "src.vrrl"
    assert main(["demo", "--device", "twin", "--launches", "200", str(log)]) in (0, 1)
    capsys.readouterr()
    d = tmp_path / "full"
    d.mkdir()
    calls = _writers(log, d)
    spec = shlex.quote(json.dumps({"calls": calls, "seconds": 60}))
    cmd = (
        f"mount -t tmpfs -o size=256k tmpfs {d}; "
        f"dd if=/dev/zero of={d}/filler bs=4k 2>/dev/null || true; "
        f"echo {spec} | exec timeout 600 {shlex.quote(sys.executable)} -m tests.hostile._cli_batch"
    )
    proc = run_in_private_mounts(cmd, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    bad = []
    for r, argv in zip(results, calls, strict=True):
        target = next(a for a in argv if a.startswith(str(d)))
        lines = [x for x in r["stderr"].splitlines() if x.strip() and not x.startswith("vrrl: warning:")]
        if r["outcome"] != "ok":
            bad.append(f"{argv[0]}: {r['outcome']} {r.get('traceback', '')[-600:]}")
        elif r["rc"] != 2 or len(lines) != 1 or target not in lines[0] or "Traceback" in r["stderr"]:
            bad.append(f"{argv[:3]}: exit {r['rc']}, stderr {r['stderr'][-600:]!r}")
    assert not bad, "\n".join(bad)
