"""Replay of recorded aten ops through ``torch.ops``: a registry for ``vrrl replay`` built from the call
signatures ``record_ops`` keeps in the sidecar (docs/pytorch.md says what it cannot rebuild)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from vrrl_gpu.errors import RegistryError, ReplayError
from vrrl_gpu.format._sidecar import read_sidecar
from vrrl_gpu.reproduce._child import trial_seed
from vrrl_gpu.reproduce._trials import REPLAY_LOG_ENV
from vrrl_gpu.torch._signatures import CONVENTION, SIDECAR_KEY

__all__ = ["op_registry", "resolve_op", "TensorFactory"]

#: ``make_tensor(shape, dtype, device, values)``: an input tensor (``values``: the recorded ones or None).
TensorFactory = Any


def resolve_op(name: str) -> Any:
    """``torch.ops`` overload of a recorded name: ``aten::add.Tensor`` -> ``torch.ops.aten.add.Tensor``."""
    ns, sep, rest = name.partition("::")
    if not sep or not ns or not rest:
        raise RegistryError(f"expected an op name such as 'aten::add.Tensor', got {name!r}")
    op_name, _, overload = rest.partition(".")
    try:
        packet = getattr(getattr(torch.ops, ns), op_name)
        return getattr(packet, overload or "default")
    except (AttributeError, RuntimeError) as e:
        raise RegistryError(f"{name!r} is not an op of this PyTorch ({torch.__version__}): {e}") from e


def _default_tensor(shape: list[int], dtype: torch.dtype, device: str, values: list[Any] | None,
                    gen: torch.Generator) -> torch.Tensor:  # fmt: skip
    if values is not None:
        return torch.tensor(values, dtype=dtype).reshape(shape).to(device)
    if dtype.is_floating_point or dtype.is_complex:
        kind = torch.complex64 if dtype.is_complex else torch.float32
        return torch.randn(shape, generator=gen, dtype=kind).to(dtype).to(device)
    # Integers and bools without recorded values: zeros, an index that is in range for any non-empty dim.
    return torch.zeros(shape, dtype=dtype, device=device)


class _OpReplay:
    """One op's registry callable: rebuilds the call of signature ``words[3]`` and runs it."""

    def __init__(self, name: str, signatures: list[dict[str, Any]], device: str | None,
                 make_tensor: TensorFactory | None) -> None:  # fmt: skip
        self.name = name
        self._signatures = signatures
        self._device = device
        self._make = make_tensor
        self._func: Any = None

    def __repr__(self) -> str:
        return f"<torch op replay {self.name}>"

    def _where(self, recorded: str) -> str:
        if self._device is not None:
            return self._device
        if recorded == "cuda" and not torch.cuda.is_available():
            return "cpu"  # a replay on a host without a GPU runs the op on the CPU
        return recorded

    def _build(self, d: Any, gen: torch.Generator) -> Any:
        if d is None:
            return None
        if not isinstance(d, dict) or len(d) == 0:
            raise ReplayError(f"{self.name}: a damaged signature entry {d!r}")
        if "tensor" in d:
            dtype = getattr(torch, str(d["dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise ReplayError(f"{self.name}: dtype {d['dtype']!r} is unknown to this PyTorch")
            device = self._where(str(d.get("device", "cpu")))
            shape = [int(x) for x in d["tensor"]]
            values = d.get("values")
            if self._make is not None:
                return self._make(shape, dtype, device, values)
            return _default_tensor(shape, dtype, device, values, gen)
        (kind, v), = d.items()
        if kind == "list":
            return [self._build(x, gen) for x in v]
        if kind in ("int", "bool", "str"):
            return v
        if kind == "float":
            return float(v)  # a number, or the repr of inf/-inf/nan
        if kind == "complex":
            return complex(float(v[0]), float(v[1]))
        if kind == "dtype":
            return getattr(torch, str(v))
        if kind == "device":
            return torch.device(self._where(str(v)))
        if kind in ("layout", "memory_format"):
            return getattr(torch, str(v))
        raise ReplayError(
            f"{self.name}: an argument of type {v if kind == 'opaque' else kind!r} cannot be rebuilt from "
            f"the log; give a registry entry of your own for this op"
        )

    def __call__(self, words: tuple[int, int, int, int], epoch: int, tenant: int, slot: int) -> Any:
        idx = int(words[3])
        if not 1 <= idx <= len(self._signatures):
            raise ReplayError(
                f"{self.name} call #{words[0]} has no recorded signature (signature {idx}: recorded with "
                f"signatures=False, or past the table's {len(self._signatures)} entries)"
            )
        sig = self._signatures[idx - 1]
        if sig.get("op") != self.name:
            raise ReplayError(f"signature {idx} is of {sig.get('op')!r}, not {self.name!r} (another log's?)")
        if self._func is None:
            self._func = resolve_op(self.name)
        seed = trial_seed()
        gen = torch.Generator().manual_seed((seed if seed is not None else 0) ^ int(words[0]))
        args = [self._build(a, gen) for a in sig.get("args", [])]
        kwargs = {str(k): self._build(v, gen) for k, v in dict(sig.get("kwargs", {})).items()}
        return self._func(*args, **kwargs)


def op_registry(
    log: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    make_tensor: TensorFactory | None = None,
) -> Mapping[str, Any]:
    """A ``vrrl replay`` registry for the aten ops of ``log`` (recorded with :func:`record_ops`).

    Keys are the op names of the sidecar (``aten::index_select``), so the replay finds each opcode by its
    name. Each call rebuilds the recorded arguments from its signature: tensors of the recorded shape,
    dtype and device (``device=`` overrides; a CUDA op runs on the CPU on a host without a GPU), filled
    with seeded random numbers (the trial's seed), integer and bool tensors with their recorded values
    when they were small CPU tensors, else zeros; ``make_tensor(shape, dtype, device, values)`` replaces
    that. ``log`` defaults to the log ``vrrl replay`` is replaying (``$VRRL_REPLAY_LOG``, set in every
    trial), so a registry module can be just ``REGISTRY = op_registry()``. Raises :class:`RegistryError`
    when the log has no signature table.
    """
    if log is None:
        log = os.environ.get(REPLAY_LOG_ENV)
        if not log:
            raise RegistryError(
                f"op_registry() without a log reads ${REPLAY_LOG_ENV}, which vrrl replay sets in each trial; "
                f"outside a replay pass the log: op_registry('crash.vrrl')"
            )
    side = read_sidecar(log)
    table = side.extra.get(SIDECAR_KEY) if side is not None else None
    if not isinstance(table, dict) or not isinstance(table.get("signatures"), list):
        raise RegistryError(
            f"{os.fspath(log)} has no PyTorch op signatures in its sidecar (extra.{SIDECAR_KEY}); record "
            f"it with vrrl_gpu.torch.record_ops(rec) (signatures=True, the default)"
        )
    if table.get("convention") != CONVENTION:
        raise RegistryError(
            f"{os.fspath(log)}: signature convention {table.get('convention')!r}; this vrrl_gpu reads "
            f"{CONVENTION}"
        )
    sigs: list[dict[str, Any]] = [s for s in table["signatures"] if isinstance(s, dict)]
    names = sorted({str(s.get("op")) for s in sigs})
    return {name: _OpReplay(name, sigs, device, make_tensor) for name in names}

