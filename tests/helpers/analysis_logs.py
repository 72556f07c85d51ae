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
