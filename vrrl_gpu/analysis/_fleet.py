"""``vrrl fleet``: the incident questions of a job's rank logs, answered on DuckDB (the ``analysis`` extra).

The input is either rank logs (paths, directories, globs; see ``_fleet_logs``) or a rank-partitioned
Parquet dataset written by ``vrrl export`` (``_fleet_dataset``). Both become one relation ``recs`` (rank,
stream, timestamp_ns, slot_idx, epoch, opcode, opcode_name, slot_status, failure_class, backend_error_code)
and the same SQL answers over it. From logs, each log is first cut down (numpy) to the rows the SQL can pick
(per stream: the newest launch's records; every failure record), so a thousand logs cost a thousand reads
and one small table; a dataset is scanned by DuckDB itself.

Timestamps of different ranks come from different hosts' clocks: "first" across ranks is as good as their
synchronisation (NTP/PTP; typically well under a millisecond, far below the gaps these questions are about).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._defaults import DEFAULT_HANG_AFTER_S
from vrrl_gpu.analysis._fleet_logs import (
    LoadedLog,
    RankLog,
    expected_missing,
    find_logs,
    identify_logs,
    load_log,
    read_sidecars,
)
from vrrl_gpu.errors import MissingExtraError, RecordValueError, VrrlIoError
from vrrl_gpu.format._layout import UNKNOWN_SLOT, SlotStatus
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._sidecar import opcode_label

__all__ = [
    "DEFAULT_HANG_AFTER_S",
    "MANIFEST_NAME",
    "FleetRank",
    "LastLaunch",
    "Majority",
    "Laggard",
    "FleetFailure",
    "HangSuspect",
    "FleetResult",
    "analyze_fleet",
    "duckdb_module",
    "is_dataset",
    "keep_rows",
]

#: The dataset's list of its ranks (paths, identity, damage); ``_``-prefixed, so engines skip it as data.
MANIFEST_NAME = "_vrrl_fleet.json"

_LAUNCH = (int(SlotStatus.BEGIN), int(SlotStatus.COMPLETED))
_FAILED = (int(SlotStatus.FAILED_AT_LAUNCH), int(SlotStatus.FAULTED), int(SlotStatus.HUNG))
_META = int(SlotStatus.META)

FleetRank = RankLog


def duckdb_module() -> ModuleType:
    """DuckDB, or :class:`MissingExtraError` naming the extra."""
    try:
        return importlib.import_module("duckdb")
    except ImportError:
        raise MissingExtraError(
            "the fleet analysis runs on DuckDB, which is not installed; "
            "install the extra: pip install 'vrrl_gpu[analysis]'"
        ) from None


def _pyarrow() -> ModuleType:
    try:
        return importlib.import_module("pyarrow")
    except ImportError:
        raise MissingExtraError(
            "the fleet analysis needs pyarrow, which is not installed; "
            "install the extra: pip install 'vrrl_gpu[analysis]'"
        ) from None


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class LastLaunch:
    """The newest launch a rank's stream reached (its BEGIN time; ``completed``: its end was recorded)."""

    rank: int
    stream: int | None
    slot: int
    epoch: int
    opcode: int
    opcode_name: str
    time_ns: int
    completed: bool


@dataclass(frozen=True)
class Majority:
    """Where most ranks are: the commonest epoch of the ranks' newest launches, then the commonest slot."""

    epoch: int
    slot: int
    ranks: int
    of: int


@dataclass(frozen=True)
class Laggard:
    """A rank behind the majority: its newest launch, and how many epochs and launches (slots) behind."""

    rank: int
    epoch: int
    slot: int
    behind_epochs: int
    behind_slots: int
    last_ns: int


@dataclass(frozen=True)
class FleetFailure:
    """A rank's first failure record; ``after_ns``: how long after the fleet's first failure."""

    rank: int
    stream: int | None
    time_ns: int
    slot: int
    epoch: int
    opcode: int
    opcode_name: str
    status: str
    failure_class: int
    backend_error_code: int
    after_ns: int
    failures: int


@dataclass(frozen=True)
class HangSuspect:
    """A rank without a failure whose newest breadcrumb is older than the cut-off (None: it has none)."""

    rank: int
    last_ns: int | None
    silent_ns: int | None
    epoch: int | None
    slot: int | None
    opcode_name: str


@dataclass
class FleetResult:
    """The answers of :func:`analyze_fleet` (``to_dict()`` is ``vrrl fleet --json``)."""

    source: str
    ranks: list[RankLog]
    last_launches: list[LastLaunch]
    majority: Majority | None
    behind: list[Laggard]
    first_failure: FleetFailure | None
    failed_after: list[FleetFailure]
    hang_cutoff_ns: int | None
    newest_ns: int | None
    hang_suspects: list[HangSuspect]
    missing: list[RankLog] = field(default_factory=list)
    damaged: list[RankLog] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rank_info(self) -> dict[int, RankLog]:
        return {r.rank: r for r in self.ranks if r.state != "missing"}


# ---------------------------------------------------------------- reduction


def keep_rows(records: Records, streams: npt.NDArray[np.int32]) -> npt.NDArray[np.intp]:
    """Indices of the rows the fleet SQL can pick: per stream, every record of the newest launch's slot
    (newest by timestamp), and every failure record. Vectorised; loops only over the log's streams."""
    st = records["slot_status"]
    slot = records["slot_idx"]
    launch = np.isin(st, _LAUNCH) & (slot != UNKNOWN_SLOT)
    fail = np.isin(st, _FAILED) | ((st != _META) & (records["failure_class"] != 0))
    keep = fail.copy()
    idx = np.flatnonzero(launch)
    if idx.size:
        ts = records["timestamp_ns"][idx]
        s = streams[idx]
        for u in np.unique(s).tolist():
            m = idx[s == u]
            mts = ts[s == u]
            newest = m[np.lexsort((slot[m], mts))[-1]]
            keep[m[slot[m] == slot[newest]]] = True
    return np.flatnonzero(keep)


_COLUMNS = (
    ("rank", "int64"),
    ("stream", "int32"),
    ("timestamp_ns", "uint64"),
    ("slot_idx", "uint32"),
    ("epoch", "uint32"),
    ("opcode", "uint32"),
    ("slot_status", "uint32"),
    ("failure_class", "uint32"),
    ("backend_error_code", "uint32"),
)


def _reduced_table(loaded: Sequence[LoadedLog]) -> Any:
    """One Arrow table of every log's kept rows, with the rank and the opcode name."""
    pa = _pyarrow()
    parts: dict[str, list[npt.NDArray[Any]]] = {n: [] for n, _ in _COLUMNS}
    names: list[str] = []
    for g in loaded:
        keep = keep_rows(g.records, g.streams)
        r = g.records[keep]
        parts["rank"].append(np.full(keep.size, g.log.rank, np.int64))
        parts["stream"].append(g.streams[keep])
        for n, _ in _COLUMNS[2:]:
            parts[n].append(r[n])
        labels = {op: opcode_label(op, g.opcode_names) for op in np.unique(r["opcode"]).tolist()}
        names += [labels[op] for op in r["opcode"].tolist()]
    cols = {
        n: pa.array(np.concatenate(parts[n]).astype(t) if parts[n] else np.empty(0, t)) for n, t in _COLUMNS
    }
    cols["opcode_name"] = pa.array(names, pa.string())
    return pa.table(cols)


# ------------------------------------------------------------------- inputs


def is_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a rank-partitioned dataset (a manifest, or ``rank=N`` folders) rather than logs."""
    p = Path(path)
    if not p.is_dir():
        return False
    return (p / MANIFEST_NAME).is_file() or any(
        c.is_dir() and c.name.startswith("rank=") for c in p.iterdir()
    )


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _dataset_relation(con: Any, root: Path) -> list[RankLog]:
    """Make ``recs`` a view over the dataset; its ranks from the manifest, else from the data."""
    files = sorted(root.glob("rank=*/*.parquet"))
    manifest = root / MANIFEST_NAME
    ranks: list[RankLog] = []
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
            ranks = [RankLog.from_dict(d) for d in doc["ranks"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise VrrlIoError(
                f"{manifest}: not a usable fleet manifest ({e}); delete it to use the data alone"
            ) from e
    if not files:
        con.execute(
            "CREATE TEMP TABLE recs (rank BIGINT, stream INTEGER, timestamp_ns UBIGINT, slot_idx UINTEGER, "
            "epoch UINTEGER, opcode UINTEGER, opcode_name VARCHAR, slot_status UINTEGER, "
            "failure_class UINTEGER, "
            "backend_error_code UINTEGER)"
        )
        return ranks
    glob = _sql_str(str(root / "rank=*" / "*.parquet"))
    con.execute(
        "CREATE TEMP VIEW recs AS SELECT CAST(rank AS BIGINT) AS rank, coalesce(stream, -1) AS stream, "
        "timestamp_ns, slot_idx, epoch, opcode, "
        "coalesce(opcode_name, printf('0x%x', opcode)) AS opcode_name, "
        "slot_status, failure_class, backend_error_code "
        f"FROM read_parquet({glob}, hive_partitioning = true)"
    )
    if not ranks:
        rows = con.execute(
            f"SELECT CAST(rank AS BIGINT), any_value(host), any_value(device), any_value(device_uuid), "
            f"any_value(pid), any_value(tenant), count(*), min(timestamp_ns), max(timestamp_ns) "
            f"FROM read_parquet({glob}, hive_partitioning = true) "
            f"GROUP BY 1 ORDER BY 1"
        ).fetchall()
        ranks = [
            RankLog(rank=int(r), path=str(root / f"rank={r}"), rank_source="partition", host=h or "",
                    device=d or "", device_uuid=u or "", pid=int(p or 0), tenant=int(t or 0), records=int(n),
                    first_ns=int(lo), last_ns=int(hi))
            for r, h, d, u, p, t, n, lo, hi in rows
        ]  # fmt: skip
    elif any(r.records and r.first_ns is None for r in ranks):  # a manifest from before first/last_ns
        span = {
            int(r): (int(lo), int(hi))
            for r, lo, hi in con.execute(
                f"SELECT CAST(rank AS BIGINT), min(timestamp_ns), max(timestamp_ns) "
                f"FROM read_parquet({glob}, hive_partitioning = true) GROUP BY 1"
            ).fetchall()
        }
        ranks = [
            dataclasses.replace(r, first_ns=span[r.rank][0], last_ns=span[r.rank][1]) if r.rank in span else r
            for r in ranks
        ]
    return ranks


def load_fleet(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    progress: Callable[[int, int | None], None] | None = None,
) -> tuple[list[RankLog], list[LoadedLog]]:
    """Find, identify and read the logs the inputs name (module ``_fleet_logs``), one at a time."""
    paths, missing = find_logs(inputs)
    if not paths:
        named = ", ".join(os.fspath(i) for i in inputs)
        raise RecordValueError(f"{named}: no VRRL logs (*.vrrl) found there")
    sides = read_sidecars(paths)
    logs = identify_logs(paths, missing, sides)
    side_of = {p: side for p, (side, _) in zip(paths, sides, strict=True)}
    loaded: list[LoadedLog] = []
    for i, g in enumerate(logs):
        loaded.append(load_log(g, side_of.get(g.path)))
        if progress is not None:
            progress(i + 1, len(logs))
    return [g.log for g in loaded], loaded


# ------------------------------------------------------------------ queries


def _none_stream(s: int) -> int | None:
    return None if s < 0 else int(s)


def analyze_fleet(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    since_ns: int | None = None,
    hang_after_s: float | None = None,
    world_size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> FleetResult:
    """Answer the fleet questions (docs/analysis.md) for rank logs or one dataset folder.

    Hang suspects are the ranks without a failure record whose newest breadcrumb is older than
    ``since_ns`` (absolute, ns since the epoch) or, by default, ``hang_after_s`` (60 s) before the
    fleet's newest breadcrumb (the job's last sign of life: a log is usually read after the fact).
    ``world_size``: the ranks the job had (default: the largest a sidecar recorded); ranks below it
    without a log are reported missing.
    """
    duckdb = duckdb_module()
    if since_ns is not None and hang_after_s is not None:
        raise RecordValueError("give since_ns or hang_after_s, not both")
    if hang_after_s is not None and not hang_after_s >= 0:
        raise RecordValueError(f"hang_after_s must be >= 0, got {hang_after_s}")
    con = duckdb.connect()
    try:
        if len(inputs) == 1 and is_dataset(inputs[0]):
            source = os.fspath(inputs[0])
            ranks = _dataset_relation(con, Path(source))
        else:
            source = ", ".join(os.fspath(i) for i in inputs)
            ranks, loaded = load_fleet(inputs, progress=progress)
            table = _reduced_table(loaded)
            con.register("recs_arrow", table)
            con.execute("CREATE TEMP VIEW recs AS SELECT * FROM recs_arrow")
        ranks = ranks + expected_missing(ranks, world_size)
        return _answer(con, source, ranks, since_ns, hang_after_s)
    finally:
        con.close()


_LAST_SQL = f"""
CREATE TEMP TABLE last AS
WITH l AS (
    SELECT * FROM recs WHERE slot_status IN {_LAUNCH} AND slot_idx <> {UNKNOWN_SLOT}
), top AS (
    SELECT rank, stream, max_by(slot_idx, timestamp_ns) AS slot FROM l GROUP BY rank, stream
)
SELECT l.rank, l.stream, l.slot_idx AS slot, min(l.epoch) AS epoch, min(l.opcode) AS opcode,
       min(l.opcode_name) AS opcode_name, min(l.timestamp_ns) AS began_ns, max(l.timestamp_ns) AS last_ns,
       bool_or(l.slot_status = {int(SlotStatus.COMPLETED)}) AS completed
FROM l JOIN top ON l.rank = top.rank AND l.stream = top.stream AND l.slot_idx = top.slot
GROUP BY l.rank, l.stream, l.slot_idx
"""

_PROGRESS_SQL = """
CREATE TEMP TABLE prog AS
SELECT rank, max_by(epoch, last_ns) AS epoch, max_by(slot, last_ns) AS slot, max(last_ns) AS last_ns,
       max_by(opcode_name, last_ns) AS opcode_name
FROM last GROUP BY rank
"""

_FAILS_SQL = f"""
CREATE TEMP TABLE fails AS
SELECT rank, stream, timestamp_ns, slot_idx, epoch, opcode, opcode_name, slot_status, failure_class,
       backend_error_code,
       row_number() OVER (PARTITION BY rank ORDER BY timestamp_ns, slot_idx) AS nth,
       count(*) OVER (PARTITION BY rank) AS failures
FROM recs
WHERE slot_status IN {_FAILED} OR (slot_status <> {_META} AND failure_class <> 0)
"""


def _answer(
    con: Any, source: str, ranks: list[RankLog], since_ns: int | None, hang_after_s: float | None
) -> FleetResult:
    for sql in (_LAST_SQL, _PROGRESS_SQL, _FAILS_SQL):
        con.execute(sql)
    last = [
        LastLaunch(int(r), _none_stream(s), int(sl), int(e), int(op), str(nm), int(b), bool(c))
        for r, s, sl, e, op, nm, b, c in con.execute(
            "SELECT rank, stream, slot, epoch, opcode, opcode_name, began_ns, completed FROM last "
            "ORDER BY rank, stream"
        ).fetchall()
    ]
    total = con.execute("SELECT count(*) FROM prog").fetchone()
    majority: Majority | None = None
    behind: list[Laggard] = []
    if total and total[0]:
        e, _ = con.execute(
            "SELECT epoch, count(*) AS n FROM prog GROUP BY epoch ORDER BY n DESC, epoch DESC LIMIT 1"
        ).fetchone()
        s, n_s = con.execute(
            "SELECT slot, count(*) AS n FROM prog WHERE epoch = ? GROUP BY slot ORDER BY n DESC, slot DESC "
            "LIMIT 1",
            [e],
        ).fetchone()
        majority = Majority(epoch=int(e), slot=int(s), ranks=int(n_s), of=int(total[0]))
        behind = [
            Laggard(int(r), int(ep), int(sl), int(be), int(bs), int(t))
            for r, ep, sl, be, bs, t in con.execute(
                "SELECT rank, epoch, slot, CAST(? AS BIGINT) - epoch, CAST(? AS BIGINT) - slot, last_ns "
                "FROM prog WHERE epoch < ? OR (epoch = ? AND slot < ?) ORDER BY epoch, slot, rank",
                [e, s, e, e, s],
            ).fetchall()
        ]
    firsts = con.execute(
        "SELECT rank, stream, timestamp_ns, slot_idx, epoch, opcode, opcode_name, slot_status, "
        "failure_class, "
        "backend_error_code, failures FROM fails WHERE nth = 1 ORDER BY timestamp_ns, rank"
    ).fetchall()
    failures = []
    for r, s, t, sl, e, op, nm, st, fc, code, n in firsts:
        t0 = int(firsts[0][2])
        failures.append(
            FleetFailure(
                int(r),
                _none_stream(s),
                int(t),
                int(sl),
                int(e),
                int(op),
                str(nm),
                SlotStatus.label_of(st),
                int(fc),
                int(code),
                int(t) - t0,
                int(n),
            )
        )
    newest_row = con.execute("SELECT max(last_ns) FROM prog").fetchone()
    newest = int(newest_row[0]) if newest_row and newest_row[0] is not None else None
    if since_ns is not None:
        cutoff: int | None = int(since_ns)
    elif newest is not None:
        after = DEFAULT_HANG_AFTER_S if hang_after_s is None else hang_after_s
        cutoff = newest - round(after * 1e9)
    else:
        cutoff = None
    failed = {f.rank for f in failures}
    prog = {
        int(r): (int(t), int(e), int(s), str(nm))
        for r, t, e, s, nm in con.execute(
            "SELECT rank, last_ns, epoch, slot, opcode_name FROM prog"
        ).fetchall()
    }
    suspects: list[HangSuspect] = []
    if cutoff is not None:
        for g in sorted(ranks, key=lambda g: g.rank):
            if g.state == "missing" or g.rank in failed or (g.state == "damaged" and not g.records):
                continue
            p = prog.get(g.rank)
            if p is None:
                suspects.append(HangSuspect(g.rank, None, None, None, None, ""))
            elif p[0] < cutoff:
                ref = newest if newest is not None else cutoff
                suspects.append(HangSuspect(g.rank, p[0], ref - p[0], p[1], p[2], p[3]))
        suspects.sort(key=lambda h: (h.last_ns is not None, h.last_ns or 0, h.rank))
    return FleetResult(
        source=source,
        ranks=sorted(ranks, key=lambda g: (g.rank, g.path)),
        last_launches=last,
        majority=majority,
        behind=behind,
        first_failure=failures[0] if failures else None,
        failed_after=failures[1:],
        hang_cutoff_ns=cutoff,
        newest_ns=newest,
        hang_suspects=suspects,
        missing=sorted((g for g in ranks if g.state == "missing"), key=lambda g: (g.rank, g.path)),
        damaged=sorted((g for g in ranks if g.state == "damaged"), key=lambda g: (g.rank, g.path)),
    )
