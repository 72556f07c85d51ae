"""Parquet (needs the ``parquet`` extra, pyarrow): the row columns with Arrow types, plus ``time``."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters._output import Extra, Sink, SinkContext, open_binary
from vrrl_gpu.analysis.exporters._rows import Labels, RowBuilder
from vrrl_gpu.format._reader import Records

__all__ = [
    "PARQUET_EXTRA",
    "PARQUET_ROWS",
    "ParquetSink",
    "parquet_schema",
    "parquet_writer",
    "record_table",
    "text_columns",
]

#: Rows per row group: each is built and encoded whole, so its size bounds the writer's memory (with 65,536
#: rows pyarrow's buffers came to ~100 MiB beside its own import). 16,384 keep that to a few MiB while
#: costing less per row than 4,096 (fewer pages and column chunks to encode and describe in the footer).
PARQUET_ROWS = 1 << 14

PARQUET_EXTRA = Extra(name="parquet", package="pyarrow", modules=("pyarrow", "pyarrow.parquet"))


def _pyarrow() -> tuple[Any, ...]:
    return PARQUET_EXTRA.load("Parquet output")


def parquet_schema(*, with_origin: bool) -> Any:
    """The Arrow schema of Parquet exports (docs/analysis.md lists the columns)."""
    pa, _ = _pyarrow()
    fields = [
        pa.field("timestamp_ns", pa.uint64()),
        pa.field("time", pa.timestamp("ns", tz="UTC")),
        pa.field("slot_idx", pa.uint32()),
        pa.field("tenant_id", pa.uint32()),
        pa.field("opcode", pa.uint32()),
        pa.field("opcode_name", pa.string()),
        pa.field("args", pa.list_(pa.uint32())),
        pa.field("epoch", pa.uint32()),
        pa.field("slot_status", pa.uint32()),
        pa.field("slot_status_name", pa.string()),
        pa.field("failure_class", pa.uint32()),
        pa.field("failure_class_name", pa.string()),
        pa.field("backend_error_code", pa.uint32()),
        pa.field("output_digest", pa.uint64()),
        pa.field("stream", pa.int32()),
    ]
    if with_origin:
        fields.append(pa.field("origin", pa.struct([("index", pa.int32()), ("path", pa.string())])))
    return pa.schema(fields)


def text_columns(schema: Any) -> list[str]:
    """The paths of ``schema``'s string columns (a struct's as ``origin.path``): those dictionary-encoded."""
    pa, _ = _pyarrow()
    out: list[str] = []

    def walk(prefix: str, field: Any) -> None:
        if pa.types.is_struct(field.type):
            for k in range(field.type.num_fields):
                walk(f"{prefix}{field.name}.", field.type.field(k))
        elif pa.types.is_string(field.type):
            out.append(prefix + field.name)

    for f in schema:
        walk("", f)
    return out


def parquet_writer(where: Any, schema: Any) -> Any:
    """A ``pyarrow.parquet.ParquetWriter`` on ``where`` (a path or a binary file) with the exports' settings.

    zstd; dictionary encoding for the text columns only: they hold a few distinct names, while the numbers
    (timestamps, digests, args) are nearly all distinct: dictionary-encoding those hashed every value into a
    dictionary that outgrew its limit and fell back to plain pages, about half the write time, for a larger
    file.
    """
    _, pq = _pyarrow()
    return pq.ParquetWriter(where, schema, compression="zstd", use_dictionary=text_columns(schema))


def _strings(pa: Any, idx: npt.NDArray[np.integer], values: Sequence[str | None]) -> Any:
    """The Arrow string array ``[values[i] for i in idx]``, laid out with numpy.

    Not Arrow's ``take``: that imports ``pyarrow.compute`` and pages in its kernels, ~8 MiB of the export's
    peak RSS (issue 13). Here the few distinct values are rows of one width (zero-padded), and each row's
    bytes are picked out of its value's row by that value's mask: ~0.4 ms for 16,384 rows, ``take`` ~0.3.
    """
    table, keep, lens, nulls = _padded(tuple(values))
    n = int(idx.shape[0])
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lens.take(idx), out=offsets[1:])
    data = np.take(table, idx, axis=0)[np.take(keep, idx, axis=0)]
    validity = None
    if nulls.any():
        validity = pa.py_buffer(np.packbits(~nulls.take(idx), bitorder="little"))
    return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


@functools.lru_cache(maxsize=64)
def _padded(
    values: tuple[str | None, ...],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_], npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
    """``values`` as UTF-8 rows of one width (zero-padded), which bytes of each row are the value's, the
    values' byte lengths, and which values are None."""
    enc = [b"" if v is None else v.encode() for v in values]
    lens = np.array([len(e) for e in enc], np.int32)
    width = max(1, int(lens.max(initial=0)))
    table = np.zeros((len(enc), width), np.uint8)
    for i, e in enumerate(enc):
        table[i, : len(e)] = np.frombuffer(e, np.uint8)
    keep = np.arange(width) < lens[:, None]
    return table, keep, lens, np.array([v is None for v in values], np.bool_)


def _labels(pa: Any, labels: Labels) -> Any:
    return _strings(pa, labels.idx, labels.values)


def _numbers(pa: Any, values: npt.NDArray[Any], typ: Any, null: npt.NDArray[np.bool_] | None = None) -> Any:
    """``values`` (a strided field of the records) as an Arrow array of ``typ``: one copy, no cast."""
    data = pa.py_buffer(np.ascontiguousarray(values))
    validity = None
    if null is not None and null.any():
        validity = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(typ, int(values.shape[0]), [validity, data])


def record_table(
    records: Records,
    *,
    schema: Any = None,
    opcode_names: Mapping[int, str] | None = None,
    origin: npt.NDArray[np.int32] | None = None,
    origin_paths: Sequence[str] = (),
    origin_names: Sequence[Mapping[int, str]] = (),
    streams: npt.NDArray[np.int32] | None = None,
    rows: RowBuilder | None = None,
) -> Any:
    """The records as an Arrow table of :func:`parquet_schema` (with the origin column when ``origin``).

    The Parquet export writes these; the fleet dataset (``_fleet_dataset``) appends its rank columns.
    Built with numpy and Arrow (names looked up once per distinct value, :class:`RowBuilder`); a writer of
    many batches passes its ``rows`` so that the lookups are kept between batches.
    """
    pa, _ = _pyarrow()
    if schema is None:
        schema = parquet_schema(with_origin=origin is not None)
    if rows is None:
        rows = RowBuilder(opcode_names=opcode_names, origin_names=origin_names)
    c = rows(records, streams=streams, origin=origin)
    n = int(records.shape[0])
    ts = np.ascontiguousarray(records["timestamp_ns"])
    u32 = pa.uint32()
    args = pa.py_buffer(np.ascontiguousarray(records["args"]))
    cols = [
        _numbers(pa, ts, pa.uint64()),
        # The same 8 bytes read as int64 ns; past int64 (year 2262) a time cannot be held: null there, the ns
        # column keeps the value.
        _numbers(pa, ts, pa.timestamp("ns", tz="UTC"), ts >= np.uint64(1 << 63)),
        _numbers(pa, records["slot_idx"], u32),
        _numbers(pa, records["tenant_id"], u32),
        _numbers(pa, records["opcode"], u32),
        _labels(pa, c.opcode_name),
        # Four words a row: the offsets are 0, 4, 8, ...
        pa.ListArray.from_buffers(
            pa.list_(u32),
            n,
            [None, pa.py_buffer(np.arange(0, 4 * n + 1, 4, dtype=np.int32))],
            children=[pa.Array.from_buffers(u32, 4 * n, [None, args])],
        ),
        _numbers(pa, records["epoch"], u32),
        _numbers(pa, records["slot_status"], u32),
        _labels(pa, c.slot_status_name),
        _numbers(pa, records["failure_class"], u32),
        _labels(pa, c.failure_class_name),
        _numbers(pa, records["backend_error_code"], u32),
        _numbers(pa, records["output_digest"], pa.uint64()),
        _numbers(pa, c.stream, pa.int32(), c.stream < 0),
    ]
    if origin is not None:
        org = np.asarray(origin, np.int32)
        paths = _strings(pa, org, list(origin_paths))
        index = _numbers(pa, org, pa.int32())
        cols.append(pa.StructArray.from_arrays([index, paths], names=["index", "path"]))
    return pa.Table.from_arrays(cols, schema=schema)


class ParquetSink(Sink):
    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._pa, _ = _pyarrow()
        self._with_origin = ctx.origin_paths is not None
        self._schema = parquet_schema(with_origin=self._with_origin)
        self._f = open_binary(path)
        try:
            self._writer = parquet_writer(self._f, self._schema)
        except BaseException:
            self._f.close()
            raise
        self._paths = list(ctx.origin_paths or ())
        self._rows = RowBuilder(opcode_names=ctx.opcode_names, origin_names=ctx.origin_names)
        self._streams = ctx.streams

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        streams = self._streams(records) if self._streams is not None else None
        if self._with_origin and origin is None:
            origin = np.zeros(int(records.shape[0]), np.int32)
        for lo in range(0, int(records.shape[0]), PARQUET_ROWS):
            sl = slice(lo, lo + PARQUET_ROWS)
            table = record_table(
                records[sl],
                schema=self._schema,
                origin=origin[sl] if self._with_origin and origin is not None else None,
                origin_paths=self._paths,
                streams=streams[sl] if streams is not None else None,
                rows=self._rows,
            )
            self._writer.write_table(table)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._f.close()
