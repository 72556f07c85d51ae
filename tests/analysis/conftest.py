"""Session fixtures of the analysis tests: the synthetic 1,000-rank fleet, built once per session."""

from __future__ import annotations

import pytest

from tests.helpers.fleet import Fleet, build_fleet


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """1,000 rank logs: three recorded by the Recorder on the twin, the rest written with the format layer."""
    return build_fleet(tmp_path_factory.mktemp("fleet") / "ranks")
