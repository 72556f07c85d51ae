"""Builders of small VRRL logs for the analysis, export and report tests (RingLog and numpy only)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vrrl_gpu import RingLog
from vrrl_gpu.format import (
    RECORD_DTYPE,
    RECORD_MAGIC,
    FailureClass,
    MetaOpcode,
    Sidecar,
    SlotStatus,
    write_sidecar,
)

T0 = 1_700_000_000_000_000_000
GEMM, SOFTMAX, REDUCE = 0x1001, 0x1002, 0x1003
NAMES = {GEMM: "gemm", SOFTMAX: "softmax", REDUCE: "reduce"}

Row = tuple[int, int, int, int, tuple[int, int, int, int], int, int, int, int, int]


def rec(
    ts: int,
    slot: int,
    *,
    tenant: int = 0,
    opcode: int = GEMM,
    args: Sequence[int] = (0, 0, 0, 0),
    epoch: int = 0,
    status: int = SlotStatus.BEGIN,
    fc: int = FailureClass.NONE,
    code: int = 0,
    digest: int = 0,
) -> Row:
    """One record as a RECORD_DTYPE tuple (without magic); ``ts`` is relative to T0."""
    a = tuple(args)
    return (
        T0 + ts,
        slot,
        tenant,
        opcode,
        (a[0], a[1], a[2], a[3]),
        epoch,
        int(status),
        int(fc),
        code,
        digest,
    )


def gap(ts: int, count: int, *, tenant: int = 0, first: int = 0) -> Row:
    return rec(
        ts,
        0,
        tenant=tenant,
        opcode=MetaOpcode.GAP,
        args=(first, 0, count & 0xFFFFFFFF, count >> 32),
        status=SlotStatus.META,
    )


def records(rows: Iterable[Row]) -> npt.NDArray[np.void]:
    out = [(RECORD_MAGIC, *r) for r in rows]
    return np.array(out, dtype=RECORD_DTYPE) if out else np.empty(0, RECORD_DTYPE)


def write_log(
    path: Path,
    rows: Iterable[Row] | npt.NDArray[np.void],
    *,
    capacity: int | None = None,
    names: Mapping[int, str] | None = None,
) -> Path:
    arr = rows if isinstance(rows, np.ndarray) else records(rows)
    with RingLog.open(path, capacity=capacity or max(1, int(arr.shape[0]))) as log:
        log.extend(arr)
    if names is not None:
        write_sidecar(path, Sidecar(opcode_names=dict(names)))
    return path


def run_rows(
    n: int,
    *,
    tenants: int = 2,
    end: bool = True,
    fault_after: int | None = None,
    step: int = 1000,
    tenant_base: int = 0,
) -> list[Row]:
    """``n`` launches round-robin over ``tenants`` tracks, each BEGIN (+COMPLETED when ``end``).

    With ``fault_after=k``: launch k begins but never completes, and a FAULTED
    ProgramBug record (code 700, a digest) for it follows; nothing runs after.
    """
    ops = (GEMM, SOFTMAX, REDUCE)
    rows: list[Row] = []
    t = 0
    for i in range(n):
        tenant = tenant_base + i % tenants
        op = ops[i % 3]
        rows.append(rec(t, i, tenant=tenant, opcode=op, args=(i, 2 * i, 3, 4), epoch=i // 10))
        if fault_after is not None and i == fault_after:
            rows.append(
                rec(
                    t + 5000,
                    i,
                    tenant=tenant,
                    opcode=op,
                    args=(i, 2 * i, 3, 4),
                    epoch=i // 10,
                    status=SlotStatus.FAULTED,
                    fc=FailureClass.PROGRAM_BUG,
                    code=700,
                    digest=0xABCDEF,
                )
            )
            return rows
        if end:
            rows.append(
                rec(
                    t + step // 2,
                    i,
                    tenant=tenant,
                    opcode=op,
                    args=(i, 2 * i, 3, 4),
                    epoch=i // 10,
                    status=SlotStatus.COMPLETED,
                )
            )
        t += step
    return rows


#: Opcode names that need care in every text format: a comma and quotes (CSV), a formula, non-ASCII, a
#: control character, markup.
AWKWARD_NAMES = (
    "gemm",
    'a,"b"',
    "=cmd|' /C calc'!A0",
    "softmax\u00e9\u4e2d",
    "bell\x07",
    "[/]",
    "-neg",
    "@x",
)


def recorder_like_log(path: Path, n: int, *, seed: int = 0, streams: int = 3) -> Path:
    """``n`` records as a recorder writes them: SESSION_START, begin+end launches on ``streams`` streams
    (the sidecar's stream table maps them), random args and digests, a GAP, failures, a FAULTED record at
    the end naming the last launch, an unnamed opcode; the names are :data:`AWKWARD_NAMES`."""
    from vrrl_gpu.format import opcode_for_name

    rng = np.random.default_rng(seed)
    nonce = int(rng.integers(1, 1 << 62))
    r = np.zeros(n, RECORD_DTYPE)
    r["magic"] = RECORD_MAGIC
    r["timestamp_ns"] = T0 + np.cumsum(rng.integers(0, 2000, n)).astype(np.uint64)
    launches = (n - 2) // 2
    body = 1 + np.arange(2 * launches)
    slot = np.repeat(np.arange(launches, dtype=np.uint32), 2)
    ops = np.array([opcode_for_name(k) for k in AWKWARD_NAMES] + [0x77], np.uint32)
    r["slot_idx"][body] = slot
    r["opcode"][body] = ops[rng.integers(0, len(ops), launches)][slot]
    r["slot_status"][body] = np.tile(np.array([SlotStatus.BEGIN, SlotStatus.COMPLETED], np.uint32), launches)
    r["args"][body] = rng.integers(0, 1 << 32, (2 * launches, 4), dtype=np.uint64).astype(np.uint32)
    r["epoch"][body] = slot // 7
    r["tenant_id"] = 3
    ends = body[1::2]
    r["output_digest"][ends] = rng.integers(0, 1 << 63, launches, dtype=np.uint64) * 2
    # A few launches failed at launch instead of completing; one GAP in the middle.
    failed = ends[rng.choice(launches, size=max(1, launches // 50), replace=False)]
    r["slot_status"][failed] = SlotStatus.FAILED_AT_LAUNCH
    r["failure_class"][failed] = FailureClass.PROGRAM_BUG
    r["backend_error_code"][failed] = 1
    g = 1 + 2 * (launches // 2)
    r["slot_status"][g] = SlotStatus.META
    r["opcode"][g] = MetaOpcode.GAP
    r["args"][g] = (100, 0, 7, 0)
    spare = np.arange(1 + 2 * launches, n - 1)  # n odd: one record left between the launches and the fault
    r["slot_status"][spare] = SlotStatus.META
    r["opcode"][spare] = MetaOpcode.CALIBRATION
    r["slot_status"][0] = SlotStatus.META
    r["opcode"][0] = MetaOpcode.SESSION_START
    r["args"][0] = (1234, nonce & 0xFFFFFFFF, nonce >> 32, 0)
    last = int(slot[-1])
    r["slot_status"][2 * launches] = SlotStatus.BEGIN  # the last launch never completed
    r["slot_status"][n - 1] = SlotStatus.FAULTED
    r["slot_idx"][n - 1] = last
    r["opcode"][n - 1] = r["opcode"][2 * launches - 1]
    r["failure_class"][n - 1] = FailureClass.TRANSIENT_QUEUE
    r["backend_error_code"][n - 1] = 700
    with RingLog.create(path, n) as log:
        log.extend(r)
    runs = [{"index": s, "runs": [[s, streams, -(-(launches - s) // streams)]]} for s in range(streams)]
    names = {int(o): k for o, k in zip(ops[:-1].tolist(), AWKWARD_NAMES, strict=True)}
    extra = {"session": {"nonce": nonce, "pid": 1234}, "streams": runs}
    write_sidecar(path, Sidecar(opcode_names=names, extra=extra))
    return path
