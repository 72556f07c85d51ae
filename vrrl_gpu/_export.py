"""Writing logs into other tools' formats: Chrome Trace Event JSON, Parquet, CSV, JSON lines, and merged VRRL.

Every writer streams (chunked reads, batched writes) except the Chrome trace,
which pairs begin and end records and so reads the whole log. Outputs are
written to a temporary file beside the target and renamed into place, so a
failed or interrupted export never leaves half a file under the final name.
pyarrow is imported only for Parquet (the ``parquet`` extra).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from vrrl_gpu._analysis import (
    code_label,
    crash_windows,
    failure_mask,
    find_launches,
    iter_record_chunks,
    merge_logs,
    meta_mask,
)
from vrrl_gpu._format import MAX_CAPACITY, FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu._ringlog import RingLog
from vrrl_gpu._sidecar import opcode_label, read_sidecar
from vrrl_gpu.errors import CapacityOverflowError, MissingExtraError, RecordValueError, VrrlIoError

__all__ = [
    "EXPORT_FORMATS",
    "MERGE_FORMATS",
    "DUMP_FIELDS",
    "ROW_FIELDS",
    "MergeSummary",
    "ProgressFn",
    "chrome_trace",
    "export_log",
    "merge_to",
    "opcode_names_of",
    "parquet_schema",
    "record_rows",
]

EXPORT_FORMATS = ("chrome", "parquet", "csv", "jsonl")
MERGE_FORMATS = ("vrrl", "jsonl", "parquet")

#: The columns of ``vrrl dump --json``/``--csv``: the format's field names, then the class name.
DUMP_FIELDS = (
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

#: Columns of JSON lines / CSV / Parquet rows: ``vrrl dump --json``'s, then the names we know.
ROW_FIELDS = (*DUMP_FIELDS, "slot_status_name", "opcode_name")

#: ``progress(records_done, total_or_None)``, called after each written batch.
ProgressFn = Callable[[int, "int | None"], None]
Records = npt.NDArray[np.void]


def _status_name(value: int) -> str:
    try:
        return SlotStatus(value).name.lower()
    except ValueError:
        return str(value)


def opcode_names_of(path: str | os.PathLike[str]) -> dict[int, str]:
    """The opcode names in the log's sidecar ({} when it has none). A malformed sidecar raises."""
    side = read_sidecar(path)
    return dict(side.opcode_names) if side else {}


def record_rows(
    records: Records,
    *,
    opcode_names: Mapping[int, str] | None = None,
    origin: npt.NDArray[np.int32] | None = None,
    origin_paths: Sequence[str] = (),
    origin_names: Sequence[Mapping[int, str]] = (),
) -> Iterator[dict[str, Any]]:
    """One JSON-ready dict per record (:data:`ROW_FIELDS`, plus ``origin`` for merged rows).

    ``opcode_name`` is the sidecar's name, or None when the opcode has none (a
    meta-opcode gets its ``<gap>``-style label). With ``origin``, each row's
    names come from ``origin_names[origin[i]]``.
    """
    cols = {n: records[n].tolist() for n in records.dtype.names or () if n != "magic"}
    org = origin.tolist() if origin is not None else None
    class_label = {v: FailureClass(v).label for v in set(cols["failure_class"])}
    status_name = {v: _status_name(v) for v in set(cols["slot_status"])}
    for i in range(records.shape[0]):
        fc = int(cols["failure_class"][i])
        op = int(cols["opcode"][i])
        names = origin_names[org[i]] if org is not None and origin_names else opcode_names
        name = names.get(op) if names else None
        if name is None and op >= 0xFFFFFF00:
            name = opcode_label(op)
        row: dict[str, Any] = {
            "timestamp_ns": cols["timestamp_ns"][i],
            "slot_idx": cols["slot_idx"][i],
            "tenant_id": cols["tenant_id"][i],
            "opcode": op,
            "args": cols["args"][i],
            "epoch": cols["epoch"][i],
            "slot_status": cols["slot_status"][i],
            "failure_class": fc,
            "backend_error_code": cols["backend_error_code"][i],
            "output_digest": cols["output_digest"][i],
            "failure_class_name": class_label[fc],
            "slot_status_name": status_name[cols["slot_status"][i]],
            "opcode_name": name,
        }
        if org is not None:
            row["origin"] = {"index": org[i], "path": origin_paths[org[i]] if origin_paths else ""}
        yield row


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
            pa.array([_status_name(s) for s in sts], pa.string()),
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


# ------------------------------------------------------------------- export


def export_log(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fmt: str,
    *,
    force: bool = False,
    salvage: bool = False,
    progress: ProgressFn | None = None,
) -> int:
    """Write the log at ``path`` to ``out`` as ``fmt`` (see :data:`EXPORT_FORMATS`); returns the records."""
    if fmt not in EXPORT_FORMATS:
        raise RecordValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    p = os.fspath(path)
    names = opcode_names_of(p)
    if fmt == "parquet":
        _pyarrow()  # refuse before creating anything
    target = _AtomicOutput(out, force=force)
    if fmt == "chrome":
        try:
            with RingLog.open(p, readonly=True) as log:
                recs = log.records(salvage=salvage)
            trace = chrome_trace(recs, opcode_names=names, source=p)
            with open(target.tmp, "w", encoding="utf-8") as f:
                json.dump(trace, f, separators=(",", ":"))
            target.commit()
        except BaseException:
            target.abort()
            raise
        if progress is not None:
            progress(int(recs.shape[0]), int(recs.shape[0]))
        return int(recs.shape[0])
    makers: dict[str, Callable[[Path], _Sink]] = {
        "jsonl": lambda t: _JsonlSink(t, names, (), ()),
        "csv": lambda t: _CsvSink(t, names),
        "parquet": lambda t: _ParquetSink(t, names, None, ()),
    }
    batches = ((c, None) for c in iter_record_chunks(p, salvage=salvage))
    return _drive(target, makers[fmt], batches, progress, None)


# -------------------------------------------------------------------- merge


@dataclass
class MergeSummary:
    """What :func:`merge_to` wrote. ``shared_tenants`` lists tenant ids found in more than one input."""

    records: int
    inputs: int
    fmt: str
    shared_tenants: list[int] = field(default_factory=list)


def merge_to(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    fmt: str = "vrrl",
    *,
    force: bool = False,
    salvage: bool = False,
    memory_records: int = 1 << 18,
    progress: ProgressFn | None = None,
) -> MergeSummary:
    """Merge logs by timestamp into ``out`` (VRRL, JSON lines or Parquet), streaming.

    JSON lines and Parquet rows carry ``origin`` = {index, path} of their
    input. A VRRL output has no column for it: records keep their own
    ``tenant_id``, which identifies the origin only when the inputs used
    distinct tenant ids (``shared_tenants`` says when they did not). VRRL
    output needs a first counting pass and refuses a total over 1,048,576.
    """
    if fmt not in MERGE_FORMATS:
        raise RecordValueError(f"merge format must be one of {', '.join(MERGE_FORMATS)}, got {fmt!r}")
    if not paths:
        raise RecordValueError("merge needs at least one input log")
    ps = [os.fspath(p) for p in paths]
    outp = Path(out)
    for p in ps:
        if outp.exists() and Path(p).exists() and os.path.samefile(p, outp):
            raise VrrlIoError(f"{outp}: is also an input; write the merge to another file")
    if fmt == "parquet":
        _pyarrow()
    per_origin = [opcode_names_of(p) for p in ps] if fmt != "vrrl" else []
    total: int | None = None
    shared: list[int] = []
    if fmt == "vrrl":
        total = 0
        seen: dict[int, int] = {}
        for i, p in enumerate(ps):
            for chunk in iter_record_chunks(p, salvage=salvage):
                total += int(chunk.shape[0])
                for t in np.unique(chunk["tenant_id"]).tolist():
                    if seen.setdefault(t, i) != i and t not in shared:
                        shared.append(t)
        if total > MAX_CAPACITY:
            raise CapacityOverflowError(
                f"merging {len(ps)} logs gives {total:,} records, but a VRRL v1 log holds at most "
                f"{MAX_CAPACITY:,}; write --format jsonl or --format parquet instead, or merge fewer logs"
            )
    target = _AtomicOutput(out, force=force)
    makers: dict[str, Callable[[Path], _Sink]] = {
        "vrrl": lambda t: _VrrlSink(t, total or 0),
        "jsonl": lambda t: _JsonlSink(t, None, ps, per_origin),
        "parquet": lambda t: _ParquetSink(t, None, ps, per_origin),
    }
    batches = merge_logs(ps, memory_records=memory_records, salvage=salvage)
    n = _drive(target, makers[fmt], batches, progress, total)
    return MergeSummary(records=n, inputs=len(ps), fmt=fmt, shared_tenants=sorted(shared))


# -------------------------------------------------------------- chrome trace


def _us(ns: int, base: int) -> float:
    return round((ns - base) / 1000.0, 3)


def chrome_trace(
    records: Records, *, opcode_names: Mapping[int, str] | None = None, source: str = ""
) -> dict[str, Any]:
    """A Chrome Trace Event document (Perfetto, chrome://tracing) for a log's records.

    One process; one thread (track) per ``tenant_id``. A launch with both a
    BEGIN and a COMPLETED record is a complete ("X") slice, one without an end
    an instant ("i") event; failures, GAPs and other meta-records are instant
    events; each crash window (the launch the device had reached when a fault
    was seen, up to the fault) is an "X" slice of category ``crash``.
    Timestamps are microseconds after the first record
    (``otherData.base_timestamp_ns``).
    """
    from vrrl_gpu import __version__

    ls = find_launches(records)
    ts = records["timestamp_ns"]
    base = int(ts.min()) if ts.size else 0
    pid = 1
    events: list[dict[str, Any]] = [
        {
            "ph": "M",
            "name": "process_name",
            "pid": pid,
            "tid": 0,
            "args": {"name": f"vrrl {Path(source).name}" if source else "vrrl"},
        },
    ]
    for t in np.unique(records["tenant_id"]).tolist():
        events.append(
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": int(t), "args": {"name": f"tenant {t}"}}
        )
        events.append(
            {
                "ph": "M",
                "name": "thread_sort_index",
                "pid": pid,
                "tid": int(t),
                "args": {"sort_index": int(t)},
            }
        )

    # Column lists, not numpy scalars, in the per-launch loop: it runs once per launch.
    labels = {op: opcode_label(op, opcode_names) for op in np.unique(ls.opcode).tolist()}
    statuses = {st: _status_name(st) for st in np.unique(ls.status).tolist()}
    cols = zip(
        ls.opcode.tolist(), ls.ts.tolist(), ls.tenant.tolist(), ls.slot.tolist(), ls.args.tolist(),
        ls.epoch.tolist(), ls.status.tolist(), ls.completed.tolist(), ls.end_ts.tolist(),
        strict=True,
    )  # fmt: skip
    for op, start, tenant, slot, words, epoch, status, completed, end in cols:
        ev: dict[str, Any] = {
            "name": labels[op],
            "cat": "launch",
            "pid": pid,
            "tid": tenant,
            "ts": _us(start, base),
            "args": {
                "slot_idx": slot,
                "opcode": op,
                "args": words,
                "epoch": epoch,
                "status": statuses[status],
            },
        }
        if completed and end >= start:
            ev["ph"] = "X"
            ev["dur"] = max(0.001, round((end - start) / 1000.0, 3))
        else:
            ev["ph"] = "i"
            ev["s"] = "t"
        events.append(ev)

    meta = meta_mask(records)
    failure_statuses = (SlotStatus.FAILED_AT_LAUNCH, SlotStatus.FAULTED, SlotStatus.HUNG)
    marked = np.flatnonzero(meta | failure_mask(records))  # everything else is covered by the launches
    for j in marked.tolist():
        r = records[j]
        st, fc, code = int(r["slot_status"]), int(r["failure_class"]), int(r["backend_error_code"])
        t, op = int(r["tenant_id"]), int(r["opcode"])
        if meta[j]:
            a = r["args"]
            if op == MetaOpcode.GAP:
                count = int(a[2]) | (int(a[3]) << 32)
                name, cat, scope = f"gap: {count} record(s) dropped", "gap", "p"
                args: dict[str, Any] = {"dropped": count, "first_sequence": int(a[0]) | (int(a[1]) << 32)}
            else:
                name, cat, scope = opcode_label(op), "meta", "t"
                args = {"args": a.tolist()}
            events.append(
                {
                    "name": name,
                    "cat": cat,
                    "ph": "i",
                    "s": scope,
                    "pid": pid,
                    "tid": t,
                    "ts": _us(int(r["timestamp_ns"]), base),
                    "args": args,
                }
            )
        elif fc or code or st in failure_statuses:
            label = FailureClass(fc).label
            events.append(
                {
                    "name": f"{_status_name(st)}: {label} {code_label(code)}",
                    "cat": "failure",
                    "ph": "i",
                    "s": "t",
                    "pid": pid,
                    "tid": t,
                    "cname": "terrible",
                    "ts": _us(int(r["timestamp_ns"]), base),
                    "args": {
                        "slot_idx": int(r["slot_idx"]),
                        "opcode": opcode_label(op, opcode_names),
                        "failure_class": label,
                        "backend_error_code": code,
                        "output_digest": f"{int(r['output_digest']):016x}",
                    },
                }
            )
    for w in crash_windows(records, ls):
        events.append(
            {
                "name": f"crash window: {opcode_label(w.opcode, opcode_names)} (slot {w.slot_idx})",
                "cat": "crash",
                "ph": "X",
                "pid": pid,
                "tid": w.tenant_id,
                "cname": "terrible",
                "ts": _us(w.start_ns, base),
                "dur": max(0.001, round((w.end_ns - w.start_ns) / 1000.0, 3)),
                "args": {
                    **w.to_dict(),
                    "failure_class": FailureClass(w.failure_class).label,
                    "code": code_label(w.backend_error_code),
                },
            }
        )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"source": source, "base_timestamp_ns": base, "generator": f"vrrl_gpu {__version__}"},
    }
