from __future__ import annotations

from pathlib import Path

import pytest

VECTORS = Path(__file__).parent / "data" / "vectors"


@pytest.fixture
def vectors() -> Path:
    return VECTORS
