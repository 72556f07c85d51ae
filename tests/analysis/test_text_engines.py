"""The text formats' two engines (exporters/_text.py): the C renderer (_text_fast.c) gives the numpy engine's
bytes for any sequence of parts, is the one in use wherever it can be built, rejects bad columns with a
typed error, and the exports and dumps are the same files with either."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.analysis_logs import recorder_like_log
from vrrl_gpu._cli import main
from vrrl_gpu.analysis import export_log
from vrrl_gpu.analysis.exporters import _text_accel
from vrrl_gpu.analysis.exporters._text import Lines, choice_table, datetime_text, engine


def _can_build() -> bool:
    """A compiler and Python's headers on a GIL build: where the C engine must be in use."""
    include = sysconfig.get_paths().get("include")
    return (
        shutil.which("cc") is not None
        and bool(include)
        and (Path(str(include)) / "Python.h").is_file()
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
    )


@pytest.fixture
def c_engine(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("VRRL_NO_ACCEL", raising=False)
    m = _text_accel.module()
    if m is None:
        pytest.skip(f"the C text engine is not available here: {_text_accel.built()[1]}")
    return m


# ---------------------------------------------------------------- the engine in use


def test_the_c_engine_is_used_where_it_can_be_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VRRL_NO_ACCEL", raising=False)
    monkeypatch.delenv("CC", raising=False)
    if not _can_build():
        pytest.skip("no C compiler or no Python.h here: the numpy engine is the right one")
    used, why = _text_accel.built()
    assert used, why
    assert engine() == "c"
    monkeypatch.setenv("VRRL_NO_ACCEL", "1")
    assert engine() == "numpy"
    assert _text_accel.built() == (False, "VRRL_NO_ACCEL=1")


def test_an_export_goes_through_the_c_renderer(
    c_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = c_engine.render

    def counted(n: int, ops: list[tuple[Any, ...]]) -> bytearray:
        calls.append(n)
        return bytearray(real(n, ops))

    monkeypatch.setattr(c_engine, "render", counted)
    log = recorder_like_log(tmp_path / "run.vrrl", 500)
    export_log(log, tmp_path / "x.jsonl", "jsonl")
    assert sum(calls) == 500


def test_without_a_compiler_the_numpy_engine_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VRRL_NO_ACCEL", raising=False)
    monkeypatch.setenv("CC", "vrrl-no-such-compiler")
    monkeypatch.setenv("VRRL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_text_accel.EXTENSION, "state", {})
    assert engine() == "numpy"
    assert "no C compiler" in _text_accel.built()[1]
    assert Lines(2).uint(np.array([3, 40], np.uint32)).lit("\n").render().tobytes() == b"3\n40\n"
    with pytest.raises(RuntimeError, match="not available"):
        Lines(1).lit("x").render(using="c")


# ---------------------------------------------------------------- the same bytes

U64_EDGES = [0, 1, 9, 10, 99, 100, 2**32 - 1, 2**32, 10**19 - 1, 10**19, 2**63, 2**64 - 1]
INT_DTYPES = ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "?"]


@st.composite
def _column(draw: st.DrawFn, n: int, *, top: int | None = None) -> npt.NDArray[Any]:
    """``n`` integers of a random dtype (``top``: u64 values below it), sometimes a strided view."""
    if top is not None:
        vals = draw(st.lists(st.integers(0, top - 1), min_size=n, max_size=n))
        dt = np.dtype("u8")
    else:
        dt = np.dtype(draw(st.sampled_from(INT_DTYPES)))
        if dt.kind == "b":
            lo, hi = 0, 1
        else:
            info = np.iinfo(dt)
            lo, hi = int(info.min), int(info.max)
        edges = [x for x in [*U64_EDGES, -1, lo, hi] if lo <= x <= hi]
        vals = draw(st.lists(st.one_of(st.sampled_from(edges), st.integers(lo, hi)), min_size=n, max_size=n))
    a = np.array(vals, dtype=dt)
    if draw(st.booleans()):  # a strided view, as a record field or an args column is
        wide = np.zeros(2 * n, dt)
        wide[1::2] = a
        a = wide[1::2]
    return a


@st.composite
def _ops(draw: st.DrawFn, n: int) -> list[tuple[str, tuple[Any, ...]]]:
    ops: list[tuple[str, tuple[Any, ...]]] = []
    nulls = st.lists(st.booleans(), min_size=n, max_size=n).map(lambda x: np.array(x, np.bool_))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["lit", "uint", "fixed", "hex", "pick", "part"]))
        if kind == "lit":
            ops.append(("lit", (draw(st.one_of(st.binary(max_size=6), st.text(max_size=4))),)))
        elif kind == "uint":
            null = draw(st.none() | nulls)
            ops.append(("uint", (draw(_column(n)), null, draw(st.binary(max_size=24)))))
        elif kind == "fixed":
            width = draw(st.integers(0, 24))
            ops.append(("fixed", (draw(_column(n, top=min(10**width, 2**64))), width)))
        elif kind == "hex":
            width = draw(st.none() | st.integers(0, 20))
            null = draw(st.none() | nulls)
            ops.append(("hex", (draw(_column(n)), width, null, draw(st.binary(max_size=18)))))
        elif kind == "pick":
            texts = draw(st.lists(st.binary(max_size=9), min_size=1, max_size=5))
            k = len(texts)
            idx = np.array(draw(st.lists(st.integers(-k, k - 1), min_size=n, max_size=n)), np.intp)
            ops.append(("pick", (idx, choice_table(texts))))
        else:
            padded = draw(st.booleans())
            alphabet = (
                st.binary(max_size=7).map(lambda b: b.replace(b"\0", b"z"))
                if padded
                else st.binary(max_size=7)
            )
            rows = draw(st.lists(alphabet, min_size=n, max_size=n))
            w = max([len(r) for r in rows] + [draw(st.integers(0, 3))])
            mat = np.zeros((n, w), np.uint8)
            for i, r in enumerate(rows):
                if r:
                    mat[i, w - len(r) :] = np.frombuffer(r, np.uint8)
            ops.append(("part", (mat, np.array([len(r) for r in rows], np.intp), padded)))
    return ops


def _lines(n: int, ops: list[tuple[str, tuple[Any, ...]]]) -> Lines:
    x = Lines(n)
    for kind, a in ops:
        if kind == "lit":
            x.lit(a[0])
        elif kind == "uint":
            x.uint(a[0], null=a[1], null_text=a[2])
        elif kind == "fixed":
            x.fixed(a[0], a[1])
        elif kind == "hex":
            x.hex(a[0], width=a[1], null=a[2], null_text=a[3])
        elif kind == "pick":
            x.pick(a[0], a[1])
        else:
            x.part(a[0], a[1], padded=a[2])
    return x.lit("\n")


# The fixture only unsets VRRL_NO_ACCEL and returns the module: the same for every example.
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_both_engines_give_the_same_bytes(c_engine: Any, data: st.DataObject) -> None:
    n = data.draw(st.one_of(st.sampled_from([0, 1, 2, 3, 7, 33]), st.integers(0, 64)), label="n")
    ops = data.draw(_ops(n), label="ops")
    lines = _lines(n, ops)
    c, ref = lines.render(using="c"), lines.render(using="numpy")
    assert c.dtype == ref.dtype == np.uint8
    assert c.tobytes() == ref.tobytes()


def test_the_u64_extremes_and_the_datetime_part(c_engine: Any) -> None:
    v = np.array([0, 1, 2**64 - 1, 10**19, 10**19 - 1], np.uint64)
    null = np.array([False, False, False, True, False])
    lines = (
        Lines(5)
        .uint(v)
        .lit(" ")
        .uint(v, null=null, null_text=b"n\0a")
        .lit(" ")
        .hex(v)
        .lit(" ")
        .hex(v, width=16)
    )
    lines.lit(" ").hex(v, width=3, null=null, null_text=b"-").lit(" ").fixed(v % np.uint64(1000), 3).lit(" ")
    lines.part(*datetime_text(v), padded=True).lit("\n")
    c = lines.render(using="c").tobytes()
    assert c == lines.render(using="numpy").tobytes()
    assert c.splitlines()[2] == (
        b"18446744073709551615 18446744073709551615 ffffffffffffffff ffffffffffffffff fff 615 "
        b"2554-07-21T23:34:33.709551615Z"
    )
    assert c.splitlines()[3].startswith(
        b"10000000000000000000 na 8ac7230489e80000 8ac7230489e80000 - 000 2286-11-20T"
    )


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("ops", "error"),
    [
        ([(1, np.zeros(3, np.float64), None, b"")], TypeError),  # not an integer column
        ([(1, np.zeros(3, np.dtype(">u8")), None, b"")], TypeError),  # not native
        ([(1, np.zeros(2, np.uint64), None, b"")], ValueError),  # too short
        ([(1, np.zeros((3, 1), np.uint64), None, b"")], ValueError),  # not 1-D
        ([(1, np.zeros(3, np.uint64), np.zeros(3, np.uint8), b"")], TypeError),  # a null mask not bool
        ([(3, np.zeros(3, np.uint64), -2, None, b"")], ValueError),  # hex width
        ([(2, np.zeros(3, np.uint64), -1)], ValueError),  # fixed width
        ([(4, np.array([0, 1, 2]), np.zeros((2, 4), np.uint8), np.zeros(2, np.intp))], IndexError),
        ([(4, np.array([0, 0, 0]), np.zeros((1, 4), np.uint8), np.array([5]))], ValueError),  # len > width
        (
            [(4, np.array([0, 0, 0]), np.zeros((1, 8), np.uint8)[:, ::2], np.array([1]))],
            (ValueError, BufferError),
        ),
        ([(5, np.zeros((2, 4), np.uint8), None)], ValueError),  # a part of 2 rows for 3
        ([(5, np.zeros((3, 4), np.uint16), None)], TypeError),
        ([(5, np.zeros((3, 4), np.uint8), np.array([0, -1, 0]))], ValueError),
        ([(9, b"")], ValueError),
        ([(0,)], ValueError),
        ([[0, b""]], TypeError),
    ],
)
def test_bad_columns_raise_a_typed_error(c_engine: Any, ops: list[Any], error: Any) -> None:
    with pytest.raises(error):
        c_engine.render(3, ops)


def test_a_bad_pick_index_raises_in_both_engines(c_engine: Any) -> None:
    lines = Lines(2).pick(np.array([0, 3]), choice_table([b"a", b"b"]))
    for using in ("c", "numpy"):
        with pytest.raises(IndexError):
            lines.render(using=using)  # type: ignore[arg-type]


# ---------------------------------------------------------------- whole exports


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recorder_like_log(tmp_path_factory.mktemp("engines") / "run.vrrl", 5003)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "chrome"])
def test_exports_are_the_same_file_with_either_engine(
    c_engine: Any, log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    export_log(log, tmp_path / "c", fmt)
    monkeypatch.setenv("VRRL_NO_ACCEL", "1")
    export_log(log, tmp_path / "numpy", fmt)
    assert (tmp_path / "c").read_bytes() == (tmp_path / "numpy").read_bytes()


@pytest.mark.parametrize("flags", [[], ["--json"], ["--csv"]])
def test_dumps_are_the_same_text_with_either_engine(
    c_engine: Any,
    log: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
    flags: list[str],
) -> None:
    assert main(["dump", *flags, str(log)]) == 0
    c = capsysbinary.readouterr().out
    monkeypatch.setenv("VRRL_NO_ACCEL", "1")
    assert main(["dump", *flags, str(log)]) == 0
    assert capsysbinary.readouterr().out == c
    assert len(c.splitlines()) >= 5003
