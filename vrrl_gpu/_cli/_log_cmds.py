"""``vrrl info``, ``vrrl dump`` and ``vrrl verify``: reading a log as it is."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu._cli._output import format_timestamp, print_table, printable
from vrrl_gpu._cli._table import DumpRows, write_pages, write_tsv
from vrrl_gpu.analysis._clock import clock_summary
from vrrl_gpu.analysis._export import export_log
from vrrl_gpu.analysis._graphs import describe_graph_fault, graph_faults
from vrrl_gpu.analysis._streams import mapper_for
from vrrl_gpu.analysis._verify import semantic_findings
from vrrl_gpu.analysis.exporters._output import STDOUT, stdout_binary
from vrrl_gpu.errors import CorruptRecordError, TruncatedLogError
from vrrl_gpu.format._layout import RECORD_DTYPE, RECORD_MAGIC, FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu.format._reader import SalvageTally, iter_record_chunks
from vrrl_gpu.format._ringlog import read_header
from vrrl_gpu.format._sidecar import load_sidecar

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="summarise a log: capacity, cursor, records, failures, time span, faults in graph replays",
    )
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


def summarize(path: str, *, salvage: bool = False) -> dict[str, Any]:
    """The facts ``vrrl info`` prints, as a JSON-ready dict (one streaming pass over the log)."""
    h = read_header(path)
    tally = SalvageTally()
    records = evidence = meta = 0
    counts = np.zeros(len(FailureClass), np.int64)
    lo: int | None = None
    hi: int | None = None
    calibrations: list[npt.NDArray[np.void]] = []  # few: clock_summary reads only these
    for recs in iter_record_chunks(path, salvage=salvage, tally=tally):
        records += int(recs.shape[0])
        evidence += int(
            (
                (recs["slot_status"] != 0)
                | (recs["failure_class"] != 0)
                | (recs["backend_error_code"] != 0)
                | (recs["output_digest"] != 0)
            ).sum()
        )
        # Unknown class values decode as Unclassified, as in the format.
        classes = np.minimum(recs["failure_class"], int(FailureClass.UNCLASSIFIED))
        counts += np.bincount(classes, minlength=len(FailureClass))
        is_meta = recs["slot_status"] == int(SlotStatus.META)
        meta += int(is_meta.sum())
        calibrations.append(recs[is_meta & (recs["opcode"] == int(MetaOpcode.CALIBRATION))])
        ts = recs["timestamp_ns"]
        lo = int(ts.min()) if lo is None else min(lo, int(ts.min()))
        hi = int(ts.max()) if hi is None else max(hi, int(ts.max()))
    out: dict[str, Any] = {
        "path": path,
        "capacity": h.capacity,
        "cursor": h.cursor,
        "records": records,
        "wrapped": tally.wrapped,
        "with_evidence": evidence,
        "failures": int(counts[1:].sum()),
        "failures_by_class": {fc.label: int(counts[fc]) for fc in FailureClass if fc and counts[fc]},
        "meta_records": meta,
        "first_timestamp_ns": lo,
        "last_timestamp_ns": hi,
        "span_ns": hi - lo if lo is not None and hi is not None else 0,
    }
    out["clock"] = clock_summary(np.concatenate(calibrations) if calibrations else np.zeros(0, RECORD_DTYPE))
    if tally.corrupt_slots or tally.missing_slots:
        out["corrupt_slots"] = sorted(tally.corrupt_slots)
        out["missing_slots"] = tally.missing_slots
    faults = graph_faults(load_sidecar(path))
    if faults:
        out["graph_faults"] = faults
    return out


def cmd_info(args: argparse.Namespace) -> int:
    s = summarize(args.log, salvage=args.salvage)
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
    for note in s.get("graph_faults", ()):
        rows.append(("fault in a graph replay", printable(describe_graph_fault(note))))
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
    side = load_sidecar(args.log)  # once: the names and the stream table both come from it
    names = dict(side.opcode_names) if side else {}
    mapper = mapper_for(args.log, sidecar=side)
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
    h = read_header(args.log)
    n = 0
    try:
        for c in iter_record_chunks(args.log):
            n += int(c.shape[0])
    except (CorruptRecordError, TruncatedLogError) as e:
        if isinstance(e, TruncatedLogError) and e.expected == 32:
            raise  # not even a header: cannot be read at all
        tally = SalvageTally()
        kept = sum(int(c.shape[0]) for c in iter_record_chunks(args.log, salvage=True, tally=tally))
        print(f"{printable(args.log)}: DAMAGED")
        for slot in sorted(tally.corrupt_slots):
            print(f"  slot {slot}: record magic is neither 0 nor {RECORD_MAGIC:#010x}")
        if tally.missing_slots:
            print(
                f"  file holds {h.file_size} bytes, header says {h.expected_size}: "
                f"{tally.missing_slots} slot(s) missing at the end"
            )
        print(f"  {kept} record(s) still readable with --salvage")
        return 1
    findings = semantic_findings(args.log)
    if findings:
        print(f"{printable(args.log)}: DAMAGED (the bytes read, the contents do not hold together)")
        for f in findings:
            print(f"  {f}")
        return 1
    print(f"{printable(args.log)}: OK ({n} record(s), capacity {h.capacity}, cursor {h.cursor})")
    return 0
