"""Parquet (needs the ``parquet`` extra, pyarrow): the row columns with Arrow types, plus ``time``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters._output import Extra, Sink, SinkContext, open_binary
from vrrl_gpu.analysis.exporters._rows import Labels, RowBuilder
from vrrl_gpu.format._reader import Records

__all__ = ["PARQUET_EXTRA", "ParquetSink", "parquet_schema", "record_table"]

#: Rows per row group: each is built and encoded whole, so its size bounds the writer's memory (with 65,536
#: rows pyarrow's buffers came to ~100 MiB beside its own import; 4,096 keep them to ~25 MiB).
PARQUET_ROWS = 1 << 12

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


def _labels(pa: Any, labels: Labels) -> Any:
    return pa.array(labels.values, pa.string()).take(pa.array(labels.idx.astype(np.int32)))


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
    ts = records["timestamp_ns"]
    cols = [
        pa.array(ts, pa.uint64()),
        # Past int64 (year 2262) a time cannot be held: null there, the ns column keeps the value.
        pa.array(ts.astype(np.int64), pa.int64(), mask=ts >= np.uint64(1 << 63)).cast(
            pa.timestamp("ns", tz="UTC")
        ),
        pa.array(records["slot_idx"], pa.uint32()),
        pa.array(records["tenant_id"], pa.uint32()),
        pa.array(records["opcode"], pa.uint32()),
        _labels(pa, c.opcode_name),
        pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(records["args"]).reshape(-1), pa.uint32()), 4
        ).cast(pa.list_(pa.uint32())),
        pa.array(records["epoch"], pa.uint32()),
        pa.array(records["slot_status"], pa.uint32()),
        _labels(pa, c.slot_status_name),
        pa.array(records["failure_class"], pa.uint32()),
        _labels(pa, c.failure_class_name),
        pa.array(records["backend_error_code"], pa.uint32()),
        pa.array(records["output_digest"], pa.uint64()),
        pa.array(c.stream, pa.int32(), mask=c.stream < 0),
    ]
    if origin is not None:
        org = np.asarray(origin, np.int32)
        paths = pa.array(list(origin_paths), pa.string()).take(pa.array(org))
        cols.append(pa.StructArray.from_arrays([pa.array(org, pa.int32()), paths], names=["index", "path"]))
    return pa.Table.from_arrays(cols, schema=schema)


class ParquetSink(Sink):
    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._pa, pq = _pyarrow()
        self._with_origin = ctx.origin_paths is not None
        self._schema = parquet_schema(with_origin=self._with_origin)
        self._f = open_binary(path)
        try:
            self._writer = pq.ParquetWriter(self._f, self._schema, compression="zstd")
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
