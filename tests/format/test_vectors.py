"""Known answers: the shared test vectors, written by an independent implementation of the original reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vrrl_gpu import RingLog
from vrrl_gpu.errors import (
    CapacityOverflowError,
    CorruptRecordError,
    HeaderMismatchError,
    TruncatedLogError,
    VrrlError,
    ZeroCapacityError,
)


def _meta(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (kv.split("=") for kv in path.read_text().split())}


@pytest.mark.parametrize(
    ("name", "jsonl"),
    [
        ("small", "small"),
        ("wrapped", "wrapped"),
        ("empty", "empty"),
        ("cursor-beyond-capacity", "wrapped"),
    ],
)
def test_good_vectors_read_exactly_as_their_jsonl(vectors: Path, name: str, jsonl: str) -> None:
    expected = [json.loads(line) for line in (vectors / f"{jsonl}.jsonl").read_text().splitlines()]
    with RingLog.open(vectors / f"{name}.vrrl", readonly=True) as log:
        got = [r.to_dict() for r in log]
        assert got == expected
        if name != "cursor-beyond-capacity":
            meta = _meta(vectors / f"{name}.meta")
            assert log.capacity == meta["capacity"]
            assert log.cursor == meta["cursor"]


def test_cursor_beyond_capacity_reads_like_wrapped(vectors: Path) -> None:
    with (
        RingLog.open(vectors / "cursor-beyond-capacity.vrrl", readonly=True) as a,
        RingLog.open(vectors / "wrapped.vrrl", readonly=True) as b,
    ):
        assert a.cursor == 43
        assert a.records().tobytes() == b.records().tobytes()


@pytest.mark.parametrize(
    ("name", "error", "says"),
    [
        ("bad-magic", HeaderMismatchError, "magic"),
        ("bad-version", HeaderMismatchError, "version"),
        ("zero-capacity", ZeroCapacityError, "capacity 0"),
        ("huge-capacity", CapacityOverflowError, "1,048,577"),
        ("truncated-header", TruncatedLogError, "found a file of 20 bytes"),
        ("truncated-body", TruncatedLogError, "expected 544 bytes, found 160"),
        ("bad-record-magic", CorruptRecordError, "slot 2"),
    ],
)
def test_bad_vectors_raise_their_specific_error(
    vectors: Path, name: str, error: type[VrrlError], says: str
) -> None:
    with pytest.raises(error, match=says), RingLog.open(vectors / f"{name}.vrrl", readonly=True) as log:
        log.records()


def test_bad_vectors_also_refuse_a_writer(vectors: Path, tmp_path: Path) -> None:
    for name in ("bad-magic", "truncated-body", "zero-capacity"):
        p = tmp_path / f"{name}.vrrl"
        p.write_bytes((vectors / f"{name}.vrrl").read_bytes())
        with pytest.raises(VrrlError):
            RingLog.open(p, capacity=8)


def test_errors_also_subclass_the_fitting_builtin(vectors: Path) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the point is the builtin
        RingLog.open(vectors / "bad-magic.vrrl", readonly=True)
    with pytest.raises(OSError):  # noqa: PT011
        RingLog.open(vectors / "truncated-header.vrrl", readonly=True)


def test_salvage_skips_and_counts_damage(vectors: Path) -> None:
    with RingLog.open(vectors / "bad-record-magic.vrrl", readonly=True) as log:
        scan = log.scan(salvage=True)
    assert scan.corrupt_slots == (2,)
    assert scan.records.shape[0] == 4
    with RingLog.open(vectors / "truncated-body.vrrl", readonly=True) as log:
        scan = log.scan(salvage=True)
    assert scan.missing_slots == 6
    assert scan.records.shape[0] == 2
    assert not scan.is_sound
