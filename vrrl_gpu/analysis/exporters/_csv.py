"""CSV: :data:`CSV_FIELDS`, the row columns with the four ``args`` words as ``arg0..arg3``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters._jsonl import TEXT_ROWS
from vrrl_gpu.analysis.exporters._output import Sink, SinkContext, open_binary
from vrrl_gpu.analysis.exporters._rows import CSV_FIELDS, NUMBER_FIELDS, RowBuilder, RowColumns
from vrrl_gpu.analysis.exporters._text import Lines, choice_table
from vrrl_gpu.format._reader import Records

__all__ = ["CsvSink", "csv_cell", "csv_text"]

_Table = tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]


def csv_cell(value: str | None) -> bytes:
    """One cell as CSV bytes: quoted when needed; a name starting ``= + - @`` (a tab, a CR) kept as text.

    A spreadsheet would run such a cell as a formula; the leading ``'`` makes it text.
    """
    if value is None:
        return b""
    if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        value = "'" + value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([value])
    return buf.getvalue().encode()


class _Encoded:
    def __init__(self) -> None:
        self._tables: dict[tuple[str | None, ...], _Table] = {}

    def __call__(self, values: tuple[str | None, ...]) -> _Table:
        t = self._tables.get(values)
        if t is None:
            t = self._tables[values] = choice_table([csv_cell(v) for v in values])
        return t


def csv_text(cols: RowColumns, encoded: _Encoded) -> Iterator[npt.NDArray[np.uint8]]:
    """The CSV rows of a batch (no header), :data:`TEXT_ROWS` at a time."""
    r = cols.records
    for lo in range(0, cols.n, TEXT_ROWS):
        sl = slice(lo, lo + TEXT_ROWS)
        rr = r[sl]
        lines = Lines(int(rr.shape[0]))
        for i, f in enumerate(NUMBER_FIELDS):
            if i:
                lines.lit(",")
            if f == "args":
                a = rr["args"]
                lines.uint(a[:, 0]).lit(",").uint(a[:, 1]).lit(",").uint(a[:, 2]).lit(",").uint(a[:, 3])
            else:
                lines.uint(rr[f])
        lines.lit(",").pick(cols.failure_class_name.idx[sl], encoded(cols.failure_class_name.values))
        st = cols.stream[sl]
        lines.lit(",").uint(st, null=st < 0, null_text=b"")
        lines.lit(",").pick(cols.slot_status_name.idx[sl], encoded(cols.slot_status_name.values))
        lines.lit(",").pick(cols.opcode_name.idx[sl], encoded(cols.opcode_name.values))
        lines.lit("\n")
        yield lines.render()


class CsvSink(Sink):
    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._f = open_binary(path)
        self._f.write((",".join(CSV_FIELDS) + "\n").encode())
        self._rows = RowBuilder(opcode_names=ctx.opcode_names)
        self._streams = ctx.streams
        self._encoded = _Encoded()

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        streams = self._streams(records) if self._streams is not None else None
        for text in csv_text(self._rows(records, streams=streams), self._encoded):
            self._f.write(text.data)

    def close(self) -> None:
        self._f.close()
