"""The JSON sidecar beside a log: who wrote it, on what device, and the names of its opcodes.

The ``.vrrl`` file itself stays plain VRRL v1; everything a VRRL reader does
not know lives in ``<log>.json``. The sidecar is data only: it is parsed with
``json`` and checked field by field, never executed.

>>> opcode_for_name("gemm") == opcode_for_name("gemm")
True
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blake3

from vrrl_gpu.errors import SidecarError, VrrlIoError, VrrlWarning
from vrrl_gpu.format._layout import META_OPCODE_BASE, UNKNOWN_SLOT, MetaOpcode
from vrrl_gpu.format._safeio import NotRegularFileError, open_regular

__all__ = [
    "SIDECAR_SUFFIX",
    "MAX_SIDECAR_BYTES",
    "MAX_SIDECAR_DEPTH",
    "Sidecar",
    "load_sidecar",
    "opcode_for_name",
    "opcode_label",
    "slot_label",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]

SIDECAR_SUFFIX = ".json"
#: The largest sidecar a reader parses (opcode names and device facts; real ones are kilobytes).
MAX_SIDECAR_BYTES = 16 << 20
#: The deepest JSON nesting a reader accepts (the schema needs three or four levels).
MAX_SIDECAR_DEPTH = 64
_SCHEMA = "vrrl_gpu.sidecar/1"


def sidecar_path(log_path: str | os.PathLike[str]) -> Path:
    """``run.vrrl`` → ``run.vrrl.json``."""
    p = Path(log_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def opcode_for_name(name: str) -> int:
    """A stable u32 opcode for ``name``: the same name gives the same opcode in every run and process.

    It is the first 4 bytes of BLAKE3 of the UTF-8 name, little-endian, kept
    below the reserved meta-opcode range.
    """
    text: object = name  # callers may pass anything; check it as such
    if not isinstance(text, str) or not text:
        raise SidecarError(f"an opcode name must be a non-empty string, got {name!r}")
    value = int.from_bytes(blake3.blake3(name.encode("utf-8")).digest()[:4], "little")
    return value % META_OPCODE_BASE


@dataclass
class Sidecar:
    """What the recorder knows about a log that the VRRL format has no field for."""

    opcode_names: dict[int, str] = field(default_factory=dict)
    host: str = ""
    pid: int = 0
    user: str = ""
    device: dict[str, Any] = field(default_factory=dict)
    cupy_version: str = ""
    tenant_id: int = 0
    start_time_ns: int = 0
    breadcrumbs: str = "begin"
    backend: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: The recorder's clock calibrations (Recorder.clock at close): offsets, drift, largest step.
    clock: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["opcode_names"] = {str(k): v for k, v in sorted(self.opcode_names.items())}
        return {"schema": _SCHEMA, **d}

    @classmethod
    def from_json(cls, d: object, *, source: str = "sidecar") -> Sidecar:
        if not isinstance(d, Mapping) or d.get("schema") != _SCHEMA:
            got = d.get("schema") if isinstance(d, Mapping) else type(d).__name__
            raise SidecarError(f"{source}: expected schema {_SCHEMA!r}, got {got!r}")
        names_raw = d.get("opcode_names", {})
        if not isinstance(names_raw, Mapping):
            raise SidecarError(f"{source}: opcode_names must be an object, got {type(names_raw).__name__}")
        names: dict[int, str] = {}
        for k, v in names_raw.items():
            if not (
                isinstance(k, str) and k.isascii() and k.isdigit() and len(k) <= 10 and isinstance(v, str)
            ):
                raise SidecarError(
                    f"{source}: opcode_names entry {k!r:.40}: {v!r:.40} is not 'number': 'name'"
                )
            if int(k) > 0xFFFFFFFF:
                raise SidecarError(f"{source}: opcode_names key {k} is past the u32 range of an opcode")
            names[int(k)] = v
        known = {f for f in cls.__dataclass_fields__ if f != "opcode_names"}
        kwargs: dict[str, Any] = {}
        for key in known:
            if key in d:
                expected = type(getattr(cls(), key))
                if not isinstance(d[key], expected) or (isinstance(d[key], bool) and expected is int):
                    raise SidecarError(
                        f"{source}: field {key!r} must be {expected.__name__}, got {type(d[key]).__name__}"
                    )
                kwargs[key] = d[key]
        return cls(opcode_names=names, **kwargs)


def _read_bounded(p: Path) -> bytes | None:
    """The file's bytes (None when absent): a regular file only, never more than the limit."""
    try:
        fd = open_regular(os.fspath(p), os.O_RDONLY, what="a sidecar")
    except NotRegularFileError as e:
        raise SidecarError(str(e)) from None
    except VrrlIoError as e:
        if isinstance(e.__cause__, FileNotFoundError):
            return None
        raise SidecarError(str(e)) from None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_SIDECAR_BYTES + 1)
    except OSError as e:
        raise SidecarError(f"{p}: cannot read the sidecar: {e.strerror or e}") from None
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"{p}: larger than the {MAX_SIDECAR_BYTES:,}-byte limit of a sidecar; not read")
    return data


def _check_tree(value: object, source: str) -> None:
    """Depth and string sanity of parsed JSON, iteratively (deep input must not recurse here either)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_SIDECAR_DEPTH:
            raise SidecarError(f"{source}: nested deeper than {MAX_SIDECAR_DEPTH} levels; not a vrrl sidecar")
        if isinstance(v, str):
            _check_text(v, source)
        elif isinstance(v, Mapping):
            for k, item in v.items():
                _check_text(k, source)
                stack.append((item, depth + 1))
        elif isinstance(v, list):
            stack.extend((item, depth + 1) for item in v)


def _check_text(s: str, source: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise SidecarError(f"{source}: holds a string that is not valid Unicode (a lone surrogate)") from None


def read_sidecar(log_path: str | os.PathLike[str]) -> Sidecar | None:
    """The sidecar of ``log_path``, or None when there is none; any damage raises :class:`SidecarError`.

    Reads are bounded (:data:`MAX_SIDECAR_BYTES`, :data:`MAX_SIDECAR_DEPTH`)
    and refuse FIFOs and devices, so a hostile sidecar can neither hang nor
    exhaust a reader.
    """
    p = sidecar_path(log_path)
    raw = _read_bounded(p)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SidecarError(f"{p}: not UTF-8 (byte {e.start}); delete or fix it") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SidecarError(f"{p}: not valid JSON ({e.msg} at line {e.lineno}); delete or fix it") from None
    except (ValueError, RecursionError) as e:  # an integer past Python's digit limit; '[' * 100000
        raise SidecarError(f"{p}: not a usable sidecar ({' '.join(str(e).split())[:120]})") from None
    _check_tree(data, str(p))
    return Sidecar.from_json(data, source=str(p))


def load_sidecar(log_path: str | os.PathLike[str]) -> Sidecar | None:
    """The sidecar for readers: any damage is one :class:`VrrlWarning` and None (names fall back to hex).

    The one policy of every command: a damaged sidecar never makes its log unreadable.
    """
    try:
        return read_sidecar(log_path)
    except SidecarError as e:
        warnings.warn(f"{e}; opcode names shown as numbers", VrrlWarning, stacklevel=2)
        return None


def write_sidecar(log_path: str | os.PathLike[str], sidecar: Sidecar) -> Path:
    """Write atomically (temp file + rename, mode 0600) so a crash never leaves half a sidecar."""
    p = sidecar_path(log_path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise VrrlIoError(f"{p}: cannot write the sidecar: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(sidecar.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def slot_label(slot_idx: int) -> str:
    """The slot number, or ``unknown`` for :data:`UNKNOWN_SLOT` (evidence whose launch is not known)."""
    return "unknown" if int(slot_idx) == UNKNOWN_SLOT else str(int(slot_idx))


def opcode_label(opcode: int, names: Mapping[int, str] | None = None) -> str:
    """``gemm`` when named, ``<gap>`` for meta-opcodes, else the number in hex."""
    if names and opcode in names:
        return names[opcode]
    if opcode >= META_OPCODE_BASE:
        try:
            return f"<{MetaOpcode(opcode).name.lower()}>"
        except ValueError:
            return f"<meta {opcode:#x}>"
    return f"{opcode:#x}"
