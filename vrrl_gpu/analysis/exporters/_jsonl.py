"""JSON lines: one object per record (the columns of ``vrrl dump --json``, the names, a merge's origin)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters._output import Sink, SinkContext
from vrrl_gpu.analysis.exporters._rows import record_rows
from vrrl_gpu.format._reader import Records

__all__ = ["JsonlSink"]


class JsonlSink(Sink):
    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._f = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._ctx = ctx

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        buf = io.StringIO()
        for row in record_rows(
            records,
            opcode_names=self._ctx.opcode_names,
            origin=origin,
            origin_paths=self._ctx.origin_paths or (),
            origin_names=self._ctx.origin_names,
            streams=self._ctx.streams(records) if self._ctx.streams is not None else None,
        ):
            buf.write(json.dumps(row))
            buf.write("\n")
        self._f.write(buf.getvalue())

    def close(self) -> None:
        self._f.close()
