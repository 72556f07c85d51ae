"""Shared helpers of the Recorder tests (imported by test modules; not a conftest)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu import Recorder, RingLog, SlotStatus

#: --fault-kind → (the demo kernel's fault_kind, the CUDA code it raises on the twin and on a GPU).
KERNEL_FAULTS = {"illegal-address": (1, 700), "trap": (2, 719), "assert": (3, 710)}
N = 64  # elements of each axpy launch: one block of 64 threads


def log_records(path: str | os.PathLike[str]) -> npt.NDArray[np.void]:
    """Every record of a (closed) log, in publish order."""
    with RingLog.open(path, readonly=True) as log:
        return log.records()


def with_status(recs: npt.NDArray[np.void], *statuses: SlotStatus) -> npt.NDArray[np.void]:
    mask = np.isin(recs["slot_status"], [int(s) for s in statuses])
    return recs[mask]


def failures(recs: npt.NDArray[np.void]) -> list[tuple[int, int, int, int]]:
    """(slot_idx, slot_status, failure_class, code) of every FAILED_AT_LAUNCH / FAULTED / HUNG record."""
    sel = with_status(recs, SlotStatus.FAILED_AT_LAUNCH, SlotStatus.FAULTED, SlotStatus.HUNG)
    return [
        (int(r["slot_idx"]), int(r["slot_status"]), int(r["failure_class"]), int(r["backend_error_code"]))
        for r in sel
    ]


@dataclass
class Axpy:
    """The demo's axpy kernel and its buffers, launched through a recorder; words (i, fault_kind, tag, 0)."""

    rec: Recorder
    kernel: Any
    x: Any
    y: Any
    opcode: int

    @classmethod
    def on(cls, rec: Recorder) -> Axpy:
        b = rec.backend
        return cls(
            rec=rec,
            kernel=b.load("vrrl_demo.cu", "vrrl_demo_axpy"),
            x=b.alloc_device(4 * N),
            y=b.alloc_device(4 * N),
            opcode=rec.opcode("axpy"),
        )

    def launch(
        self, i: int, *, fault: int = 0, stream: Any = None, tag: int = 0, block: int = N, via: str = "launch"
    ) -> None:
        """``rec.launch`` (``via="slot"``: an unrecorded launch inside ``rec.slot``, the same records)."""
        args = (self.y, self.x, 1.0, N, fault)
        if via == "slot":
            with self.rec.slot(self.opcode, (i, fault, tag, 0), stream=stream):
                self.rec.backend.launch(self.kernel, 1, block, args, stream=stream)
            return
        words = (i, fault, tag, 0)
        self.rec.launch(self.kernel, 1, block, args, opcode=self.opcode, words=words, stream=stream)


class Hold:
    """A vrrl_demo_wait launch that keeps its stream busy until released (a flag in mapped host memory)."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.flag = rec.backend.alloc_pinned(64)
        self.flag.host[:] = 0  # pinned memory is not zeroed on a GPU
        self.kernel = rec.backend.load("vrrl_demo.cu", "vrrl_demo_wait")
        self.opcode = rec.opcode("wait")

    def launch(self, i: int, stream: Any = None) -> None:
        self.rec.launch(
            self.kernel, 1, 1, (self.flag.device_ptr, 30 * 10**9), opcode=self.opcode, words=(i, 0, 0, 0),
            stream=stream,
        )  # fmt: skip

    def release(self) -> None:
        self.flag.host[:4].view(np.uint32)[0] = 1


def sidecar_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".json")


@contextlib.contextmanager
def recorders(tmp_path: Path, **defaults: Any) -> Iterator[Callable[..., Recorder]]:
    """A factory of Recorders on ``device`` (twin by default; cupy skips without a GPU), each with its own log
    in ``tmp_path`` and ``defaults`` under the caller's options; closed with their backends at exit."""
    from tests.helpers.gpu import require_gpu_or_skip

    made: list[Recorder] = []

    def make(device: str = "twin", **kw: Any) -> Recorder:
        if device == "cupy":
            require_gpu_or_skip()
        rec = Recorder(tmp_path / f"run{len(made)}.vrrl", device=device, **{**defaults, **kw})
        made.append(rec)
        return rec

    try:
        yield make
    finally:
        for rec in made:
            with contextlib.suppress(Exception):
                rec.close()
            rec.backend.close()  # on the twin this also stops a spinning kernel
