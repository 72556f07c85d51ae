"""``vrrl stats``, ``tail``, ``diff``, ``merge``, ``export`` and ``report``: reading and exporting logs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from vrrl_gpu._cli._argtypes import count, positive_int, positive_seconds
from vrrl_gpu._cli._fleet_cmds import cmd_export_fleet, cmd_report_fleet, is_fleet_input, time_window
from vrrl_gpu._cli._output import (
    format_timestamp,
    opcode_names_for,
    print_table,
    printable,
    printable_names,
    record_dicts,
    streams_for,
)
from vrrl_gpu._cli._progress import Ticker, progress_bar, progress_fn
from vrrl_gpu.analysis._defaults import DEFAULT_BINS, DEFAULT_LAST
from vrrl_gpu.analysis._export import export_log, merge_to
from vrrl_gpu.analysis._launches import code_label
from vrrl_gpu.analysis.exporters._output import is_stdout
from vrrl_gpu.analysis.exporters._registry import (
    DEFAULT_MERGE_FORMAT,
    FORMATS,
    export_formats,
    merge_formats,
)
from vrrl_gpu.format._layout import UNKNOWN_SLOT, FailureClass, SlotStatus
from vrrl_gpu.format._ringlog import RingLog, read_header
from vrrl_gpu.format._sidecar import load_sidecar, opcode_label, slot_label

__all__ = ["register"]

# Each command imports the analysis it runs in its function: building the parser, which every command does,
# imports only what the options need.


def register(sub: Any) -> None:
    p = sub.add_parser(
        "stats", help="launches per opcode, failures by class and code, launch rate, gaps, coverage per track"
    )
    p.add_argument("log", help="path of a VRRL v1 log")
    p.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    p.add_argument("--buckets", type=positive_int, default=10, help="time buckets of the launch rate (10)")
    p.add_argument("--salvage", action="store_true", help="skip damaged slots instead of refusing the log")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("tail", help="print the newest records; -f follows a log another process is writing")
    p.add_argument("log", help="path of a VRRL v1 log")
    p.add_argument("-n", "--lines", type=count, default=10, metavar="N", help="how many records first (10)")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new records until Ctrl-C (read-only, no lock)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of text")
    p.add_argument(
        "--interval", type=positive_seconds, default=0.2, metavar="SECONDS", help="poll interval of -f (0.2)"
    )
    p.add_argument("--max-seconds", type=positive_seconds, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-records", type=positive_int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser(
        "diff",
        help="align two logs launch by launch; exit 0 when they agree, 1 when they diverge, 2 on bad input",
    )
    p.add_argument("a", metavar="A", help="the first log (e.g. the original run)")
    p.add_argument("b", metavar="B", help="the second log (e.g. its replay)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--global",
        dest="by_track",
        action="store_false",
        help="align all launches as one sequence instead of track (tenant id) by track",
    )
    p.add_argument(
        "--limit", type=positive_int, default=20, help="divergences to list (20; --json: all, up to 1000)"
    )
    p.add_argument("--salvage", action="store_true", help="skip damaged slots instead of refusing a log")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("merge", help="merge logs of many processes or ranks into one timeline by timestamp")
    p.add_argument("logs", nargs="+", metavar="LOG", help="the logs to merge")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="the merged file ('-': standard output; a device or FIFO is written as a stream)",
    )
    p.add_argument(
        "--format",
        choices=merge_formats(),
        default=DEFAULT_MERGE_FORMAT,
        help=", ".join(
            f"{f.name} ({'default; ' if f.name == DEFAULT_MERGE_FORMAT else ''}"
            f"{'with an origin column' if f.origin_column else 'origin kept only as tenant id'})"
            for f in FORMATS.values()
            if f.merge
        ),
    )
    p.add_argument("--force", action="store_true", help="replace OUT when it exists")
    p.add_argument("--salvage", action="store_true", help="skip damaged slots instead of refusing a log")
    p.set_defaults(func=cmd_merge)

    *head, last = (f.title for f in FORMATS.values() if f.export)
    p = sub.add_parser(
        "export",
        help=f"write a log as a {', '.join(head)} or {last}; many logs (a folder, a glob, several paths) "
        f"as one Parquet dataset partitioned by rank, or one Chrome trace with a process per rank",
    )
    p.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="a VRRL v1 log; or rank logs (paths, folders, glob patterns) for a fleet export",
    )
    p.add_argument("--format", choices=export_formats(), required=True, help="the output format")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="the output file ('-': standard output; a device or FIFO is written as a stream)",
    )
    p.add_argument("--force", action="store_true", help="replace OUT when it exists")
    p.add_argument("--salvage", action="store_true", help="skip damaged slots instead of refusing the log")
    p.add_argument(
        "--world-size",
        type=positive_int,
        metavar="N",
        help="fleet export: the job's ranks, so that ranks without a log are listed as missing",
    )
    p.add_argument(
        "--window",
        type=time_window,
        metavar="START..END",
        help="fleet chrome trace: only this time span (as for 'vrrl report --window')",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "report",
        help="write one self-contained HTML page: summary, failures, timeline, opcodes; of many logs (a "
        "folder, a glob, several paths, or a fleet dataset): one lane per rank and stream",
    )
    p.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="a VRRL v1 log; or rank logs (paths, folders, glob patterns) or a dataset folder: a fleet page",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="the HTML file ('-': standard output)"
    )
    p.add_argument(
        "--last", type=positive_int, default=DEFAULT_LAST, help=f"launches on the timeline ({DEFAULT_LAST})"
    )
    p.add_argument(
        "--window",
        type=time_window,
        metavar="START..END",
        help="only this time span: each end ns since the epoch, ISO 8601, or -SECONDS before the newest "
        "record; either may be left out (--window=-300.. is the last five minutes)",
    )
    p.add_argument(
        "--bins",
        type=positive_int,
        default=DEFAULT_BINS,
        help=f"fleet page: time bins per lane ({DEFAULT_BINS})",
    )
    p.add_argument("--world-size", type=positive_int, metavar="N", help="fleet page: the job's ranks")
    p.add_argument("--force", action="store_true", help="replace OUT when it exists")
    p.add_argument("--salvage", action="store_true", help="skip damaged slots instead of refusing the log")
    p.set_defaults(func=cmd_report)


def _records(path: str, salvage: bool) -> npt.NDArray[np.void]:
    with RingLog.open(path, readonly=True) as log:
        return log.records(salvage=salvage)


# -------------------------------------------------------------------- stats


def cmd_stats(args: argparse.Namespace) -> int:
    from vrrl_gpu.analysis._graphs import describe_graph_fault, graph_faults
    from vrrl_gpu.analysis._stats import stats_of
    from vrrl_gpu.analysis._summary import read_log, summarize

    side = load_sidecar(args.log)
    names = printable_names(side)
    summary = summarize(read_log(args.log, salvage=args.salvage, sidecar=side))
    s = {"path": args.log, **stats_of(summary, opcode_names=names, buckets=args.buckets)}
    faults = graph_faults(side)
    if faults:
        s["graph_faults"] = faults
    if args.json:
        print(json.dumps(s, sort_keys=True))
        return 0
    span = f"{s['span_ns'] / 1e9:.6f} s" if s["records"] else "-"
    print(
        f"{args.log}: {s['records']:,} record(s), {s['launches']:,} launch(es), "
        f"{s['failures']['total']:,} failure record(s), span {span}"
    )
    print_table(
        "launches per opcode",
        ("opcode", "launches", "completed", "failed", "mean duration"),
        [
            (
                o["name"],
                o["launches"],
                o["completed"],
                o["failed"],
                f"{o['mean_duration_ns'] / 1e3:.1f} us" if o["mean_duration_ns"] is not None else "-",
            )
            for o in s["opcodes"]
        ],
        justify={"launches": "right", "completed": "right", "failed": "right", "mean duration": "right"},
    )
    f = s["failures"]
    if f["total"]:
        print_table(
            "failures by class and code",
            ("class", "code", "count"),
            [(c["class"], c["code_name"], c["count"]) for c in f["by_class_and_code"]],
            justify={"count": "right"},
        )
    rate = s["rate"]
    if rate["buckets"]:
        peak = max(b["launches"] for b in rate["buckets"]) or 1
        print_table(
            f"launch rate ({rate['bucket_ns'] / 1e6:.3f} ms buckets)",
            ("from", "launches", "per second", ""),
            [
                (
                    format_timestamp(b["start_ns"]),
                    b["launches"],
                    f"{b['per_second']:,.1f}",
                    "#" * round(30 * b["launches"] / peak),
                )
                for b in rate["buckets"]
            ],
            justify={"launches": "right", "per second": "right"},
        )
    g = s["gaps"]
    print(f"gaps: {g['gap_records']:,} GAP record(s), {g['dropped_records']:,} record(s) dropped")
    print_table(
        "breadcrumb coverage per track (tenant id)",
        ("tenant", "launches", "begin", "completed", "coverage", "failed", "unclaimed"),
        [
            (
                t["tenant_id"],
                t["launches"],
                t["begin"],
                t["completed"],
                f"{t['coverage'] * 100:.1f}%" if t["coverage"] is not None else "-",
                t["failed"],
                t["unclaimed"],
            )
            for t in s["tracks"]
        ],
        justify=dict.fromkeys(
            ("tenant", "launches", "begin", "completed", "coverage", "failed", "unclaimed"), "right"
        ),
    )
    for w in s["crash_windows"]:
        fault = f"{FailureClass(w['failure_class']).label} {code_label(w['backend_error_code'])}"
        where = f"tenant {w['tenant_id']}" + (f" stream {w['stream']}" if w["stream"] >= 0 else "")
        mark = {True: "; this stream's launch faulted", False: "; in flight on another stream", None: ""}
        if w["slot_idx"] == UNKNOWN_SLOT:
            print(f"crash window: {where} slot unknown (unresolved) when {fault} was seen")
            continue
        print(
            f"crash window: {where} slot {slot_label(w['slot_idx'])} "
            f"({opcode_label(w['opcode'], names)}) was running when {fault} was seen{mark[w['faulted_here']]}"
        )
    for note in faults:
        print(f"fault in a graph replay: {printable(describe_graph_fault(note))}")
    return 0


# --------------------------------------------------------------------- tail


def _stream_part(stream: int | None) -> str:
    return "" if stream is None else f"  stream {stream}"


def _tail_line(d: dict[str, Any], names: dict[int, str]) -> str:
    text = (
        f"{format_timestamp(d['timestamp_ns'])}  tenant {d['tenant_id']}{_stream_part(d['stream'])}  "
        f"slot {slot_label(d['slot_idx'])}  "
        f"{opcode_label(d['opcode'], names)}  {SlotStatus.label_of(d['slot_status'])}  "
        f"args {' '.join(f'{a:#x}' for a in d['args'])}  epoch {d['epoch']}"
    )
    if d["failure_class"] or d["backend_error_code"]:
        text += f"  {d['failure_class_name']} {code_label(d['backend_error_code'])}"
    if d["output_digest"]:
        text += f"  digest {d['output_digest']:016x}"
    return text


def _emit(recs: npt.NDArray[np.void], as_json: bool, names: dict[int, str], log: str) -> None:
    out = sys.stdout
    for d in record_dicts(recs, streams_for(log, recs), names):
        out.write((json.dumps(d) if as_json else _tail_line(d, names)) + "\n")
    out.flush()


def cmd_tail(args: argparse.Namespace) -> int:
    from vrrl_gpu.analysis._follow import LogFollower

    follower = LogFollower(args.log)
    names = opcode_names_for(args.log)
    first = follower.last(args.lines)
    _emit(first, args.json, names, args.log)
    if not args.follow:
        return 0
    seen = 0
    started = time.monotonic()
    try:
        while True:
            if args.max_seconds is not None and time.monotonic() - started >= args.max_seconds:
                return 0
            follower.replaced = False
            new = follower.poll()
            if follower.replaced:
                print(
                    f"vrrl: note: {args.log} was replaced by another file; following the new one from its "
                    f"oldest record",
                    file=sys.stderr,
                )
            if new.size:
                if args.max_records is not None:
                    new = new[: args.max_records - seen]
                _emit(new, args.json, names, args.log)
                seen += int(new.shape[0])
                if args.max_records is not None and seen >= args.max_records:
                    return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how -f ends


# --------------------------------------------------------------------- diff


def cmd_diff(args: argparse.Namespace) -> int:
    from vrrl_gpu.analysis._diff import diff_records

    a = _records(args.a, args.salvage)
    b = _records(args.b, args.salvage)
    res = diff_records(a, b, by_track=args.by_track, limit=1000 if args.json else max(args.limit, 1))
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, **res.to_dict()}, sort_keys=True))
        return 0 if res.agree else 1
    names = {**opcode_names_for(args.b), **opcode_names_for(args.a)}
    align = "per track (tenant id)" if args.by_track else "as one sequence"
    print(f"A: {args.a} ({res.launches_a:,} launch(es))")
    print(f"B: {args.b} ({res.launches_b:,} launch(es))")
    print(f"aligned {align} by launch order: {res.compared:,} pair(s) compared")

    def show(kind: str, v: Any) -> str:
        if v is None:
            return "-"
        if kind == "opcode":
            return opcode_label(int(v), names)
        if kind == "missing":
            return f"{opcode_label(v['opcode'], names)} slot {slot_label(v['slot_idx'])}"
        if kind == "args":
            return " ".join(f"{x:#x}" for x in v)
        return str(v)

    for label, slots in (("A", res.unclaimed_a), ("B", res.unclaimed_b)):
        if slots:
            listed = ", ".join(f"tenant {t} slot {s}" for t, s in slots[:10])
            more = f" and {len(slots) - 10} more" if len(slots) > 10 else ""
            print(
                f"{label}: {len(slots)} megakernel slot(s) published but never claimed by the device: "
                f"{listed}{more}"
            )
    if res.agree:
        print("AGREE: no divergence")
        return 0
    d = res.first
    assert d is not None
    print(
        f"first divergence: {d.kind} at launch #{d.position} of "
        f"{'tenant ' + str(d.tenant_id) if args.by_track else 'the log'}: "
        f"A {show(d.kind, d.a)} (record {d.a_record if d.a_record is not None else '-'}), "
        f"B {show(d.kind, d.b)} (record {d.b_record if d.b_record is not None else '-'})"
    )
    print_table(
        f"divergences (first {len(res.divergences)})",
        ("kind", "tenant", "launch #", "A slot", "A", "B slot", "B"),
        [
            (
                x.kind,
                x.tenant_id if args.by_track else "-",
                x.position,
                "-" if x.a_slot is None else x.a_slot,
                show(x.kind, x.a),
                "-" if x.b_slot is None else x.b_slot,
                show(x.kind, x.b),
            )
            for x in res.divergences
        ],
    )
    summary = ", ".join(f"{k} {n:,}" for k, n in res.counts.items())
    print(f"DIVERGE: {sum(res.counts.values()):,} divergence(s): {summary}")
    return 1


# ------------------------------------------------------- merge/export/report


def cmd_merge(args: argparse.Namespace) -> int:
    with progress_bar(f"merging {len(args.logs)} log(s)") as update:
        s = merge_to(
            args.logs, args.output, args.format, force=args.force, salvage=args.salvage, progress=update
        )
    if s.shared_tenants:
        shown = ", ".join(map(str, s.shared_tenants[:10]))
        with_origin = " or ".join(f.name for f in FORMATS.values() if f.merge and f.origin_column)
        print(
            f"vrrl: warning: tenant id(s) {shown} occur in more than one input, so the VRRL output "
            f"cannot tell their records' origin; use --format {with_origin} for an origin column",
            file=sys.stderr,
        )
    print(
        f"{args.output}: {s.records:,} record(s) from {s.inputs} log(s) ({s.fmt})",
        file=_summary_to(args.output),
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if is_fleet_input(args.logs):
        return cmd_export_fleet(args)
    (log,) = args.logs
    with progress_bar(f"exporting {log}") as update:
        n = export_log(
            log,
            args.output,
            args.format,
            force=args.force,
            salvage=args.salvage,
            progress=progress_fn(update),
        )
    print(f"{args.output}: {n:,} record(s) ({args.format})", file=_summary_to(args.output))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vrrl_gpu.analysis._fleet import is_dataset
    from vrrl_gpu.analysis._report import write_report

    if is_fleet_input(args.logs) or is_dataset(args.logs[0]):
        return cmd_report_fleet(args)
    (log,) = args.logs
    with progress_bar(f"report of {printable(os.path.basename(log))}") as update:
        # Three passes over the records (the span, then summarize's two), estimated from the header first.
        tick = Ticker(update, 3 * live_records(log))
        n = write_report(
            log,
            args.output,
            last=args.last,
            force=args.force,
            salvage=args.salvage,
            window=args.window,
            progress=tick,
            on_counted=lambda records: tick.retotal(3 * records),
        )
    print(f"{args.output}: report of {n:,} record(s)", file=_summary_to(args.output))
    return 0


def live_records(log: str) -> int:
    """How many records the log's header says it holds (a progress bar's first estimate)."""
    h = read_header(log)
    return min(h.cursor, h.capacity)


def _summary_to(output: str) -> TextIO:
    """Where the summary line goes: stderr when the output is itself a stream (`-o -`, a FIFO, a tty)."""
    import stat

    if is_stdout(output):
        return sys.stderr
    try:
        mode = os.stat(output).st_mode
    except OSError:
        return sys.stdout
    return sys.stderr if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) else sys.stdout
