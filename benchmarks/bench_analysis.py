"""The reading commands on a large log, run as the real CLI, beside pyarrow writing the same columns itself.

Run: python benchmarks/bench_analysis.py [--records N] [--only dump,export] [--repeat K] [--library]

Makes a log of N records (default 1,048,576: a full 64 MiB log) with the format layer alone (no backend),
with a sidecar that names the opcodes and maps every launch to one of 4 streams, a GAP and a fault at the
end. Then every reading command runs as a subprocess (``python -m vrrl_gpu ...``, output to a file), and so
does a pyarrow baseline that reads the same records and writes the same columns with pyarrow's own CSV and
Parquet writers (pyarrow has no JSON writer: the text formats are held against its CSV writer). For each it
prints wall time and peak RSS (``os.wait4``'s ``ru_maxrss`` of that child), the ratio to the baseline, and the
targets of issue 13: time <= 1.5x pyarrow for the exports and ``dump --json/--csv``, peak RSS <= 1.5x the
log's size for every reading command (``--repeat K``: the best time and the largest RSS of K runs).
The children run as an installed package would: with bytecode caching (``PYTHONDONTWRITEBYTECODE`` dropped,
``PYTHONPYCACHEPREFIX`` in the temporary directory) after one untimed warm-up run of each command, and every
run, the baseline's too, writes a fresh output path (on ext4, replacing or truncating a file forces its
writeback at close, ``auto_da_alloc``, which would bill the disk to the command).
``stats`` and ``report`` also run on a log of as many records of begins only (no end breadcrumbs: one
launch per record). The ``dump`` table on a terminal and ``replay --list`` also run on a 65,536-record log
(issue 16, item 14), the table through a pseudo-terminal. ``--library`` adds the older in-process figures
(stats, diff, report, merge of many logs). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import pty
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC, MetaOpcode, RingLog, SlotStatus  # noqa: E402
from vrrl_gpu.format._sidecar import Sidecar, opcode_for_name, write_sidecar  # noqa: E402

STREAMS = 4
KERNELS = [f"kernel_{i}" for i in range(16)]


def synthetic(n: int, tenant: int = 0, seed: int = 0) -> np.ndarray:
    """n/2 launches with begin+end breadcrumbs on 4 tracks (the in-process figures)."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n, RECORD_DTYPE)
    r["magic"] = RECORD_MAGIC
    launch = np.arange(n) // 2
    r["timestamp_ns"] = 1_700_000_000_000_000_000 + np.arange(n) * 500 + rng.integers(0, 100, n)
    r["timestamp_ns"].sort()
    r["slot_idx"] = launch
    r["tenant_id"] = tenant * 4 + launch % 4
    r["opcode"] = 0x1000 + launch % 7
    r["slot_status"] = np.where(np.arange(n) % 2, SlotStatus.COMPLETED, SlotStatus.BEGIN)
    return r


def make_log(path: Path, n: int, seed: int = 0, *, ends: bool = True) -> None:
    """A recorder-like log: SESSION_START, begin+end launches on 4 streams, a GAP, a fault at the end
    (``ends=False``: begins only, one launch per record, as ``--breadcrumbs begin`` records)."""
    rng = np.random.default_rng(seed)
    nonce = 0x1234_5678_9ABC_DEF1
    r = np.zeros(n, RECORD_DTYPE)
    r["magic"] = RECORD_MAGIC
    r["timestamp_ns"] = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.uint64) * 700
    body = n - 3  # [0] SESSION_START, [n//2] GAP, [n-1] FAULTED
    per = 2 if ends else 1
    launches = body // per
    slot = np.repeat(np.arange(launches, dtype=np.uint32), per)
    ops = np.array([opcode_for_name(k) for k in KERNELS], np.uint32)
    idx = np.concatenate([np.arange(1, n // 2), np.arange(n // 2 + 1, n - 1)])[: per * launches]
    r["slot_idx"][idx] = slot
    r["opcode"][idx] = ops[slot % len(ops)]
    statuses = [SlotStatus.BEGIN, SlotStatus.COMPLETED] if ends else [SlotStatus.BEGIN]
    r["slot_status"][idx] = np.tile(np.array(statuses, np.uint32), launches)
    r["args"][idx] = rng.integers(0, 1 << 32, (per * launches, 4), dtype=np.uint64).astype(np.uint32)
    r["epoch"][idx] = slot // 1000
    if ends:
        r["output_digest"][idx[1::2]] = rng.integers(1, 1 << 63, launches, dtype=np.uint64)
    r["slot_status"][0] = SlotStatus.META
    r["opcode"][0] = MetaOpcode.SESSION_START
    r["args"][0] = (os.getpid(), nonce & 0xFFFFFFFF, nonce >> 32, 0)
    g = n // 2
    r["slot_status"][g] = SlotStatus.META
    r["opcode"][g] = MetaOpcode.GAP
    r["args"][g] = (1000, 0, 17, 0)
    # The last launch never completed: the device faulted in it.
    last = int(slot[-1])
    r["slot_status"][idx[-1]] = SlotStatus.BEGIN
    r["slot_status"][n - 1] = SlotStatus.FAULTED
    r["slot_idx"][n - 1] = last
    r["opcode"][n - 1] = ops[last % len(ops)]
    r["failure_class"][n - 1] = 2
    r["backend_error_code"][n - 1] = 700
    with RingLog.create(path, n) as log:
        log.extend(r)
        log.sync()
    runs = [{"index": s, "runs": [[s, STREAMS, -(-(launches - s) // STREAMS)]]} for s in range(STREAMS)]
    write_sidecar(
        path,
        Sidecar(
            opcode_names={int(o): k for o, k in zip(ops.tolist(), KERNELS, strict=True)},
            host="bench",
            pid=os.getpid(),
            extra={"session": {"nonce": nonce, "pid": os.getpid()}, "streams": runs},
        ),
    )


# ---------------------------------------------------------------- measuring


TIMEOUT = 600.0


TIME = "/usr/bin/time"

#: The children's environment (``main`` sets it): bytecode cached under the temporary directory.
CHILD_ENV: dict[str, str] = {}


def child_env(tmp: Path) -> dict[str, str]:
    """The environment of the children: this one, with bytecode written and read under ``tmp``.

    Without a cache (``PYTHONDONTWRITEBYTECODE=1``, as in this project's sessions) every child compiles
    vrrl_gpu's source again, ~0.3 s a command that an installed package does not pay.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    env["PYTHONPATH"] = str(REPO)
    return env


def run_child(
    argv: Sequence[str], stdout: Path | None, *, tty: bool = False
) -> tuple[float, int, int, float]:
    """(wall seconds, peak RSS bytes, exit status, CPU seconds) of one child process (its children too);
    killed after ``TIMEOUT`` s (-9).

    The peak RSS comes from ``/usr/bin/time`` when there is one: a child's own ``ru_maxrss`` starts at
    the high-water mark of the process that spawned it (Linux keeps it across ``execve``), which for
    this script, after making a 64 MiB log, would hide every figure below ~175 MiB.
    """
    env = CHILD_ENV or {**os.environ, "PYTHONPATH": str(REPO)}
    rss_file: Path | None = None
    if os.path.exists(TIME):
        fd, name = tempfile.mkstemp(suffix=".rss")
        os.close(fd)
        rss_file = Path(name)
        argv = [TIME, "-q", "-f", "%M", "-o", name, *argv]
    if tty:
        master, slave = pty.openpty()
        drained = [0]

        def drain() -> None:
            while True:
                try:
                    b = os.read(master, 1 << 16)
                except OSError:
                    return
                if not b:
                    return
                drained[0] += len(b)

        t = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=slave, stderr=subprocess.DEVNULL, env=env, start_new_session=True
        )
        os.close(slave)
        th = threading.Thread(target=drain, daemon=True)
        th.start()
    else:
        out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env, start_new_session=True)
    # The whole session: killing /usr/bin/time alone would leave the command running (and holding stderr).
    timer = threading.Timer(TIMEOUT, lambda: os.killpg(proc.pid, 9))
    timer.start()
    _, status, ru = os.wait4(proc.pid, 0)
    timer.cancel()
    dt = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if tty:
        th.join(timeout=5)
        os.close(master)
    else:
        if stdout is not None:
            out.close()  # type: ignore[union-attr]
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode == -9:
            print(f"  ! {' '.join(argv[-4:])}: killed after {TIMEOUT:.0f} s")
        elif proc.returncode not in (0, 1):
            print(f"  ! {' '.join(argv[-6:])}: exit {proc.returncode}: {err.strip()[-300:]}")
    rss = ru.ru_maxrss * 1024
    if rss_file is not None:
        text = rss_file.read_text().strip().splitlines()
        rss_file.unlink()
        if text and text[-1].isdigit():
            rss = int(text[-1]) * 1024
    return dt, rss, proc.returncode, ru.ru_utime + ru.ru_stime


#: In an argv or output path, replaced by the run's number: each run writes a file that did not exist.
RUN = "@RUN@"


def _fresh(text: str, k: int) -> str:
    return text.replace(RUN, str(k))


def best_of(runs: int, argv: Sequence[str], stdout: Path | None) -> tuple[float, int, float]:
    """The shortest wall time, the largest peak RSS and the least CPU time of ``runs`` runs, after one
    untimed warm-up run (it fills the bytecode cache and the page cache).

    ``RUN`` in ``argv`` or ``stdout`` becomes the run's number, so that no run writes over a file (each
    is removed after its run). The CPU time (user + system) is printed beside the wall time: on a shared
    VM the wall time of one command moves with the other sessions' load, its CPU time much less.
    """
    best, peak, cpu = float("inf"), 0, float("inf")
    for k in range(max(1, runs) + 1):
        args = [_fresh(x, k) for x in argv]
        out = Path(_fresh(str(stdout), k)) if stdout is not None else None
        dt, rss, _, c = run_child(args, out)
        written = [Path(x) for t, x in zip(argv, args, strict=True) if RUN in t]
        for x in [*written, *([out] if out is not None else [])]:
            x.unlink(missing_ok=True)
        if k:  # run 0 is the warm-up
            best, peak, cpu = min(best, dt), max(peak, rss), min(cpu, c)
    return best, peak, cpu


BASELINE = r"""
import sys, numpy as np, pyarrow as pa, pyarrow.csv as pcsv, pyarrow.parquet as pq
path, out, fmt, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
from vrrl_gpu.format import RECORD_DTYPE
r = np.memmap(path, RECORD_DTYPE, mode="r", offset=32, shape=(cap,))
names = pa.array(["kernel"] * 16)
cols = {
    "timestamp_ns": pa.array(r["timestamp_ns"]), "slot_idx": pa.array(r["slot_idx"]),
    "tenant_id": pa.array(r["tenant_id"]), "opcode": pa.array(r["opcode"]),
}
a = r["args"]
if fmt == "csv":
    for i in range(4):
        cols[f"arg{i}"] = pa.array(a[:, i])
else:
    cols["args"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(a).reshape(-1)), 4)
for k in ("epoch", "slot_status", "failure_class", "backend_error_code", "output_digest"):
    cols[k] = pa.array(r[k])
idx = pa.array((r["opcode"] % 16).astype(np.int32))
cols["failure_class_name"] = names.take(idx)
cols["stream"] = pa.array((r["slot_idx"] % 4).astype(np.int32))
cols["slot_status_name"] = names.take(idx)
cols["opcode_name"] = names.take(idx)
t = pa.table(cols)
if fmt == "csv":
    pcsv.write_csv(t, out)
else:
    pq.write_table(t, out, compression="zstd")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1 << 20)
    ap.add_argument("--small", type=int, default=1 << 16, help="records of the log for the table figures")
    ap.add_argument("--only", default="", help="comma-separated labels' prefixes to run (all)")
    ap.add_argument("--library", action="store_true", help="also the in-process figures")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before a command is killed (600)")
    ap.add_argument("--logs", type=int, default=1000, help="logs of the merge (--library)")
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs of each command: the best time, the largest peak RSS (1)"
    )
    a = ap.parse_args()
    global TIMEOUT
    TIMEOUT = a.timeout
    n = min(a.records, 1 << 20)
    py = [sys.executable, "-m", "vrrl_gpu"]
    with tempfile.TemporaryDirectory() as d:
        CHILD_ENV.update(child_env(Path(d)))
        p = Path(d) / "big.vrrl"
        small = Path(d) / "small.vrrl"
        begins = Path(d) / "begins.vrrl"
        make_log(p, n)
        make_log(small, min(a.small, n), seed=1)
        make_log(begins, n, seed=2, ends=False)
        size = p.stat().st_size
        print(
            f"log: {n:,} records, {size / 2**20:.1f} MiB, "
            f"sidecar {p.with_suffix('.vrrl.json').stat().st_size:,} B"
        )
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s); peak RSS: each command's process")
        print(
            f"each command: 1 untimed warm-up run, then {max(1, a.repeat)} timed (best time, largest RSS); "
            "bytecode cached (PYTHONPYCACHEPREFIX in the temp dir); every run writes a fresh output path; "
            f"ARROW_DEFAULT_MEMORY_POOL={os.environ.get('ARROW_DEFAULT_MEMORY_POOL', '(unset)')}\n"
        )
        base: dict[str, float] = {}
        base_cpu: dict[str, float] = {}
        for fmt in ("csv", "parquet"):
            cmd = [sys.executable, "-c", BASELINE, str(p), str(Path(d) / f"base-{RUN}.{fmt}"), fmt, str(n)]
            dt, rss, cpu = best_of(a.repeat, cmd, None)
            base[fmt], base_cpu[fmt] = dt, cpu
            print(
                f"{'pyarrow ' + fmt + ' (baseline)':<28} {dt:8.2f} s  {rss / 2**20:7.1f} MiB  cpu {cpu:.2f} s"
            )
        print()
        out = Path(d) / "out"
        cases: list[tuple[str, list[str], str | None, bool]] = [
            # label, argv, baseline (None: no time target), stdout to a file
            ("info", [*py, "info", str(p)], None, True),
            ("verify", [*py, "verify", str(p)], None, True),
            ("stats", [*py, "stats", str(p)], None, True),
            ("dump (TSV, not a TTY)", [*py, "dump", str(p)], "csv", True),
            ("dump --json", [*py, "dump", "--json", str(p)], "csv", True),
            ("dump --csv", [*py, "dump", "--csv", str(p)], "csv", True),
        ]
        for fmt in ("csv", "jsonl", "parquet", "chrome", "vrrl"):
            argv = [*py, "export", "--format", fmt, "--force", "-o", f"{out}-{RUN}.{fmt}", str(p)]
            cases.append((f"export {fmt}", argv, "parquet" if fmt == "parquet" else "csv", False))
        cases += [
            ("report", [*py, "report", "--force", "-o", f"{out}-{RUN}.html", str(p)], None, False),
            ("replay --list", [*py, "replay", "--list", str(p)], None, True),
            ("replay --list --json", [*py, "replay", "--list", "--json", str(p)], None, True),
            # As many launches as records: what stats and report keep grows with the launches.
            ("stats (begins only)", [*py, "stats", str(begins)], None, True),
            ("report (begins only)", [*py, "report", "-o", f"{out}-{RUN}-b.html", str(begins)], None, False),
        ]
        hdr = f"{'command':<28} {'time':>9} {'x pyarrow':>10} {'target':>7}  "
        hdr += f"{'peak RSS':>9} {'x log':>6} {'target':>7}  {'cpu':>6} {'x pyarrow':>9}"
        print(hdr)
        print("-" * len(hdr))
        only = [s.strip() for s in a.only.split(",") if s.strip()]
        for label, argv, b, to_file in cases:
            if only and not any(label.startswith(s) for s in only):
                continue
            stdout = Path(f"{out}-{RUN}.stdout") if to_file else None
            dt, rss, cpu = best_of(a.repeat, argv, stdout)
            ratio = f"{dt / base[b]:9.2f}x" if b else f"{'-':>10}"
            tgt = f"{'1.5x':>7}" if b else f"{'-':>7}"
            cpu_ratio = f"{cpu / base_cpu[b]:8.2f}x" if b else f"{'-':>9}"
            print(
                f"{label:<28} {dt:8.2f}s {ratio} {tgt}  {rss / 2**20:7.1f}Mi {rss / size:5.2f}x {'1.5x':>7}"
                f"  {cpu:5.2f}s {cpu_ratio}",
                flush=True,
            )
        ssize = small.stat().st_size
        print(f"\n{min(a.small, n):,}-record log ({ssize / 2**20:.1f} MiB):")
        for label, argv, tty in (
            ("dump (table on a TTY)", [*py, "dump", str(small)], True),
            ("dump (TSV, not a TTY)", [*py, "dump", str(small)], False),
            ("replay --list", [*py, "replay", "--list", str(small)], False),
        ):
            if only and not any(label.startswith(s) for s in only):
                continue
            for k in range(2):  # run 0 is the warm-up
                stdout = Path(f"{out}-small{k}.stdout")
                dt, rss, _, _ = run_child(argv, stdout, tty=tty)
                stdout.unlink(missing_ok=True)
            print(f"{label:<28} {dt:8.2f}s  {rss / 2**20:7.1f}Mi {rss / ssize:5.2f}x log", flush=True)
        if a.library:
            library(a, Path(d))


def library(a: argparse.Namespace, d: Path) -> None:
    """The in-process figures: stats, diff, report, merge of many logs."""
    from vrrl_gpu.analysis import compute_stats, diff_records, merge_to, render_report

    def timed(label: str, n: int, fn) -> None:  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        print(f"{label:<36} {dt:8.3f} s  {n / dt / 1e6:7.3f} M records/s")

    n = min(a.records, 1 << 20)
    recs = synthetic(n)
    print("\nin process:")
    timed("stats", n, lambda: compute_stats(recs))
    timed("diff (log against itself)", 2 * n, lambda: diff_records(recs, recs.copy()))
    timed("report (HTML)", n, lambda: render_report(recs))
    per = max(1, n // a.logs)
    paths = []
    for i in range(a.logs):
        q = d / f"rank{i}.vrrl"
        with RingLog.open(q, capacity=per) as log:
            log.extend(synthetic(per, tenant=i, seed=i))
        paths.append(q)
    total = per * a.logs
    timed(f"merge {a.logs} logs -> vrrl", total, lambda: merge_to(paths, d / "m.vrrl", "vrrl", force=True))
    timed(f"merge {a.logs} logs -> jsonl", total, lambda: merge_to(paths, d / "m.jsonl", "jsonl", force=True))


if __name__ == "__main__":
    main()
