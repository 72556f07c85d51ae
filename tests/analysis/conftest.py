"""Session fixtures of the analysis tests: the synthetic 1,000-rank fleet, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.fleet import Fleet, build_fleet, subset_of


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """1,000 rank logs: three recorded by the Recorder on the twin, the rest written with the format layer."""
    return build_fleet(tmp_path_factory.mktemp("fleet") / "ranks")


@pytest.fixture(scope="session")
def dataset(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The incidents' ranks and 150 more as a rank-partitioned dataset (``subset_of``), folder ``fleet``."""
    pytest.importorskip("duckdb", reason="duckdb (the analysis extra) is not installed")
    from vrrl_gpu.analysis._fleet_dataset import export_fleet

    out = tmp_path_factory.mktemp("dataset") / "fleet"
    export_fleet(subset_of(fleet), out)
    return out
