"""The ``dump`` table at any size: TSV rows built with numpy, a streamed rich table on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO, TextIO

import numpy as np
import numpy.typing as npt

from vrrl_gpu._cli._output import printable
from vrrl_gpu.analysis._launches import code_label
from vrrl_gpu.analysis.exporters._rows import LabelCache
from vrrl_gpu.analysis.exporters._text import Lines, choice_table, datetime_text
from vrrl_gpu.format._layout import UNKNOWN_SLOT, FailureClass, SlotStatus
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._sidecar import opcode_label

__all__ = [
    "DUMP_COLUMNS",
    "DUMP_JUSTIFY",
    "PAGE_ROWS",
    "DumpRows",
    "write_tsv",
    "write_pages",
    "write_aligned",
]

#: Records a TSV block is built from at a time (its text matrix stays a few MiB).
TEXT_ROWS = 1 << 12

DUMP_COLUMNS = (
    "#", "time (UTC)", "slot", "tenant", "stream", "opcode", "args", "epoch", "status", "class", "code",
    "digest",
)  # fmt: skip
DUMP_JUSTIFY = {"#": "right", "slot": "right", "tenant": "right", "stream": "right", "epoch": "right"}

#: Rows a terminal table renders at a time (each page is printed as soon as it is built).
PAGE_ROWS = 200


def _tsv_safe(text: str) -> bytes:
    """A cell that cannot break a TSV row or a terminal: control characters (tab, newline) escaped."""
    return printable(text).encode("utf-8", "backslashreplace")


class DumpRows:
    """The text of ``dump`` rows, batch after batch (row numbers continue across batches)."""

    def __init__(self, opcode_names: Mapping[int, str] | None) -> None:
        self._ops = LabelCache(lambda op: opcode_label(op, opcode_names))
        self._status = LabelCache(SlotStatus.label_of)
        self._class = LabelCache(lambda v: FailureClass(v).label if v else "-")
        self._codes = LabelCache(code_label)
        self._tables: dict[tuple[str | None, ...], tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]] = {}
        self.rows = 0

    def _pick(self, lines: Lines, cache: LabelCache, values: npt.NDArray[np.integer]) -> None:
        labels = cache(values)
        t = self._tables.get(labels.values)
        if t is None:
            t = self._tables[labels.values] = choice_table([_tsv_safe(v or "") for v in labels.values])
        lines.pick(labels.idx, t)

    def tsv(self, r: Records, streams: npt.NDArray[np.int32] | None) -> Iterator[npt.NDArray[np.uint8]]:
        """One TSV line per record (the :data:`DUMP_COLUMNS`), :data:`TEXT_ROWS` records at a time."""
        for lo in range(0, int(r.shape[0]), TEXT_ROWS):
            yield self._tsv(r[lo : lo + TEXT_ROWS], None if streams is None else streams[lo : lo + TEXT_ROWS])

    def _tsv(self, r: Records, streams: npt.NDArray[np.int32] | None) -> npt.NDArray[np.uint8]:
        n = int(r.shape[0])
        strm = streams if streams is not None else np.full(n, -1, np.int32)
        lines = Lines(n)
        lines.uint(np.arange(self.rows, self.rows + n, dtype=np.uint64)).lit("\t")
        lines.part(*datetime_text(r["timestamp_ns"]), padded=True).lit("\t")
        slot = r["slot_idx"]
        lines.uint(slot, null=slot == UNKNOWN_SLOT, null_text=b"unknown").lit("\t")
        lines.uint(r["tenant_id"]).lit("\t").uint(strm, null=strm < 0, null_text=b"-").lit("\t")
        self._pick(lines, self._ops, r["opcode"])
        a = r["args"]
        lines.lit("\t0x").hex(a[:, 0]).lit(" 0x").hex(a[:, 1]).lit(" 0x").hex(a[:, 2]).lit(" 0x").hex(a[:, 3])
        lines.lit("\t").uint(r["epoch"]).lit("\t")
        self._pick(lines, self._status, r["slot_status"])
        lines.lit("\t")
        self._pick(lines, self._class, r["failure_class"])
        lines.lit("\t")
        self._pick(lines, self._codes, r["backend_error_code"])
        d = r["output_digest"]
        lines.lit("\t").hex(d, width=16, null=d == 0, null_text=b"-").lit("\n")
        self.rows += n
        return lines.render()


def write_tsv(
    out: BinaryIO, batches: Iterable[tuple[Records, npt.NDArray[np.int32] | None]], rows: DumpRows
) -> None:
    """A header line, then every batch's rows as they are read."""
    out.write(("\t".join(DUMP_COLUMNS) + "\n").encode())
    for r, s in batches:
        for text in rows.tsv(r, s):
            out.write(text.data)
        out.flush()


def _pages(
    batches: Iterable[tuple[Records, npt.NDArray[np.int32] | None]], rows: DumpRows
) -> Iterator[list[list[str]]]:
    for r, s in batches:
        for lo in range(0, int(r.shape[0]), PAGE_ROWS):
            for text in rows.tsv(r[lo : lo + PAGE_ROWS], None if s is None else s[lo : lo + PAGE_ROWS]):
                yield [line.split("\t") for line in text.tobytes().decode("utf-8", "replace").splitlines()]


def write_pages(
    batches: Iterable[tuple[Records, npt.NDArray[np.int32] | None]],
    rows: DumpRows,
    out: TextIO | None = None,
    *,
    bold: bool = False,
) -> None:
    """The ``dump`` table, page by page as the log is read (:func:`write_aligned`)."""
    write_aligned(_pages(batches, rows), DUMP_COLUMNS, DUMP_JUSTIFY, out, bold=bold, printable_cells=True)


def write_aligned(
    pages: Iterable[Sequence[Sequence[str]]],
    columns: Sequence[str],
    justify: Mapping[str, str],
    out: TextIO | None = None,
    *,
    bold: bool = False,
    printable_cells: bool = False,
) -> int:
    """An aligned table printed page by page: the header once, then each page as it comes; returns the rows.

    Plain text, not a rich table: rich measures and renders every cell through Python objects (about a
    millisecond a row), which made the table of 65,536 records take minutes. Column widths come from
    the first page and only grow. Cells are shown through :func:`printable` (no control characters), unless
    the caller made them so already (``printable_cells``: the TSV rows of :class:`DumpRows` and the launch
    listing, whose names went through it when their text was built).
    """
    out = out if out is not None else sys.stdout
    widths: list[int] | None = None
    right = [justify.get(c) == "right" for c in columns]
    n = 0

    def layout(w: Sequence[int]) -> str:
        # One format string per set of widths: str.format pads in C, a join of rjust/ljust per cell did not.
        return "  ".join(f"{{:{'>' if r else '<'}{k}}}" for k, r in zip(w, right, strict=True))

    for raw in pages:
        page = [list(r) for r in raw] if printable_cells else [[printable(c) for c in r] for r in raw]
        longest = [max(map(len, col)) for col in zip(*page, strict=True)] if page else [0] * len(columns)
        if widths is None:
            widths = [max(len(c), k) for c, k in zip(columns, longest, strict=True)]
            head = layout(widths).format(*columns).rstrip()
            out.write((f"\x1b[1m{head}\x1b[0m" if bold else head) + "\n")
            out.write("  ".join("\u2500" * k for k in widths) + "\n")
        else:
            widths = [max(w, k) for w, k in zip(widths, longest, strict=True)]
        fmt = layout(widths).format
        out.write("".join(fmt(*r).rstrip() + "\n" for r in page))
        out.flush()
        n += len(page)
    return n
