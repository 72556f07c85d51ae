"""Damaged logs raise only VrrlError subclasses: byte flips, truncations and extensions of valid logs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrrl_gpu import RingLog
from vrrl_gpu.errors import VrrlError

SEEDS = ["small", "wrapped", "empty"]


def _read_everything(path: Path) -> None:
    with RingLog.open(path, readonly=True) as log:
        for salvage in (True, False):
            with contextlib.suppress(VrrlError):
                log.scan(salvage=salvage)
        list(log)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 600)),
    extra=st.binary(max_size=130),
)
def test_damaged_logs_raise_only_vrrl_errors(
    tmp_path: Path, vectors: Path, seed: str, flips: list[tuple[int, int]], cut: int | None, extra: bytes
) -> None:
    data = bytearray((vectors / f"{seed}.vrrl").read_bytes())
    for pos, xor in flips:
        if data:
            data[pos % len(data)] ^= xor
    if cut is not None:
        del data[cut:]
    data += extra
    p = tmp_path / "fuzz.vrrl"
    p.write_bytes(bytes(data))
    with contextlib.suppress(VrrlError):
        _read_everything(p)


def test_many_random_mutations_in_bounded_time(tmp_path: Path, vectors: Path) -> None:
    rng = np.random.default_rng(1234)
    seeds = [(vectors / f"{s}.vrrl").read_bytes() for s in SEEDS]
    outcomes = {"ok": 0, "error": 0}
    p = tmp_path / "m.vrrl"
    for i in range(3000):
        data = bytearray(seeds[i % len(seeds)])
        kind = i % 3
        if kind == 0:
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        elif kind == 1:
            del data[int(rng.integers(0, len(data))) :]
        else:
            data += rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        p.write_bytes(bytes(data))
        try:
            _read_everything(p)
            outcomes["ok"] += 1
        except VrrlError:
            outcomes["error"] += 1
    # Both paths were exercised: some mutations are harmless, some are refused.
    assert outcomes["ok"] > 0
    assert outcomes["error"] > 0


@pytest.mark.parametrize("size", [0, 1, 31])
def test_tiny_files_are_truncated_errors(tmp_path: Path, size: int) -> None:
    p = tmp_path / "t.vrrl"
    p.write_bytes(b"V" * size)
    with pytest.raises(VrrlError):
        RingLog.open(p, readonly=True)
