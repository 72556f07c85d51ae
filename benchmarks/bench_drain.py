"""Sustained staging -> file rate through the Drainer, with zero drops.

A producer models a fast device: it commits records in bulk (numpy writes of
many slots at once, following the producer protocol: commit words zeroed,
records written, commit words set) into a 65,536-slot staging ring in a
/dev/shm segment. By default it is a forked process, so that, like a device,
it does not compete with the drain thread for the GIL (``--producer thread``
runs it as a thread instead),
never running more than the ring's size ahead of the drainer's persisted
position. The Drainer moves them into a 1,048,576-slot RingLog in a temporary
directory. Every record in the log is checked afterwards.

Run: python benchmarks/bench_drain.py [--records 20000000] [--chunk 4096] [--producer process|thread]
Target (issue 4): >= 10 M records/s with zero drops.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import tempfile
import threading
import time

import numpy as np

from vrrl_gpu import RECORD_DTYPE, RingLog
from vrrl_gpu.capture import Drainer, DrainOptions, ShmSegment, StagingRing
from vrrl_gpu.format import MAX_CAPACITY, RECORD_MAGIC

TS0 = 1_700_000_000_000_000_000


def producer(ring: StagingRing, total: int, chunk: int, stop: threading.Event, wait_s: float = 50e-6) -> None:
    n, mask = ring.n_slots, ring.mask
    template = np.zeros(chunk, RECORD_DTYPE)
    template["magic"] = RECORD_MAGIC
    template["opcode"] = 3
    raw_t = template.view("<u8").reshape(chunk, 8)
    raw = ring.records.view("<u8").reshape(n, 8)
    commits = ring.commits
    base = np.arange(chunk, dtype=np.uint64)
    s = 0
    while s < total and not stop.is_set():
        k = min(chunk, total - s)
        # Never lap the drainer: the benchmark measures the sustainable rate at zero drops.
        while s + k - ring.persisted_position > n:
            if stop.is_set():
                return
            # A device waits without the GIL; a short sleep keeps this stand-in off the drainer's GIL.
            time.sleep(wait_s)
        seqs = base[:k] + np.uint64(s)
        template["timestamp_ns"][:k] = seqs + np.uint64(TS0)
        template["slot_idx"][:k] = seqs
        ring.note_produced(s + k - 1)
        i0 = s & mask
        for lo, hi, off in ((i0, min(n, i0 + k), 0), (0, max(0, i0 + k - n), min(n, i0 + k) - i0)):
            if hi <= lo:
                continue
            m = hi - lo
            commits[lo:hi] = 0
            raw[lo:hi] = raw_t[off : off + m]
            commits[lo:hi] = seqs[off : off + m] + np.uint64(1)
        s += k


def drain_ceiling(n_slots: int, batch: int, directory: str | None, rounds: int = 60) -> float:
    """The drain path's own rate: fill the whole ring, let one Drainer pass take it, repeat."""
    ring = StagingRing.create(np.zeros(StagingRing.layout_size(n_slots), np.uint8), n_slots)
    ring.records["magic"] = RECORD_MAGIC
    spent = 0.0
    with (
        tempfile.TemporaryDirectory(dir=directory) as d,
        RingLog.open(os.path.join(d, "c.vrrl"), capacity=MAX_CAPACITY) as log,
    ):
        drainer = Drainer([ring], log, options=DrainOptions(batch_size=batch))
        for i in range(rounds):
            s = i * n_slots
            ring.commits[:] = np.arange(s + 1, s + n_slots + 1, dtype=np.uint64)
            ring.note_produced(s + n_slots - 1)
            t0 = time.perf_counter()
            drainer.flush()
            spent += time.perf_counter() - t0
        drainer.close()
        if drainer.statistics().drained != rounds * n_slots:
            raise SystemExit("drain ceiling run lost records")
    return rounds * n_slots / spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=20_000_000)
    ap.add_argument("--slots", type=int, default=65536)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--spin", type=int, default=32, help="DrainOptions.spin_polls")
    ap.add_argument("--wait", type=float, default=50e-6, help="producer's sleep while the ring is full (s)")
    ap.add_argument(
        "--producer",
        choices=["process", "thread"],
        default="process",
        help="process (default): a forked child writes into a /dev/shm segment, like a device it shares no "
        "GIL with the drainer; thread: a Python thread in this process (GIL-bound, slower)",
    )
    ap.add_argument("--dir", default=None, help="where the log goes (default: a temporary directory)")
    opts = ap.parse_args()

    seg = ShmSegment.create(None, StagingRing.layout_size(opts.slots))
    try:
        ring = StagingRing.create(seg.array, opts.slots)
        with tempfile.TemporaryDirectory(dir=opts.dir) as d:
            path = os.path.join(d, "bench.vrrl")
            with RingLog.open(path, capacity=MAX_CAPACITY) as log:
                stop = threading.Event()
                errors: list[BaseException] = []

                def run() -> None:
                    try:
                        producer(ring, opts.records, opts.chunk, stop, opts.wait)
                    except BaseException as e:
                        errors.append(e)

                drainer = Drainer(
                    [ring], log, options=DrainOptions(batch_size=opts.batch, spin_polls=opts.spin)
                )
                t0 = time.perf_counter()
                if opts.producer == "process":
                    # Forked before any thread starts; the child writes through the shared mapping.
                    child = mp.get_context("fork").Process(target=run, name="bench-producer")
                    child.start()
                    drainer.start()
                    child.join()
                    if child.exitcode != 0:
                        raise SystemExit(f"producer process failed with exit code {child.exitcode}")
                else:
                    thread = threading.Thread(target=run, name="bench-producer")
                    drainer.start()
                    thread.start()
                    thread.join()
                drainer.close()
                elapsed = time.perf_counter() - t0
                if errors:
                    raise errors[0]
                st = drainer.statistics()
                recs = log.records()
                last = min(opts.records, log.capacity)
                want = np.arange(opts.records - last, opts.records, dtype=np.uint64)
                ok = bool(np.array_equal(recs["slot_idx"].astype(np.uint64), want & np.uint64(0xFFFFFFFF)))
                ok = ok and bool(np.array_equal(recs["timestamp_ns"], want + np.uint64(TS0)))
    finally:
        seg.close()
        seg.unlink()

    ceiling = drain_ceiling(opts.slots, opts.batch, opts.dir)
    rate = st.drained / elapsed
    print(f"host: {platform.node()} ({os.cpu_count()} CPUs), python {platform.python_version()}")
    print(f"ring {opts.slots:,} slots in /dev/shm, log {MAX_CAPACITY:,} slots, producer: {opts.producer}")
    print(f"producer chunk {opts.chunk:,} records, drain batch {opts.batch:,} records")
    print(f"records produced   {opts.records:,}")
    print(f"records drained    {st.drained:,}")
    print(f"dropped            {st.dropped:,}")
    print(f"batches            {st.batches:,} (mean {st.drained / max(1, st.batches):,.0f} records)")
    print(f"peak backlog       {st.peak_backlog:,}")
    print(f"elapsed            {elapsed:.3f} s")
    print(f"rate               {rate / 1e6:.2f} M records/s (target >= 10)")
    print(f"log contents       {'verified' if ok else 'MISMATCH'} (last {last:,} records)")
    print(f"drain path alone   {ceiling / 1e6:.2f} M records/s (ring refilled between passes, no producer)")


if __name__ == "__main__":
    main()
