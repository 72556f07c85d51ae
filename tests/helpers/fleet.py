"""A synthetic fleet of rank logs with known answers (the fleet tests, the fleet report test, bench_fleet.py).

Most ranks are written with the format layer (RingLog and numpy): 24 launches each, epoch = slot // 6, on two
streams (even slots on stream 0, odd on stream 1, as the sidecar's stream table says). A few ranks are real
recordings by the Recorder on the twin, run first; the synthetic timeline then ends just after them, so every
healthy rank's newest breadcrumb is recent. The incidents, and what the fleet analysis must answer:

- rank HUNG stops after the BEGIN of slot 14 (no failure record): behind, and a hang suspect;
- rank FAULTED_FIRST faults at slot 10: the first failure; LATE_FAILURES fault later, in that order;
- LAGGING ranks run slower (fewer launches over the same time): behind, but not hang suspects;
- DAMAGED_HEADER has a log whose header is garbage; DAMAGED_SLOT has one corrupt slot (salvaged);
- MISSING has no log (the sidecars say world_size = ranks);
- ranks from NO_SIDECAR_FROM up have no sidecar: their rank is their tenant id, their stream unknown.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vrrl_gpu import RingLog
from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC, FailureClass, MetaOpcode, Sidecar, SlotStatus

LAUNCHES = 24
PER_EPOCH = 6
STEP_NS = 20 * 10**9
OPS = {0x2001: "allreduce", 0x2002: "gemm", 0x2003: "softmax"}
OP_LIST = tuple(OPS)


@dataclass(frozen=True)
class FleetSpec:
    """Which rank has which incident (defaults for a 1,000-rank fleet)."""

    ranks: int = 1000
    twin_ranks: tuple[int, ...] = (0, 1, 2)
    hung: int = 417
    hung_slot: int = 14
    faulted_first: int = 733
    faulted_slot: int = 10
    late_failures: tuple[tuple[int, int], ...] = ((100, 17), (200, 20))  # (rank, slot it faults at)
    lagging: tuple[tuple[int, int], ...] = ((5, 18), (6, 21), (7, 12))  # (rank, launches it got through)
    damaged_header: int = 321
    damaged_slot: int = 322
    missing: int = 555
    no_sidecar_from: int = 900


@dataclass
class Fleet:
    root: Path
    spec: FleetSpec
    end_ns: int
    start_ns: int
    fault_ns: dict[int, int] = field(default_factory=dict)
    last_ns: dict[int, int] = field(default_factory=dict)
    twin_paths: list[Path] = field(default_factory=list)

    def paths(self) -> list[Path]:
        return sorted(self.root.glob("*.vrrl"))


def _launch_rows(rank: int, n: int, start: int, step: int, *, complete_last: bool) -> list[tuple[int, ...]]:
    rows = []
    for slot in range(n):
        t = start + slot * step + (rank % 97) * 1_000_000
        op = OP_LIST[slot % 3]
        rows.append((t, slot, rank, op, slot // PER_EPOCH, int(SlotStatus.BEGIN), 0, 0))
        if slot < n - 1 or complete_last:
            rows.append((t + step // 2, slot, rank, op, slot // PER_EPOCH, int(SlotStatus.COMPLETED), 0, 0))
    return rows


def _array(rows: Sequence[tuple[int, ...]], nonce: int, rank: int, t0: int) -> npt.NDArray[np.void]:
    out = np.zeros(len(rows) + 1, RECORD_DTYPE)
    out["magic"] = RECORD_MAGIC
    out[0]["timestamp_ns"] = t0
    out[0]["tenant_id"] = rank
    out[0]["opcode"] = int(MetaOpcode.SESSION_START)
    out[0]["slot_status"] = int(SlotStatus.META)
    out[0]["args"] = (rank + 1000, nonce & 0xFFFFFFFF, nonce >> 32, 0)
    if rows:
        a = np.array(rows, np.uint64)
        out["timestamp_ns"][1:] = a[:, 0]
        out["slot_idx"][1:] = a[:, 1]
        out["tenant_id"][1:] = a[:, 2]
        out["opcode"][1:] = a[:, 3]
        out["epoch"][1:] = a[:, 4]
        out["slot_status"][1:] = a[:, 5]
        out["failure_class"][1:] = a[:, 6]
        out["backend_error_code"][1:] = a[:, 7]
        out["args"][1:, 0] = a[:, 1]
    return out


def _sidecar(rank: int, world: int, nonce: int) -> dict[str, object]:
    runs = [{"index": s, "key": f"stream-{s}", "runs": [[s, 2, LAUNCHES // 2]]} for s in (0, 1)]
    side = Sidecar(
        opcode_names=dict(OPS),
        host=f"node{rank // 8:03d}",
        pid=10_000 + rank,
        device={"name": "NVIDIA H100 80GB HBM3 (synthetic)", "uuid": f"GPU-synthetic-{rank:04d}"},
        tenant_id=rank,
        extra={"rank": rank, "world_size": world, "session": {"nonce": nonce, "pid": 10_000 + rank},
               "streams": runs},
    )  # fmt: skip
    return side.to_json()


def record_twin_ranks(root: Path, ranks: Sequence[int], world: int) -> list[Path]:
    """Real recordings on the twin: 24 axpy launches per rank, epoch = slot // 6, the rank from RANK."""
    from tests.helpers.recorder import Axpy
    from vrrl_gpu import Recorder

    out = []
    saved = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE")}
    try:
        for r in ranks:
            os.environ["RANK"], os.environ["WORLD_SIZE"] = str(r), str(world)
            path = root / f"rank{r:04d}.vrrl"
            with Recorder(path, device="twin", tenant_id=r) as rec:
                ax = Axpy.on(rec)
                for i in range(LAUNCHES):
                    rec.epoch = i // PER_EPOCH
                    ax.launch(i)
                rec.synchronize()
            rec.backend.close()
            out.append(path)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


def build_fleet(root: Path, spec: FleetSpec | None = None, *, twin: bool = True) -> Fleet:
    """Write the fleet into ``root`` (see the module docstring); returns what was written, with its times."""
    spec = spec or FleetSpec()
    root.mkdir(parents=True, exist_ok=True)
    twin_paths = record_twin_ranks(root, spec.twin_ranks, spec.ranks) if twin else []
    end = time.time_ns() + 5 * 10**9
    start = end - LAUNCHES * STEP_NS
    fleet = Fleet(root=root, spec=spec, end_ns=end, start_ns=start, twin_paths=twin_paths)
    late = dict(spec.late_failures)
    lag = dict(spec.lagging)
    skip = {spec.missing, *(spec.twin_ranks if twin else ())}
    for rank in range(spec.ranks):
        if rank in skip:
            continue
        nonce = 0x5EED0000 + rank
        if rank == spec.hung:
            rows = _launch_rows(rank, spec.hung_slot + 1, start, STEP_NS, complete_last=False)
        elif rank == spec.faulted_first or rank in late:
            slot = spec.faulted_slot if rank == spec.faulted_first else late[rank]
            rows = _launch_rows(rank, slot + 1, start, STEP_NS, complete_last=False)
            t = rows[-1][0] + 5 * 10**9
            op = rows[-1][3]
            rows.append((t, slot, rank, op, slot // PER_EPOCH, int(SlotStatus.FAULTED),
                         int(FailureClass.PROGRAM_BUG), 700))  # fmt: skip
            fleet.fault_ns[rank] = t
        elif rank in lag:
            n = lag[rank]
            rows = _launch_rows(rank, n, start, (LAUNCHES * STEP_NS) // n, complete_last=True)
        else:
            rows = _launch_rows(rank, LAUNCHES, start, STEP_NS, complete_last=True)
        fleet.last_ns[rank] = max(r[0] for r in rows if r[5] in (SlotStatus.BEGIN, SlotStatus.COMPLETED))
        arr = _array(rows, nonce, rank, start - 10**9)
        path = root / f"rank{rank:04d}.vrrl"
        with RingLog.open(path, capacity=64) as log:
            log.extend(arr)
        if rank < spec.no_sidecar_from:
            path.with_name(path.name + ".json").write_text(json.dumps(_sidecar(rank, spec.ranks, nonce)))
        if rank == spec.damaged_header:
            with open(path, "r+b") as f:
                f.write(b"NOTAVRRL")
        elif rank == spec.damaged_slot:
            with open(path, "r+b") as f:
                f.seek(32 + 64 * 3)
                f.write(b"\x01\x02\x03\x04")
    return fleet


def subset_of(fleet: Fleet) -> list[str]:
    """Every incident's rank and the first 150 logs: a dataset of the whole fleet takes a while to write."""
    s = fleet.spec
    ranks = {s.hung, s.faulted_first, s.damaged_header, s.damaged_slot, s.missing, s.no_sidecar_from,
             *(r for r, _ in s.late_failures), *(r for r, _ in s.lagging)}  # fmt: skip
    paths = fleet.paths()
    return [str(p) for i, p in enumerate(paths) if i < 150 or int(p.stem.removeprefix("rank")) in ranks]


def million_record_log(path: Path, records: int = 1 << 20, *, tracks: int = 4) -> Path:
    """A full log written with numpy: ``records // 2`` launches (BEGIN + COMPLETED, 250 ns apart) round-robin
    over ``tracks`` tenant ids, epoch = slot // 1000, the last launch faulted (ProgramBug, code 700)."""
    a = np.zeros(records, RECORD_DTYPE)
    a["magic"] = RECORD_MAGIC
    i = np.arange(records, dtype=np.uint64)
    slot = i // np.uint64(2)
    a["timestamp_ns"] = np.uint64(1_700_000_000_000_000_000) + i * np.uint64(250)
    a["slot_idx"] = slot
    a["tenant_id"] = slot % np.uint64(tracks)
    a["opcode"] = np.array(OP_LIST, np.uint32)[(slot % np.uint64(3)).astype(np.int64)]
    a["epoch"] = slot // np.uint64(1000)
    a["slot_status"] = np.where(i % np.uint64(2) == 0, int(SlotStatus.BEGIN), int(SlotStatus.COMPLETED))
    a["args"][:, 0] = slot
    a[-1]["slot_status"] = int(SlotStatus.FAULTED)
    a[-1]["failure_class"] = int(FailureClass.PROGRAM_BUG)
    a[-1]["backend_error_code"] = 700
    with RingLog.open(path, capacity=records) as log:
        log.extend(a)
    path.with_name(path.name + ".json").write_text(json.dumps(Sidecar(opcode_names=dict(OPS)).to_json()))
    return path
