"""Lines of text built a column at a time, no per-record Python: the text formats' engine.

A :class:`Lines` records ``n`` rows' parts (literals, numbers, names picked from a table, ready matrices)
and :meth:`Lines.render` turns them into the rows' lines, concatenated, with one of two engines that give
the same bytes. The C engine (``_text_fast.c``, built on first use by ``_text_accel.py``) formats straight
from the columns into one buffer. The numpy engine (:class:`_NumpyLines`; no compiler, a failed build, or
``VRRL_NO_ACCEL=1``) builds a byte matrix per part, each row's text right-aligned in it, lays the parts side
by side and keeps, by one boolean mask, the bytes that are text. Names (opcodes, statuses, paths) are
formatted once per distinct value by the caller and picked per row (:meth:`Lines.pick`).

In the numpy engine most parts are *padded*: the bytes left of each row's text are NUL and the text holds
none (digits, JSON, escaped names), so the mask is just "not NUL", one compare over the whole matrix. Only a
part whose text may hold a NUL keeps its lengths and gets its own range of the mask (a compare per byte
against them: that took about a third of the text formats' time when every part did it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis.exporters import _text_accel

__all__ = ["Lines", "choice_table", "datetime_text", "engine"]

# Four decimal digits as one little-endian u32 (byte 0 the thousands digit): one gather writes four bytes.
_QUADS = np.frombuffer("".join(f"{i:04d}" for i in range(10000)).encode(), np.uint32)
# The same with the leading zeros as NUL: the quad that starts a number (``_LEAD``; 0 is four NULs, the
# quad of a number's higher digits that are all zero) and the last quad of all (``_LEAD0``: 0 is "0").
_LEAD = np.frombuffer(
    "".join(f"{i:>4}" if i else "    " for i in range(10000)).replace(" ", "\0").encode(), np.uint32
)
_LEAD0 = _LEAD.copy()
_LEAD0[0] = np.frombuffer(b"\0\0\0" + b"0", np.uint32)[0]
_BOTH, _BOTH0 = np.concatenate([_LEAD, _QUADS]), np.concatenate([_LEAD0, _QUADS])
# Hex two digits (one byte) at a time as u16; the lead tables as above: "\0" for a leading zero digit.
_HEX2 = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), np.uint16)
_HEX2_LEAD = np.frombuffer(
    b"".join(b"%2x" % i if i else b"  " for i in range(256)).replace(b" ", b"\0"), np.uint16
)
_HEX2_BOTH = np.concatenate([_HEX2_LEAD, _HEX2])
_HEX2_BOTH0 = _HEX2_BOTH.copy()
_HEX2_BOTH0[0] = _HEX2[0] & np.frombuffer(b"\0\xff", np.uint16)[0]

# A part: u32 words (n or 1, q) holding each row's text right-aligned, and what is text in it: None (padded:
# every byte but NUL), the rows' lengths, or an int (a literal's length, the same on every row).
_Part = tuple[npt.NDArray[np.uint32], npt.NDArray[np.intp] | int | None]


def choice_table(texts: Sequence[bytes]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]:
    """The matrix (right-aligned, NUL-padded) and lengths of ``texts``, for :meth:`Lines.pick`."""
    w = max((len(t) for t in texts), default=0)
    table = np.zeros((len(texts), max(4, -(-w // 4) * 4)), np.uint8)  # whole words (see render)
    lens = np.array([len(t) for t in texts], np.intp)
    for i, t in enumerate(texts):
        if t:
            table[i, table.shape[1] - len(t) :] = np.frombuffer(t, np.uint8)
    return table, lens


#: The first second of the year 10000: ISO 8601's four-digit years end there (so does ``datetime``).
_YEAR_10000 = 253_402_300_800


def datetime_text(ns: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]:
    """UTC ISO 8601 with nanoseconds and a ``Z`` for each timestamp (a padded part for :meth:`Lines.part`).

    The whole u64 range: past the year 9999 a timestamp is written ``<n>ns``.
    """
    n = int(ns.shape[0])
    w = 32  # the 30 characters right-aligned in whole words
    secs = ns // np.uint64(1_000_000_000)
    ok = secs < np.uint64(_YEAR_10000)
    mat = np.zeros((n, w), np.uint8)
    if n:
        # A log's records share their seconds: each distinct second is written once (it was a third of
        # the dump table's time).
        whole, at = np.unique(np.where(ok, secs, 0).astype(np.int64), return_inverse=True)
        day = np.datetime_as_string(whole.astype("datetime64[s]"), unit="s").astype("S19")
        mat[:, 2:21] = np.frombuffer(day.tobytes(), np.uint8).reshape(-1, 19)[at.reshape(-1)]
        mat[:, 21] = ord(".")
        mat[:, 22:31] = _decimal(ns % np.uint64(1_000_000_000), 9, 3)[:, -9:]
        mat[:, 31] = ord("Z")
    lens = np.full(n, 30, np.intp)
    for i in np.flatnonzero(~ok).tolist():  # past the year 9999: never in a recorder's log
        t = f"{int(ns[i])}ns".encode()
        mat[i] = 0
        mat[i, w - len(t) :] = np.frombuffer(t, np.uint8)
        lens[i] = len(t)
    return mat, lens


def _decimal(
    v: npt.NDArray[np.unsignedinteger], digits: int, min_quads: int, *, lead: bool = False
) -> npt.NDArray[np.uint8]:
    """(n, 4q) digit bytes of ``v``, zero-padded on the left (``lead``: NUL-padded, the text right-aligned);
    8 digits at a time in u32 (it is faster)."""
    quads = max(min_quads, -(-digits // 4))
    mat = np.empty((v.shape[0], quads), np.uint32)
    top, bottom = (int(v.max()), int(v.min())) if lead and v.size else (0, 0)

    def put(c: int, q: npt.NDArray[np.unsignedinteger]) -> None:
        limit = 10 ** (4 * (quads - c))  # a value has digits left of quad c when it is this or more
        if not lead or bottom >= limit:
            mat[:, c] = _QUADS[q]
        elif top < limit:
            mat[:, c] = (_LEAD0 if c == quads - 1 else _LEAD)[q]
        else:  # one gather: the quad starts the number, or is inside it
            both = _BOTH0 if c == quads - 1 else _BOTH
            mat[:, c] = both[q + (v >= v.dtype.type(limit)).astype(np.uint32) * np.uint32(10000)]

    rest: npt.NDArray[np.unsignedinteger] | None = v
    e8, e4 = np.uint32(10**8), np.uint32(10**4)
    for k in range(0, quads, 2):
        if rest is None:
            mat[:, : quads - k] = 0 if lead else _QUADS[0]
            break
        if rest.dtype == np.uint64 and digits - 4 * k > 8:
            big = rest.dtype.type(10**8)
            lo = (rest % big).astype(np.uint32)
            rest = rest // big
        elif digits - 4 * k > 8:
            lo, rest = rest % e8, rest // e8
        else:
            lo, rest = rest.astype(np.uint32), None
        put(quads - 1 - k, lo % e4)
        if k + 1 < quads:
            put(quads - 2 - k, lo // e4)
    return mat.view(np.uint8)


#: Byte positions inside a part (parts are rarely wider: a longer name gets its own range).
_COLUMN = np.arange(1 << 16, dtype=np.intp)


def _quads(mat: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """``mat`` (rows right-aligned) as u32 words: padded on the left to a multiple of 4 bytes."""
    w = mat.shape[1]
    pad = -w % 4
    if pad:
        mat = np.concatenate([np.zeros((mat.shape[0], pad), np.uint8), mat], axis=1)
    return np.ascontiguousarray(mat).view(np.uint32)


class _NumpyLines:
    """The numpy engine: each part's matrix made as it is added (see the module docstring)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._parts: list[_Part] = []
        self._lit = b""

    # ------------------------------------------------------------ parts

    def lit(self, text: str | bytes) -> _NumpyLines:
        """The same text on every row."""
        self._lit += text.encode() if isinstance(text, str) else text
        return self

    def _flush(self) -> None:
        if self._lit:
            mat = _quads(np.frombuffer(self._lit, np.uint8).reshape(1, -1))
            self._parts.append((mat, len(self._lit) if b"\0" in self._lit else None))
            self._lit = b""

    def part(
        self, mat: npt.NDArray[np.uint8], lens: npt.NDArray[np.intp], *, padded: bool = False
    ) -> _NumpyLines:
        """A ready part: ``mat`` (n, w) with each row's text right-aligned, ``lens`` its lengths.

        ``padded``: the bytes left of each row's text are NUL and no text holds one (``lens`` then unused).
        """
        self._flush()
        self._parts.append((_quads(mat), None if padded else lens))
        return self

    def pick(
        self, idx: npt.NDArray[np.integer], table: tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]
    ) -> _NumpyLines:
        """Row i gets text ``idx[i]`` of a :func:`choice_table`."""
        mat, lens = table
        # choice_table pads with NUL: the table is padded unless a text holds a NUL itself.
        padded = int(np.count_nonzero(mat)) == int(lens.sum())
        return self.part(mat[idx], lens[idx], padded=padded)

    def uint(
        self,
        values: npt.NDArray[np.integer],
        *,
        null: npt.NDArray[np.bool_] | None = None,
        null_text: bytes = b"",
    ) -> _NumpyLines:
        """Unsigned decimal; rows where ``null`` holds get ``null_text`` instead."""
        v = np.asarray(values)
        if v.dtype.kind != "u" or null is not None:
            v = v.astype(np.uint64)
            if null is not None:
                v[null] = 0
        top = int(v.max()) if v.size else 0
        mat = _decimal(v, len(str(top)), max(1, -(-len(null_text) // 4)), lead=True)
        if null is not None and null.any():
            self._null(mat, null, null_text)
        return self._padded(mat)

    def fixed(self, values: npt.NDArray[np.integer], width: int) -> _NumpyLines:
        """Decimal zero-padded to ``width`` digits (values below ``10**width``)."""
        v = np.asarray(values)
        mat = _decimal(v if v.dtype.kind == "u" else v.astype(np.uint64), width, 1)
        mat[:, : mat.shape[1] - width] = 0
        return self._padded(mat)

    def hex(
        self,
        values: npt.NDArray[np.integer],
        *,
        width: int | None = None,
        null: npt.NDArray[np.bool_] | None = None,
        null_text: bytes = b"",
    ) -> _NumpyLines:
        """Lower-case hex: the fewest digits (one at least), or zero-padded to ``width``; ``null`` as uint."""
        v = np.asarray(values).astype("<u8")
        top = int(v.max()) if v.size else 0
        digits = width if width is not None else max(1, len(f"{top:x}"))
        w = -(-max(digits, len(null_text)) // 4) * 4  # whole words
        mat = np.empty((self.n, w), np.uint8)
        pairs = mat.view(np.uint16)
        bottom = int(v.min()) if v.size else 0
        octets = v.view(np.uint8).reshape(-1, 8)  # little-endian: column j is byte j
        for j in range(w // 2):
            col = w // 2 - 1 - j
            if j >= 8:
                pairs[:, col] = 0
            elif width is not None or bottom >= 256 ** (j + 1):
                pairs[:, col] = _HEX2[octets[:, j]]
            else:  # one gather: the pair starts the number (leading zeros NUL), or is inside it
                both = _HEX2_BOTH0 if j == 0 else _HEX2_BOTH
                full = (
                    (v >= np.uint64(256 ** (j + 1))) if 256 ** (j + 1) <= top else np.zeros(self.n, np.bool_)
                )
                pairs[:, col] = both[octets[:, j] + full * 256]
        if width is not None:
            mat[:, : w - width] = 0
        if null is not None and null.any():
            self._null(mat, null, null_text)
        return self._padded(mat)

    @staticmethod
    def _null(mat: npt.NDArray[np.uint8], null: npt.NDArray[np.bool_], null_text: bytes) -> None:
        mat[null] = 0
        if null_text:
            mat[null, mat.shape[1] - len(null_text) :] = np.frombuffer(null_text, np.uint8)

    def _padded(self, mat: npt.NDArray[np.uint8]) -> _NumpyLines:
        self._flush()
        self._parts.append((np.ascontiguousarray(mat).view(np.uint32), None))
        return self

    # ----------------------------------------------------------- render

    def render(self) -> npt.NDArray[np.uint8]:
        """The rows' text, concatenated, as one byte array."""
        self._flush()
        if self.n == 0 or not self._parts:
            return np.zeros(0, np.uint8)
        # Every part is whole u32 words wide, so the layout is copied a word at a time.
        words = sum(m.shape[1] for m, _ in self._parts)
        out = np.empty((self.n, words), np.uint32)
        c = 0
        exact: list[tuple[int, int, npt.NDArray[np.intp] | int]] = []
        for mat, lens in self._parts:
            q = mat.shape[1]
            out[:, c : c + q] = mat
            if lens is not None:
                exact.append((4 * c, 4 * q, lens))
            c += q
        text = out.view(np.uint8)
        keep = text != 0
        for at, w, lens in exact:
            col = _COLUMN[:w] if w <= _COLUMN.shape[0] else np.arange(w, dtype=np.intp)
            np.greater_equal(
                col[None, :], w - (lens if isinstance(lens, int) else lens[:, None]), out=keep[:, at : at + w]
            )
        # A 1-D boolean mask, not np.compress: compress goes through an index array 8x the text's size.
        return np.asarray(text.reshape(-1)[keep.reshape(-1)])


def engine() -> Literal["c", "numpy"]:
    """The engine :meth:`Lines.render` uses now: ``"c"`` when the C renderer is built and ``VRRL_NO_ACCEL``
    is not ``1``, else ``"numpy"``."""
    return "c" if _text_accel.module() is not None else "numpy"


def _ints(values: npt.ArrayLike) -> npt.NDArray[Any]:
    """``values`` as the C engine reads them: native integers; anything else cast to u64 as numpy's is."""
    v = np.asarray(values)
    if v.dtype.kind not in "iu" or not v.dtype.isnative:
        v = v.astype(np.uint64)
    return v


class Lines:
    """``n`` rows of text, part by part: each method adds a part to every row (see the module docstring).

    The parts are recorded (their arrays by reference: do not change them before :meth:`render`)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._calls: list[tuple[str, tuple[Any, ...]]] = []

    def lit(self, text: str | bytes) -> Lines:
        """The same text on every row."""
        self._calls.append(("lit", (text.encode() if isinstance(text, str) else bytes(text),)))
        return self

    def part(self, mat: npt.NDArray[np.uint8], lens: npt.NDArray[np.intp], *, padded: bool = False) -> Lines:
        """A ready part: ``mat`` (n, w) with each row's text right-aligned, ``lens`` its lengths.

        ``padded``: the bytes left of each row's text are NUL and no text holds one (``lens`` then unused).
        """
        self._calls.append(("part", (mat, lens, padded)))
        return self

    def pick(
        self, idx: npt.NDArray[np.integer], table: tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]
    ) -> Lines:
        """Row i gets text ``idx[i]`` of a :func:`choice_table`."""
        self._calls.append(("pick", (idx, table)))
        return self

    def uint(
        self,
        values: npt.NDArray[np.integer],
        *,
        null: npt.NDArray[np.bool_] | None = None,
        null_text: bytes = b"",
    ) -> Lines:
        """Unsigned decimal; rows where ``null`` holds get ``null_text`` instead (its NUL bytes dropped)."""
        self._calls.append(("uint", (values, null, null_text)))
        return self

    def fixed(self, values: npt.NDArray[np.integer], width: int) -> Lines:
        """Decimal zero-padded to ``width`` digits (values below ``10**width``)."""
        self._calls.append(("fixed", (values, width)))
        return self

    def hex(
        self,
        values: npt.NDArray[np.integer],
        *,
        width: int | None = None,
        null: npt.NDArray[np.bool_] | None = None,
        null_text: bytes = b"",
    ) -> Lines:
        """Lower-case hex: the fewest digits (one at least), or ``width`` digits zero-padded (16 at most; a
        wider value keeps its low digits); ``null`` as :meth:`uint`."""
        self._calls.append(("hex", (values, width, null, null_text)))
        return self

    def render(self, *, using: Literal["c", "numpy"] | None = None) -> npt.NDArray[np.uint8]:
        """The rows' text, concatenated, as one byte array; ``using`` an engine, else :func:`engine`'s."""
        if self.n == 0:
            return np.zeros(0, np.uint8)
        fast = _text_accel.module() if using != "numpy" else None
        if fast is None:
            if using == "c":
                raise RuntimeError(f"the C text engine is not available: {_text_accel.built()[1]}")
            return self._numpy()
        return np.frombuffer(fast.render(self.n, self._ops()), np.uint8)

    def _numpy(self) -> npt.NDArray[np.uint8]:
        x = _NumpyLines(self.n)
        for name, a in self._calls:
            if name == "lit":
                x.lit(a[0])
            elif name == "part":
                x.part(a[0], a[1], padded=a[2])
            elif name == "pick":
                x.pick(a[0], a[1])
            elif name == "uint":
                x.uint(a[0], null=a[1], null_text=a[2])
            elif name == "fixed":
                x.fixed(a[0], a[1])
            else:
                x.hex(a[0], width=a[1], null=a[2], null_text=a[3])
        return x.render()

    def _ops(self) -> list[tuple[Any, ...]]:
        """The parts as ``_text_fast.c``'s ops (its header comment): literals merged, columns as arrays."""
        ops: list[tuple[Any, ...]] = []
        lit = b""
        for name, a in self._calls:
            if name == "lit":
                lit += a[0]
                continue
            if lit:
                ops.append((0, lit))
                lit = b""
            if name == "part":
                ops.append((5, np.ascontiguousarray(a[0]), None if a[2] else _ints(a[1])))
            elif name == "pick":
                ops.append((4, _ints(a[0]), np.ascontiguousarray(a[1][0]), _ints(a[1][1])))
            elif name == "uint":
                ops.append((1, _ints(a[0]), _mask(a[1]), a[2].replace(b"\0", b"")))
            elif name == "fixed":
                ops.append((2, _ints(a[0]), int(a[1])))
            else:
                width = -1 if a[1] is None else int(a[1])
                ops.append((3, _ints(a[0]), width, _mask(a[2]), a[3].replace(b"\0", b"")))
        if lit:
            ops.append((0, lit))
        return ops


def _mask(null: npt.ArrayLike | None) -> npt.NDArray[np.bool_] | None:
    return None if null is None else np.asarray(null)
