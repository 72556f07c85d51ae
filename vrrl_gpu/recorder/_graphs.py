"""Recorded CUDA graph replays: each one numbered, and a fault inside one attributed to its node and replay.

A graph's captured breadcrumbs are frozen at capture (docs/recorder.md, "Graphs"): their device-claimed
sequences tell the replays' records apart, but not which replay a record belongs to. A *recorded replay*
(:meth:`Recorder.graph_replay`, :meth:`Recorder.launch_graph`) adds a host-sequenced begin (and end)
breadcrumb around the graph launch on its stream, with the words ``(replay, graph, 0, 0)``: replay is the
graph's own count from 0, graph the recorder's number for the graph object. At a fault the stream's crash
window then names the replay that had begun and not ended, and the device-sequenced ring's newest begin
names the node inside it (:func:`resolve`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.format._layout import SlotStatus
from vrrl_gpu.recorder._state import _Launch, _StreamState

__all__ = ["GraphReplays", "GraphCulprit", "resolve"]

#: Graph objects whose replay counts are kept by ``id`` (objects without weak references): bounded.
_MAX_BY_ID = 4096


class GraphReplays:
    """Each graph object's number and replay count, and the opcodes that mark recorded replays."""

    def __init__(self) -> None:
        self.opcodes: set[int] = set()
        self._weak: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()
        # CuPy's Graph is a Cython class without __weakref__. Holding it would keep its device memory alive,
        # so it is known by its id and its CUDA handles (graphExec, graph): a new graph is taken for an old
        # one only when all three were reused (bounded; the oldest are forgotten first).
        self._by_id: dict[tuple[int, Any, Any], list[int]] = {}
        self._next_graph = 0

    def next_replay(self, graph: Any) -> tuple[int, int]:
        """``(graph number, replay number)`` for a new replay of ``graph``."""
        try:
            entry = self._weak.get(graph)
            if entry is None:
                entry = self._weak[graph] = [self._new_number(), 0]
        except TypeError:
            key = (id(graph), _handle(graph, "graphExec"), _handle(graph, "graph"))
            entry = self._by_id.get(key)
            if entry is None:
                if len(self._by_id) >= _MAX_BY_ID:
                    del self._by_id[next(iter(self._by_id))]
                entry = self._by_id[key] = [self._new_number(), 0]
        replay = entry[1]
        entry[1] = replay + 1
        return entry[0], replay

    def _new_number(self) -> int:
        n = self._next_graph
        self._next_graph = n + 1
        return n


def _handle(graph: Any, name: str) -> Any:
    v = getattr(graph, name, None)
    return v if isinstance(v, (int, str, bytes)) or v is None else id(v)


@dataclass(frozen=True)
class GraphCulprit:
    """A stream whose crash window is a recorded graph replay: the replay, and when its begin arrived."""

    stream: _StreamState
    launch: _Launch
    begin_ns: int


def resolve(
    graphs: list[GraphCulprit],
    newest_device: npt.NDArray[np.void] | None,
    newer_than: int,
    *,
    instrumented: bool,
) -> tuple[bool, list[GraphCulprit], list[GraphCulprit]]:
    """Which node and which replays a fault belongs to.

    ``newest_device``: the device-sequenced ring's newest record (one element), or None. It names the node
    that was running when it is a begin no older than ``newer_than`` (a blamed plain launch's newest
    breadcrumb: that launch came later). A replay that began after it cannot hold it (the node ran in an
    earlier replay on that stream, which had ended): with no replay before it the node is blamed only when
    instrumented launches were in flight (it may be one of theirs). Returns ``(node_blamed, holders,
    others)``: the replays that began before the node (one: the node's replay; more: streams replaying at
    once, any of them), and those the node cannot belong to (blamed themselves, node unknown).
    """
    if newest_device is None:
        return False, [], graphs
    r = newest_device[0]
    ts = int(r["timestamp_ns"])
    if int(r["slot_status"]) != SlotStatus.BEGIN or ts < newer_than:
        return False, [], graphs
    holders = [g for g in graphs if g.begin_ns <= ts]
    others = [g for g in graphs if g.begin_ns > ts]
    return bool(holders) or not graphs or instrumented, holders, others
