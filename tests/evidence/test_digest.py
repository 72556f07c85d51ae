"""Output digests: the format's known answer, numpy layouts, buffers, device arrays that cannot be read."""

from __future__ import annotations

import array
import ctypes
import types
from typing import Any, ClassVar

import blake3
import numpy as np
import pytest
from cupy_backends.cuda.api import runtime
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.helpers.gpu import requires_gpu
from vrrl_gpu import output_digest
from vrrl_gpu.errors import EvidenceTypeError
from vrrl_gpu.evidence import _digest as digest_mod


def ref(data: bytes) -> int:
    """The format's definition: the first 8 bytes of BLAKE3, read little-endian."""
    return int.from_bytes(blake3.blake3(data).digest()[:8], "little")


def test_known_answer_partial_output() -> None:
    assert output_digest(b"partial-output") == ref(b"partial-output") == 0x1AE06847172EB845


def test_bytes_like_inputs_agree() -> None:
    d = ref(b"partial-output")
    assert output_digest(bytearray(b"partial-output")) == d
    assert output_digest(memoryview(b"partial-output")) == d
    assert output_digest(b"") == ref(b"")


def test_a_list_or_tuple_hashes_as_one_stream() -> None:
    assert output_digest([b"partial-", b"output"]) == ref(b"partial-output")
    a, b = np.arange(5, dtype=np.int32), np.ones((2, 2), np.float64)[:, ::-1]
    assert output_digest((a, b)) == ref(a.tobytes() + b.tobytes())


DTYPES = [
    "u1",
    "<i2",
    ">i4",
    "<u8",
    "<f2",
    ">f8",
    "c16",
    "?",
    "M8[ns]",
    "m8[s]",
    "S5",
    "U3",
    np.dtype([("a", "<u4"), ("b", "S3"), ("c", ">f8")]),
]


def _layouts(base: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    return [
        base,
        np.asfortranarray(base),
        base[::2],
        base[:, ::3],
        base.T,
        base[::-1, ::-2],
        base[1:3, 2:7],
        base[0, 0],  # 0-d
        base[:0],  # empty
        np.broadcast_to(base[:1], (5, *base.shape[1:])),  # zero stride
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_numpy_arrays_of_any_dtype_and_layout_digest_their_tobytes(dtype: Any) -> None:
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, size=6 * 10 * np.dtype(dtype).itemsize, dtype=np.uint8)
    base = raw.view(dtype).reshape(6, 10)
    for a in _layouts(base):
        assert output_digest(a) == ref(a.tobytes()), (a.shape, a.strides)
    assert output_digest(np.float32(1.5)) == ref(np.float32(1.5).tobytes())


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(dtype=hnp.scalar_dtypes(), shape=hnp.array_shapes(max_dims=4, max_side=6)),
    step=st.integers(min_value=-3, max_value=3).filter(bool),
    transpose=st.booleans(),
)
def test_digest_equals_tobytes_for_random_arrays(
    arr: np.ndarray[Any, Any], step: int, transpose: bool
) -> None:
    a = arr.T if transpose else arr
    a = a[::step]
    assert output_digest(a) == ref(a.tobytes())


def test_non_contiguous_arrays_are_hashed_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest_mod, "_COPY_CHUNK_BYTES", 48)  # forces every chunking path on small arrays
    base = np.arange(4 * 7 * 9, dtype=np.int64).reshape(4, 7, 9)
    for a in (base[:, ::2], base[::-1], base.T, base[..., ::3], base[0, :, ::2], np.arange(100)[::3]):
        assert output_digest(a) == ref(a.tobytes())


class _SpyHasher:
    """Stands in for blake3.blake3 and remembers what it was fed."""

    AUTO = blake3.blake3.AUTO
    made: ClassVar[list[_SpyHasher]] = []

    def __init__(self, max_threads: int = 1) -> None:
        self.max_threads = max_threads
        self.inner = blake3.blake3()
        self.fed: list[Any] = []
        _SpyHasher.made.append(self)

    def update(self, data: Any) -> None:
        self.fed.append(data)
        self.inner.update(data)

    def digest(self, length: int = 32) -> bytes:
        return self.inner.digest(length)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> type[_SpyHasher]:
    _SpyHasher.made = []
    monkeypatch.setattr(digest_mod, "blake3", types.SimpleNamespace(blake3=_SpyHasher))
    return _SpyHasher


def test_a_contiguous_array_is_hashed_in_place_not_copied(spy: type[_SpyHasher]) -> None:
    a = np.arange(1000, dtype=np.float64).reshape(10, 100)
    assert output_digest(a) == ref(a.tobytes())
    (h,) = spy.made
    assert len(h.fed) == 1
    assert np.shares_memory(np.asarray(h.fed[0]), a)
    assert h.max_threads == 1  # small input: one thread


def test_large_inputs_hash_with_every_core(spy: type[_SpyHasher], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest_mod, "_MULTITHREAD_MIN_BYTES", 1024)
    a = np.zeros(1024, np.uint8)
    assert output_digest(a) == ref(a.tobytes())
    assert output_digest(a[:100]) == ref(a[:100].tobytes())
    assert [h.max_threads for h in spy.made] == [blake3.blake3.AUTO, 1]


def test_buffer_protocol_objects() -> None:
    c = (ctypes.c_int32 * 4)(1, 2, 3, 4)  # blake3 itself rejects ctypes ("strides is null")
    assert output_digest(c) == ref(bytes(c))
    arr = array.array("d", [1.0, 2.0])
    assert output_digest(arr) == ref(arr.tobytes())
    mv = memoryview(np.arange(12, dtype=np.uint16).reshape(3, 4))
    assert output_digest(mv) == ref(mv.tobytes())
    assert output_digest(mv[::2]) == ref(mv[::2].tobytes())  # strided memoryview
    rec = np.zeros(3, dtype=[("a", "<u4"), ("b", "S3")])
    assert output_digest(memoryview(rec)) == ref(rec.tobytes())  # struct format: cast fails, raw bytes used


def test_a_pinned_host_buffer_in_format_b_is_hashed_directly() -> None:
    # CuPy's PinnedMemoryPointer exports a writable 1-D format 'b' buffer; this is the same shape of buffer.
    host = np.frombuffer(bytearray(b"partial-output"), dtype=np.int8)
    mv = memoryview(host)
    assert mv.format == "b"
    assert output_digest(mv) == ref(b"partial-output")


@pytest.mark.parametrize("bad", [123, "text", 1.5, None, object(), np.array([object()]), [b"x", 3]])
def test_unsupported_inputs_raise_a_typed_error(bad: Any) -> None:
    with pytest.raises(EvidenceTypeError):
        output_digest(bad)


class ndarray:
    """A CuPy-like device array: ``get(stream=)`` copies to the host."""

    __module__ = "cupy._core.core"

    def __init__(self, host: np.ndarray[Any, Any] | None, error: BaseException | None = None) -> None:
        self.host, self.error, self.streams = host, error, []  # type: ignore[var-annotated]
        self.dtype = None if host is None else host.dtype

    def get(self, stream: Any = None) -> np.ndarray[Any, Any]:
        self.streams.append(stream)
        if self.error is not None:
            raise self.error
        assert self.host is not None
        return self.host


def test_a_cupy_like_array_is_copied_on_the_given_stream() -> None:
    host = np.arange(10, dtype=np.float32)
    dev = ndarray(host)
    assert output_digest(dev, stream="s1") == ref(host.tobytes())
    assert dev.streams == ["s1"]


def test_a_dead_context_gives_no_digest_and_no_exception() -> None:
    dead = ndarray(None, runtime.CUDARuntimeError(700))
    assert output_digest(dead) is None
    assert output_digest([b"ok", dead]) is None
    digest, note = digest_mod._digest(dead)
    assert digest is None
    assert "cudaErrorIllegalAddress" in note


class _DeviceBuffer:
    """Like vrrl_gpu.backends' DeviceBuffer: ``to_host()`` synchronises and copies."""

    def __init__(self, data: bytes | None) -> None:
        self.data = data

    def to_host(self) -> np.ndarray[Any, Any]:
        if self.data is None:
            raise RuntimeError("twin: sticky error cudaErrorIllegalAddress")
        return np.frombuffer(self.data, np.uint8).copy()


def test_backend_device_buffers() -> None:
    assert output_digest(_DeviceBuffer(b"partial-output")) == ref(b"partial-output")
    assert output_digest(_DeviceBuffer(None)) is None


@requires_gpu
def test_real_cupy_arrays_digest_like_their_host_copies() -> None:
    import cupy

    a = cupy.arange(1 << 16, dtype=cupy.float32).reshape(256, 256)
    s = cupy.cuda.Stream(non_blocking=True)
    for x in (a, a[:, ::3], a.T):
        assert output_digest(x, stream=s) == ref(cupy.asnumpy(x).tobytes())
