"""The dump and export columns, and the row builder shared by ``dump`` and the exporters."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.format._layout import FailureClass, SlotStatus
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._sidecar import load_sidecar, opcode_label

__all__ = [
    "DUMP_FIELDS",
    "ROW_FIELDS",
    "ProgressFn",
    "opcode_names_of",
    "record_rows",
]


#: The columns of ``vrrl dump --json``/``--csv``: the format's field names, the class name, then the stream
#: (from the sidecar's stream table; None when not known).
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
    "stream",
)

#: Columns of JSON lines / CSV / Parquet rows: ``vrrl dump --json``'s, then the names we know.
ROW_FIELDS = (*DUMP_FIELDS, "slot_status_name", "opcode_name")

#: ``progress(records_done, total_or_None)``, called after each written batch.
ProgressFn = Callable[[int, "int | None"], None]


def opcode_names_of(path: str | os.PathLike[str]) -> dict[int, str]:
    """The opcode names in the log's sidecar: {} when it has none, or (with a warning) a damaged one."""
    side = load_sidecar(path)
    return dict(side.opcode_names) if side else {}


def record_rows(
    records: Records,
    *,
    opcode_names: Mapping[int, str] | None = None,
    origin: npt.NDArray[np.int32] | None = None,
    origin_paths: Sequence[str] = (),
    origin_names: Sequence[Mapping[int, str]] = (),
    streams: npt.NDArray[np.int32] | None = None,
) -> Iterator[dict[str, Any]]:
    """One JSON-ready dict per record (:data:`ROW_FIELDS`, plus ``origin`` for merged rows).

    ``opcode_name`` is the sidecar's name, or None when the opcode has none (a
    meta-opcode gets its ``<gap>``-style label). With ``origin``, each row's
    names come from ``origin_names[origin[i]]``. ``streams``: each record's
    stream (-1: not known, written as None), e.g. from a ``StreamMapper``.
    """
    cols = {n: records[n].tolist() for n in records.dtype.names or () if n != "magic"}
    org = origin.tolist() if origin is not None else None
    strm = streams.tolist() if streams is not None else [-1] * int(records.shape[0])
    class_label = {v: FailureClass(v).label for v in set(cols["failure_class"])}
    status_name = {v: SlotStatus.label_of(v) for v in set(cols["slot_status"])}
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
            "stream": strm[i] if strm[i] >= 0 else None,
            "slot_status_name": status_name[cols["slot_status"][i]],
            "opcode_name": name,
        }
        if org is not None:
            row["origin"] = {"index": org[i], "path": origin_paths[org[i]] if origin_paths else ""}
        yield row
