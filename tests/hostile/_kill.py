"""Issue 16: SIGKILL a recording process at a random moment, then check what it left (see test_kill.py).

One case: a child records through the twin (pinned or shm staging, ``begin`` or
``begin+end`` breadcrumbs, ``launch``, ``wrap`` or ``slot``) and prints how many
launches returned; the parent kills it with SIGKILL at a random moment (any
time from its start, just after its imports, so inside the Recorder's log
creation, or while it records), recovers its staging segment if it had one,
and checks the log: no file or a whole one that ``vrrl verify`` accepts, no
torn record (each launch's words carry a check word and the slot index), the
launches lost at most one staging window, and the next writer opens it.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.hostile.helpers import REPO

CAPACITY = 1024
#: The staging window; with backpressure the host runs at most this far ahead of the log.
STAGING_SLOTS = 256
CLASSES = [
    (staging, crumbs, api)
    for staging in ("pinned", "shm")
    for crumbs in ("begin", "begin+end")
    for api in ("launch", "wrap", "slot")
]

_CHILD = r"""
import sys
path, staging, crumbs, api = sys.argv[1:5]
from vrrl_gpu import Recorder
print("imported", flush=True)
rec = Recorder(path, device="twin", capacity=int(sys.argv[5]), staging=staging, breadcrumbs=crumbs,
               staging_slots=int(sys.argv[6]))
print("open", flush=True)
b = rec.backend
k = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
x, y = b.alloc_device(256), b.alloc_device(256)
op = rec.opcode("axpy")
i = 0
def words(i):
    return (i, 0, (i * 2654435761) & 0xFFFFFFFF, 0)
wrapped = rec.wrap(k, opcode=op, words=lambda a: words(i))
print("ready", flush=True)
while True:
    if api == "launch":
        rec.launch(k, 1, 64, (y, x, 1.0, 64, 0), opcode=op, words=words(i))
    elif api == "wrap":
        wrapped(1, 64, (y, x, 1.0, 64, 0))
    else:
        with rec.slot(op, words(i)):
            pass
    i += 1
    print(i, flush=True)
"""


@dataclass
class CaseResult:
    seed: int
    cls: tuple[str, str, str]
    moment: str
    delay_s: float
    issued: int = 0
    log_exists: bool = False
    records: int = 0
    recovered: int = 0
    lost: int = 0
    torn: int = 0
    hang: bool = False
    tracebacks: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    temp_files: int = 0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _read_until(proc: subprocess.Popen[bytes], want: bytes, seconds: float, seen: list[bytes]) -> bool:
    """Read the child's lines until one equals ``want``; False past ``seconds`` or at its end."""
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.05)
        if not r:
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            return False
        buf += chunk
        *lines, buf = buf.split(b"\n")
        seen += lines
        if want in lines:
            seen.append(buf)
            return True
    return False


def run_case(seed: int, workdir: Path) -> CaseResult:
    """One kill: spawn, kill at the seed's moment, recover, check."""
    from vrrl_gpu import RingLog, SlotStatus
    from vrrl_gpu._cli import main
    from vrrl_gpu.capture._recover import recover_orphans

    rng = np.random.default_rng(seed)
    cls = CLASSES[seed % len(CLASSES)]
    moment = str(rng.choice(["any", "creating", "recording"]))
    delay = {"any": rng.uniform(0, 2.5), "creating": rng.uniform(0, 0.03), "recording": rng.uniform(0, 0.4)}[
        moment
    ]
    res = CaseResult(seed=seed, cls=cls, moment=moment, delay_s=float(delay))
    d = workdir / f"case{seed}"
    d.mkdir(parents=True)
    path = d / "run.vrrl"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), *cls, str(CAPACITY), str(STAGING_SLOTS)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: list[bytes] = []
    try:
        marker = {"creating": b"imported", "recording": b"ready"}.get(moment)
        if marker is not None and not _read_until(proc, marker, 120, seen):
            res.hang = proc.poll() is None
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        res.hang = True
        proc.kill()
        out, err = proc.communicate()
    lines = [*seen, *out.split(b"\n")]
    res.issued = max((int(x) for x in lines if x.strip().isdigit()), default=0)
    if proc.returncode != -signal.SIGKILL:
        res.tracebacks.append(f"child exited {proc.returncode} before the kill: {err.decode()[-1500:]}")
    res.temp_files = sum(1 for n in os.listdir(d) if n.endswith(".tmp"))
    try:
        with warnings_as_list():
            recovered = recover_orphans(path)
        res.recovered = sum(r.recovered for r in recovered)
        res.log_exists = path.exists()
        if not res.log_exists:
            return res  # killed before the log was linked into place: no log, never half a one
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            rc = main(["verify", str(path)])
        if rc != 0:
            res.refused.append(f"verify exit {rc}: {quiet.getvalue()[-500:]}")
        with RingLog.open(path, readonly=True) as log:
            recs = log.records()
        res.records = int(recs.shape[0])
        launch = recs[recs["slot_status"] != SlotStatus.META]
        i, check = launch["args"][:, 0].astype(np.int64), launch["args"][:, 2].astype(np.int64)
        bad = check != (i * 2654435761) & 0xFFFFFFFF
        offset = launch["slot_idx"].astype(np.int64) - i
        bad |= offset != (int(np.median(offset)) if offset.size else 0)
        res.torn = int(np.count_nonzero(bad))
        got = np.unique(i[~bad])
        # The ring keeps the newest records: launches older than the oldest one left were overwritten, not
        # lost. Lost: those after the newest record, and holes between the oldest and the newest.
        if got.size:
            res.lost = max(0, res.issued - 1 - int(got[-1])) + int(got[-1] - got[0] + 1 - got.size)
        else:
            res.lost = res.issued
        with RingLog.open(path, capacity=CAPACITY) as again:  # the next writer opens it
            again.records()
    except Exception:
        res.tracebacks.append(traceback.format_exc()[-2000:])
    return res


@contextlib.contextmanager
def warnings_as_list() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        yield


def summarise(results: list[CaseResult]) -> dict[str, dict[str, int]]:
    """cases / hangs / tracebacks / refused / torn / lost (launches) / worst loss, per class and overall."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        for key in ("all", "/".join(r.cls), f"moment={r.moment}"):
            s = out.setdefault(
                key,
                {"cases": 0, "no_log": 0, "hangs": 0, "tracebacks": 0, "refused": 0, "torn": 0, "lost": 0,
                 "worst_loss": 0, "recovered": 0, "temp_files": 0},
            )  # fmt: skip
            s["cases"] += 1
            s["no_log"] += not r.log_exists
            s["hangs"] += r.hang
            s["tracebacks"] += len(r.tracebacks)
            s["refused"] += len(r.refused)
            s["torn"] += r.torn
            s["lost"] += r.lost
            s["worst_loss"] = max(s["worst_loss"], r.lost)
            s["recovered"] += r.recovered
            s["temp_files"] += r.temp_files
    return out
