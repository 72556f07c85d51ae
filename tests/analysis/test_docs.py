"""docs/cli.md stays generated from the parsers; the DuckDB query in docs/analysis.md runs and is right."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.helpers.analysis_logs import NAMES, run_rows, write_log
from vrrl_gpu._cli import COMMAND_MODULES, build_parser
from vrrl_gpu._cli._docs import render_cli_markdown
from vrrl_gpu.analysis import export_log

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_cli_md_is_generated_from_every_command_module() -> None:
    text = render_cli_markdown()
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == text, "docs/cli.md is out of date: run  python -m vrrl_gpu._cli._docs"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    names = list(sub.choices)  # type: ignore[arg-type]
    assert len(COMMAND_MODULES) >= 2
    for name in names:
        assert f"## vrrl {name}\n" in text


def test_cli_md_leaves_out_hidden_options() -> None:
    text = render_cli_markdown()
    assert "--max-records" not in text
    assert "--interval SECONDS" in text


def _sql_block(markdown: str) -> str:
    m = re.search(r"```sql\n(.*?)```", markdown, re.S)
    assert m, "docs/analysis.md has no ```sql block"
    return m.group(1)


def test_the_duckdb_query_in_the_docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("CI"):
        import duckdb
        import pyarrow  # noqa: F401  # CI installs the test extra: a missing module is a failure there
    else:
        duckdb = pytest.importorskip("duckdb", reason="duckdb (test extra) is not installed")
        pytest.importorskip("pyarrow", reason="pyarrow (the parquet extra) is not installed")
    (tmp_path / "ranks").mkdir()
    for r in range(4):
        rows = run_rows(9, tenants=1, tenant_base=r, fault_after=5 if r == 2 else None)
        log = write_log(tmp_path / f"rank{r}.vrrl", rows, names=NAMES)
        export_log(log, tmp_path / "ranks" / f"rank{r}.parquet", "parquet")
    monkeypatch.chdir(tmp_path)
    query = _sql_block((DOCS / "analysis.md").read_text(encoding="utf-8"))
    got = duckdb.connect().sql(query).fetchall()
    # Rank 2 stops at launch 5 (reduce, 5 % 3 == 2), which faults: one failure, 6 launches in all.
    assert got[0] == (2, "reduce", 2, 1)
    assert len(got) == 4 * 3
    per_rank = {}
    for rank, _name, launches, failures in got:
        per_rank[rank] = per_rank.get(rank, 0) + launches
        assert failures == (1 if (rank, _name) == (2, "reduce") else 0)
    assert per_rank == {0: 9, 1: 9, 2: 6, 3: 9}
