"""The logs of a fleet: finding them, naming each one's rank, reading each without letting it stop the rest.

A fleet is one log per rank (process) of a job. Inputs are log paths, directories (every ``*.vrrl`` below
them) and glob patterns. Each log's rank comes, in this order of preference, from:

1. ``rank`` in its sidecar's ``extra`` (the Recorder writes it from ``RANK``, ``SLURM_PROCID``,
   ``OMPI_COMM_WORLD_RANK`` or ``PMI_RANK``; ``world_size`` likewise);
2. its tenant id (the sidecar's, else its first record's), when the logs that reach this step all have
   distinct tenant ids;
3. the last number in its file name (``rank0042.vrrl`` is 42), when those are distinct;
4. its position among the logs, sorted by path.

A damaged log (a header that does not decode, corrupt slots, a short file) is read with salvage and marked
``damaged``; a damaged sidecar only loses the names, streams and identity it held. Neither stops the fleet.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._streams import NO_STREAM, StreamMapper, StreamTable, holds_session_start
from vrrl_gpu.errors import RecordValueError, SidecarError, VrrlError
from vrrl_gpu.format._layout import RECORD_DTYPE
from vrrl_gpu.format._reader import Records, iter_record_chunks
from vrrl_gpu.format._ringlog import RingLog
from vrrl_gpu.format._sidecar import SIDECAR_SUFFIX, Sidecar, read_sidecar

__all__ = [
    "LOG_SUFFIX",
    "RankLog",
    "LoadedLog",
    "find_logs",
    "identify_logs",
    "read_sidecars",
    "load_log",
    "expected_missing",
]

LOG_SUFFIX = ".vrrl"
_GLOB = re.compile(r"[*?\[]")
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class RankLog:
    """One rank's log and what its sidecar says about it.

    ``state``: ``ok``, ``damaged`` (read with salvage, or not readable at all: ``reason`` says which) or
    ``missing`` (named, or expected from the world size, but not there). ``rank_source``: which rule of
    this module's docstring gave the rank (``sidecar``, ``tenant``, ``file name``, ``order``, ``world size``).
    ``first_ns`` / ``last_ns``: the oldest and newest timestamp of any of its records (None: no records).
    """

    rank: int
    path: str
    state: str = "ok"
    reason: str = ""
    rank_source: str = "sidecar"
    host: str = ""
    device: str = ""
    device_uuid: str = ""
    pid: int = 0
    tenant: int = 0
    records: int = 0
    world_size: int | None = None
    first_ns: int | None = None
    last_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankLog:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class LoadedLog:
    """A rank's records (publish order), each record's stream (-1: not known) and its opcode names."""

    log: RankLog
    records: Records
    streams: npt.NDArray[np.int32]
    opcode_names: dict[int, str]


def find_logs(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """(the logs the inputs name, sorted and without repeats; the named paths that do not exist).

    A directory stands for every ``*.vrrl`` file below it, a pattern with ``*``, ``?`` or ``[`` for its
    matches (recursive with ``**``).
    """
    found: list[str] = []
    missing: list[str] = []
    for item in inputs:
        s = os.fspath(item)
        if os.path.isdir(s):
            found += [str(p) for p in Path(s).rglob(f"*{LOG_SUFFIX}") if p.is_file()]
        elif _GLOB.search(s):
            found += [p for p in glob.glob(s, recursive=True) if os.path.isfile(p) and not _is_sidecar(p)]
        elif os.path.exists(s):
            found.append(s)
        else:
            missing.append(s)
    return sorted(set(found)), missing


def _is_sidecar(p: str) -> bool:
    return p.endswith(LOG_SUFFIX + SIDECAR_SUFFIX)


def _side(path: str) -> tuple[Sidecar | None, str]:
    try:
        return read_sidecar(path), ""
    except (SidecarError, OSError) as e:
        return None, f"sidecar: {' '.join(str(e).split())}"


def _nonneg_int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _first_tenant(path: str) -> int | None:
    try:
        first = next(iter_record_chunks(path, chunk_records=64, salvage=True), None)
    except (VrrlError, OSError):
        return None
    return int(first["tenant_id"][0]) if first is not None else None


def _name_number(path: str) -> int | None:
    nums = _DIGITS.findall(Path(path).name.removesuffix(LOG_SUFFIX))
    return int(nums[-1]) if nums else None


def read_sidecars(paths: Sequence[str]) -> list[tuple[Sidecar | None, str]]:
    """Each log's sidecar (None when absent or damaged) and the damage, if any, as a reason."""
    return [_side(p) for p in paths]


def identify_logs(
    paths: Sequence[str],
    missing: Iterable[str] = (),
    sides: Sequence[tuple[Sidecar | None, str]] | None = None,
) -> list[RankLog]:
    """Each log's rank and identity (module docstring); ``missing`` paths become ``missing`` entries.

    Logs are not read here beyond their sidecars (``sides``, from :func:`read_sidecars` when not given)
    and a first record (the tenant rule).
    """
    sides = read_sidecars(paths) if sides is None else sides
    rank: list[int | None] = []
    source: list[str] = []
    for side, _ in sides:
        r = _nonneg_int(side.extra.get("rank")) if side is not None else None
        rank.append(r)
        source.append("sidecar")
    tenant = [
        side.tenant_id if side is not None else _first_tenant(p)
        for p, (side, _) in zip(paths, sides, strict=True)
    ]
    rest = [i for i, r in enumerate(rank) if r is None]
    if rest:
        tenants = [tenant[i] for i in rest]
        numbers = [_name_number(paths[i]) for i in rest]
        if None not in tenants and len(set(tenants)) == len(rest):
            chosen, why = tenants, "tenant"
        elif None not in numbers and len(set(numbers)) == len(rest):
            chosen, why = numbers, "file name"
        else:
            chosen, why = list(range(len(rest))), "order"
        for i, r in zip(rest, chosen, strict=True):
            rank[i], source[i] = r, why
    out: list[RankLog] = []
    for p, (side, why), r, src, ten in zip(paths, sides, rank, source, tenant, strict=True):
        assert r is not None
        dev = side.device if side is not None else {}
        out.append(
            RankLog(
                rank=r,
                path=p,
                state="damaged" if why else "ok",
                reason=why,
                rank_source=src,
                host=side.host if side else "",
                device=str(dev.get("name", "")),
                device_uuid=str(dev.get("uuid", "")),
                pid=side.pid if side else 0,
                tenant=ten if ten is not None else 0,
                world_size=_nonneg_int(side.extra.get("world_size")) if side else None,
            )
        )
    named = [_name_number(m) for m in missing]
    for m, n in zip(missing, named, strict=True):
        out.append(
            RankLog(
                rank=n if n is not None else -1,
                path=m,
                state="missing",
                reason="no such file",
                rank_source="file name" if n is not None else "unknown",
            )
        )
    return out


def expected_missing(logs: Sequence[RankLog], world_size: int | None) -> list[RankLog]:
    """``missing`` entries for the ranks below the world size that no log has.

    The world size is ``world_size`` when given, else the largest any sidecar recorded, else none (no rank
    is then expected beyond those seen).
    """
    ws = world_size
    if ws is None:
        sizes = [g.world_size for g in logs if g.world_size is not None]
        ws = max(sizes) if sizes else None
    if ws is None:
        return []
    if ws < 1:
        raise RecordValueError(f"the world size must be at least 1, got {ws}")
    have = {g.rank for g in logs}
    return [
        RankLog(rank=r, path="", state="missing", reason="no log for this rank", rank_source="world size")
        for r in range(ws)
        if r not in have
    ]


def load_log(log: RankLog, sidecar: Sidecar | None = None) -> LoadedLog:
    """Read one rank's log: strict when sound, else what salvage keeps, with the damage in ``log.reason``.

    ``sidecar``: the log's, when already read. A log that cannot be read at all comes back ``damaged``
    with no records; this never raises for a bad log, so one bad rank does not stop a fleet.
    """
    empty = np.empty(0, RECORD_DTYPE)
    if log.state == "missing":
        return LoadedLog(log, empty, np.empty(0, np.int32), {})
    reasons = [log.reason] if log.reason else []
    try:
        with RingLog.open(log.path, readonly=True) as ring:
            scan = ring.scan(salvage=True)
    except (VrrlError, OSError) as e:
        reasons.insert(0, " ".join(str(e).split()).removeprefix(f"{log.path}: "))
        bad = dataclasses.replace(log, state="damaged", reason="; ".join(reasons), records=0)
        return LoadedLog(bad, empty, np.empty(0, np.int32), {})
    recs = scan.records
    if not scan.is_sound:
        reasons.insert(
            0, f"{len(scan.corrupt_slots)} corrupt slot(s), {scan.missing_slots} missing slot(s); salvaged"
        )
    side = sidecar if sidecar is not None or log.reason else _side(log.path)[0]
    streams = np.full(int(recs.shape[0]), NO_STREAM, np.int32)
    names: dict[int, str] = dict(side.opcode_names) if side else {}
    if side is not None:
        try:
            table = StreamTable.from_sidecar(side)
        except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError) as e:
            reasons.append(f"sidecar stream table malformed ({type(e).__name__})")
            table = None
        if table is not None:
            streams = StreamMapper(table, active=not holds_session_start(recs, table.nonce))(recs)
    state = "damaged" if reasons else "ok"
    ts = recs["timestamp_ns"]
    done = dataclasses.replace(
        log,
        state=state,
        reason="; ".join(reasons),
        records=int(recs.shape[0]),
        first_ns=int(ts.min()) if ts.size else None,
        last_ns=int(ts.max()) if ts.size else None,
    )
    return LoadedLog(done, recs, streams, names)
