"""``merge_logs``: a k-way merge of several logs by timestamp."""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from vrrl_gpu.format._layout import (
    RECORD_DTYPE,
)
from vrrl_gpu.format._reader import Records, iter_record_chunks

__all__ = ["merge_logs"]


def merge_logs(
    paths: Sequence[str | os.PathLike[str]],
    *,
    batch_records: int = 1 << 14,
    memory_records: int = 1 << 18,
    salvage: bool = False,
) -> Iterator[tuple[Records, npt.NDArray[np.int32]]]:
    """Merge logs into one timeline: yields (records, origin index) batches, by timestamp.

    A k-way merge (:func:`heapq.merge`) over one chunked reader per log: at
    most about ``memory_records`` records are held across all readers (each
    reads ``memory_records // len(paths)`` slots at a time, at least 16), plus
    one output batch. Each log is taken in its publish order; ties and logs
    whose timestamps go backwards keep that order, ties between logs go to the
    lower input index.
    """
    if not paths:
        return
    per_log = max(16, min(1 << 16, memory_records // len(paths)))

    def keyed(i: int, p: str | os.PathLike[str]) -> Iterator[tuple[int, int, int, Records, int]]:
        pos = 0
        for chunk in iter_record_chunks(p, chunk_records=per_log, salvage=salvage):
            for j, ts in enumerate(chunk["timestamp_ns"].tolist()):
                yield ts, i, pos, chunk, j
                pos += 1

    out = np.empty(batch_records, RECORD_DTYPE)
    origin = np.empty(batch_records, np.int32)
    k = 0
    for _ts, i, _pos, chunk, j in heapq.merge(*(keyed(i, p) for i, p in enumerate(paths))):
        out[k] = chunk[j]
        origin[k] = i
        k += 1
        if k == batch_records:
            yield out.copy(), origin.copy()
            k = 0
    if k:
        yield out[:k].copy(), origin[:k].copy()
