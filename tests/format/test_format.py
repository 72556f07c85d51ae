from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.strategies import records
from vrrl_gpu import RECORD_DTYPE, FailureClass, Record, SlotStatus
from vrrl_gpu.errors import CapacityOverflowError, RecordValueError, ZeroCapacityError
from vrrl_gpu.format import HEADER_DTYPE, as_record_array, check_capacity

# The record table of VRRL-FORMAT.md: (offset, size, field, numpy base type).
SPEC = [
    (0, 4, "magic", "<u4"),
    (4, 8, "timestamp_ns", "<u8"),
    (12, 4, "slot_idx", "<u4"),
    (16, 4, "tenant_id", "<u4"),
    (20, 4, "opcode", "<u4"),
    (24, 16, "args", "<u4"),
    (40, 4, "epoch", "<u4"),
    (44, 4, "slot_status", "<u4"),
    (48, 4, "failure_class", "<u4"),
    (52, 4, "backend_error_code", "<u4"),
    (56, 8, "output_digest", "<u8"),
]


def test_record_dtype_matches_the_format_table_field_by_field() -> None:
    assert RECORD_DTYPE.itemsize == 64
    assert list(RECORD_DTYPE.names or ()) == [f for _, _, f, _ in SPEC]
    for offset, size, name, base in SPEC:
        dt, off = RECORD_DTYPE.fields[name][:2]  # type: ignore[index]
        assert off == offset, name
        assert dt.itemsize == size, name
        assert dt.base == np.dtype(base), name


def test_header_dtype_matches_the_format() -> None:
    assert HEADER_DTYPE.itemsize == 32
    assert [HEADER_DTYPE.fields[n][1] for n in ("magic", "version", "flags", "capacity", "cursor")] == [  # type: ignore[index]
        0,
        8,
        12,
        16,
        24,
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, FailureClass.NONE),
        (1, FailureClass.DEVICE_LOSS),
        (2, FailureClass.TRANSIENT_QUEUE),
        (3, FailureClass.PROGRAM_BUG),
        (4, FailureClass.UNCLASSIFIED),
        (5, FailureClass.UNCLASSIFIED),
        (0xFFFFFFFF, FailureClass.UNCLASSIFIED),
    ],
)
def test_failure_class_decodes_unknown_values_as_unclassified(value: int, expected: FailureClass) -> None:
    assert FailureClass(value) is expected


def test_failure_class_labels_use_the_format_spelling() -> None:
    assert [c.label for c in FailureClass] == [
        "None",
        "DeviceLoss",
        "TransientQueue",
        "ProgramBug",
        "Unclassified",
    ]


def _rec(**kw: object) -> Record:
    base: dict[str, object] = {
        "timestamp_ns": 1,
        "slot_idx": 2,
        "tenant_id": 3,
        "opcode": 4,
        "args": (5, 6, 7, 8),
        "epoch": 9,
    }
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"slot_idx": -1},
        {"slot_idx": 1 << 32},
        {"timestamp_ns": 1 << 64},
        {"args": (1, 2, 3)},
        {"args": (1, 2, 3, -4)},
        {"opcode": 1.5},
        {"epoch": True},
        {"output_digest": -1},
    ],
)
def test_record_rejects_out_of_range_fields(bad: dict[str, object]) -> None:
    with pytest.raises(RecordValueError):
        _rec(**bad)


def test_record_evidence_is_any_of_the_last_four_words() -> None:
    assert not _rec().has_evidence
    for kw in ({"slot_status": 1}, {"failure_class": 2}, {"backend_error_code": 700}, {"output_digest": 9}):
        assert _rec(**kw).has_evidence


@given(st.lists(records(), max_size=20))
def test_records_round_trip_through_the_dtype_and_dicts(recs: list[Record]) -> None:
    arr = as_record_array(recs)
    assert arr.dtype == RECORD_DTYPE
    assert [Record.from_row(r) for r in arr] == recs
    assert [Record.from_dict(r.to_dict()) for r in recs] == recs


def test_as_record_array_converts_an_aligned_equivalent_dtype() -> None:
    aligned = np.dtype([(n, RECORD_DTYPE.fields[n][0]) for n in RECORD_DTYPE.names or ()], align=True)  # type: ignore[index]
    a = np.zeros(3, aligned)
    a["slot_idx"] = [1, 2, 3]
    out = as_record_array(a)
    assert out.dtype == RECORD_DTYPE
    assert out["slot_idx"].tolist() == [1, 2, 3]


def test_as_record_array_refuses_foreign_arrays_and_objects() -> None:
    with pytest.raises(RecordValueError, match="RECORD_DTYPE"):
        as_record_array(np.zeros(3, np.dtype([("x", "<u4")])))
    with pytest.raises(RecordValueError, match="Record objects"):
        as_record_array([{"slot_idx": 1}])  # type: ignore[list-item]


def test_capacity_limits_raise_the_format_errors() -> None:
    assert check_capacity(1) == 1
    assert check_capacity(1 << 20) == 1 << 20
    with pytest.raises(ZeroCapacityError):
        check_capacity(0)
    with pytest.raises(CapacityOverflowError, match="1,048,577"):
        check_capacity((1 << 20) + 1)


def test_slot_status_labels_live_on_the_enum() -> None:
    assert [s.label for s in SlotStatus] == [s.name.lower() for s in SlotStatus]
    assert SlotStatus.label_of(int(SlotStatus.FAULTED)) == "faulted"
    assert SlotStatus.label_of(4242) == "4242"  # a value from a newer writer stays a number


def test_no_module_spells_the_status_label_itself() -> None:
    import vrrl_gpu

    pkg = Path(vrrl_gpu.__file__).resolve().parent
    texts = {p: p.read_text(encoding="utf-8") for p in pkg.rglob("*.py") if p.name != "_layout.py"}
    dup = [str(p.relative_to(pkg)) for p, t in texts.items() if "SlotStatus(" in t and ".name.lower()" in t]
    assert dup == []
