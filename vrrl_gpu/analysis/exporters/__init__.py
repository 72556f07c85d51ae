"""Export formats: one module per format behind one registry (``_registry.py``), the shared rows and output.

Adding a format: a module here with a :class:`Sink`, and one ``register(ExportFormat(...))`` in
``_registry.py``; ``vrrl export``/``vrrl merge``, :func:`~vrrl_gpu.analysis.export_log`,
:func:`~vrrl_gpu.analysis.merge_to` and docs/analysis.md then offer it.
"""

from __future__ import annotations

from vrrl_gpu.analysis.exporters._chrome import chrome_trace
from vrrl_gpu.analysis.exporters._output import Extra, Sink, SinkContext
from vrrl_gpu.analysis.exporters._parquet import parquet_schema
from vrrl_gpu.analysis.exporters._registry import (
    DEFAULT_MERGE_FORMAT,
    FORMATS,
    ExportFormat,
    export_formats,
    get_format,
    merge_formats,
    register,
    render_formats_markdown,
    unregister,
)
from vrrl_gpu.analysis.exporters._rows import (
    CSV_FIELDS,
    DUMP_FIELDS,
    ROW_FIELDS,
    ProgressFn,
    opcode_names_of,
    record_rows,
)

__all__ = [
    # the registry
    "FORMATS",
    "DEFAULT_MERGE_FORMAT",
    "ExportFormat",
    "export_formats",
    "merge_formats",
    "get_format",
    "register",
    "unregister",
    "render_formats_markdown",
    # what a format implements
    "Sink",
    "SinkContext",
    "Extra",
    # rows
    "DUMP_FIELDS",
    "ROW_FIELDS",
    "CSV_FIELDS",
    "ProgressFn",
    "opcode_names_of",
    "record_rows",
    # formats with a public helper
    "parquet_schema",
    "chrome_trace",
]
