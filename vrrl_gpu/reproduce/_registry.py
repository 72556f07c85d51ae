"""Load the registry that maps opcodes to code performing a launch again."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from vrrl_gpu.errors import RegistryError
from vrrl_gpu.format._sidecar import opcode_for_name
from vrrl_gpu.reproduce._plan import RegistryFn

F = TypeVar("F", bound=RegistryFn)

__all__ = ["independent", "is_independent", "load_registry", "resolve_registry"]

_INDEPENDENT = "vrrl_independent"


def independent(fn: F) -> F:
    """Mark a registry callable as independent of the launches around it (``@independent``).

    With ``replay --streams K`` such launches are spread over K streams and
    may overlap; the callable runs its work on
    :func:`vrrl_gpu.reproduce.current_stream`. Only mark launches whose
    order against their neighbours the program does not promise.
    """
    setattr(fn, _INDEPENDENT, True)
    return fn


def is_independent(fn: Any) -> bool:
    return bool(getattr(fn, _INDEPENDENT, False))


# ---------------------------------------------------------------------------------------------- the registry


def load_registry(spec: str) -> Mapping[Any, Any]:
    """Import ``module:attribute`` or ``path/to/file.py:attribute`` and return the mapping it names.

    The current directory is importable, as with ``python -m``. The attribute
    may be dotted (``pkg.mod:holder.TABLE``).
    """
    if ":" not in spec:
        raise RegistryError(
            f"a registry is given as 'module:attribute' or 'file.py:attribute', got {spec!r}; "
            f"for example --registry examples/replay_registry.py:REGISTRY"
        )
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise RegistryError(f"registry {spec!r}: expected 'module:attribute' with both parts non-empty")
    try:
        if target.endswith(".py") or os.sep in target:
            module = _import_file(target)
        else:
            cwd = os.getcwd()
            if cwd not in sys.path and "" not in sys.path:
                sys.path.insert(0, cwd)
            module = importlib.import_module(target)
    except RegistryError:
        raise
    except Exception as e:
        raise RegistryError(f"registry {spec!r}: importing {target!r} failed: {type(e).__name__}: {e}") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"registry {spec!r}: {target!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Mapping):
        raise RegistryError(
            f"registry {spec!r}: expected a mapping of opcode (int or name) to callable, "
            f"got {type(obj).__name__}"
        )
    for key, fn in obj.items():
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise RegistryError(f"registry {spec!r}: key {key!r} is neither an opcode number nor a name")
        if not callable(fn):
            raise RegistryError(f"registry {spec!r}: entry {key!r} is {type(fn).__name__}, not a callable")
    return obj


def _import_file(path: str) -> Any:
    p = Path(path).resolve()
    if not p.is_file():
        raise RegistryError(f"registry file {path!r} does not exist (looked at {p})")
    name = "_vrrl_registry_" + "".join(c if c.isalnum() else "_" for c in p.stem)
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise RegistryError(f"registry file {path!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling-free introspection need the module registered
    spec.loader.exec_module(module)
    return module


def resolve_registry(
    registry: Mapping[Any, Any], opcodes: Sequence[int], names: Mapping[int, str]
) -> tuple[dict[int, RegistryFn], list[int]]:
    """Map each opcode to its callable: by number, then by sidecar name, then by the stable name hash.

    Returns ``(table, missing)`` with the opcodes that have no entry, sorted.
    """
    by_name = {k: v for k, v in registry.items() if isinstance(k, str)}
    by_hash = {opcode_for_name(k): v for k, v in by_name.items() if k}
    table: dict[int, RegistryFn] = {}
    missing: list[int] = []
    for op in sorted(set(opcodes)):
        fn = registry.get(op)
        if fn is None and op in names:
            fn = by_name.get(names[op])
        if fn is None:
            fn = by_hash.get(op)
        if fn is None:
            missing.append(op)
        else:
            table[op] = fn
    return table, missing
