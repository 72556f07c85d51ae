"""JSON lines: one object per record, :data:`ROW_FIELDS` (``vrrl dump --json``'s), a merge's origin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters._output import Sink, SinkContext, open_binary
from vrrl_gpu.analysis.exporters._rows import NUMBER_FIELDS, RowBuilder, RowColumns
from vrrl_gpu.analysis.exporters._text import Lines, choice_table
from vrrl_gpu.format._reader import Records

__all__ = ["JsonlSink", "jsonl_text"]

#: Rows rendered at a time: the text matrix of a batch stays a few MiB.
TEXT_ROWS = 1 << 12

_Table = tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]


class _Encoded:
    """Each label set as a text table (JSON strings, ``null``), made once per distinct set."""

    def __init__(self) -> None:
        self._tables: dict[tuple[str | None, ...], _Table] = {}

    def __call__(self, values: tuple[str | None, ...]) -> _Table:
        t = self._tables.get(values)
        if t is None:
            t = choice_table([b"null" if v is None else json.dumps(v).encode() for v in values])
            self._tables[values] = t
        return t


def jsonl_text(
    cols: RowColumns, encoded: _Encoded, origin_table: _Table | None = None
) -> Iterator[npt.NDArray[np.uint8]]:
    """The JSON lines of a batch, :data:`TEXT_ROWS` at a time: ``json.dumps``' spacing, :data:`ROW_FIELDS`."""
    r = cols.records
    for lo in range(0, cols.n, TEXT_ROWS):
        sl = slice(lo, lo + TEXT_ROWS)
        rr = r[sl]
        lines = Lines(int(rr.shape[0]))
        for i, f in enumerate(NUMBER_FIELDS):
            lines.lit(("{" if i == 0 else ", ") + f'"{f}": ')
            if f == "args":
                a = rr["args"]
                lines.lit("[").uint(a[:, 0]).lit(", ").uint(a[:, 1]).lit(", ").uint(a[:, 2])
                lines.lit(", ").uint(a[:, 3]).lit("]")
            else:
                lines.uint(rr[f])
        lines.lit(', "failure_class_name": ')
        lines.pick(cols.failure_class_name.idx[sl], encoded(cols.failure_class_name.values))
        st = cols.stream[sl]
        lines.lit(', "stream": ').uint(st, null=st < 0, null_text=b"null")
        lines.lit(', "slot_status_name": ')
        lines.pick(cols.slot_status_name.idx[sl], encoded(cols.slot_status_name.values))
        lines.lit(', "opcode_name": ').pick(cols.opcode_name.idx[sl], encoded(cols.opcode_name.values))
        if cols.origin is not None and origin_table is not None:
            lines.lit(', "origin": ').pick(cols.origin[sl], origin_table)
        lines.lit("}\n")
        yield lines.render()


class JsonlSink(Sink):
    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._f = open_binary(path)
        self._ctx = ctx
        self._rows = RowBuilder(opcode_names=ctx.opcode_names, origin_names=ctx.origin_names)
        self._encoded = _Encoded()
        paths = list(ctx.origin_paths or ())
        self._origins = (
            choice_table([json.dumps({"index": i, "path": p}).encode() for i, p in enumerate(paths)])
            if ctx.origin_paths is not None
            else None
        )

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        streams = self._ctx.streams(records) if self._ctx.streams is not None else None
        cols = self._rows(records, streams=streams, origin=origin)
        for text in jsonl_text(cols, self._encoded, self._origins):
            self._f.write(text.data)

    def close(self) -> None:
        self._f.close()
