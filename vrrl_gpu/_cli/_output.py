"""Shared output helpers of the CLI: tables (rich when installed), record rows, names."""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from vrrl_gpu._format import FailureClass, SlotStatus
from vrrl_gpu._sidecar import read_sidecar
from vrrl_gpu.errors import SidecarError

__all__ = [
    "JSON_FIELDS",
    "format_timestamp",
    "opcode_names_for",
    "print_table",
    "record_dicts",
    "status_label",
]

#: The columns of ``dump --json``/``--csv``: the format's field names, then the class name.
JSON_FIELDS = (
    "timestamp_ns",
    "slot_idx",
    "tenant_id",
    "opcode",
    "args",
    "epoch",
    "slot_status",
    "failure_class",
    "backend_error_code",
    "output_digest",
    "failure_class_name",
)


def record_dicts(records: npt.NDArray[np.void]) -> Iterator[dict[str, Any]]:
    """One JSON-ready dict per record, in array order, without building Record objects."""
    cols = {name: records[name].tolist() for name in records.dtype.names or () if name != "magic"}
    for i in range(records.shape[0]):
        fc = int(cols["failure_class"][i])
        yield {
            "timestamp_ns": cols["timestamp_ns"][i],
            "slot_idx": cols["slot_idx"][i],
            "tenant_id": cols["tenant_id"][i],
            "opcode": cols["opcode"][i],
            "args": cols["args"][i],
            "epoch": cols["epoch"][i],
            "slot_status": cols["slot_status"][i],
            "failure_class": fc,
            "backend_error_code": cols["backend_error_code"][i],
            "output_digest": cols["output_digest"][i],
            "failure_class_name": FailureClass(fc).label,
        }


def format_timestamp(ns: int) -> str:
    """UTC ISO 8601 with nanoseconds: ``2023-11-14T22:13:20.000001000Z``."""
    secs, frac = divmod(int(ns), 1_000_000_000)
    try:
        base = _dt.datetime.fromtimestamp(secs, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{ns}ns"
    return f"{base}.{frac:09d}Z"


def status_label(value: int) -> str:
    try:
        return SlotStatus(value).name.lower()
    except ValueError:
        return str(value)


def opcode_names_for(log_path: str) -> dict[int, str]:
    """Opcode names from the log's sidecar; a broken sidecar is reported once and ignored."""
    try:
        side = read_sidecar(log_path)
    except SidecarError as e:
        print(f"vrrl: warning: {e}", file=sys.stderr)
        return {}
    return dict(side.opcode_names) if side else {}


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
    table = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        table.add_column(c, justify=justify.get(c, "left"), no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(*(str(v) for v in r))
    Console(file=out, width=max(80, sum(len(c) for c in columns) + 200)).print(table)


def _plain_table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO
) -> None:
    cells = [[str(c) for c in columns], *[[str(v) for v in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    if title:
        print(title, file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)
