"""The one home of the row columns: their names, and each batch's columns with the names resolved.

``vrrl dump --json`` and ``export jsonl`` write :data:`ROW_FIELDS` (plus ``origin`` for a merge), CSV writes
:data:`CSV_FIELDS` (``args`` split into ``arg0..arg3``), Parquet the same columns with Arrow types.
:func:`row_columns` builds a batch's columns with numpy: the names (opcode, status, class) are looked up
once per distinct value (:class:`LabelCache`) and picked per row by index.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.format._layout import META_OPCODE_BASE, FailureClass, SlotStatus
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._sidecar import load_sidecar, opcode_label

__all__ = [
    "ROW_FIELDS",
    "DUMP_FIELDS",
    "CSV_FIELDS",
    "NUMBER_FIELDS",
    "NAME_FIELDS",
    "ProgressFn",
    "Labels",
    "LabelCache",
    "RowColumns",
    "RowBuilder",
    "opcode_names_of",
    "record_rows",
]

#: The format's fields in ``RECORD_DTYPE`` order (``magic`` left out), all numbers but ``args`` (4 words).
NUMBER_FIELDS = (
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
)
#: The names resolved for each row (None where there is none: an unnamed opcode, an unknown stream).
NAME_FIELDS = ("failure_class_name", "stream", "slot_status_name", "opcode_name")

#: Columns of JSON lines (``vrrl dump --json`` and ``vrrl export --format jsonl``) and Parquet, in order;
#: a merge adds ``origin`` = {index, path}.
ROW_FIELDS = (*NUMBER_FIELDS, *NAME_FIELDS)
#: ``vrrl dump --json``'s fields: the same as ``export jsonl``.
DUMP_FIELDS = ROW_FIELDS
#: CSV columns: :data:`ROW_FIELDS` with ``args`` as four columns.
CSV_FIELDS = tuple(c for f in ROW_FIELDS for c in ((f"arg{i}" for i in range(4)) if f == "args" else (f,)))

#: ``progress(records_done, total_or_None)``, called after each written batch.
ProgressFn = Callable[[int, "int | None"], None]


def opcode_names_of(path: str | os.PathLike[str]) -> dict[int, str]:
    """The opcode names in the log's sidecar: {} when it has none, or (with a warning) a damaged one."""
    side = load_sidecar(path)
    return dict(side.opcode_names) if side else {}


@dataclass(frozen=True)
class Labels:
    """A text column as indices into its distinct values (``values[idx[i]]`` is row i's)."""

    idx: npt.NDArray[np.intp]
    values: tuple[str | None, ...]

    def column(self) -> list[str | None]:
        return [self.values[i] for i in self.idx.tolist()]


class LabelCache:
    """Labels of u64 keys through ``label(key)``, called once per distinct key over every batch."""

    def __init__(self, label: Callable[[int], str | None]) -> None:
        self._label = label
        self._keys = np.zeros(0, np.uint64)
        self._values: tuple[str | None, ...] = ()

    def __call__(self, keys: npt.NDArray[np.integer]) -> Labels:
        k = np.asarray(keys).astype(np.uint64)
        pos = np.searchsorted(self._keys, k)
        found = pos < self._keys.shape[0]
        found[found] = self._keys[pos[found]] == k[found]
        if not found.all():
            new = np.unique(k[~found])
            merged = np.union1d(self._keys, new)
            known = dict(zip(self._keys.tolist(), self._values, strict=True))
            self._values = tuple(known[x] if x in known else self._label(x) for x in merged.tolist())
            self._keys = merged
            pos = np.searchsorted(self._keys, k)
        return Labels(pos.astype(np.intp), self._values)


@dataclass(frozen=True)
class RowColumns:
    """One batch's columns: the records' own fields, the stream (-1: not known), the names, the origin."""

    records: Records
    stream: npt.NDArray[np.int32]
    opcode_name: Labels
    slot_status_name: Labels
    failure_class_name: Labels
    origin: npt.NDArray[np.int32] | None

    @property
    def n(self) -> int:
        return int(self.records.shape[0])


def _opcode_name(names: Mapping[int, str] | None, op: int) -> str | None:
    name = names.get(op) if names else None
    return opcode_label(op) if name is None and op >= META_OPCODE_BASE else name


def _class_name(v: int) -> str:
    return FailureClass(v).label  # unknown values decode as Unclassified, as in the format


class RowBuilder:
    """Builds :class:`RowColumns` batch after batch, with the names of an export or a merge.

    ``opcode_names``: the log's (an export). ``origin_names``: each merged input's, picked by ``origin``.
    """

    def __init__(
        self,
        *,
        opcode_names: Mapping[int, str] | None = None,
        origin_names: Sequence[Mapping[int, str]] = (),
    ) -> None:
        per = list(origin_names)
        if per:
            self._opcodes = LabelCache(lambda key: _opcode_name(per[key >> 32], key & 0xFFFFFFFF))
        else:
            self._opcodes = LabelCache(lambda key: _opcode_name(opcode_names, key))
        self._per_origin = bool(per)
        self._status = LabelCache(SlotStatus.label_of)
        self._class = LabelCache(_class_name)

    def __call__(
        self,
        records: Records,
        *,
        streams: npt.NDArray[np.int32] | None = None,
        origin: npt.NDArray[np.int32] | None = None,
    ) -> RowColumns:
        n = int(records.shape[0])
        ops = records["opcode"].astype(np.uint64)
        if self._per_origin and origin is not None:
            ops |= np.asarray(origin).astype(np.uint64) << np.uint64(32)
        return RowColumns(
            records=records,
            stream=streams if streams is not None else np.full(n, -1, np.int32),
            opcode_name=self._opcodes(ops),
            slot_status_name=self._status(records["slot_status"]),
            failure_class_name=self._class(records["failure_class"]),
            origin=origin,
        )


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

    For a few records (``tail``, tests); the exporters write the same fields from :func:`RowBuilder`'s
    columns without a dict per row. ``opcode_name`` is the sidecar's name, or None when the opcode has
    none (a meta-opcode gets its ``<gap>``-style label); ``stream`` is None when not known.
    """
    cols = RowBuilder(opcode_names=opcode_names, origin_names=origin_names)(
        records, streams=streams, origin=origin
    )
    values = {n: records[n].tolist() for n in NUMBER_FIELDS}
    names = {
        "failure_class_name": cols.failure_class_name.column(),
        "stream": [s if s >= 0 else None for s in cols.stream.tolist()],
        "slot_status_name": cols.slot_status_name.column(),
        "opcode_name": cols.opcode_name.column(),
    }
    org = origin.tolist() if origin is not None else None
    for i in range(cols.n):
        row: dict[str, Any] = {f: values[f][i] for f in NUMBER_FIELDS}
        for f in NAME_FIELDS:
            row[f] = names[f][i]
        if org is not None:
            row["origin"] = {"index": org[i], "path": origin_paths[org[i]] if origin_paths else ""}
        yield row
