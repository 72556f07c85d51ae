"""Issue 16: ``StreamTable.lookup`` costs memory in the slots and runs, never in the span of slot indices."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from vrrl_gpu.analysis._streams import NO_STREAM, StreamTable


def _runs_of(slots: list[int]) -> list[tuple[int, int, int]]:
    """Maximal arithmetic runs (first, stride, count) of an increasing slot list, as the recorder notes."""
    runs: list[tuple[int, int, int]] = []
    for s in slots:
        if runs:
            f, d, c = runs[-1]
            if c == 1 and s > f:
                runs[-1] = (f, s - f, 2)
                continue
            if s == f + d * c:
                runs[-1] = (f, d, c + 1)
                continue
        runs.append((s, 1, 1))
    return runs


def _table(rows: list[tuple[int, int, int, int]]) -> StreamTable:
    arr = np.array(rows, np.int64).reshape(-1, 4)
    return StreamTable(
        stream=arr[:, 0],
        first=arr[:, 1],
        stride=np.maximum(arr[:, 2], 1),
        count=arr[:, 3],
        nonce=1,
        unknown=(),
        graphs=False,
    )


@pytest.mark.parametrize("seed", range(8))
def test_lookup_names_every_slot_of_interleaved_streams(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 3000)), int(rng.integers(1, 9))
    base = int(rng.choice([0, 1 << 20, (1 << 32) - 4000]))
    # Round robin, bursts and random choice: strided runs and stride-1 runs side by side.
    owner = np.where(rng.random(n) < 0.5, np.arange(n) % k, rng.integers(0, k, n))
    rows = [
        (stream, base + f, d, c)
        for stream in range(k)
        for f, d, c in _runs_of(np.flatnonzero(owner == stream).tolist())
    ]
    table = _table(rows)
    probe = np.concatenate([base + np.arange(n), rng.integers(0, 1 << 32, 50), [base + n, (1 << 32) - 1]])
    got = table.lookup(probe.astype(np.int64))
    want = np.full(probe.shape, NO_STREAM, np.int32)
    inside = (probe >= base) & (probe < base + n)
    want[inside] = owner[probe[inside] - base]
    assert got.tolist() == want.tolist()


def test_a_slot_near_2_32_beside_slot_0_costs_no_map_of_the_gap() -> None:
    table = _table([(0, 0, 1, 1000), (1, 1000, 2, 500), (2, 1001, 2, 500), (3, (1 << 32) - 3, 1, 3)])
    slots = np.concatenate([np.arange(2000), [(1 << 32) - 1, (1 << 32) - 4]]).astype(np.int64)
    tracemalloc.start()
    try:
        got = table.lookup(slots)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak:,} bytes for {slots.size} slots"  # the old dense map: 16 GiB
    assert got[:1000].tolist() == [0] * 1000
    assert got[1000:2000:2].tolist() == [1] * 500
    assert got[1001:2000:2].tolist() == [2] * 500
    assert got[-2:].tolist() == [3, NO_STREAM]


def test_a_damaged_table_is_bounded_too() -> None:
    # Runs a hostile sidecar could hold: huge counts and strides, negative or out-of-range starts.
    table = _table([(5, -10, 1, 1 << 40), (6, 1 << 40, 1, 5), (7, 3, 1 << 45, 1 << 40), (8, 7, 3, 0)])
    slots = np.array([0, 3, 7, 10, (1 << 32) - 1], np.int64)
    got = table.lookup(slots)
    assert got.tolist() == [NO_STREAM, 7, NO_STREAM, NO_STREAM, NO_STREAM]
