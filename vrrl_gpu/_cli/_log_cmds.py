"""``vrrl info``, ``vrrl dump`` and ``vrrl verify``: reading a log as it is."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from vrrl_gpu._cli._output import format_timestamp, print_table, printable
from vrrl_gpu._cli._table import DumpRows, write_pages, write_tsv
from vrrl_gpu.analysis._clock import clock_summary
from vrrl_gpu.analysis._export import export_log
from vrrl_gpu.analysis._streams import mapper_for
from vrrl_gpu.analysis._verify import semantic_findings
from vrrl_gpu.analysis.exporters._output import STDOUT, stdout_binary
from vrrl_gpu.analysis.exporters._rows import opcode_names_of
from vrrl_gpu.errors import CorruptRecordError, TruncatedLogError
from vrrl_gpu.format._layout import RECORD_MAGIC, FailureClass, SlotStatus
from vrrl_gpu.format._reader import SalvageTally, iter_record_chunks
from vrrl_gpu.format._ringlog import RingLog, ScanResult

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="summarise a log: capacity, cursor, records, failures, time span")
    p.add_argument("log", help="path of a VRRL v1 log")
    p.add_argument("--salvage", action="store_true", help="skip damaged slots instead of refusing the log")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "dump",
        help="print the records of a log in publish order",
        description=(
            "A table on a terminal (printed page by page as the log is read), tab-separated values when "
            "standard output is not a terminal (pipes, files), JSON lines or CSV when asked. Every form "
            "streams: the log is read in bounded chunks, so memory stays bounded whatever its size."
        ),
    )
    p.add_argument("log", help="path of a VRRL v1 log")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument(
        "--json",
        action="store_true",
        help="JSON lines, one record a line: the fields of `vrrl export --format jsonl`",
    )
    fmt.add_argument("--csv", action="store_true", help="CSV: the columns of `vrrl export --format csv`")
    fmt.add_argument(
        "--table", action="store_true", help="the table even when standard output is not a terminal"
    )
    fmt.add_argument("--tsv", action="store_true", help="tab-separated values even on a terminal")
    p.add_argument("--salvage", action="store_true", help="skip damaged slots instead of refusing the log")
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser(
        "verify",
        help="check a log: exit 0 when sound, 1 when damaged (and where), 2 when unreadable",
        description=(
            "Reads the log strictly (record magic, file length), then checks that its contents hold "
            "together: "
            "no empty slot inside the live range, no timestamp more than 10 s before an earlier record's, "
            "in the future or before the sidecar's session start, no status, class or opcode outside "
            "what the format and vrrl_gpu define. Exit 1 lists where."
        ),
    )
    p.add_argument("log", help="path of a VRRL v1 log")
    p.set_defaults(func=cmd_verify)


def _scan(path: str, salvage: bool) -> ScanResult:
    with RingLog.open(path, readonly=True) as log:
        return log.scan(salvage=salvage)


def _code_label(code: int) -> str:
    from vrrl_gpu.evidence._classify import code_name

    return code_name(code) if code else "-"


def summarize(path: str, scan: ScanResult) -> dict[str, Any]:
    """The facts ``vrrl info`` prints, as a JSON-ready dict."""
    recs = scan.records
    h = scan.header
    evidence_mask = (
        (recs["slot_status"] != 0)
        | (recs["failure_class"] != 0)
        | (recs["backend_error_code"] != 0)
        | (recs["output_digest"] != 0)
    )
    # Unknown class values decode as Unclassified, as in the format.
    classes = np.minimum(recs["failure_class"], int(FailureClass.UNCLASSIFIED))
    counts = np.bincount(classes, minlength=len(FailureClass))
    by_class = {fc.label: int(counts[fc]) for fc in FailureClass if fc and counts[fc]}
    ts = recs["timestamp_ns"]
    out: dict[str, Any] = {
        "path": path,
        "capacity": h.capacity,
        "cursor": h.cursor,
        "records": int(recs.shape[0]),
        "wrapped": scan.wrapped,
        "with_evidence": int(evidence_mask.sum()),
        "failures": int(counts[1:].sum()),
        "failures_by_class": by_class,
        "meta_records": int((recs["slot_status"] == int(SlotStatus.META)).sum()),
        "first_timestamp_ns": int(ts.min()) if ts.size else None,
        "last_timestamp_ns": int(ts.max()) if ts.size else None,
        "span_ns": int(ts.max() - ts.min()) if ts.size else 0,
    }
    out["clock"] = clock_summary(recs)
    if scan.corrupt_slots or scan.missing_slots:
        out["corrupt_slots"] = list(scan.corrupt_slots)
        out["missing_slots"] = scan.missing_slots
    return out


def cmd_info(args: argparse.Namespace) -> int:
    scan = _scan(args.log, args.salvage)
    s = summarize(args.log, scan)
    if args.json:
        print(json.dumps(s, sort_keys=True))
        return 0
    rows: list[tuple[str, str]] = [
        ("capacity", f"{s['capacity']:,} slots"),
        ("cursor", str(s["cursor"])),
        ("records", f"{s['records']:,}"),
        ("wrapped", "yes" if s["wrapped"] else "no"),
        ("with evidence (format's sense)", f"{s['with_evidence']:,}"),
        ("failures", f"{s['failures']:,}"),
    ]
    for label, n in s["failures_by_class"].items():
        rows.append((f"  {label}", f"{n:,}"))
    rows.append(("meta-records", f"{s['meta_records']:,}"))
    if s["first_timestamp_ns"] is not None:
        rows.append(("first", format_timestamp(s["first_timestamp_ns"])))
        rows.append(("last", format_timestamp(s["last_timestamp_ns"])))
        rows.append(("span", f"{s['span_ns'] / 1e9:.6f} s"))
    clock = s["clock"]
    if clock["calibrations"]:
        text = (
            f"{clock['calibrations']:,}: drift {clock['drift_ns']:+,} ns over {clock['span_ns'] / 1e9:.3f} s "
            f"({clock['drift_ppm']:+.3f} ppm), largest step {clock['max_step_ns']:,} ns"
        )
        rows.append(("clock calibrations", text))
    if "corrupt_slots" in s:
        rows.append(("corrupt slots (skipped)", ", ".join(map(str, s["corrupt_slots"])) or "none"))
        rows.append(("missing slots (short file)", str(s["missing_slots"])))
    print_table(args.log, ("field", "value"), rows)
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    if args.salvage:
        tally = SalvageTally()
        for _ in iter_record_chunks(args.log, salvage=True, tally=tally):
            pass
        if tally.corrupt_slots or tally.missing_slots:
            print(
                f"vrrl: salvage: skipped {len(tally.corrupt_slots)} corrupt slot(s) and "
                f"{tally.missing_slots} missing slot(s)",
                file=sys.stderr,
            )
    if args.json or args.csv:
        export_log(args.log, STDOUT, "jsonl" if args.json else "csv", salvage=args.salvage)
        return 0
    names = opcode_names_of(args.log)
    mapper = mapper_for(args.log)
    batches = (
        (c, mapper(c) if mapper is not None else None)
        for c in iter_record_chunks(args.log, salvage=args.salvage)
    )
    rows = DumpRows(names)
    tty = _is_tty(sys.stdout)
    if args.table or (tty and not args.tsv):
        print(f"{printable(args.log)}:")
        write_pages(batches, rows, bold=tty)
        print(f"{printable(args.log)}: {rows.rows:,} record(s)")
    else:
        with stdout_binary() as out:
            write_tsv(out, batches, rows)
        print(f"{printable(args.log)}: {rows.rows:,} record(s)", file=sys.stderr)
    return 0


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        scan = _scan(args.log, salvage=False)
    except (CorruptRecordError, TruncatedLogError) as e:
        if isinstance(e, TruncatedLogError) and e.expected == 32:
            raise  # not even a header: cannot be read at all
        damaged = _scan(args.log, salvage=True)
        print(f"{args.log}: DAMAGED")
        for slot in damaged.corrupt_slots:
            print(f"  slot {slot}: record magic is neither 0 nor {RECORD_MAGIC:#010x}")
        if damaged.missing_slots:
            h = damaged.header
            print(
                f"  file holds {h.file_size} bytes, header says {h.expected_size}: "
                f"{damaged.missing_slots} slot(s) missing at the end"
            )
        print(f"  {damaged.records.shape[0]} record(s) still readable with --salvage")
        return 1
    h = scan.header
    findings = semantic_findings(args.log)
    if findings:
        print(f"{args.log}: DAMAGED (the bytes read, the contents do not hold together)")
        for f in findings:
            print(f"  {f}")
        return 1
    print(f"{args.log}: OK ({scan.records.shape[0]} record(s), capacity {h.capacity}, cursor {h.cursor})")
    return 0
