"""Export formats: one module per format, the shared columns and row builder."""

from __future__ import annotations

from vrrl_gpu.analysis.exporters._chrome import chrome_trace
from vrrl_gpu.analysis.exporters._rows import (
    DUMP_FIELDS,
    EXPORT_FORMATS,
    MERGE_FORMATS,
    ROW_FIELDS,
    ProgressFn,
    opcode_names_of,
    record_rows,
)
from vrrl_gpu.analysis.exporters._sinks import parquet_schema

__all__ = [
    # rows
    "EXPORT_FORMATS",
    "MERGE_FORMATS",
    "DUMP_FIELDS",
    "ROW_FIELDS",
    "ProgressFn",
    "opcode_names_of",
    "record_rows",
    # sinks
    "parquet_schema",
    # chrome
    "chrome_trace",
]
