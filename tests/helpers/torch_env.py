"""PyTorch and Triton for the tests: skipped without them locally, a failure when ``CI`` is set.

CI installs the CPU build of PyTorch and the Triton package (``.ci/run``), so a test that needs them must run
there; a missing package would otherwise pass as a skip (the rule tests/kernels follows for NVRTC).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(module: str) -> ModuleType:
    """``module`` imported, or the running test skipped (failed under ``CI``) with the reason."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        why = f"{module} is not installed ({e}); python3 -m pip install torch==2.13.0 (CPU build) triton"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {why}")
        pytest.skip(why)
