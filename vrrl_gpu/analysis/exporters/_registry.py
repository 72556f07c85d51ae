"""The one table of export formats. ``vrrl export``, ``vrrl merge``, :func:`export_log`, :func:`merge_to` and
the docs read it; adding a format is a module beside this one and one :func:`register` call below.

Each entry says what the format is called, how to open its sink, which optional
extra it needs, and whether ``export`` and ``merge`` offer it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vrrl_gpu.analysis.exporters._chrome import ChromeSink
from vrrl_gpu.analysis.exporters._csv import CsvSink
from vrrl_gpu.analysis.exporters._jsonl import JsonlSink
from vrrl_gpu.analysis.exporters._output import Extra, Sink, SinkContext
from vrrl_gpu.analysis.exporters._parquet import PARQUET_EXTRA, PARQUET_ROWS, ParquetSink
from vrrl_gpu.analysis.exporters._vrrl import VrrlSink
from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.format._layout import MAX_CAPACITY

__all__ = [
    "ExportFormat",
    "FORMATS",
    "DEFAULT_MERGE_FORMAT",
    "register",
    "unregister",
    "export_formats",
    "merge_formats",
    "get_format",
    "render_formats_markdown",
]


@dataclass(frozen=True)
class ExportFormat:
    """One output format.

    ``open_sink(path, ctx)`` makes the :class:`Sink` that writes it.
    ``export`` / ``merge``: offered by ``vrrl export`` / ``vrrl merge``.
    ``extra``: the optional dependency it needs (checked before any output is
    created). ``origin_column``: merged rows say which input they came from;
    without it a merge checks which tenant ids occur in more than one input.
    ``max_records``: the most records it holds (a merge counts first and refuses more).
    ``chunk_records``: records an export reads and hands its sink at a time, when fewer than
    ``CHUNK_RECORDS`` suit it (Parquet: one row group, so no batch is held beside the one being encoded).
    """

    name: str
    title: str
    open_sink: Callable[[Path, SinkContext], Sink]
    export: bool = True
    merge: bool = False
    extra: Extra | None = None
    origin_column: bool = True
    max_records: int | None = None
    chunk_records: int | None = None

    def require_extra(self) -> None:
        """Raise :class:`~vrrl_gpu.errors.MissingExtraError` unless this format's extra is installed."""
        if self.extra is not None:
            self.extra.load(f"{self.title} output")


#: Every format by name, in the order the CLI and the docs list them.
FORMATS: dict[str, ExportFormat] = {}

#: What ``vrrl merge`` and :func:`~vrrl_gpu.analysis.merge_to` write unless told otherwise.
DEFAULT_MERGE_FORMAT = "vrrl"


def register(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` to the table (a name may be registered once)."""
    if fmt.name in FORMATS:
        raise RecordValueError(f"export format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    """Remove a format (tests that register a temporary one)."""
    FORMATS.pop(name, None)


def export_formats() -> tuple[str, ...]:
    """The names ``vrrl export --format`` accepts."""
    return tuple(f.name for f in FORMATS.values() if f.export)


def merge_formats() -> tuple[str, ...]:
    """The names ``vrrl merge --format`` accepts."""
    return tuple(f.name for f in FORMATS.values() if f.merge)


def get_format(name: str, *, purpose: str) -> ExportFormat:
    """The format called ``name`` for ``purpose`` ("export" or "merge"), or :class:`RecordValueError`."""
    fmt = FORMATS.get(name)
    if fmt is None or not getattr(fmt, purpose):
        offered = export_formats() if purpose == "export" else merge_formats()
        raise RecordValueError(f"{purpose} format must be one of {', '.join(offered)}, got {name!r}")
    return fmt


def render_formats_markdown() -> str:
    """The table of formats in docs/analysis.md (kept equal to this registry by a test)."""
    lines = ["| format | what | `export` | `merge` | needs | origin column |", "|---|---|---|---|---|---|"]
    for f in FORMATS.values():
        needs = f"`pip install 'vrrl_gpu[{f.extra.name}]'` ({f.extra.package})" if f.extra else "-"
        origin = ("yes" if f.origin_column else "no (tenant id only)") if f.merge else "-"
        lines.append(
            f"| `{f.name}` | {f.title} | {'yes' if f.export else '-'} | {'yes' if f.merge else '-'} "
            f"| {needs} | {origin} |"
        )
    return "\n".join(lines) + "\n"


register(
    ExportFormat(
        "vrrl",
        "VRRL v1 log",
        VrrlSink,
        merge=True,
        origin_column=False,
        max_records=MAX_CAPACITY,
    )
)
register(ExportFormat("chrome", "Chrome/Perfetto trace", ChromeSink))
register(
    ExportFormat(
        "parquet", "Parquet", ParquetSink, merge=True, extra=PARQUET_EXTRA, chunk_records=PARQUET_ROWS
    )
)
register(ExportFormat("csv", "CSV", CsvSink))
register(ExportFormat("jsonl", "JSON lines", JsonlSink, merge=True))
