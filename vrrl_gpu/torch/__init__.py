"""PyTorch and Triton: per-op and per-kernel breadcrumbs without changing the model's code (docs/pytorch.md).

Needs PyTorch (``pip install vrrl_gpu[torch]``); ``import vrrl_gpu`` never imports it, this subpackage does.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401  # absolute: the PyTorch package, never this subpackage
except ImportError as e:  # pragma: no cover - CI installs torch
    from vrrl_gpu.errors import MissingExtraError

    raise MissingExtraError(
        f"vrrl_gpu.torch needs PyTorch ({e}); install it: python3 -m pip install 'vrrl_gpu[torch]'"
    ) from e

from vrrl_gpu.torch._graphs import GraphReplayHook, record_graph_replays
from vrrl_gpu.torch._ops import FLAG_INPLACE, FLAG_OUT, RecordOps, record_ops
from vrrl_gpu.torch._replay import op_registry, resolve_op
from vrrl_gpu.torch._signatures import DTYPE_CODES, NO_TENSOR
from vrrl_gpu.torch._triton import TritonHooks, record_triton

__all__ = [
    "record_ops",
    "RecordOps",
    "record_triton",
    "TritonHooks",
    "record_graph_replays",
    "GraphReplayHook",
    "op_registry",
    "resolve_op",
    "FLAG_INPLACE",
    "FLAG_OUT",
    "DTYPE_CODES",
    "NO_TENSOR",
]
