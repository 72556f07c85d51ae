"""The replay registry of examples/torch_fault.py: every recorded aten op, rebuilt by ``op_registry``.

``op_registry()`` reads the call signatures from the sidecar of the log being replayed (``vrrl replay`` names
it in each trial), so the same registry replays ``crash.vrrl`` and the minimized log made from it. See
docs/pytorch.md.
"""

from __future__ import annotations

from vrrl_gpu.torch import op_registry

REGISTRY = op_registry()
