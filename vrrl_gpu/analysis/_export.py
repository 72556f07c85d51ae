"""``export_log`` and ``merge_to``: one log to a format, several logs merged into one.

Both look the format up in the one registry (``exporters/_registry.py``) and
know nothing about any particular format.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrrl_gpu.analysis._merge import merge_logs
from vrrl_gpu.analysis._streams import mapper_for
from vrrl_gpu.analysis.exporters._output import AtomicOutput, SinkContext, drive
from vrrl_gpu.analysis.exporters._registry import DEFAULT_MERGE_FORMAT, FORMATS, get_format
from vrrl_gpu.analysis.exporters._rows import ProgressFn, opcode_names_of
from vrrl_gpu.errors import CapacityOverflowError, RecordValueError, VrrlIoError
from vrrl_gpu.format._reader import count_records, iter_record_chunks
from vrrl_gpu.format._sidecar import load_sidecar

__all__ = ["MergeSummary", "export_log", "merge_to", "CHUNK_RECORDS"]

#: Records read and written at a time by an export: its memory is bounded by this, not by the log.
CHUNK_RECORDS = 1 << 16


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
    """Write the log at ``path`` to ``out`` as ``fmt`` (one of ``export_formats()``); returns the records."""
    f = get_format(fmt, purpose="export")
    p = os.fspath(path)
    side = load_sidecar(p)  # once: the names and the stream table both come from it
    names = dict(side.opcode_names) if side else {}
    f.require_extra()  # refuse before creating anything
    # A bounded format (a VRRL log) is sized by the count, and a progress bar shows it as its total.
    counted = f.max_records is not None or progress is not None
    total = count_records(p, salvage=salvage) if counted else None
    target = AtomicOutput(out, force=force)
    ctx = SinkContext(
        opcode_names=names, source=p, streams=mapper_for(p, sidecar=side), total=total, sidecar=side
    )
    size = min(CHUNK_RECORDS, f.chunk_records or CHUNK_RECORDS)
    chunks = iter_record_chunks(p, salvage=salvage, chunk_records=size)
    batches = ((c, None) for c in chunks)
    return drive(target, lambda t: f.open_sink(t, ctx), batches, progress, total)


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
    fmt: str = DEFAULT_MERGE_FORMAT,
    *,
    force: bool = False,
    salvage: bool = False,
    memory_records: int = 1 << 18,
    progress: ProgressFn | None = None,
) -> MergeSummary:
    """Merge logs by timestamp into ``out`` (a format of ``merge_formats()``), streaming.

    JSON lines and Parquet rows carry ``origin`` = {index, path} of their
    input. A VRRL output has no column for it: records keep their own
    ``tenant_id``, which identifies the origin only when the inputs used
    distinct tenant ids (``shared_tenants`` says when they did not). VRRL
    output needs a first counting pass and refuses a total over 1,048,576.
    """
    f = get_format(fmt, purpose="merge")
    if not paths:
        raise RecordValueError("merge needs at least one input log")
    ps = [os.fspath(p) for p in paths]
    outp = Path(out)
    for p in ps:
        if outp.exists() and Path(p).exists() and os.path.samefile(p, outp):
            raise VrrlIoError(f"{outp}: is also an input; write the merge to another file")
    f.require_extra()
    per_origin = [opcode_names_of(p) for p in ps] if f.origin_column else []
    total: int | None = None
    shared: list[int] = []
    if not f.origin_column or f.max_records is not None:
        # A first pass: the total (a bounded format sizes its output by it) and the tenant ids seen twice.
        total = 0
        seen: dict[int, int] = {}
        for i, p in enumerate(ps):
            for chunk in iter_record_chunks(p, salvage=salvage):
                total += int(chunk.shape[0])
                for t in np.unique(chunk["tenant_id"]).tolist():
                    if seen.setdefault(t, i) != i and t not in shared:
                        shared.append(t)
        if f.max_records is not None and total > f.max_records:
            unbounded = [g.name for g in FORMATS.values() if g.merge and g.max_records is None]
            raise CapacityOverflowError(
                f"merging {len(ps)} logs gives {total:,} records, but a {f.title} holds at most "
                f"{f.max_records:,}; write {' or '.join(f'--format {n}' for n in unbounded)} instead, "
                f"or merge fewer logs"
            )
        if f.origin_column:
            shared = []
    target = AtomicOutput(out, force=force)
    ctx = SinkContext(origin_paths=ps, origin_names=per_origin, total=total)
    batches = merge_logs(ps, memory_records=memory_records, salvage=salvage)
    n = drive(target, lambda t: f.open_sink(t, ctx), batches, progress, total)
    return MergeSummary(records=n, inputs=len(ps), fmt=fmt, shared_tenants=sorted(shared))
