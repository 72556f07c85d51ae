"""``export_log`` and ``merge_to``: one log to a format, several logs merged into one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrrl_gpu.analysis._merge import merge_logs
from vrrl_gpu.analysis.exporters._chrome import chrome_trace
from vrrl_gpu.analysis.exporters._rows import EXPORT_FORMATS, MERGE_FORMATS, ProgressFn, opcode_names_of
from vrrl_gpu.analysis.exporters._sinks import (
    _AtomicOutput,
    _CsvSink,
    _drive,
    _JsonlSink,
    _ParquetSink,
    _pyarrow,
    _Sink,
    _VrrlSink,
)
from vrrl_gpu.errors import CapacityOverflowError, RecordValueError, VrrlIoError
from vrrl_gpu.format._layout import MAX_CAPACITY
from vrrl_gpu.format._reader import iter_record_chunks
from vrrl_gpu.format._ringlog import RingLog

__all__ = ["MergeSummary", "export_log", "merge_to"]


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
