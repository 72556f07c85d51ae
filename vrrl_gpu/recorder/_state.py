"""The per-launch and per-stream state the recorder keeps."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vrrl_gpu.backends._base import RingPointers
from vrrl_gpu.capture._staging import StagingRing
from vrrl_gpu.errors import (
    RecordValueError,
)
from vrrl_gpu.recorder._options import _U32, Words


@dataclass
class _Launch:
    slot_idx: int
    opcode: int
    words: Words
    epoch: int
    begin_seq: int
    outputs: Any = None
    end_seq: int | None = None
    captured: bool = False  # recorded into a CUDA graph: the device claims each replay's sequence


@dataclass
class _StreamState:
    key: int
    stream: Any
    ring: StagingRing
    ptrs: RingPointers
    release: Callable[[bool], None]
    launches: deque[_Launch]
    by_seq: dict[int, _Launch] = field(default_factory=dict)
    next_seq: int = 0
    outstanding: bool = False


def _words(words: Sequence[int] | None) -> Words:
    w = tuple(int(x) for x in (words or (0, 0, 0, 0)))
    if len(w) != 4 or any(not 0 <= x <= _U32 for x in w):
        raise RecordValueError(f"words must be 4 integers in 0 ..= {_U32}, got {words!r}")
    return (w[0], w[1], w[2], w[3])
