"""Parquet (needs the ``parquet`` extra, pyarrow): the row columns with Arrow types, plus ``time``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters._output import Extra, Sink, SinkContext
from vrrl_gpu.format._layout import FailureClass, SlotStatus
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._sidecar import opcode_label

__all__ = ["PARQUET_EXTRA", "ParquetSink", "parquet_schema", "record_table"]

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


def record_table(
    records: Records,
    *,
    schema: Any = None,
    opcode_names: Mapping[int, str] | None = None,
    origin: npt.NDArray[np.int32] | None = None,
    origin_paths: Sequence[str] = (),
    origin_names: Sequence[Mapping[int, str]] = (),
    streams: npt.NDArray[np.int32] | None = None,
) -> Any:
    """The records as an Arrow table of :func:`parquet_schema` (with the origin column when ``origin``).

    The Parquet export writes these; the fleet dataset (``_fleet_dataset``) appends its rank columns.
    """
    pa, _ = _pyarrow()
    if schema is None:
        schema = parquet_schema(with_origin=origin is not None)
    n = records.shape[0]
    ops = records["opcode"]
    org = origin.tolist() if origin is not None else [0] * n
    names: list[str | None] = []
    for op, o in zip(ops.tolist(), org, strict=True):
        table = origin_names[o] if origin_names else opcode_names
        nm = table.get(op) if table else None
        names.append(nm if nm is not None else (opcode_label(op) if op >= 0xFFFFFF00 else None))
    if streams is None:
        streams = np.full(n, -1, np.int32)
    fcs = records["failure_class"].tolist()
    sts = records["slot_status"].tolist()
    cols = [
        pa.array(records["timestamp_ns"], pa.uint64()),
        pa.array(records["timestamp_ns"].astype(np.int64), pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array(records["slot_idx"], pa.uint32()),
        pa.array(records["tenant_id"], pa.uint32()),
        pa.array(ops, pa.uint32()),
        pa.array(names, pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(records["args"].reshape(-1), pa.uint32()), 4).cast(
            pa.list_(pa.uint32())
        ),
        pa.array(records["epoch"], pa.uint32()),
        pa.array(records["slot_status"], pa.uint32()),
        pa.array([SlotStatus.label_of(s) for s in sts], pa.string()),
        pa.array(records["failure_class"], pa.uint32()),
        pa.array([FailureClass(f).label for f in fcs], pa.string()),
        pa.array(records["backend_error_code"], pa.uint32()),
        pa.array(records["output_digest"], pa.uint64()),
        pa.array(streams, pa.int32(), mask=streams < 0),
    ]
    if origin is not None:
        idx = pa.array(np.asarray(org, np.int32), pa.int32())
        paths = pa.array([origin_paths[o] for o in org], pa.string())
        cols.append(pa.StructArray.from_arrays([idx, paths], names=["index", "path"]))
    return pa.Table.from_arrays(cols, schema=schema)


class ParquetSink(Sink):
    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._pa, pq = _pyarrow()
        self._with_origin = ctx.origin_paths is not None
        self._schema = parquet_schema(with_origin=self._with_origin)
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")
        self._names, self._paths, self._per_origin = (
            ctx.opcode_names,
            list(ctx.origin_paths or ()),
            ctx.origin_names,
        )
        self._streams = ctx.streams

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        streams = self._streams(records) if self._streams is not None else None
        table = record_table(
            records,
            schema=self._schema,
            opcode_names=self._names,
            origin=origin if self._with_origin else None,
            origin_paths=self._paths,
            origin_names=self._per_origin,
            streams=streams,
        )
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()
