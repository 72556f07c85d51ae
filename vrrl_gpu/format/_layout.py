"""The VRRL v1 layout: header, the 64-byte record dtype, and the words vrrl_gpu puts in its fields.

``RECORD_DTYPE`` is the single source of the record layout. The C struct in
``kernels/vrrl_record.cuh`` mirrors it (with a ``static_assert``), and a test
compares the two field by field.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from vrrl_gpu.errors import CapacityOverflowError, RecordValueError, ZeroCapacityError

__all__ = [
    "FILE_MAGIC",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "RECORD_SIZE",
    "RECORD_MAGIC",
    "MAX_CAPACITY",
    "HEADER_DTYPE",
    "RECORD_DTYPE",
    "FailureClass",
    "SlotStatus",
    "MetaOpcode",
    "META_OPCODE_BASE",
    "UNKNOWN_SLOT",
    "Record",
    "as_record_array",
    "check_capacity",
    "file_size_for",
]

FILE_MAGIC = b"VRRL0001"
FORMAT_VERSION = 1
HEADER_SIZE = 32
RECORD_SIZE = 64
RECORD_MAGIC = 0xDEADBEEF
MAX_CAPACITY = 1 << 20

HEADER_DTYPE = np.dtype(
    [("magic", "S8"), ("version", "<u4"), ("flags", "<u4"), ("capacity", "<u8"), ("cursor", "<u8")],
    align=False,
)

#: The 64-byte VRRL v1 record, packed (``timestamp_ns`` sits at offset 4).
RECORD_DTYPE = np.dtype(
    [
        ("magic", "<u4"),
        ("timestamp_ns", "<u8"),
        ("slot_idx", "<u4"),
        ("tenant_id", "<u4"),
        ("opcode", "<u4"),
        ("args", "<u4", (4,)),
        ("epoch", "<u4"),
        ("slot_status", "<u4"),
        ("failure_class", "<u4"),
        ("backend_error_code", "<u4"),
        ("output_digest", "<u8"),
    ],
    align=False,
)

if HEADER_DTYPE.itemsize != HEADER_SIZE or RECORD_DTYPE.itemsize != RECORD_SIZE:  # pragma: no cover
    raise AssertionError("VRRL layout constants disagree with the dtypes")

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


class FailureClass(enum.IntEnum):
    """The format's ``failure_class`` word. Unknown values decode as ``UNCLASSIFIED``."""

    NONE = 0
    DEVICE_LOSS = 1
    TRANSIENT_QUEUE = 2
    PROGRAM_BUG = 3
    UNCLASSIFIED = 4

    @classmethod
    def _missing_(cls, value: object) -> FailureClass:
        if isinstance(value, int) and not isinstance(value, bool):
            return cls.UNCLASSIFIED
        return None  # type: ignore[return-value]  # enum then raises its own ValueError

    @property
    def label(self) -> str:
        """The name the format uses: None, DeviceLoss, TransientQueue, ProgramBug or Unclassified.

        >>> FailureClass.DEVICE_LOSS.label
        'DeviceLoss'
        """
        return _CLASS_LABELS[self]


_CLASS_LABELS = {
    FailureClass.NONE: "None",
    FailureClass.DEVICE_LOSS: "DeviceLoss",
    FailureClass.TRANSIENT_QUEUE: "TransientQueue",
    FailureClass.PROGRAM_BUG: "ProgramBug",
    FailureClass.UNCLASSIFIED: "Unclassified",
}


class SlotStatus(enum.IntEnum):
    """*(vrrl_gpu)* What the ``slot_status`` word means in logs we write (see docs/recorder.md).

    ``BEGIN`` (0) is the plain device breadcrumb: all four evidence words zero,
    so a VRRL v1 reader sees a record without evidence. Every other value makes
    the record one "with evidence" in the format's sense. Values we do not
    know are kept as plain integers by readers.
    """

    BEGIN = 0
    COMPLETED = 1
    FAILED_AT_LAUNCH = 2
    FAULTED = 3
    HUNG = 4
    PUBLISHED = 5
    DEVICE_CLAIMED = 6
    DEVICE_REPORTED = 7
    META = 8

    @property
    def label(self) -> str:
        """The lower-case name that logs' readers, exports and reports show.

        >>> SlotStatus.FAILED_AT_LAUNCH.label
        'failed_at_launch'
        """
        return self.name.lower()

    @classmethod
    def label_of(cls, value: int) -> str:
        """The label of a ``slot_status`` word, or the number itself for a value this version lacks."""
        member = cls._value2member_map_.get(int(value))
        return member.label if isinstance(member, SlotStatus) else str(int(value))


#: *(vrrl_gpu)* Opcodes from here up are reserved for recorder meta-records.
META_OPCODE_BASE = 0xFFFFFF00

#: *(vrrl_gpu)* ``slot_idx`` of failure evidence whose launch is not known (the recorder's launch counter
#: never takes this value): a FAULTED or HUNG record for a stream whose crash window could not be resolved.
UNKNOWN_SLOT = 0xFFFFFFFF


class MetaOpcode(enum.IntEnum):
    """*(vrrl_gpu)* Reserved opcodes of meta-records (slot_status ``META``).

    ``GAP``: records lost because the producer lapped the drain; ``args`` =
    (first lost sequence low, high, count low, high). ``CALIBRATION``: host
    and device clocks compared; ``args`` = (offset ns low, high, 0, 0).
    ``RECOVERED``: the records after it were drained from a dead process's
    staging segment; ``args`` = (pid, count low, count high, 0).
    ``SESSION_START``: a recorder opened the log; ``args`` = (pid, 0, 0, 0).
    """

    GAP = 0xFFFFFF01
    CALIBRATION = 0xFFFFFF02
    RECOVERED = 0xFFFFFF03
    SESSION_START = 0xFFFFFF04
    SESSION_END = 0xFFFFFF05


def check_capacity(capacity: int) -> int:
    """Validate a capacity as the format does; return it as an int."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
        raise RecordValueError(f"capacity must be an integer, got {capacity!r}")
    capacity = int(capacity)
    if capacity <= 0:
        raise ZeroCapacityError(
            f"capacity must be 1 ..= {MAX_CAPACITY:,} record slots, got {capacity}; ask for at least 1"
        )
    if capacity > MAX_CAPACITY:
        raise CapacityOverflowError(
            f"capacity must be 1 ..= {MAX_CAPACITY:,} record slots, got {capacity:,}; "
            f"VRRL v1 cannot hold more, so split the log or keep fewer records"
        )
    return capacity


def file_size_for(capacity: int) -> int:
    """The full length of a log with ``capacity`` slots."""
    return HEADER_SIZE + RECORD_SIZE * capacity


def _check_uint(name: str, value: object, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise RecordValueError(f"record field {name} must be an integer, got {value!r}")
    v = int(value)
    if not 0 <= v <= limit:
        raise RecordValueError(f"record field {name} must be 0 ..= {limit}, got {v}")
    return v


@dataclass(frozen=True, slots=True)
class Record:
    """One VRRL v1 record, by the format's field names (``magic`` is implied).

    >>> r = Record(timestamp_ns=1, slot_idx=2, tenant_id=0, opcode=7, args=(1, 2, 3, 4), epoch=0)
    >>> r.has_evidence
    False
    """

    timestamp_ns: int
    slot_idx: int
    tenant_id: int
    opcode: int
    args: tuple[int, int, int, int]
    epoch: int
    slot_status: int = 0
    failure_class: FailureClass = FailureClass.NONE
    backend_error_code: int = 0
    output_digest: int = 0

    def __post_init__(self) -> None:
        _check_uint("timestamp_ns", self.timestamp_ns, _U64)
        for name in ("slot_idx", "tenant_id", "opcode", "epoch", "slot_status", "backend_error_code"):
            _check_uint(name, getattr(self, name), _U32)
        _check_uint("output_digest", self.output_digest, _U64)
        args = tuple(self.args)
        if len(args) != 4:
            raise RecordValueError(f"record field args must hold 4 words, got {len(args)}")
        object.__setattr__(self, "args", tuple(_check_uint("args", a, _U32) for a in args))
        fc = _check_uint("failure_class", self.failure_class, _U32)
        object.__setattr__(self, "failure_class", FailureClass(fc))

    @property
    def has_evidence(self) -> bool:
        """True when any of the four evidence words is non-zero (the format's definition)."""
        return bool(self.slot_status or self.failure_class or self.backend_error_code or self.output_digest)

    @classmethod
    def from_row(cls, row: np.void) -> Record:
        """Build from one element of a ``RECORD_DTYPE`` array."""
        a = row["args"]
        return cls(
            timestamp_ns=int(row["timestamp_ns"]),
            slot_idx=int(row["slot_idx"]),
            tenant_id=int(row["tenant_id"]),
            opcode=int(row["opcode"]),
            args=(int(a[0]), int(a[1]), int(a[2]), int(a[3])),
            epoch=int(row["epoch"]),
            slot_status=int(row["slot_status"]),
            failure_class=FailureClass(int(row["failure_class"])),
            backend_error_code=int(row["backend_error_code"]),
            output_digest=int(row["output_digest"]),
        )

    def to_tuple(self) -> tuple[Any, ...]:
        """The record as a ``RECORD_DTYPE`` tuple, magic included."""
        return (
            RECORD_MAGIC,
            self.timestamp_ns,
            self.slot_idx,
            self.tenant_id,
            self.opcode,
            self.args,
            self.epoch,
            self.slot_status,
            int(self.failure_class),
            self.backend_error_code,
            self.output_digest,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-lines form: the format's field names, ``failure_class`` as its number."""
        return {
            "timestamp_ns": self.timestamp_ns,
            "slot_idx": self.slot_idx,
            "tenant_id": self.tenant_id,
            "opcode": self.opcode,
            "args": list(self.args),
            "epoch": self.epoch,
            "slot_status": self.slot_status,
            "failure_class": int(self.failure_class),
            "backend_error_code": self.backend_error_code,
            "output_digest": self.output_digest,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        """Inverse of :meth:`to_dict`; extra keys (``failure_class_name``) are ignored."""
        try:
            return cls(
                timestamp_ns=d["timestamp_ns"],
                slot_idx=d["slot_idx"],
                tenant_id=d["tenant_id"],
                opcode=d["opcode"],
                args=tuple(d["args"]),  # length checked in __post_init__
                epoch=d["epoch"],
                slot_status=d.get("slot_status", 0),
                failure_class=d.get("failure_class", 0),
                backend_error_code=d.get("backend_error_code", 0),
                output_digest=d.get("output_digest", 0),
            )
        except KeyError as e:
            raise RecordValueError(f"record is missing field {e.args[0]!r}") from None
        except TypeError as e:
            raise RecordValueError(f"record field has the wrong type: {e}") from None


def as_record_array(records: npt.ArrayLike | Iterable[Record]) -> npt.NDArray[np.void]:
    """A C-contiguous ``RECORD_DTYPE`` array from an array or an iterable of :class:`Record`.

    An array that already has the exact dtype and is contiguous is returned as
    it is (no copy). Magic words are *not* touched here.
    """
    if isinstance(records, np.ndarray):
        if records.dtype == RECORD_DTYPE:
            return np.ascontiguousarray(records).reshape(-1)
        if records.dtype.names is None or set(records.dtype.names) != set(RECORD_DTYPE.names or ()):
            raise RecordValueError(
                f"expected a structured array with the fields of RECORD_DTYPE {RECORD_DTYPE.names}, "
                f"got dtype {records.dtype}"
            )
        out = np.empty(records.shape, RECORD_DTYPE)
        for name in RECORD_DTYPE.names or ():
            out[name] = records[name]
        return out.reshape(-1)
    rows: list[tuple[Any, ...]] = []
    for r in cast("Iterable[object]", records):
        if not isinstance(r, Record):
            raise RecordValueError(f"expected Record objects or a RECORD_DTYPE array, got {type(r).__name__}")
        rows.append(r.to_tuple())
    return np.array(rows, dtype=RECORD_DTYPE)
