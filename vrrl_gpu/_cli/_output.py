"""Shared output helpers of the CLI: tables (rich when installed), record rows, names."""

from __future__ import annotations

import datetime as _dt
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._streams import streams_of
from vrrl_gpu.analysis.exporters._rows import DUMP_FIELDS, record_rows
from vrrl_gpu.format._sidecar import Sidecar, load_sidecar

__all__ = [
    "JSON_FIELDS",
    "format_timestamp",
    "opcode_names_for",
    "print_table",
    "printable",
    "printable_names",
    "record_dicts",
    "stream_label",
    "streams_for",
]

JSON_FIELDS = DUMP_FIELDS


def record_dicts(
    records: npt.NDArray[np.void],
    streams: npt.NDArray[np.int32] | None = None,
    opcode_names: Mapping[int, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """One JSON-ready dict per record, in array order, with exactly :data:`JSON_FIELDS`."""
    for row in record_rows(records, streams=streams, opcode_names=opcode_names):
        yield {k: row[k] for k in JSON_FIELDS}


def format_timestamp(ns: int) -> str:
    """UTC ISO 8601 with nanoseconds: ``2023-11-14T22:13:20.000001000Z``."""
    secs, frac = divmod(int(ns), 1_000_000_000)
    try:
        base = _dt.datetime.fromtimestamp(secs, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{ns}ns"
    return f"{base}.{frac:09d}Z"


def streams_for(log_path: str, records: npt.NDArray[np.void]) -> npt.NDArray[np.int32] | None:
    """The stream of each of ``records`` (the log's newest, in order); a damaged sidecar is one warning."""
    return streams_of(log_path, records)


def stream_label(stream: int | None) -> str:
    return "-" if stream is None or stream < 0 else str(stream)


def opcode_names_for(log_path: str) -> dict[int, str]:
    """Opcode names from the log's sidecar, made safe to print; a damaged sidecar is one warning and {}."""
    return printable_names(load_sidecar(log_path))


def printable_names(side: Sidecar | None) -> dict[int, str]:
    """The opcode names of a sidecar already read (None: there is none), made safe to print."""
    return {k: printable(v) for k, v in side.opcode_names.items()} if side else {}


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: object) -> str:
    """``text`` with control characters (escape sequences, bidi overrides, surrogates) shown as ``\\xNN``.

    Opcode names, paths and sidecar strings come from files anyone may write; a
    terminal must never receive them raw.
    """
    s = str(text)
    if not _CONTROL.search(s):
        return s
    return _CONTROL.sub(
        lambda m: repr(m.group())[1:-1] if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", s
    )


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    out: TextIO | None = None,
    justify: Mapping[str, str] | None = None,
) -> None:
    """A table on ``out``: rich when it is installed, else aligned plain text."""
    out = out if out is not None else sys.stdout
    justify = justify or {}
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _plain_table(title, columns, rows, out)
        return
    from rich.markup import escape

    # Every cell is data (names, paths): escaped, so '[/' is shown and never parsed as markup.
    table = Table(
        title=escape(printable(title)) if title is not None else None, show_lines=False, header_style="bold"
    )
    for c in columns:
        table.add_column(c, justify=justify.get(c, "left"), no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(*(escape(printable(v)) for v in r))
    Console(file=out, width=max(80, sum(len(c) for c in columns) + 200), emoji=False, highlight=False).print(
        table
    )


def _plain_table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO
) -> None:
    cells = [[str(c) for c in columns], *[[printable(v) for v in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    if title:
        print(printable(title), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)
