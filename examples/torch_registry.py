"""The replay registry of examples/torch_fault.py: every recorded aten op, rebuilt by ``op_registry``.

``VRRL_TORCH_LOG`` names the recorded log (default ``crash.vrrl``): the registry reads the call
signatures from its sidecar. See docs/pytorch.md.
"""

from __future__ import annotations

import os

from vrrl_gpu.torch import op_registry

REGISTRY = op_registry(os.environ.get("VRRL_TORCH_LOG", "crash.vrrl"))
