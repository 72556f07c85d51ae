"""A VRRL v1 log: the merge's default output (its records keep their own ``tenant_id``; no origin column)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters._output import Sink, SinkContext
from vrrl_gpu.errors import VrrlIoError
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._ringlog import RingLog

__all__ = ["VrrlSink"]


class VrrlSink(Sink):
    def __init__(self, path: Path, ctx: SinkContext) -> None:
        if (os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode)) or str(path) == "/dev/stdout":
            # Never unlink a device or FIFO; a VRRL log is written in place and so needs a regular file.
            raise VrrlIoError(
                f"{path}: a VRRL output must be a regular file (it is written in place, not streamed)"
            )
        path.unlink(missing_ok=True)  # RingLog.create wants a fresh name; the temp name is ours
        self._log = RingLog.create(path, max(1, ctx.total or 0))

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        self._log.extend(records)

    def finish(self) -> None:
        self._log.sync()

    def close(self) -> None:
        self._log.close()
