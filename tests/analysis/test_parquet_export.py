"""The Parquet layout: row groups of PARQUET_ROWS, dictionary pages on the text columns only, and the same
schema and values as the records' rows (read back with pyarrow.parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.analysis_logs import NAMES, T0, rec, recorder_like_log, run_rows, write_log
from vrrl_gpu.analysis import _export, export_log, merge_to
from vrrl_gpu.analysis._fleet_dataset import export_fleet
from vrrl_gpu.analysis._streams import mapper_for
from vrrl_gpu.analysis.exporters import FORMATS
from vrrl_gpu.analysis.exporters._parquet import PARQUET_ROWS, _strings, parquet_schema, text_columns
from vrrl_gpu.analysis.exporters._rows import record_rows
from vrrl_gpu.format import SlotStatus
from vrrl_gpu.format._reader import iter_record_chunks
from vrrl_gpu.format._sidecar import load_sidecar

pa = pytest.importorskip("pyarrow", reason="pyarrow (the parquet extra) is not installed")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")

TEXT = {"opcode_name", "slot_status_name", "failure_class_name"}


def _expected(log: Path) -> Any:
    """The log's rows as an Arrow table of the export's schema, built row by row from :func:`record_rows`."""
    schema = parquet_schema(with_origin=False)
    chunks = list(iter_record_chunks(str(log)))
    if not chunks:
        return schema.empty_table()
    records = np.concatenate(chunks)
    side = load_sidecar(log)
    streams = mapper_for(str(log), sidecar=side)
    rows = list(
        record_rows(
            records,
            opcode_names=dict(side.opcode_names) if side else {},
            streams=streams(records) if streams is not None else None,
        )
    )
    for r in rows:
        r["time"] = r["timestamp_ns"] if r["timestamp_ns"] < 1 << 63 else None
    return pa.Table.from_pylist(rows, schema=schema)


def _dictionary_columns(path: Path) -> list[set[str]]:
    md = pq.ParquetFile(path).metadata
    out = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        cols = (rg.column(k) for k in range(rg.num_columns))
        out.append({c.path_in_schema for c in cols if c.has_dictionary_page})
    return out


def _group_rows(path: Path) -> list[int]:
    md = pq.ParquetFile(path).metadata
    return [md.row_group(g).num_rows for g in range(md.num_row_groups)]


@pytest.mark.parametrize("n", [3 * PARQUET_ROWS + 123, 101])
def test_rows_groups_and_dictionaries(tmp_path: Path, n: int) -> None:
    log = recorder_like_log(tmp_path / "a.vrrl", n)
    out = tmp_path / "a.parquet"
    assert export_log(log, out, "parquet") == n
    got = pq.read_table(out)
    want = _expected(log)
    assert got.schema.equals(want.schema)
    assert got.equals(want)
    assert got.column("opcode_name").null_count > 0  # the unnamed opcode: a null among the names
    assert got.column("stream").null_count > 0  # the meta records have no stream
    full, last = divmod(n, PARQUET_ROWS)
    assert _group_rows(out) == [PARQUET_ROWS] * full + ([last] if last else [])
    assert _dictionary_columns(out) == [TEXT] * len(_group_rows(out))


def test_a_time_past_int64_is_null(tmp_path: Path) -> None:
    late = (1 << 63) + 5 - T0
    rows = [*run_rows(3), rec(late, 9, status=SlotStatus.COMPLETED)]
    log = write_log(tmp_path / "late.vrrl", rows, names=NAMES)
    out = tmp_path / "late.parquet"
    export_log(log, out, "parquet")
    got = pq.read_table(out)
    assert got.equals(_expected(log))
    assert got.column("time").is_null().to_pylist() == [False] * 6 + [True]
    assert got.column("timestamp_ns").to_pylist()[-1] == (1 << 63) + 5


def test_an_empty_log(tmp_path: Path) -> None:
    log = write_log(tmp_path / "empty.vrrl", [], capacity=8)
    out = tmp_path / "empty.parquet"
    assert export_log(log, out, "parquet") == 0
    got = pq.read_table(out)
    assert got.num_rows == 0
    assert got.schema.equals(parquet_schema(with_origin=False))


def test_the_export_reads_the_smaller_of_its_chunk_and_the_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert FORMATS["parquet"].chunk_records == PARQUET_ROWS
    assert all(f.chunk_records is None for name, f in FORMATS.items() if name != "parquet")
    log = recorder_like_log(tmp_path / "a.vrrl", 1001)
    monkeypatch.setattr(_export, "CHUNK_RECORDS", 97)
    out = tmp_path / "a.parquet"
    export_log(log, out, "parquet")
    assert _group_rows(out) == [97] * 10 + [31]
    assert pq.read_table(out).equals(_expected(log))


def test_a_merge_dictionary_encodes_the_origin_path(tmp_path: Path) -> None:
    a = recorder_like_log(tmp_path / "a.vrrl", PARQUET_ROWS + 1, seed=1)
    b = recorder_like_log(tmp_path / "b.vrrl", 999, seed=2)
    out = tmp_path / "m.parquet"
    merge_to([a, b], out, "parquet")
    got = pq.read_table(out)
    assert got.schema.equals(parquet_schema(with_origin=True))
    origin = got.column("origin").combine_chunks()
    index = np.asarray(origin.field("index"))
    assert np.bincount(index).tolist() == [PARQUET_ROWS + 1, 999]
    assert origin.field("path").to_pylist() == [[str(a), str(b)][i] for i in index.tolist()]
    assert set(_dictionary_columns(out)[0]) == TEXT | {"origin.path"}
    assert max(_group_rows(out)) <= PARQUET_ROWS


def test_the_fleet_dataset_writes_with_the_same_settings(tmp_path: Path) -> None:
    for r in (0, 1):
        write_log(tmp_path / f"rank{r}.vrrl", run_rows(PARQUET_ROWS // 2 + 5 * r, tenants=1, tenant_base=r))
    export_fleet([str(tmp_path)], tmp_path / "fleet")
    files = sorted((tmp_path / "fleet").glob("rank=*/*.parquet"))
    assert len(files) == 2
    for f, n in zip(files, (PARQUET_ROWS, PARQUET_ROWS + 10), strict=True):
        assert sum(_group_rows(f)) == n
        assert max(_group_rows(f)) == PARQUET_ROWS
        assert set().union(*_dictionary_columns(f)) == TEXT | {"host", "device", "device_uuid", "source"}


def test_text_columns() -> None:
    assert set(text_columns(parquet_schema(with_origin=False))) == TEXT
    assert set(text_columns(parquet_schema(with_origin=True))) == TEXT | {"origin.path"}


def test_strings() -> None:
    values = ("gemm", None, "", "softmax\u00e9\u4e2d", "a,\"b\"", "bell\x07")
    idx = np.array([0, 1, 2, 3, 3, 4, 5, 1, 0, 2], np.intp)
    want = pa.array([values[i] for i in idx.tolist()], pa.string())
    got = _strings(pa, idx, values)
    got.validate(full=True)
    assert got.equals(want)
    assert _strings(pa, np.zeros(0, np.intp), values).equals(pa.array([], pa.string()))
    assert _strings(pa, np.array([0, 0]), ("x",)).null_count == 0


def test_the_export_does_not_import_pyarrow_compute(tmp_path: Path) -> None:
    # pyarrow.compute and the kernels it pages in were ~8 MiB of the export's peak RSS (issue 13): the
    # export builds its columns from buffers and never needs it. In a child: this process may hold it.
    import json
    import os
    import subprocess
    import sys

    import vrrl_gpu

    log = recorder_like_log(tmp_path / "a.vrrl", 5000)
    code = (
        "import json, sys\n"
        "from vrrl_gpu.analysis import export_log\n"
        "export_log(sys.argv[1], sys.argv[2], 'parquet')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pyarrow'))))\n"
    )
    env = dict(os.environ)
    root = str(Path(vrrl_gpu.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-c", code, str(log), str(tmp_path / "a.parquet")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    mods = json.loads(p.stdout)
    assert "pyarrow.parquet" in mods
    assert "pyarrow.compute" not in mods
