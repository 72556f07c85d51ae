"""Read a log into a replay plan: the launches in order and the failure it recorded."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vrrl_gpu.backends._registry import BACKEND_NAMES, BackendName
from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.format._layout import META_OPCODE_BASE, UNKNOWN_SLOT, FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu.format._ringlog import RingLog
from vrrl_gpu.format._sidecar import load_sidecar, opcode_label

__all__ = [
    "Launch",
    "RecordedFailure",
    "ReplayPlan",
    "DEFAULT_TIMEOUT",
    "Device",
    "REPLAY_DEVICES",
    "Match",
    "MATCH_MODES",
    "read_plan",
    "launch_range",
]


#: Seconds one replayed launch may take before the trial is killed and counted as hung.
DEFAULT_TIMEOUT = 60.0
#: Seconds the child may take to start (imports, registry, recorder) before it is killed.
_MIN_STARTUP_TIMEOUT = 60.0

#: A replay child's device: a backend name, or "none" (run the callables without a Recorder).
Device = Literal[BackendName, "none"]
REPLAY_DEVICES: tuple[str, ...] = (*BACKEND_NAMES, "none")

#: What "the same failure" means: same class; same class and CUDA code; those at the recorded launch too.
#: (Here, not in ``_sampler`` which uses them, so that ``vrrl``'s parser reads them without the trials code.)
Match = Literal["class", "code", "launch"]
MATCH_MODES: tuple[str, ...] = ("class", "code", "launch")
_LAUNCH_STATUSES = (int(SlotStatus.BEGIN), int(SlotStatus.PUBLISHED))

RegistryFn = Callable[[tuple[int, int, int, int], int, int, int], Any]


# ---------------------------------------------------------------------------------------------- reading a log


@dataclass(frozen=True)
class Launch:
    """One recorded launch: where it sits in the sequence and the words it was recorded with."""

    position: int
    record_index: int
    slot_idx: int
    tenant_id: int
    opcode: int
    args: tuple[int, int, int, int]
    epoch: int
    #: The output digest the log holds for this launch (end breadcrumb or failure record), if any.
    recorded_digest: int | None = None

    def wire(self) -> list[int]:
        """The launch as the child receives it: ``[opcode, a0, a1, a2, a3, epoch, tenant, slot]``."""
        return [self.opcode, *self.args, self.epoch, self.tenant_id, self.slot_idx]


@dataclass(frozen=True)
class RecordedFailure:
    """The failure evidence the log holds, and the launch it belongs to."""

    position: int
    record_index: int
    slot_idx: int
    opcode: int
    slot_status: int
    failure_class: FailureClass
    code: int
    digest: int

    @property
    def hung(self) -> bool:
        return self.slot_status == int(SlotStatus.HUNG)

    @property
    def unknown(self) -> bool:
        """The recorder could not tell which launch failed: ``position`` is then the session's last launch."""
        return self.slot_idx == UNKNOWN_SLOT

    def to_json(self, names: Mapping[int, str]) -> dict[str, Any]:
        return {
            "position": self.position,
            "slot_idx": self.slot_idx,
            "opcode": self.opcode,
            "opcode_name": opcode_label(self.opcode, names),
            "slot_status": SlotStatus.label_of(self.slot_status),
            "failure_class": self.failure_class.label,
            "code": self.code,
            "code_name": _code_name(self.code),
            "output_digest": self.digest,
        }


@dataclass(frozen=True)
class ReplayPlan:
    """A log read for replay: its records, the launch sequence of one session, and the recorded failure."""

    path: str
    records: npt.NDArray[np.void]
    launches: tuple[Launch, ...]
    failure: RecordedFailure | None
    names: Mapping[int, str]
    #: Records the recorder reported lost (GAP meta-records) before the failure: the replay may then differ.
    lost_records: int = 0
    #: The session started at this record index (0 when the log has no SESSION_START meta-record).
    session_start: int = 0

    def select(self, start: int | None = None, stop: int | None = None) -> tuple[Launch, ...]:
        """Launches at positions ``start ..= stop`` (both optional, inclusive)."""
        lo, hi = launch_range(self.path, len(self.launches), start, stop)
        return self.launches[lo:hi]


def launch_range(path: str, n: int, start: int | None, stop: int | None) -> tuple[int, int]:
    """Positions ``start ..= stop`` (both optional, inclusive) of a log's ``n`` launches as a half-open
    range; a range outside them raises :class:`RecordValueError` naming ``path``."""
    lo = 0 if start is None else start
    hi = n - 1 if stop is None else stop
    if lo < 0 or hi < 0 or (n and (lo >= n or hi >= n)) or lo > hi:
        raise RecordValueError(
            f"{path}: launch range {lo}..{hi} is outside the log's launches 0..{n - 1}; "
            f"see 'vrrl replay --list' for the positions"
        )
    return lo, hi + 1

def read_plan(path: str | os.PathLike[str], *, salvage: bool = False) -> ReplayPlan:
    """Read ``path`` for replay (see the module docstring for which records count)."""
    p = os.fspath(path)
    with RingLog.open(p, readonly=True) as log:
        records = log.records(salvage=salvage)
    side = load_sidecar(p)
    names = dict(side.opcode_names) if side else {}
    opcodes = records["opcode"].astype(np.int64)
    status = records["slot_status"].astype(np.int64)
    fclass = records["failure_class"].astype(np.int64)
    not_meta = opcodes < META_OPCODE_BASE
    fail_idx = np.flatnonzero(not_meta & (fclass != 0))
    starts = np.flatnonzero((opcodes == int(MetaOpcode.SESSION_START)) & (status == int(SlotStatus.META)))
    anchor = int(fail_idx[-1]) if fail_idx.size else len(records)
    before = starts[starts < anchor]
    session = int(before[-1]) + 1 if before.size else 0
    later = starts[starts >= anchor]
    session_end = int(later[0]) if later.size and fail_idx.size else len(records)

    launches: list[Launch] = []
    last_by_slot: dict[int, int] = {}  # slot_idx -> index into launches, of the latest launch with that slot
    standin: dict[int, tuple[int, int, tuple[int, ...]]] = {}  # slots whose failure record opened the launch
    digests: dict[int, int] = {}
    failure: RecordedFailure | None = None
    gap_at: list[tuple[int, int]] = []  # (record index, records lost)
    rows = records[session:session_end]
    cols = {name: rows[name].tolist() for name in ("slot_idx", "tenant_id", "opcode", "epoch", "slot_status")}
    cols_fc = rows["failure_class"].tolist()
    cols_code = rows["backend_error_code"].tolist()
    cols_dig = rows["output_digest"].tolist()
    args = rows["args"].tolist()
    for k in range(len(rows)):
        op, st, slot = cols["opcode"][k], cols["slot_status"][k], cols["slot_idx"][k]
        if op >= META_OPCODE_BASE:
            if op == int(MetaOpcode.GAP) and st == int(SlotStatus.META):
                a = args[k]
                gap_at.append((session + k, a[2] | (a[3] << 32)))
            continue
        fc = cols_fc[k]
        is_launch = st in _LAUNCH_STATUSES and fc == 0
        if fc != 0 and slot == UNKNOWN_SLOT:
            # No launch is named: replay the whole session and look for the failure anywhere in it. A
            # named failure (another stream's) wins.
            if failure is None and launches:
                failure = RecordedFailure(
                    position=len(launches) - 1,
                    record_index=session + k,
                    slot_idx=slot,
                    opcode=op,
                    slot_status=st,
                    failure_class=FailureClass(fc),
                    code=cols_code[k],
                    digest=0,
                )
            continue
        if fc != 0 and slot not in last_by_slot:
            # The breadcrumb of the failed launch is missing (lost, or never written): the failure record
            # carries the same words, so it stands in for the launch.
            is_launch = True
            standin[slot] = (cols["tenant_id"][k], op, tuple(args[k]))
        elif is_launch and standin.pop(slot, None) == (cols["tenant_id"][k], op, tuple(args[k])):
            # The begin of a launch whose failure record came first (older recorders wrote it before the
            # begin had arrived): the same launch, not a second one.
            continue
        if is_launch:
            last_by_slot[slot] = len(launches)
            launches.append(
                Launch(
                    position=len(launches),
                    record_index=session + k,
                    slot_idx=slot,
                    tenant_id=cols["tenant_id"][k],
                    opcode=op,
                    args=(args[k][0], args[k][1], args[k][2], args[k][3]),
                    epoch=cols["epoch"][k],
                )
            )
        if fc != 0:
            pos = last_by_slot[slot]
            failure = RecordedFailure(
                position=pos,
                record_index=session + k,
                slot_idx=slot,
                opcode=op,
                slot_status=st,
                failure_class=FailureClass(fc),
                code=cols_code[k],
                digest=cols_dig[k],
            )
            if cols_dig[k]:
                digests[pos] = cols_dig[k]
        elif st == int(SlotStatus.COMPLETED) and cols_dig[k] and slot in last_by_slot:
            digests[last_by_slot[slot]] = cols_dig[k]
    if digests:
        launches = [
            dataclasses.replace(ln, recorded_digest=digests[ln.position]) if ln.position in digests else ln
            for ln in launches
        ]
    # Records lost after the failure (the launches that followed a sticky error) do not change its replay.
    end = failure.record_index if failure is not None else len(records)
    lost = sum(n for at, n in gap_at if at < end)
    return ReplayPlan(
        path=p,
        records=records,
        launches=tuple(launches),
        failure=failure,
        names=names,
        lost_records=lost,
        session_start=session,
    )


# ---------------------------------------------------------------------------------------------- labels


def _code_name(code: int) -> str:
    if not code:
        return "-"
    try:
        from vrrl_gpu.evidence._classify import code_name
    except ImportError:
        return str(code)
    return str(code_name(code))
