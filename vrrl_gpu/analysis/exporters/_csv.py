"""CSV: the row columns, the four ``args`` words space-separated."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters._output import Sink, SinkContext
from vrrl_gpu.analysis.exporters._rows import ROW_FIELDS, record_rows
from vrrl_gpu.format._reader import Records

__all__ = ["CsvSink"]


def _csv_cell(value: object) -> object:
    """A cell a spreadsheet shows as text: a name starting ``= + - @`` (or a tab, a CR) would be a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class CsvSink(Sink):
    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._f = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self._w = csv.writer(self._f, lineterminator="\n")
        self._w.writerow(ROW_FIELDS)
        self._names = ctx.opcode_names
        self._streams = ctx.streams

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        streams = self._streams(records) if self._streams is not None else None
        for row in record_rows(records, opcode_names=self._names, streams=streams):
            row["args"] = " ".join(str(a) for a in row["args"])
            self._w.writerow([_csv_cell(row[k]) for k in ROW_FIELDS])

    def close(self) -> None:
        self._f.close()
