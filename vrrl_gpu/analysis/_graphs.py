"""Faults inside recorded CUDA graph replays, from the sidecar's ``graph_faults`` (docs/recorder.md "Graphs").

The sidecar is untrusted input: a note that is not the documented shape is left out, never guessed at.
"""

from __future__ import annotations

from typing import Any

from vrrl_gpu.format._sidecar import Sidecar

__all__ = ["graph_faults", "describe_graph_fault"]

_REPLAY_KEYS = ("stream", "slot", "graph", "replay")


def _int(v: Any) -> int | None:
    return v if type(v) is int and 0 <= v < 1 << 64 else None


def graph_faults(side: Sidecar | None) -> list[dict[str, Any]]:
    """Each well-formed note: ``{"node_slot", "node_opcode", "node_name", "replays": [{stream, slot, graph,
    replay}]}`` (``node_name`` from the sidecar's opcode names, else the opcode in hex)."""
    if side is None:
        return []
    notes = side.extra.get("graph_faults")
    if not isinstance(notes, list):
        return []
    out = []
    for n in notes:
        if not isinstance(n, dict):
            continue
        slot, op, replays = _int(n.get("node_slot")), _int(n.get("node_opcode")), n.get("replays")
        if slot is None or op is None or not isinstance(replays, list):
            continue
        clean = []
        for r in replays:
            if isinstance(r, dict) and all(_int(r.get(k)) is not None for k in _REPLAY_KEYS):
                clean.append({k: int(r[k]) for k in _REPLAY_KEYS})
        if len(clean) != len(replays):
            continue
        name = side.opcode_names.get(op, f"{op:#010x}")
        out.append({"node_slot": slot, "node_opcode": op, "node_name": name, "replays": clean})
    return out


def describe_graph_fault(note: dict[str, Any]) -> str:
    """One line: the node, and the replay it ran in (or the replays it may have run in)."""
    where = [f"replay {r['replay']} of graph {r['graph']} (stream {r['stream']})" for r in note["replays"]]
    held = where[0] if len(where) == 1 else "one of " + ", ".join(where)
    return f"{note['node_name']} (device sequence {note['node_slot']}) in {held}"
