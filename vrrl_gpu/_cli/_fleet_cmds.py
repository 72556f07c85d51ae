"""``vrrl fleet``: which rank stopped first, which are behind, which went quiet, which logs are missing.

Also the fleet side of ``vrrl export`` (many logs → one rank-partitioned Parquet dataset, or one Chrome
trace with a process per rank).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from vrrl_gpu._cli._argtypes import positive_int, seconds
from vrrl_gpu._cli._output import format_timestamp, print_table, stream_label
from vrrl_gpu._cli._progress import progress_bar
from vrrl_gpu.analysis._defaults import DEFAULT_HANG_AFTER_S
from vrrl_gpu.format._layout import FailureClass

if TYPE_CHECKING:  # the fleet analysis is imported by the commands that run it
    from vrrl_gpu.analysis._fleet import FleetResult

__all__ = ["register", "since_time", "time_window", "is_fleet_input", "cmd_export_fleet", "cmd_report_fleet"]

#: Rows of each table before ``--all`` is needed (the JSON always has every row).
_SHOWN = 20


def since_time(text: str) -> int:
    """A time as ns since the epoch: an integer (ns) or ISO 8601 (UTC unless it says otherwise)."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    try:
        d = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ns since the epoch or an ISO 8601 time (2026-12-01T23:00:00Z), got {text!r}"
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    delta = d - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def time_window(text: str) -> tuple[int | _dt.timedelta | None, int | _dt.timedelta | None]:
    """``START..END``: each end ns, ISO 8601 or ``-SECONDS`` (before the newest record), or empty."""
    if ".." not in text:
        raise argparse.ArgumentTypeError(f"expected START..END (either may be empty), got {text!r}")
    a, b = text.split("..", 1)

    def end(s: str) -> int | _dt.timedelta | None:
        s = s.strip()
        if not s:
            return None
        if s.startswith("-"):
            return _dt.timedelta(seconds=seconds(s[1:]))
        return since_time(s)

    return end(a), end(b)


def is_fleet_input(logs: list[str]) -> bool:
    """Whether ``vrrl export``'s inputs are a fleet (several paths, a folder or a pattern), not one log."""
    return len(logs) > 1 or any(os.path.isdir(p) or any(c in p for c in "*?[") for p in logs)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fleet",
        help="one log per rank: the last launch of each rank and stream, the ranks behind, the first "
        "failure, hang suspects, missing and damaged logs (DuckDB)",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="LOGS_OR_DATASET",
        help="rank logs (paths, folders, glob patterns) or one dataset folder written by 'vrrl export'",
    )
    p.add_argument("--json", action="store_true", help="print every answer as one JSON object")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--since",
        type=since_time,
        metavar="TIME",
        help="hang suspects: no breadcrumb since TIME (ns since the epoch, or ISO 8601 such as "
        "2026-12-01T23:00:00Z)",
    )
    when.add_argument(
        "--hang-after",
        type=seconds,
        metavar="SECONDS",
        help=f"hang suspects: no breadcrumb in the SECONDS before the fleet's newest "
        f"({DEFAULT_HANG_AFTER_S:g})",
    )
    p.add_argument(
        "--world-size",
        type=positive_int,
        metavar="N",
        help="the job's ranks (default: what the sidecars say)",
    )
    p.add_argument("--all", action="store_true", help="every row of every table (default: the first 20)")
    p.set_defaults(func=cmd_fleet)


def _t(ns: int | None) -> str:
    return format_timestamp(ns) if ns is not None else "-"


def _dur(ns: int | None) -> str:
    if ns is None:
        return "-"
    s = ns / 1e9
    return f"{s:.3f} s" if abs(s) < 120 else f"{s / 60:.1f} min"


def _cut(rows: list[Any], show_all: bool) -> tuple[list[Any], str]:
    if show_all or len(rows) <= _SHOWN:
        return rows, ""
    return rows[:_SHOWN], f"... {len(rows) - _SHOWN} more (--all, or --json)"


def _identity(res: FleetResult, rank: int) -> tuple[str, str]:
    g = res.rank_info().get(rank)
    return (g.host or "-", g.device or "-") if g else ("-", "-")


def print_fleet(res: FleetResult, *, show_all: bool = False) -> None:
    """The answers as tables (ranks of interest first; ``show_all``: every row)."""
    out = sys.stdout
    live = [r for r in res.ranks if r.state != "missing"]
    print(
        f"{len(live)} rank log(s), {len(res.damaged)} damaged, {len(res.missing)} missing; "
        f"newest breadcrumb {_t(res.newest_ns)}",
        file=out,
    )
    m = res.majority
    if m is not None:
        print(f"majority: epoch {m.epoch}, slot {m.slot} ({m.ranks} of {m.of} ranks)", file=out)

    f0 = res.first_failure
    if f0 is not None:
        host, dev = _identity(res, f0.rank)
        print(
            f"first failure: rank {f0.rank} (host {host}, {dev}) stream {stream_label(f0.stream)} "
            f"slot {f0.slot} epoch {f0.epoch} {f0.opcode_name}: {f0.status} "
            f"{FailureClass(f0.failure_class).label} code {f0.backend_error_code} at {_t(f0.time_ns)}",
            file=out,
        )
    else:
        print("first failure: none recorded", file=out)
    rows, more = _cut(res.failed_after, show_all)
    if rows:
        print_table(
            "Ranks that failed after it",
            ("rank", "after", "stream", "slot", "epoch", "opcode", "status", "class", "code", "host"),
            [
                (
                    f.rank,
                    _dur(f.after_ns),
                    stream_label(f.stream),
                    f.slot,
                    f.epoch,
                    f.opcode_name,
                    f.status,
                    FailureClass(f.failure_class).label,
                    f.backend_error_code,
                    _identity(res, f.rank)[0],
                )
                for f in rows
            ],
            justify={"rank": "right", "slot": "right", "epoch": "right", "code": "right"},
        )
        if more:
            print(more, file=out)

    rows, more = _cut(res.behind, show_all)
    if rows:
        print_table(
            "Ranks behind the majority",
            ("rank", "epoch", "slot", "behind (epochs)", "behind (slots)", "last breadcrumb", "host"),
            [
                (
                    b.rank,
                    b.epoch,
                    b.slot,
                    b.behind_epochs,
                    b.behind_slots,
                    _t(b.last_ns),
                    _identity(res, b.rank)[0],
                )
                for b in rows
            ],
            justify=dict.fromkeys(("rank", "epoch", "slot", "behind (epochs)", "behind (slots)"), "right"),
        )
        if more:
            print(more, file=out)
    else:
        print("ranks behind the majority: none", file=out)

    rows, more = _cut(res.hang_suspects, show_all)
    title = f"Hang suspects: no breadcrumb since {_t(res.hang_cutoff_ns)}, no failure"
    if rows:
        print_table(
            title,
            ("rank", "last breadcrumb", "silent for", "epoch", "slot", "opcode", "host", "device"),
            [
                (
                    h.rank,
                    _t(h.last_ns),
                    _dur(h.silent_ns),
                    "-" if h.epoch is None else h.epoch,
                    "-" if h.slot is None else h.slot,
                    h.opcode_name or "-",
                    *_identity(res, h.rank),
                )
                for h in rows
            ],
            justify={"rank": "right", "epoch": "right", "slot": "right"},
        )
        if more:
            print(more, file=out)
    else:
        print(f"hang suspects (no breadcrumb since {_t(res.hang_cutoff_ns)}): none", file=out)

    bad = res.missing + res.damaged
    if bad:
        rows, more = _cut(bad, show_all)
        print_table(
            "Missing and damaged logs",
            ("rank", "state", "path", "reason"),
            [(g.rank, g.state, g.path or "-", g.reason) for g in rows],
            justify={"rank": "right"},
        )
        if more:
            print(more, file=out)

    interesting = {f.rank for f in res.failed_after} | {b.rank for b in res.behind}
    interesting |= {h.rank for h in res.hang_suspects}
    if f0 is not None:
        interesting.add(f0.rank)
    last = res.last_launches if show_all else [x for x in res.last_launches if x.rank in interesting]
    rows, more = _cut(last, show_all)
    if rows:
        print_table(
            "Last launch per rank and stream"
            + ("" if show_all else " (the ranks above; --all for every rank)"),
            ("rank", "stream", "opcode", "slot", "epoch", "began", "completed"),
            [
                (
                    x.rank,
                    stream_label(x.stream),
                    x.opcode_name,
                    x.slot,
                    x.epoch,
                    _t(x.time_ns),
                    "yes" if x.completed else "no",
                )
                for x in rows
            ],
            justify={"rank": "right", "slot": "right", "epoch": "right"},
        )
        if more:
            print(more, file=out)


def cmd_fleet(args: argparse.Namespace) -> int:
    from vrrl_gpu.analysis._fleet import analyze_fleet

    with progress_bar("reading rank logs") as update:
        res = analyze_fleet(
            args.inputs,
            since_ns=args.since,
            hang_after_s=args.hang_after,
            world_size=args.world_size,
            progress=update,
        )
    if args.json:
        json.dump(res.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_fleet(res, show_all=args.all)
    return 0


def cmd_export_fleet(args: argparse.Namespace) -> int:
    """``vrrl export`` of many logs: ``--format parquet`` → a dataset folder (one log read at a time)."""
    from vrrl_gpu.analysis._fleet_dataset import export_fleet
    from vrrl_gpu.errors import RecordValueError

    if args.format == "chrome":
        from vrrl_gpu.analysis._fleet_chrome import write_fleet_trace

        t = write_fleet_trace(args.logs, args.output, force=args.force, window=args.window)
        live = sum(r.state != "missing" for r in t.ranks)
        print(f"{t.out}: {t.events:,} event(s) of {live} rank log(s) (chrome, a process per rank)")
        return 0
    if args.format != "parquet":
        raise RecordValueError(
            f"a fleet export (several logs, a folder or a pattern) writes --format parquet (a dataset "
            f"folder) or --format chrome (one trace), not {args.format}; export one log at a time for "
            f"{args.format}"
        )
    with progress_bar(f"exporting {len(args.logs)} input(s)") as update:
        s = export_fleet(
            args.logs, args.output, force=args.force, world_size=args.world_size, progress=update
        )
    for g in s.damaged + s.missing:
        print(f"vrrl: warning: rank {g.rank}: {g.state}: {g.path or '-'}: {g.reason}", file=sys.stderr)
    live = len(s.ranks) - len(s.missing)
    print(
        f"{s.out}: {s.records:,} record(s) of {live} rank log(s) in {s.files} file(s) "
        f"(parquet dataset, rank=N/)"
    )
    return 0


def cmd_report_fleet(args: argparse.Namespace) -> int:
    """``vrrl report`` of many logs or a dataset: the fleet page (``_fleet_report``)."""
    from vrrl_gpu.analysis._fleet_report import write_fleet_report

    res = write_fleet_report(
        args.logs,
        args.output,
        window=args.window,
        bins=args.bins,
        force=args.force,
        world_size=args.world_size,
    )
    live = sum(r.state != "missing" for r in res.ranks)
    print(
        f"{args.output}: fleet report of {live} rank log(s)",
        file=sys.stderr if args.output == "-" else sys.stdout,
    )
    return 0
