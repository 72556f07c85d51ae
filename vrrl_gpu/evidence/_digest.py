"""BLAKE3 ``output_digest`` of the outputs of a launch (host or device arrays)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeAlias

import blake3
import numpy as np

from vrrl_gpu.errors import EvidenceTypeError
from vrrl_gpu.evidence._classify import _safe_str

__all__ = ["output_digest"]


# --------------------------------------------------------------------------- digests

#: From this many bytes on, hash with every core (measured: below it threads cost more than they win).
_MULTITHREAD_MIN_BYTES = 4 << 20
#: Non-contiguous arrays are copied in pieces of about this size, never whole.
_COPY_CHUNK_BYTES = 8 << 20


_Part: TypeAlias = "np.ndarray[Any, Any] | memoryview | bytes | bytearray"


def _is_device_array(obj: object) -> bool:
    module = getattr(type(obj), "__module__", "") or ""
    return (
        hasattr(obj, "__cuda_array_interface__")
        or callable(getattr(obj, "to_host", None))  # a backend DeviceBuffer (CuPy or twin)
        or (module.startswith(("cupy", "cupyx")) and hasattr(obj, "get") and hasattr(obj, "dtype"))
    )


def _is_torch_tensor(obj: object) -> bool:
    # By name: evidence never imports torch (nn.Parameter and other subclasses count).
    return any(c.__name__ == "Tensor" and c.__module__ == "torch" for c in type(obj).__mro__)


def _torch_bytes(t: Any) -> np.ndarray[Any, Any]:
    """A tensor's logical C-order bytes as uint8 numpy (every dtype, bfloat16 included; equal to numpy's
    bytes where numpy has the dtype). A device tensor is copied to the host first, which waits for it:
    this runs only when failure evidence is written, never per launch."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
    import torch  # the tensor's own library, already imported by whoever made it

    host: Any = t.view(torch.uint8).numpy()
    return np.asarray(host)


def _device_to_host(obj: Any, stream: Any) -> np.ndarray[Any, Any]:
    if callable(getattr(obj, "to_host", None)):
        host: Any = obj.to_host()  # synchronises the device first
        if not isinstance(host, np.ndarray):
            raise TypeError(f"expected numpy from {type(obj).__name__}.to_host(), got {type(host).__name__}")
        return host
    module = getattr(type(obj), "__module__", "") or ""
    if not module.startswith(("cupy", "cupyx")):
        import cupy

        obj = cupy.asarray(obj)  # zero-copy view of another library's device array
    host = obj.get(stream=stream)
    if not isinstance(host, np.ndarray):  # pragma: no cover - CuPy always returns numpy
        raise TypeError(f"expected numpy from {type(obj).__name__}.get(), got {type(host).__name__}")
    return host


def _host_parts(obj: Any, stream: Any, out: list[_Part]) -> str:
    """Append the host buffers of ``obj`` to ``out``; return "" or why a device array could not be read."""
    if isinstance(obj, (list, tuple)):
        for item in obj:
            note = _host_parts(item, stream, out)
            if note:
                return note
        return ""
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        if arr.dtype.hasobject:
            raise EvidenceTypeError("output_digest cannot hash arrays holding Python objects (dtype object)")
        out.append(arr)
        return ""
    if isinstance(obj, (bytes, bytearray)):
        out.append(obj)
        return ""
    if _is_torch_tensor(obj):
        try:
            out.append(_torch_bytes(obj))
        except Exception as err:  # a dead context (a CUDA tensor after a sticky fault), a sparse layout
            return f"tensor could not be read: {type(err).__name__}: {_safe_str(err)}"
        return ""
    if _is_device_array(obj):
        try:
            out.append(_device_to_host(obj, stream))
        except Exception as err:  # a dead context: no digest, and the original failure stays on top
            return f"device array could not be read: {type(err).__name__}: {_safe_str(err)}"
        return ""
    try:
        mv = memoryview(obj)
    except TypeError:
        raise EvidenceTypeError(
            f"output_digest takes bytes, bytearray, memoryview, buffer-protocol objects, numpy or CuPy arrays"
            f" "
            f"(or a list/tuple of them), got {type(obj).__name__}"
        ) from None
    out.append(mv)
    return ""


def _byte_views(part: _Part) -> Iterator[Any]:
    """The C-order bytes of a part as contiguous byte buffers, copying only what is not contiguous."""
    if isinstance(part, (bytes, bytearray)):
        yield part
        return
    if isinstance(part, memoryview):
        if part.c_contiguous:
            if part.ndim == 1 and part.format in ("B", "b", "c"):
                yield part
                return
            try:
                flat: Any = part.cast("B")
            except TypeError:  # a format memoryview cannot cast: numpy reads the raw bytes instead
                flat = np.frombuffer(part, dtype=np.uint8)
            yield flat
            return
        yield part.tobytes()  # a strided buffer without numpy semantics: one logical copy
        return
    yield from _array_byte_views(part)


def _array_byte_views(a: np.ndarray[Any, Any]) -> Iterator[np.ndarray[Any, Any]]:
    if a.size == 0 or a.dtype.itemsize == 0:
        return
    if a.flags.c_contiguous:
        yield a.reshape(-1).view(np.uint8)  # a view: a contiguous array is never copied
        return
    if a.ndim == 1:
        step = max(1, _COPY_CHUNK_BYTES // a.dtype.itemsize)
        for i in range(0, a.shape[0], step):
            yield np.ascontiguousarray(a[i : i + step]).view(np.uint8)
        return
    row_bytes = a.nbytes // a.shape[0]
    if row_bytes >= _COPY_CHUNK_BYTES:
        for i in range(a.shape[0]):
            yield from _array_byte_views(a[i])
        return
    rows = max(1, _COPY_CHUNK_BYTES // row_bytes)
    for i in range(0, a.shape[0], rows):
        yield np.ascontiguousarray(a[i : i + rows]).reshape(-1).view(np.uint8)


def _nbytes(part: _Part) -> int:
    return int(part.nbytes) if isinstance(part, (np.ndarray, memoryview)) else len(part)


def _digest(obj: Any, stream: Any = None) -> tuple[int | None, str]:
    parts: list[_Part] = []
    note = _host_parts(obj, stream, parts)
    if note:
        return None, note
    total = sum(_nbytes(p) for p in parts)
    threads = blake3.blake3.AUTO if total >= _MULTITHREAD_MIN_BYTES else 1
    h = blake3.blake3(max_threads=threads)
    for p in parts:
        for view in _byte_views(p):
            h.update(view)
    return int.from_bytes(h.digest(8), "little"), ""


def output_digest(obj: Any, *, stream: Any = None) -> int | None:
    """The VRRL output digest: the first 8 bytes of BLAKE3 of the bytes, read little-endian.

    Takes bytes, bytearray, memoryview and other buffer-protocol objects
    (pinned host buffers), numpy arrays of any dtype and layout (the C-order
    bytes of the logical array, as ``tobytes()`` gives them; a contiguous array
    is hashed in place), PyTorch tensors (their logical bytes the same way; a
    CUDA tensor is copied to the host), CuPy arrays (copied to the host on ``stream``), a
    backend's device buffer (anything with ``to_host()``), or a list/tuple of
    these (hashed as one concatenated stream). Returns None when a
    device array can no longer be read (a dead context) — never raises for
    that. Raises :class:`EvidenceTypeError` for anything else.

    >>> hex(output_digest(b"partial-output"))
    '0x1ae06847172eb845'
    """
    return _digest(obj, stream)[0]
