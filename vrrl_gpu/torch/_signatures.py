"""What ``record_ops`` keeps per recorder: opcodes of aten ops, the dtype codes, and the table of call
signatures (arguments' shapes, dtypes and scalars) that replay regenerates inputs from (the sidecar's
``extra.torch``)."""

from __future__ import annotations

import math
import threading
import time
import weakref
from typing import Any

import torch

from vrrl_gpu.recorder._recorder import Recorder

__all__ = ["DTYPE_CODES", "NO_TENSOR", "SIDECAR_KEY", "CONVENTION", "OpTable", "table_of", "describe"]

#: The sidecar key of the table (``extra["torch"]``) and the words convention it documents.
SIDECAR_KEY = "torch"
CONVENTION = 1
#: dtype codes of the words (docs/pytorch.md): stable, never renumbered. 0 unknown.
_DTYPE_NAMES = (
    "float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool",
    "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64", "complex32",
    "float8_e4m3fnuz", "float8_e5m2fnuz",
)  # fmt: skip
DTYPE_CODES: dict[torch.dtype, int] = {
    getattr(torch, n): i
    for i, n in enumerate(_DTYPE_NAMES, 1)
    if isinstance(getattr(torch, n, None), torch.dtype)  # older releases lack some of them
}
#: The dtype code when the op has no tensor argument (a factory such as ``aten::zeros``).
NO_TENSOR = 0xFF
#: At most this many distinct signatures per recorder; later ones get signature 0 (not replayable).
MAX_SIGNATURES = 4096
#: Integer and bool CPU tensors up to this many elements keep their values in the signature (an index
#: tensor's values decide whether the op faults). Device tensors never: reading them would wait for the GPU.
VALUES_UP_TO = 16
#: At most one sidecar write per this many seconds while new signatures appear (and one at the end).
_WRITE_INTERVAL_S = 0.25

_INT_KINDS = frozenset(d for d in DTYPE_CODES if not d.is_floating_point and not d.is_complex)


def _scalar(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return {"int": v}
    if isinstance(v, float):
        return {"float": v if math.isfinite(v) else repr(v)}
    if isinstance(v, complex):
        return {"complex": [repr(v.real), repr(v.imag)]}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": v.type}
    if isinstance(v, torch.layout):
        return {"layout": str(v).removeprefix("torch.")}
    if isinstance(v, torch.memory_format):
        return {"memory_format": str(v).removeprefix("torch.")}
    return {"opaque": type(v).__name__}


def describe(v: Any) -> Any:
    """One argument as JSON: a tensor's shape, dtype and device (and small CPU integer values), a scalar
    tagged with its type, a list of either; ``{"opaque": type}`` for what replay cannot rebuild."""
    if isinstance(v, torch.Tensor):
        d: dict[str, Any] = {"tensor": list(v.shape), "dtype": str(v.dtype).removeprefix("torch."),
                             "device": v.device.type}  # fmt: skip
        if v.device.type == "cpu" and v.dtype in _INT_KINDS and v.numel() <= VALUES_UP_TO:
            d["values"] = v.reshape(-1).tolist()
        return d
    if isinstance(v, (list, tuple)):
        return {"list": [describe(x) for x in v]}
    return _scalar(v)


def _key(v: Any) -> Any:
    """A hashable stand-in of :func:`describe` (the per-op look-up; describe runs once per new key)."""
    if isinstance(v, torch.Tensor):
        dtype = v.dtype
        if v.is_cpu and dtype in _INT_KINDS and v.numel() <= VALUES_UP_TO:
            return (v.shape, dtype, True, tuple(v.reshape(-1).tolist()))
        return (v.shape, dtype, v.is_cpu or v.device)
    if isinstance(v, (list, tuple)):
        return tuple(_key(x) for x in v)
    if isinstance(v, float) and math.isnan(v):
        return "nan"  # nan != nan: one key for all of them
    return (type(v), v) if isinstance(v, (int, float, bool, str, complex, type(None))) else (type(v), repr(v))


class OpTable:
    """Per recorder: the opcode of each aten op and the signatures of its calls, written to the sidecar."""

    def __init__(self, rec: Recorder) -> None:
        self._rec = weakref.ref(rec)
        self.lock = threading.Lock()
        self.opcodes: dict[Any, tuple[int, bool]] = {}
        self.signatures: list[dict[str, Any]] = []
        self._by_key: dict[Any, int] = {}
        self._dirty = False
        self._written = 0.0
        # record_ops modes open on this recorder, per thread (dispatch modes are per thread): a nested
        # one on the same recorder and thread records nothing.
        self._depth = threading.local()

    def enter(self) -> bool:
        """A mode opens on the calling thread; True when it is the outermost there (the one that records)."""
        d = getattr(self._depth, "n", 0) + 1
        self._depth.n = d
        return d == 1

    def leave(self) -> None:
        self._depth.n = getattr(self._depth, "n", 1) - 1

    def opcode(self, func: Any) -> tuple[int, bool]:
        got = self.opcodes.get(func)
        if got is None:
            rec = self._rec()
            assert rec is not None
            name = str(func.name())  # "aten::add_.Tensor"
            base = name.split("::", 1)[-1].split(".", 1)[0]
            got = self.opcodes[func] = (rec.opcode(name), base.endswith("_") and not base.endswith("__"))
        return got

    def signature(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        """The 1-based index of this call's signature (0: the table is full)."""
        key: Any = (func, *[_key(a) for a in args], *[(k, _key(v)) for k, v in kwargs.items()])
        try:
            found = self._by_key.get(key)
        except TypeError:  # an unhashable argument nobody anticipated: describe it, never fail the op
            found, key = None, None
        if found is not None:
            return found
        with self.lock:
            if len(self.signatures) >= MAX_SIGNATURES:
                return 0
            self.signatures.append({
                "op": str(func.name()),
                "args": [describe(a) for a in args],
                "kwargs": {k: describe(v) for k, v in kwargs.items()},
            })
            idx = len(self.signatures)
            if key is not None:
                self._by_key[key] = idx
            self._dirty = True
        if time.monotonic() - self._written >= _WRITE_INTERVAL_S:
            self.flush()
        return idx

    def flush(self) -> None:
        """Write the table into the sidecar (best effort, as every sidecar write)."""
        rec = self._rec()
        if rec is None or not self._dirty:
            return
        with self.lock:
            self._dirty = False
            self._written = time.monotonic()
            entry = {"convention": CONVENTION, "signatures": list(self.signatures)}
        # The recorder's sidecar holds this table beside its own keys; its lock orders the writes.
        with rec._sidecar_lock:
            rec._sidecar.extra[SIDECAR_KEY] = entry
            rec._save_sidecar()


_TABLES: weakref.WeakKeyDictionary[Recorder, OpTable] = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def table_of(rec: Recorder) -> OpTable:
    """The one table of ``rec`` (shared by every record_ops mode on it)."""
    with _TABLES_LOCK:
        t = _TABLES.get(rec)
        if t is None:
            t = _TABLES[rec] = OpTable(rec)
        return t
