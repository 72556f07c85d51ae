"""A fleet of rank logs as one Parquet dataset, partitioned by rank the Hive way (docs/analysis.md).

::

    OUT/_vrrl_fleet.json                 each input: rank, path, state (ok/damaged/missing), host, ...
    OUT/rank=0/part-00000.parquet        rank 0's records: the Parquet export's columns + host, device,
    OUT/rank=1/part-00001.parquet        device_uuid, pid, tenant, source
    ...

``rank`` lives only in the folder name, as Hive partitioning has it, so DuckDB
(``hive_partitioning = true``), Polars (``hive_partitioning=True``), Spark and Trino read the folder as it
is. The manifest starts with ``_``, which those engines skip as data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrrl_gpu.analysis._fleet import MANIFEST_NAME
from vrrl_gpu.analysis._fleet_logs import (
    RankLog,
    expected_missing,
    find_logs,
    identify_logs,
    load_log,
    read_sidecars,
)
from vrrl_gpu.analysis.exporters._parquet import (
    PARQUET_EXTRA,
    PARQUET_ROWS,
    parquet_schema,
    parquet_writer,
    record_table,
)
from vrrl_gpu.errors import RecordValueError, VrrlIoError

__all__ = ["FLEET_SCHEMA", "FleetExportSummary", "dataset_schema", "export_fleet"]

FLEET_SCHEMA = "vrrl_gpu.fleet/1"


@dataclass(frozen=True)
class FleetExportSummary:
    """What :func:`export_fleet` wrote: the folder, its Parquet files, records, and the inputs' states."""

    out: str
    files: int
    records: int
    ranks: list[RankLog]

    @property
    def damaged(self) -> list[RankLog]:
        return [r for r in self.ranks if r.state == "damaged"]

    @property
    def missing(self) -> list[RankLog]:
        return [r for r in self.ranks if r.state == "missing"]


def dataset_schema() -> Any:
    """The Arrow schema of each file: :func:`parquet_schema`'s columns, then the sidecar's identity."""
    pa, _ = PARQUET_EXTRA.load("a Parquet dataset")
    base = parquet_schema(with_origin=False)
    extra = [
        pa.field("host", pa.string()),
        pa.field("device", pa.string()),
        pa.field("device_uuid", pa.string()),
        pa.field("pid", pa.int64()),
        pa.field("tenant", pa.int64()),
        pa.field("source", pa.string()),
    ]
    return pa.schema([*base, *extra])


def _prepare_out(out: Path, force: bool) -> None:
    if os.path.lexists(out):
        if not force:
            raise VrrlIoError(f"{out}: already exists; pass --force (force=True) to replace it")
        if out.is_symlink() or not out.is_dir() or not (out / MANIFEST_NAME).is_file():
            raise VrrlIoError(
                f"{out}: not a fleet dataset written by vrrl (no {MANIFEST_NAME}); not replaced, even with "
                f"--force: choose another folder"
            )
    if not out.parent.is_dir():
        raise VrrlIoError(f"{out.parent}: no such directory for the output")


def export_fleet(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    world_size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> FleetExportSummary:
    """Write the logs the inputs name (paths, folders, globs) into the dataset folder ``out``.

    One log is in memory at a time. The folder is written beside ``out`` and renamed into place at the
    end; ``force`` replaces an earlier dataset (a folder with a manifest), never another folder. Damaged
    logs contribute what salvage reads and are listed as damaged; missing ones are listed too.
    """
    pa, _ = PARQUET_EXTRA.load("a Parquet dataset")
    outp = Path(out)
    _prepare_out(outp, force)
    paths, missing = find_logs(inputs)
    if not paths:
        raise RecordValueError(f"no VRRL logs (*.vrrl) found in {', '.join(os.fspath(i) for i in inputs)}")
    sides = read_sidecars(paths)
    logs = identify_logs(paths, missing, sides)
    side_of = {p: s for p, (s, _) in zip(paths, sides, strict=True)}
    schema = dataset_schema()
    extra_fields = [schema.field(k) for k in range(len(schema) - 6, len(schema))]
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{outp.name}.", suffix=".tmp", dir=outp.parent))
    except OSError as e:
        raise VrrlIoError(f"{outp}: cannot write the dataset: {e.strerror or e}") from e
    done: list[RankLog] = []
    files = records = 0
    try:
        for i, g in enumerate(logs):
            loaded = load_log(g, side_of.get(g.path))
            done.append(loaded.log)
            n = int(loaded.records.shape[0])
            if n:
                part = tmp / f"rank={loaded.log.rank}"
                part.mkdir(exist_ok=True)
                consts = (loaded.log.host, loaded.log.device, loaded.log.device_uuid, loaded.log.pid,
                          loaded.log.tenant, loaded.log.path)  # fmt: skip
                with parquet_writer(str(part / f"part-{i:05d}.parquet"), schema) as w:
                    for lo in range(0, n, PARQUET_ROWS):
                        hi = min(n, lo + PARQUET_ROWS)
                        t = record_table(
                            loaded.records[lo:hi],
                            opcode_names=loaded.opcode_names,
                            streams=loaded.streams[lo:hi],
                        )
                        for f, v in zip(extra_fields, consts, strict=True):
                            t = t.append_column(f, pa.array([v] * (hi - lo), f.type))
                        w.write_table(t)
                files += 1
                records += n
            if progress is not None:
                progress(i + 1, len(logs))
        done += expected_missing(done, world_size)
        manifest = {
            "schema": FLEET_SCHEMA,
            "partitioning": "hive",
            "partition_columns": ["rank"],
            "ranks": [r.to_dict() for r in sorted(done, key=lambda r: (r.rank, r.path))],
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if outp.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{outp.name}.", suffix=".old", dir=outp.parent))
            os.replace(outp, old / "d")
            os.replace(tmp, outp)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, outp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FleetExportSummary(
        out=str(outp), files=files, records=records, ranks=sorted(done, key=lambda r: r.rank)
    )
