"""Lines of text built a column at a time with numpy: the text formats' engine (no per-record Python).

A :class:`Lines` holds ``n`` rows and a list of parts, each a byte matrix of one width with each row's text
right-aligned in it and its length. :meth:`Lines.render` lays the parts side by side and keeps, by one
boolean mask, the bytes that are text: the rows' lines, concatenated. Names (opcodes, statuses, paths) are
formatted once per distinct value by the caller and picked per row (:meth:`Lines.pick`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Lines", "choice_table", "datetime_text"]

# Four decimal digits as one little-endian u32 (byte 0 the thousands digit): one gather writes four bytes.
_QUADS = np.frombuffer("".join(f"{i:04d}" for i in range(10000)).encode(), np.uint32)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_POW10 = np.array([10**i for i in range(1, 20)], np.uint64)
_POW10_32 = _POW10[:9].astype(np.uint32)
_POW16 = np.array([16**i for i in range(1, 16)], np.uint64)

# A part: u32 words (n or 1, q) holding each row's text right-aligned, and the rows' lengths (None: a
# literal, whose length is the int).
_Part = tuple[npt.NDArray[np.uint32], npt.NDArray[np.intp] | int]


def choice_table(texts: Sequence[bytes]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]:
    """The matrix (right-aligned) and lengths of ``texts``, for :meth:`Lines.pick`."""
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
    """UTC ISO 8601 with nanoseconds and a ``Z`` for each timestamp (a part for :meth:`Lines.part`).

    The whole u64 range: past the year 9999 a timestamp is written ``<n>ns``.
    """
    n = int(ns.shape[0])
    w = 32  # the 30 characters right-aligned in whole words
    secs = ns // np.uint64(1_000_000_000)
    ok = secs < np.uint64(_YEAR_10000)
    mat = np.zeros((n, w), np.uint8)
    if n:
        day = np.datetime_as_string(np.where(ok, secs, 0).astype(np.int64).astype("datetime64[s]"), unit="s")
        mat[:, 2:21] = np.frombuffer(day.astype("S19").tobytes(), np.uint8).reshape(n, 19)
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


def _decimal(v: npt.NDArray[np.unsignedinteger], digits: int, min_quads: int) -> npt.NDArray[np.uint8]:
    """(n, 4q) digit bytes of ``v``, zero-padded on the left; 8 digits at a time in u32 (it is faster)."""
    quads = max(min_quads, -(-digits // 4))
    mat = np.empty((v.shape[0], quads), np.uint32)
    rest: npt.NDArray[np.unsignedinteger] | None = v
    e8, e4 = np.uint32(10**8), np.uint32(10**4)
    for k in range(0, quads, 2):
        if rest is None:
            mat[:, : quads - k] = _QUADS[0]
            break
        if rest.dtype == np.uint64 and digits - 4 * k > 8:
            big = rest.dtype.type(10**8)
            lo = (rest % big).astype(np.uint32)
            rest = rest // big
        elif digits - 4 * k > 8:
            lo, rest = rest % e8, rest // e8
        else:
            lo, rest = rest.astype(np.uint32), None
        mat[:, quads - 1 - k] = _QUADS[lo % e4]
        if k + 1 < quads:
            mat[:, quads - 2 - k] = _QUADS[lo // e4]
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


class Lines:
    """``n`` rows of text, part by part (see the module docstring)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._parts: list[_Part] = []
        self._lit = b""

    # ------------------------------------------------------------ parts

    def lit(self, text: str | bytes) -> Lines:
        """The same text on every row."""
        self._lit += text.encode() if isinstance(text, str) else text
        return self

    def _flush(self) -> None:
        if self._lit:
            self._parts.append((_quads(np.frombuffer(self._lit, np.uint8).reshape(1, -1)), len(self._lit)))
            self._lit = b""

    def part(self, mat: npt.NDArray[np.uint8], lens: npt.NDArray[np.intp]) -> Lines:
        """A ready part: ``mat`` (n, w) with each row's text right-aligned, ``lens`` its lengths."""
        self._flush()
        self._parts.append((_quads(mat), lens))
        return self

    def pick(
        self, idx: npt.NDArray[np.integer], table: tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]
    ) -> Lines:
        """Row i gets text ``idx[i]`` of a :func:`choice_table`."""
        mat, lens = table
        return self.part(mat[idx], lens[idx])

    def uint(
        self,
        values: npt.NDArray[np.integer],
        *,
        null: npt.NDArray[np.bool_] | None = None,
        null_text: bytes = b"",
    ) -> Lines:
        """Unsigned decimal; rows where ``null`` holds get ``null_text`` instead."""
        v = np.asarray(values)
        if v.dtype.kind != "u" or null is not None:
            v = v.astype(np.uint64)
            if null is not None:
                v[null] = 0
        top = int(v.max()) if v.size else 0
        mat = _decimal(v, len(str(top)), max(1, -(-len(null_text) // 4)))
        lens = (
            np.searchsorted(_POW10 if v.dtype == np.uint64 else _POW10_32, v, side="right").astype(np.intp)
            + 1
        )
        if null is not None and null.any():
            w = mat.shape[1]
            mat[null, w - len(null_text) :] = np.frombuffer(null_text, np.uint8)
            lens[null] = len(null_text)
        return self.part(mat, lens)

    def fixed(self, values: npt.NDArray[np.integer], width: int) -> Lines:
        """Decimal zero-padded to ``width`` digits (values below ``10**width``)."""
        v = np.asarray(values)
        mat = _decimal(v if v.dtype.kind == "u" else v.astype(np.uint64), width, 1)
        return self.part(mat, np.full(self.n, width, np.intp))

    def hex(
        self,
        values: npt.NDArray[np.integer],
        *,
        width: int | None = None,
        null: npt.NDArray[np.bool_] | None = None,
        null_text: bytes = b"",
    ) -> Lines:
        """Lower-case hex: the fewest digits (one at least), or zero-padded to ``width``; ``null`` as uint."""
        v = np.asarray(values).astype(np.uint64, copy=True)
        top = int(v.max()) if v.size else 0
        digits = width if width is not None else max(1, len(f"{top:x}"))
        digits = max(digits, len(null_text))
        w = -(-digits // 4) * 4  # whole words: the leading digits past ``digits`` are never kept
        mat = np.empty((self.n, w), np.uint8)
        for k in range(w):
            mat[:, w - 1 - k] = _HEX[(v & np.uint64(15)).astype(np.intp)]
            v >>= np.uint64(4)
        if width is not None:
            lens = np.full(self.n, width, np.intp)
        else:
            lens = (
                np.searchsorted(_POW16, np.asarray(values).astype(np.uint64), side="right").astype(np.intp)
                + 1
            )
        if null is not None and null.any():
            mat[null, w - len(null_text) :] = np.frombuffer(null_text, np.uint8)
            lens[null] = len(null_text)
        return self.part(mat, lens)

    # ----------------------------------------------------------- render

    def render(self) -> npt.NDArray[np.uint8]:
        """The rows' text, concatenated, as one byte array."""
        self._flush()
        if self.n == 0 or not self._parts:
            return np.zeros(0, np.uint8)
        # Every part is whole u32 words wide, so the layout is copied a word at a time.
        words = sum(m.shape[1] for m, _ in self._parts)
        out = np.empty((self.n, words), np.uint32)
        keep = np.empty((self.n, 4 * words), np.bool_)
        # The literals keep the same bytes on every row: one row for all of them, copied to every row at once;
        # a part of varying length keeps its last ``lens`` bytes: one compare per byte (gathering a mask row
        # per row instead took about a third of the text formats' time).
        fixed = np.zeros(4 * words, np.bool_)
        varying: list[tuple[int, int, npt.NDArray[np.intp]]] = []
        c = 0
        for mat, lens in self._parts:
            q = mat.shape[1]
            w = 4 * q
            out[:, c : c + q] = mat
            if isinstance(lens, int):
                fixed[4 * c + w - lens : 4 * c + w] = True
            else:
                varying.append((4 * c, w, lens))
            c += q
        keep[:] = fixed
        for at, w, lens in varying:
            col = _COLUMN[:w] if w <= _COLUMN.shape[0] else np.arange(w, dtype=np.intp)
            np.greater_equal(col[None, :], (w - lens)[:, None], out=keep[:, at : at + w])
        # A 1-D boolean mask, not np.compress: compress goes through an index array 8x the text's size.
        return np.asarray(out.view(np.uint8).reshape(-1)[keep.reshape(-1)])
