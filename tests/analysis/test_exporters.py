"""The export-format registry is the one list: a format registered here (and nowhere else) is offered by
``vrrl export``/``vrrl merge`` and the library functions, its extra is checked, the docs show the table."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.helpers.analysis_logs import NAMES, run_rows, write_log
from vrrl_gpu._cli import build_parser, main
from vrrl_gpu._cli._docs import FORMATS_BEGIN, FORMATS_END
from vrrl_gpu.analysis import export_log, merge_to
from vrrl_gpu.analysis.exporters import (
    FORMATS,
    ExportFormat,
    Extra,
    Sink,
    SinkContext,
    export_formats,
    merge_formats,
    register,
    render_formats_markdown,
    unregister,
)
from vrrl_gpu.errors import MissingExtraError, RecordValueError

Records = npt.NDArray[np.void]

DOCS = Path(__file__).resolve().parents[2] / "docs"


class _TsvSink(Sink):
    """A format that exists only in this test: one ``timestamp<TAB>origin`` line per record."""

    def __init__(self, path: Path, ctx: SinkContext) -> None:
        self._f = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._ctx = ctx

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        org = origin.tolist() if origin is not None else [-1] * records.shape[0]
        for ts, o in zip(records["timestamp_ns"].tolist(), org, strict=True):
            self._f.write(f"{ts}\t{o}\n")

    def finish(self) -> None:
        self._f.write(f"# {self._ctx.source or len(self._ctx.origin_paths or ())}\n")

    def close(self) -> None:
        self._f.close()


@pytest.fixture
def tsv() -> Iterator[ExportFormat]:
    fmt = register(ExportFormat("tsv-test", "TSV (test)", _TsvSink, merge=True))
    try:
        yield fmt
    finally:
        unregister(fmt.name)


def _choices(command: str) -> tuple[str, ...]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if a.dest == "format")
    assert action.choices is not None
    return tuple(action.choices)


def test_the_cli_offers_exactly_the_registered_formats() -> None:
    assert _choices("export") == export_formats() == tuple(n for n, f in FORMATS.items() if f.export)
    assert _choices("merge") == merge_formats() == tuple(n for n, f in FORMATS.items() if f.merge)
    assert {"chrome", "parquet", "csv", "jsonl"} <= set(export_formats())
    assert {"vrrl", "jsonl", "parquet"} <= set(merge_formats())


def test_a_format_registered_in_one_place_is_offered_everywhere(tsv: ExportFormat, tmp_path: Path) -> None:
    a = write_log(tmp_path / "a.vrrl", run_rows(4, tenants=1), names=NAMES)
    b = write_log(tmp_path / "b.vrrl", run_rows(3, tenants=1, tenant_base=5), names=NAMES)
    assert tsv.name in _choices("export")
    assert tsv.name in _choices("merge")

    assert main(["export", str(a), "--format", tsv.name, "-o", str(tmp_path / "a.tsv")]) == 0
    lines = (tmp_path / "a.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[-1] == f"# {a}"
    assert len(lines) - 1 == export_log(a, tmp_path / "again.tsv", tsv.name)

    s = merge_to([a, b], tmp_path / "m.tsv", tsv.name)
    merged = (tmp_path / "m.tsv").read_text(encoding="utf-8").splitlines()
    assert merged[-1] == "# 2"
    ts = [int(line.split("\t")[0]) for line in merged[:-1]]
    assert ts == sorted(ts)
    assert {line.split("\t")[1] for line in merged[:-1]} == {"0", "1"}
    assert s.records == len(merged) - 1


def test_unregistered_and_export_only_formats_are_refused(tsv: ExportFormat, tmp_path: Path) -> None:
    log = write_log(tmp_path / "a.vrrl", run_rows(2, tenants=1))
    unregister(tsv.name)
    with pytest.raises(RecordValueError, match="export format must be one of"):
        export_log(log, tmp_path / "x", tsv.name)
    with pytest.raises(RecordValueError, match="merge format must be one of"):
        merge_to([log], tmp_path / "x", "chrome")  # registered, but not mergeable
    with pytest.raises(RecordValueError, match="already registered"):
        register(FORMATS["jsonl"])


def test_a_missing_extra_is_refused_before_any_output(tmp_path: Path) -> None:
    extra = Extra(name="nothing", package="vrrl-no-such-package", modules=("vrrl_no_such_module",))
    fmt = register(ExportFormat("needs-extra", "Needy", _TsvSink, merge=True, extra=extra))
    log = write_log(tmp_path / "a.vrrl", run_rows(2, tenants=1))
    try:
        for call in (
            lambda: export_log(log, tmp_path / "out", fmt.name),
            lambda: merge_to([log], tmp_path / "out", fmt.name),
        ):
            with pytest.raises(MissingExtraError, match=r"vrrl_gpu\[nothing\]"):
                call()
            assert list(tmp_path.iterdir()) == [log]
    finally:
        unregister(fmt.name)


def test_the_analysis_page_shows_the_registry_table() -> None:
    page = (DOCS / "analysis.md").read_text(encoding="utf-8")
    assert FORMATS_BEGIN in page, "docs/analysis.md lacks the generated table of formats"
    shown = page.split(FORMATS_BEGIN, 1)[1].split(FORMATS_END, 1)[0]
    assert shown == render_formats_markdown(), "run: python -m vrrl_gpu._cli._docs"
    for name in FORMATS:
        assert f"`{name}`" in shown
