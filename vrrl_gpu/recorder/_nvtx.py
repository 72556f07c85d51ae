"""NVTX ranges around recorded launches (``Recorder(nvtx=True)``)."""

from __future__ import annotations

from typing import Any

from vrrl_gpu.errors import (
    MissingExtraError,
)
from vrrl_gpu.recorder._options import F

_NVTX_DOMAIN = "vrrl"


def _load_nvtx() -> Any:
    try:
        import nvtx
    except ImportError as e:
        raise MissingExtraError(
            "nvtx=True needs the nvtx package; install it with: pip install 'vrrl_gpu[nvtx]'"
        ) from e
    return nvtx


def _identity(fn: F) -> F:
    return fn
