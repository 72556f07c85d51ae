"""Output files (atomic replace) and one sink per export format."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters._rows import ROW_FIELDS, ProgressFn, record_rows
from vrrl_gpu.errors import MissingExtraError, VrrlIoError
from vrrl_gpu.format._layout import FailureClass, SlotStatus
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._ringlog import RingLog
from vrrl_gpu.format._sidecar import opcode_label

__all__ = ["parquet_schema"]


# ------------------------------------------------------------- output files


class _AtomicOutput:
    """A temporary path beside ``out``; :meth:`commit` renames it into place, :meth:`abort` removes it."""

    def __init__(self, out: str | os.PathLike[str], *, force: bool) -> None:
        self.out = Path(out)
        if self.out.is_dir():
            raise VrrlIoError(f"{self.out}: is a directory; give a file name for the output")
        if self.out.exists() and not force:
            raise VrrlIoError(f"{self.out}: already exists; pass --force (force=True) to replace it")
        if not self.out.parent.is_dir():
            raise VrrlIoError(f"{self.out.parent}: no such directory for the output")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


class _Sink(Protocol):
    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None: ...

    def close(self) -> None: ...


class _JsonlSink:
    def __init__(
        self,
        path: Path,
        names: Mapping[int, str] | None,
        paths: Sequence[str],
        per_origin: Sequence[Mapping[int, str]],
    ) -> None:
        self._f = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._names, self._paths, self._per_origin = names, paths, per_origin

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        buf = io.StringIO()
        for row in record_rows(
            records,
            opcode_names=self._names,
            origin=origin,
            origin_paths=self._paths,
            origin_names=self._per_origin,
        ):
            buf.write(json.dumps(row))
            buf.write("\n")
        self._f.write(buf.getvalue())

    def close(self) -> None:
        self._f.close()


class _CsvSink:
    def __init__(self, path: Path, names: Mapping[int, str] | None) -> None:
        self._f = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self._w = csv.writer(self._f, lineterminator="\n")
        self._w.writerow(ROW_FIELDS)
        self._names = names

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        for row in record_rows(records, opcode_names=self._names):
            row["args"] = " ".join(str(a) for a in row["args"])
            self._w.writerow(["" if row[k] is None else row[k] for k in ROW_FIELDS])

    def close(self) -> None:
        self._f.close()


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError(
            "Parquet output needs pyarrow, which is not installed; "
            "install the extra: pip install 'vrrl_gpu[parquet]' (or write --format jsonl)"
        ) from None
    return pa, pq


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
    ]
    if with_origin:
        fields.append(pa.field("origin", pa.struct([("index", pa.int32()), ("path", pa.string())])))
    return pa.schema(fields)


class _ParquetSink:
    def __init__(
        self,
        path: Path,
        names: Mapping[int, str] | None,
        paths: Sequence[str] | None,
        per_origin: Sequence[Mapping[int, str]],
    ) -> None:
        self._pa, pq = _pyarrow()
        self._with_origin = paths is not None
        self._schema = parquet_schema(with_origin=self._with_origin)
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")
        self._names, self._paths, self._per_origin = names, list(paths or ()), per_origin

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        pa = self._pa
        n = records.shape[0]
        ops = records["opcode"]
        org = origin.tolist() if origin is not None else [0] * n
        names: list[str | None] = []
        for op, o in zip(ops.tolist(), org, strict=True):
            table = self._per_origin[o] if self._per_origin else self._names
            nm = table.get(op) if table else None
            names.append(nm if nm is not None else (opcode_label(op) if op >= 0xFFFFFF00 else None))
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
        ]
        if self._with_origin:
            idx = pa.array(np.asarray(org, np.int32), pa.int32())
            paths = pa.array([self._paths[o] for o in org], pa.string())
            cols.append(pa.StructArray.from_arrays([idx, paths], names=["index", "path"]))
        self._writer.write_table(pa.Table.from_arrays(cols, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


class _VrrlSink:
    def __init__(self, path: Path, capacity: int) -> None:
        path.unlink(missing_ok=True)  # RingLog.create wants a fresh name; the temp name is ours
        self._log = RingLog.create(path, max(1, capacity))

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        self._log.extend(records)

    def close(self) -> None:
        self._log.sync()
        self._log.close()


def _drive(
    out: _AtomicOutput,
    make: Callable[[Path], _Sink],
    batches: Iterable[tuple[Records, npt.NDArray[np.int32] | None]],
    progress: ProgressFn | None,
    total: int | None,
) -> int:
    done = 0
    try:
        sink = make(out.tmp)
        try:
            for recs, origin in batches:
                sink.write(recs, origin)
                done += int(recs.shape[0])
                if progress is not None:
                    progress(done, total)
        finally:
            sink.close()
        out.commit()
    except BaseException:
        out.abort()
        raise
    return done
