"""``vrrl fleet`` and the rank-partitioned dataset on the synthetic 1,000-rank fleet (helpers/fleet.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.analysis_logs import run_rows, write_log
from tests.helpers.fleet import LAUNCHES, PER_EPOCH, Fleet, subset_of
from vrrl_gpu._cli import main
from vrrl_gpu._cli._fleet_cmds import print_fleet

duckdb = pytest.importorskip("duckdb", reason="duckdb (the analysis extra) is not installed")
pytest.importorskip("pyarrow", reason="pyarrow (the analysis extra) is not installed")

from vrrl_gpu.analysis._fleet import FleetResult, analyze_fleet, keep_rows  # noqa: E402
from vrrl_gpu.analysis._fleet_logs import find_logs, identify_logs  # noqa: E402

FULL = (LAUNCHES - 1) // PER_EPOCH, LAUNCHES - 1  # (epoch, slot) of a rank that ran every launch


@pytest.fixture(scope="session")
def result(fleet: Fleet) -> FleetResult:
    return analyze_fleet([str(fleet.root)])


def _progress(slot: int) -> tuple[int, int]:
    return slot // PER_EPOCH, slot


def test_the_fleet_answers(fleet: Fleet, result: FleetResult) -> None:
    s = fleet.spec
    assert len(fleet.paths()) == s.ranks - 1  # one rank's log is missing
    # The stopped ranks' newest launch is the one they stopped in; lagging ranks got through fewer.
    stopped = {s.hung: s.hung_slot, s.faulted_first: s.faulted_slot, **dict(s.late_failures)}
    stopped |= {r: n - 1 for r, n in s.lagging}
    expect_behind = {}
    for r, slot in stopped.items():
        e, sl = _progress(slot)
        expect_behind[r] = (e, sl, FULL[0] - e, FULL[1] - sl)
    got_behind = {b.rank: (b.epoch, b.slot, b.behind_epochs, b.behind_slots) for b in result.behind}
    assert got_behind == expect_behind
    readable = s.ranks - 2  # the missing rank, and the damaged log with no readable header
    assert result.majority is not None
    assert (result.majority.epoch, result.majority.slot) == FULL
    assert (result.majority.ranks, result.majority.of) == (readable - len(stopped), readable)

    first = result.first_failure
    assert first is not None
    assert (first.rank, first.slot, first.time_ns, first.status) == (
        s.faulted_first, s.faulted_slot, fleet.fault_ns[s.faulted_first], "faulted",
    )  # fmt: skip
    assert first.backend_error_code == 700 and first.opcode_name in {"allreduce", "gemm", "softmax"}  # noqa: PT018
    late = sorted(s.late_failures, key=lambda rs: fleet.fault_ns[rs[0]])
    assert [(f.rank, f.slot, f.after_ns) for f in result.failed_after] == [
        (r, slot, fleet.fault_ns[r] - fleet.fault_ns[s.faulted_first]) for r, slot in late
    ]

    assert [h.rank for h in result.hang_suspects] == [s.hung]
    hung = result.hang_suspects[0]
    assert hung.last_ns == fleet.last_ns[s.hung] and (hung.epoch, hung.slot) == _progress(s.hung_slot)  # noqa: PT018
    assert result.newest_ns is not None and result.hang_cutoff_ns == result.newest_ns - 60 * 10**9  # noqa: PT018

    assert [(g.rank, g.state) for g in result.missing] == [(s.missing, "missing")]
    damaged = {g.rank: g for g in result.damaged}
    assert set(damaged) == {s.damaged_header, s.damaged_slot}
    assert "header magic" in damaged[s.damaged_header].reason
    assert damaged[s.damaged_header].records == 0
    assert "1 corrupt slot" in damaged[s.damaged_slot].reason
    assert damaged[s.damaged_slot].records > 0


def test_last_launch_per_rank_and_stream(fleet: Fleet, result: FleetResult) -> None:
    s = fleet.spec
    last = {(x.rank, x.stream): x for x in result.last_launches}
    # The format-layer ranks with a sidecar: even slots on stream 0, odd on stream 1.
    healthy = last[(10, 1)], last[(10, 0)]
    assert [(x.slot, x.epoch, x.completed) for x in healthy] == [(23, 3, True), (22, 3, True)]
    assert healthy[0].opcode_name == "softmax"  # slot 23: OPS[23 % 3]
    h = last[(s.hung, 0)]
    assert (h.slot, h.completed, h.time_ns) == (s.hung_slot, False, fleet.last_ns[s.hung])
    # No sidecar: the rank is the tenant id, the stream and the opcode names are not known.
    nosc = [x for x in result.last_launches if x.rank == s.no_sidecar_from]
    assert [(x.stream, x.slot, x.opcode_name) for x in nosc] == [(None, 23, "0x2003")]
    info = result.rank_info()
    assert (info[s.no_sidecar_from].rank_source, info[s.no_sidecar_from].tenant) == (
        "tenant",
        s.no_sidecar_from,
    )
    # The ranks recorded by the Recorder on the twin: their rank from RANK, their device the twin's.
    for r in s.twin_ranks:
        (x,) = [x for x in result.last_launches if x.rank == r]
        assert (x.slot, x.epoch, x.opcode_name) == (LAUNCHES - 1, FULL[0], "axpy")
        assert info[r].rank_source == "sidecar" and "twin" in info[r].device  # noqa: PT018
        assert info[r].world_size == s.ranks and info[r].pid == os.getpid()  # noqa: PT018


def test_the_dataset_gives_the_same_answers(fleet: Fleet, dataset: Path) -> None:
    subset = subset_of(fleet)
    manifest = json.loads((dataset / "_vrrl_fleet.json").read_text())
    # The sidecars say 1,000 ranks, so every rank without a log in the subset is listed as missing.
    assert len(manifest["ranks"]) == fleet.spec.ranks
    assert sum(r["state"] != "missing" for r in manifest["ranks"]) == len(subset)
    parts = sorted(p.parent.name for p in dataset.glob("rank=*/*.parquet"))
    assert len(parts) == len(subset) - 1 and "rank=0" in parts  # noqa: PT018  # no rows: the bad header
    from_logs = analyze_fleet(subset)
    assert from_logs.first_failure is not None and from_logs.first_failure.rank == fleet.spec.faulted_first  # noqa: PT018
    again = analyze_fleet([str(dataset)])
    a, b = again.to_dict(), from_logs.to_dict()
    a.pop("source"), b.pop("source")
    assert a == b


def test_the_dataset_reads_as_it_is_in_duckdb(fleet: Fleet, dataset: Path) -> None:
    glob = str(dataset / "**" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT rank, count(*) AS n, any_value(host) AS host, any_value(pid) AS pid, "
        f"max(epoch) AS epoch FROM read_parquet('{glob}', hive_partitioning = true) "
        f"WHERE rank IN (0, 10, {fleet.spec.hung}) GROUP BY rank ORDER BY rank"
    ).fetchall()
    assert [(r, h, e) for r, _, h, _, e in rows] == [
        (0, os.uname().nodename, 3),
        (10, "node001", 3),
        (fleet.spec.hung, f"node{fleet.spec.hung // 8:03d}", 2),
    ]  # fmt: skip
    assert rows[1][3] == 10_010


def test_fleet_cli_json_and_tables(
    fleet: Fleet, result: FleetResult, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fleet", str(fleet.root), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got == json.loads(json.dumps(result.to_dict()))
    print_fleet(result)
    out = capsys.readouterr().out
    assert f"first failure: rank {fleet.spec.faulted_first} " in out
    assert "Hang suspects" in out and "Missing and damaged logs" in out  # noqa: PT018


def test_hang_cutoff_options(fleet: Fleet, result: FleetResult, capsys: pytest.CaptureFixture[str]) -> None:
    s = fleet.spec
    assert result.newest_ns is not None
    # A cut-off after every breadcrumb: every rank without a failure and with records is a suspect.
    assert main(["fleet", str(fleet.root), "--json", "--since", str(result.newest_ns + 1)]) == 0
    late = json.loads(capsys.readouterr().out)
    failed = {s.faulted_first, *(r for r, _ in s.late_failures)}
    assert len(late["hang_suspects"]) == s.ranks - 2 - len(failed)
    assert main(["fleet", str(fleet.root), "--since", "yesterday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err


def test_fleet_export_cli(fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    paths = [str(p) for p in fleet.paths()[:5]]
    assert main(["export", *paths, "--format", "parquet", "-o", str(out)]) == 0
    assert "5 rank log(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "_vrrl_fleet.json",
        *sorted(f"rank={r}" for r in range(5)),
    ]
    assert main(["export", *paths, "--format", "parquet", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", *paths[:2], "--format", "parquet", "-o", str(out), "--force"]) == 0
    assert len(list(out.glob("rank=*"))) == 2
    other = tmp_path / "mine"
    other.mkdir()
    assert main(["export", *paths, "--format", "parquet", "-o", str(other), "--force"]) == 2
    assert "not a fleet dataset" in capsys.readouterr().err
    assert (
        main(["export", str(fleet.root / "rank000*.vrrl"), "--format", "csv", "-o", str(tmp_path / "x")]) == 2
    )
    assert "--format parquet" in capsys.readouterr().err


def test_a_named_log_that_is_missing_is_reported(tmp_path: Path) -> None:
    for r in (0, 1):
        write_log(tmp_path / f"rank{r}.vrrl", run_rows(12 + 2 * r, tenants=1, tenant_base=r))
    res = analyze_fleet(
        [str(tmp_path / "rank0.vrrl"), str(tmp_path / "rank1.vrrl"), str(tmp_path / "rank2.vrrl")]
    )
    assert [(g.rank, g.state, g.rank_source) for g in res.missing] == [(2, "missing", "file name")]
    assert [g.rank_source for g in res.ranks if g.state == "ok"] == ["tenant", "tenant"]
    assert res.first_failure is None and res.hang_suspects == []  # noqa: PT018
    # Two ranks, one at each slot: the majority is the one further on (ties go forward).
    assert [(b.rank, b.behind_slots) for b in res.behind] == [(0, 2)]
    # A cut-off after every breadcrumb makes both suspects; a window wider than the run, neither.
    assert res.newest_ns is not None
    later = analyze_fleet([str(tmp_path)], since_ns=res.newest_ns + 1)
    assert [h.rank for h in later.hang_suspects] == [0, 1]
    assert [h.rank for h in analyze_fleet([str(tmp_path)], hang_after_s=0.0).hang_suspects] == [0]
    assert analyze_fleet([str(tmp_path)], hang_after_s=1e6).hang_suspects == []


def test_rank_fallbacks(tmp_path: Path) -> None:
    # Same tenant everywhere: the number in the file name; no usable number: the sorted order.
    for name in ("job-a-7.vrrl", "job-b-3.vrrl"):
        write_log(tmp_path / name, run_rows(3, tenants=1))
    found, missing = find_logs([str(tmp_path)])
    assert missing == []
    assert [(g.rank, g.rank_source) for g in identify_logs(found)] == [(7, "file name"), (3, "file name")]
    (tmp_path / "b").mkdir()
    for name in ("x-1.vrrl", "y-1.vrrl"):
        write_log(tmp_path / "b" / name, run_rows(3))
    found, _ = find_logs([str(tmp_path / "b" / "*.vrrl")])
    assert [(Path(g.path).name, g.rank, g.rank_source) for g in identify_logs(found)] == [
        ("x-1.vrrl", 0, "order"), ("y-1.vrrl", 1, "order"),
    ]  # fmt: skip


def test_keep_rows_keeps_what_the_sql_picks() -> None:
    from tests.helpers.analysis_logs import records

    recs = records(run_rows(40, tenants=1, fault_after=30))
    streams = (recs["slot_idx"] % 2).astype(np.int32)
    kept = recs[keep_rows(recs, streams)]
    # The newest launch of each stream (slot 30 began, faulted; slot 29 completed) and the failure record.
    assert sorted(set(kept["slot_idx"].tolist())) == [29, 30]
    assert int((kept["slot_status"] == 3).sum()) == 1


def test_import_vrrl_gpu_does_not_import_duckdb() -> None:
    code = "import sys, vrrl_gpu, vrrl_gpu._cli, vrrl_gpu.analysis; print('duckdb' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "False"


def test_the_dataset_query_in_the_docs(fleet: Fleet, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "analysis.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- fleet-sql -->\n```sql\n(.*?)```", text, re.S)
    assert m, "docs/analysis.md lost its fleet query"
    monkeypatch.chdir(dataset.parent)
    assert dataset.name == "fleet"
    got = duckdb.sql(m.group(1)).fetchall()
    # The furthest behind by (epoch, newest breadcrumb): the stopped and the slow ranks.
    s = fleet.spec
    slots = {s.hung: s.hung_slot, s.faulted_first: s.faulted_slot, **dict(s.late_failures)}
    slots |= {r: n - 1 for r, n in s.lagging}
    order = sorted(slots, key=lambda r: (slots[r] // PER_EPOCH, fleet.last_ns[r]))[:5]
    assert [row[0] for row in got] == order
    assert [row[4] for row in got] == [int(r in fleet.fault_ns) for r in order]
