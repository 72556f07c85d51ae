"""Shared helpers of the hostile-environment tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: Every command that reads a log given as its last argument (``{log}`` and ``{out}`` are filled in).
READING_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("info", "{log}"),
    ("info", "--json", "{log}"),
    ("info", "--salvage", "{log}"),
    ("dump", "{log}"),
    ("dump", "--json", "{log}"),
    ("dump", "--csv", "{log}"),
    ("dump", "--salvage", "{log}"),
    ("verify", "{log}"),
    ("stats", "{log}"),
    ("stats", "--json", "{log}"),
    ("tail", "{log}"),
    ("tail", "--json", "{log}"),
    ("tail", "-f", "--max-seconds", "0.2", "{log}"),
    ("diff", "{log}", "{log}"),
    ("diff", "--json", "{log}", "{log}"),
    ("merge", "-o", "{out}.m.vrrl", "{log}"),
    ("merge", "--format", "jsonl", "-o", "{out}.m.jsonl", "{log}"),
    ("export", "--format", "jsonl", "-o", "{out}.e.jsonl", "{log}"),
    ("export", "--format", "csv", "-o", "{out}.e.csv", "{log}"),
    ("export", "--format", "chrome", "-o", "{out}.e.json", "{log}"),
    ("report", "-o", "{out}.r.html", "{log}"),
    ("replay", "--list", "{log}"),
    ("replay", "--list", "--json", "{log}"),
)


def expand(cmds: Sequence[Sequence[str]], log: str, out: str) -> list[list[str]]:
    return [[a.format(log=log, out=out) for a in c] for c in cmds]


def run_batch(
    calls: Sequence[Sequence[str]], *, seconds: int = 10, cwd: Path | None = None
) -> list[dict[str, Any]]:
    """Run each ``vrrl`` argv in one child (see ``_cli_batch``); past ``seconds`` a command counts as hung."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.hostile._cli_batch"],
        input=json.dumps({"calls": [list(c) for c in calls], "seconds": seconds}),
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=60 + seconds * len(calls),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def refusals(results: Sequence[dict[str, Any]]) -> list[str]:
    """Problems with results that should all be one-line refusals with exit 2 (empty when all are)."""
    bad = []
    for r in results:
        if r["outcome"] != "ok":
            bad.append(f"{r['argv']}: {r['outcome']} {r.get('traceback', '')[-500:]}")
        elif r["rc"] != 2:
            bad.append(f"{r['argv']}: exit {r['rc']}, expected 2; stderr {r['stderr']!r}")
        else:
            lines = [x for x in r["stderr"].splitlines() if not x.startswith("vrrl: warning:")]
            if len(lines) != 1:
                bad.append(f"{r['argv']}: expected one line on stderr, got {r['stderr']!r}")
    return bad


def problems(results: Sequence[dict[str, Any]], *, ok_codes: Sequence[int] = (0,)) -> list[str]:
    """Results that hung, raised, or exited with a code outside ``ok_codes``."""
    bad = []
    for r in results:
        if r["outcome"] != "ok":
            bad.append(f"{r['argv']}: {r['outcome']} {r.get('traceback', '')[-800:]}")
        elif r["rc"] not in ok_codes:
            bad.append(f"{r['argv']}: exit {r['rc']}; stderr {r['stderr'][-400:]!r}")
    return bad


def can_unshare_mounts() -> bool:
    """True when this process may make a private mount namespace (root with ``unshare``, as in CI)."""
    import shutil

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, check=False, timeout=30
    )
    return probe.returncode == 0


UNSHARE_REASON = "needs root and unshare(1) for a private mount namespace (CI runs as root)"


def run_in_private_mounts(shell: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``shell`` under ``unshare -m``: mounts it makes (a tmpfs on /dev/shm) are seen by nobody else."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-ec", shell],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
        check=False,
    )
