"""``diff_records``: the first divergences between two runs, per track."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._launches import Launches, _check, code_label, find_launches, unclaimed_slots
from vrrl_gpu.format._layout import (
    FailureClass,
    SlotStatus,
)
from vrrl_gpu.format._reader import Records

__all__ = ["Divergence", "DiffResult", "diff_records"]


# ---------------------------------------------------------------------- diff

#: The kinds of divergence ``diff_records`` reports, in the order it checks them.
DIVERGENCE_KINDS = ("missing", "opcode", "args", "epoch", "failure", "digest", "claim")


@dataclass(frozen=True)
class Divergence:
    """One launch where two logs disagree. ``position`` is the launch's index on its track."""

    kind: str
    tenant_id: int
    position: int
    a: Any
    b: Any
    a_record: int | None
    b_record: int | None
    a_slot: int | None
    b_slot: int | None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class DiffResult:
    """What :func:`diff_records` found. ``divergences`` holds at most ``limit`` entries; ``counts`` all."""

    launches_a: int
    launches_b: int
    compared: int
    counts: dict[str, int] = field(default_factory=dict)
    divergences: list[Divergence] = field(default_factory=list)
    unclaimed_a: list[tuple[int, int]] = field(default_factory=list)
    unclaimed_b: list[tuple[int, int]] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not self.counts

    @property
    def first(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "agree": self.agree,
            "launches_a": self.launches_a,
            "launches_b": self.launches_b,
            "compared": self.compared,
            "counts": dict(self.counts),
            "first": self.first.to_dict() if self.first else None,
            "divergences": [d.to_dict() for d in self.divergences],
            "unclaimed_a": [list(x) for x in self.unclaimed_a],
            "unclaimed_b": [list(x) for x in self.unclaimed_b],
        }


def diff_records(a: Records, b: Records, *, by_track: bool = True, limit: int = 1000) -> DiffResult:
    """Align two logs launch by launch and list where they disagree.

    Alignment: the launches of each track (``tenant_id``), in publish order of
    their opening records, are paired by position (the k-th launch of tenant t
    in A with the k-th of tenant t in B); with ``by_track=False`` all launches
    form one sequence. Meta-records never take part. For each pair: opcode;
    args (the four words); epoch, relative to the track's first launch (so a
    replay starting at another epoch agrees when its steps do); failure (the
    class and code of the launch's first failure record, or none); output
    digest (the last non-zero one, or 0); and for megakernel slots whether the
    device claimed them. Launches beyond the shorter side are ``missing``.
    """
    la, lb = find_launches(_check(a)), find_launches(_check(b))
    res = DiffResult(launches_a=len(la), launches_b=len(lb), compared=0)
    res.unclaimed_a = unclaimed_slots(a, la)
    res.unclaimed_b = unclaimed_slots(b, lb)
    if by_track:
        tracks = sorted(set(la.tenant.tolist()) | set(lb.tenant.tolist()))
        pairs = [(t, np.flatnonzero(la.tenant == t), np.flatnonzero(lb.tenant == t)) for t in tracks]
    else:
        pairs = [(-1, np.arange(len(la)), np.arange(len(lb)))]
    found: list[Divergence] = []
    for t, ra, rb in pairs:
        n = min(ra.size, rb.size)
        res.compared += n
        xa, xb = ra[:n], rb[:n]
        ea = la.epoch[ra].astype(np.int64) - (int(la.epoch[ra[0]]) if ra.size else 0)
        eb = lb.epoch[rb].astype(np.int64) - (int(lb.epoch[rb[0]]) if rb.size else 0)
        rel = {"a": ea, "b": eb}

        def epoch_value(
            s: str, _ls: Launches, _i: int, p: int, rel: dict[str, npt.NDArray[np.int64]] = rel
        ) -> int:
            return int(rel[s][p])

        checks: list[tuple[str, npt.NDArray[np.bool_], Callable[[str, Launches, int, int], Any]]] = [
            ("opcode", la.opcode[xa] != lb.opcode[xb], lambda _s, ls, i, _p: int(ls.opcode[i])),
            ("args", np.any(la.args[xa] != lb.args[xb], axis=1), lambda _s, ls, i, _p: ls.args[i].tolist()),
            ("epoch", ea[:n] != eb[:n], epoch_value),
            (
                "failure",
                (la.fail_class[xa] != lb.fail_class[xb])
                | (la.fail_code[xa] != lb.fail_code[xb])
                | (la.failed[xa] != lb.failed[xb]),
                lambda _s, ls, i, _p: _failure_value(ls, i),
            ),
            ("digest", la.digest[xa] != lb.digest[xb], lambda _s, ls, i, _p: f"{int(ls.digest[i]):016x}"),
            (
                "claim",
                ((la.status[xa] == SlotStatus.PUBLISHED) | (lb.status[xb] == SlotStatus.PUBLISHED))
                & (la.claimed[xa] != lb.claimed[xb]),
                lambda _s, ls, i, _p: bool(ls.claimed[i]),
            ),
        ]
        for kind, bad, value in checks:
            pos = np.flatnonzero(bad)
            if not pos.size:
                continue
            res.counts[kind] = res.counts.get(kind, 0) + int(pos.size)
            for p in pos[:limit].tolist():
                ia, ib = int(xa[p]), int(xb[p])
                found.append(_div(kind, t, p, value("a", la, ia, p), value("b", lb, ib, p), la, ia, lb, ib))
        for side, rows, ls in (("a", ra, la), ("b", rb, lb)):
            extra = rows[n:]
            if not extra.size:
                continue
            res.counts["missing"] = res.counts.get("missing", 0) + int(extra.size)
            for p, i in enumerate(extra[:limit].tolist(), start=n):
                present = _launch_value(ls, int(i))
                if side == "a":
                    found.append(_div("missing", t, p, present, None, la, int(i), None, None))
                else:
                    found.append(_div("missing", t, p, None, present, None, None, lb, int(i)))
    # First divergence = earliest in A's publish order (B's for launches A lacks), then by kind.
    rank = {k: i for i, k in enumerate(DIVERGENCE_KINDS)}
    found.sort(
        key=lambda d: (
            d.a_record if d.a_record is not None else (d.b_record if d.b_record is not None else 0),
            rank[d.kind],
        )
    )
    res.divergences = found[:limit]
    res.counts = {k: res.counts[k] for k in DIVERGENCE_KINDS if k in res.counts}
    return res


def _failure_value(ls: Launches, i: int) -> str | None:
    if not ls.failed[i]:
        return None
    return f"{FailureClass(int(ls.fail_class[i])).label} {code_label(int(ls.fail_code[i]))}"


def _launch_value(ls: Launches, i: int) -> dict[str, Any]:
    return {"opcode": int(ls.opcode[i]), "slot_idx": int(ls.slot[i]), "args": ls.args[i].tolist()}


def _div(
    kind: str,
    t: int,
    p: int,
    va: Any,
    vb: Any,
    la: Launches | None,
    ia: int | None,
    lb: Launches | None,
    ib: int | None,
) -> Divergence:
    return Divergence(
        kind=kind,
        tenant_id=int(t),
        position=int(p),
        a=va,
        b=vb,
        a_record=int(la.index[ia]) if la is not None and ia is not None else None,
        b_record=int(lb.index[ib]) if lb is not None and ib is not None else None,
        a_slot=int(la.slot[ia]) if la is not None and ia is not None else None,
        b_slot=int(lb.slot[ib]) if lb is not None and ib is not None else None,
    )
