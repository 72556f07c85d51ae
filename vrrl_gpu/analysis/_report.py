"""``vrrl report``: one self-contained HTML page about a log.

The page has no scripts, no external style sheets, fonts or images, and a
Content-Security-Policy that forbids loading anything, so it opens offline and
can be attached to a bug report as it is. Every string that comes from a log
or its sidecar is HTML-escaped.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._defaults import DEFAULT_LAST
from vrrl_gpu.analysis._launches import CrashWindow, _check, code_label
from vrrl_gpu.analysis._stats import stats_of
from vrrl_gpu.analysis._summary import SUMMARY_CHUNK, LogSummary, read_log, summarize, summary_windows, whole
from vrrl_gpu.format._layout import FailureClass, SlotStatus
from vrrl_gpu.format._sidecar import opcode_label, slot_label

__all__ = ["DEFAULT_LAST", "render_report", "render_summary", "write_report"]

_MAX_LANES = 24
#: More launches than this on the timeline are drawn as bins (a rectangle per run of equal bins), not one by
#: one: 100,000 rectangles would make a page of megabytes that takes seconds to lay out.
_MAX_BARS = 2000
_BINS = 300
_MAX_FAILURE_ROWS = 500
_PALETTE = (
    "#4e79a7", "#59a14f", "#9c755f", "#76b7b2", "#edc948",
    "#b07aa1", "#ff9da7", "#86bcb6", "#8cd17d", "#499894",
)  # fmt: skip

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;margin:0 0 12px}
table{border-collapse:collapse;margin:4px 0}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
th{background:#f4f4f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:600}.ok{color:#1b7f3b;font-weight:600}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px}
.card b{display:block;font-size:20px}svg{border:1px solid #ddd;background:#fcfcfd}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:12px;height:12px;
vertical-align:middle;margin-right:4px;border-radius:2px}
code{font:12px ui-monospace,monospace}
"""


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _fmt_ns(ns: float) -> str:
    a = abs(ns)
    if a >= 1e9:
        return f"{ns / 1e9:.3f} s"
    if a >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if a >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def _utc(ns: int) -> str:
    import datetime as dt

    secs, frac = divmod(int(ns), 1_000_000_000)
    try:
        base = dt.datetime.fromtimestamp(secs, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns"
    return f"{base}.{frac:09d} UTC"


def _el(
    tag: str, text: str | None = None, *, title: str | None = None, close: bool = True, **attrs: Any
) -> str:
    """An SVG element; ``fill_opacity=`` becomes ``fill-opacity``, ``class_`` ``class``; text is escaped."""
    a = " ".join(f'{k.rstrip("_").replace("_", "-")}="{_e(v)}"' for k, v in attrs.items())
    head = f"<{tag} {a}>"
    if not close:
        return head
    inner = (f"<title>{_e(title)}</title>" if title else "") + (_e(text) if text is not None else "")
    return f"{head}{inner}</{tag}>"


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="n">{_e(v)}</td>' if c in numeric else f"<td>{_e(v)}</td>"
            for c, v in zip(columns, r, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _timeline(
    summary: LogSummary,
    names: Mapping[int, str] | None,
    last: int,
    windows: Sequence[CrashWindow],
) -> tuple[str, str]:
    """(the SVG, a caption) for the newest ``last`` launches."""
    ls = summary.launches
    if not len(ls) or last <= 0:
        return "", "No launches recorded."
    sel = np.arange(max(0, len(ls) - last), len(ls))
    # u64 stamps (the whole range is legal): never through int64, which turns 2^63 and up negative.
    start = ls.ts[sel]
    end = np.where(ls.completed[sel], ls.end_ts[sel], start)
    lo = int(start.min())
    hi = int(max(int(end.max()), int(start.max())))
    first_rec = int(ls.index[sel[0]])
    shown_windows = [w for w in windows if w.launch_record >= first_rec or w.end_ns >= lo]
    fails = summary.failures[summary.failure_at >= first_rec]
    gaps = summary.gaps[summary.gap_at >= first_rec]
    for w in shown_windows:
        hi = max(hi, w.end_ns)
    if fails.size:
        hi = max(hi, int(fails["timestamp_ns"].max()))
    gap_ts = gaps["timestamp_ns"]
    gaps = gaps[
        (gap_ts >= np.uint64(lo)) & (gap_ts <= np.uint64(min(hi, (1 << 64) - 1)))
    ]  # only those inside the drawn span
    span = max(1, hi - lo)

    lanes = sorted(set(ls.tenant[sel].tolist()) | {w.tenant_id for w in shown_windows})
    hidden = max(0, len(lanes) - _MAX_LANES)
    lanes = lanes[:_MAX_LANES]
    lane_of = {t: i for i, t in enumerate(lanes)}
    left, right, top, lane_h = 110, 20, 34, 30
    width = 1100
    plot_w = width - left - right
    height = top + lane_h * len(lanes) + 24

    def x(ns: int) -> float:
        return left + (ns - lo) / span * plot_w

    parts = [
        _el(
            "svg",
            xmlns="http://www.w3.org/2000/svg",
            width=width,
            height=height,
            viewBox=f"0 0 {width} {height}",
            role="img",
            aria_label="timeline of the last launches",
            close=False,
        )
    ]
    # Lanes and axis.
    for t, i in lane_of.items():
        y = top + i * lane_h
        fill = "#f3f4f7" if i % 2 else "#ffffff"
        parts.append(f'<rect x="{left}" y="{y}" width="{plot_w}" height="{lane_h}" fill="{fill}"/>')
        parts.append(
            _el("text", f"tenant {t}", x=left - 8, y=y + lane_h / 2 + 4, text_anchor="end", font_size=12)
        )
    for k in range(6):
        ns = lo + span * k // 5
        xx = x(ns)
        parts.append(f'<line x1="{xx:.1f}" y1="{top - 4}" x2="{xx:.1f}" y2="{height - 24}" stroke="#ccc"/>')
        anchor = "start" if k == 0 else ("end" if k == 5 else "middle")
        parts.append(
            _el("text", f"+{_fmt_ns(ns - lo)}", x=f"{xx:.1f}", y=top - 10, font_size=11, text_anchor=anchor)
        )
    # Crash windows under the launches.
    for w in shown_windows:
        if w.tenant_id not in lane_of:
            continue
        y = top + lane_of[w.tenant_id] * lane_h
        x0, x1 = x(max(w.start_ns, lo)), x(w.end_ns)
        wd = max(6.0, x1 - x0)
        label = f"crash window: {opcode_label(w.opcode, names)} slot {slot_label(w.slot_idx)}"
        tip = (
            f"{label}; {FailureClass(w.failure_class).label} {code_label(w.backend_error_code)}; "
            + _fmt_ns(w.end_ns - w.start_ns)
        )
        parts.append(
            _el(
                "rect",
                title=tip,
                class_="crash-window",
                x=f"{x0:.1f}",
                y=y + 1,
                width=f"{wd:.1f}",
                height=lane_h - 2,
                fill="#e53935",
                fill_opacity="0.28",
                stroke="#b00020",
                stroke_width=2,
            )
        )
        tx = min(x0, width - right - 150)
        parts.append(f'<text x="{tx:.1f}" y="{y + 11}" font-size="10" fill="#b00020">{_e(label)}</text>')
    # Launches.
    ops = sorted(set(ls.opcode[sel].tolist()))
    color = {op: _PALETTE[i % len(_PALETTE)] for i, op in enumerate(ops)}
    binned = sel.size > _MAX_BARS
    if binned:
        parts += _binned_launches(ls, sel, lane_of, lo, span, left, top, lane_h, plot_w)
    for row in [] if binned else sel.tolist():
        t = int(ls.tenant[row])
        if t not in lane_of:
            continue
        y = top + lane_of[t] * lane_h + 7
        s = int(ls.ts[row])
        op = int(ls.opcode[row])
        if ls.completed[row]:
            e = int(ls.end_ts[row])
            wd, opacity = max(1.5, x(e) - x(s)), "0.9"
            dur = _fmt_ns(e - s)
        else:
            wd, opacity, dur = 2.0, "0.6", "no end record"
        tip = f"{opcode_label(op, names)} slot {int(ls.slot[row])} epoch {int(ls.epoch[row])}: {dur}"
        parts.append(
            f'<rect class="launch" x="{x(s):.1f}" y="{y}" width="{wd:.1f}" height="{lane_h - 14}" '
            f'fill="{color[op]}" fill-opacity="{opacity}"><title>{_e(tip)}</title></rect>'
        )
    # Gaps across every lane, failures on theirs.
    for gr in gaps:
        a = gr["args"]
        count = int(a[2]) | (int(a[3]) << 32)
        gx = x(int(gr["timestamp_ns"]))
        parts.append(
            _el(
                "line",
                title=f"gap: {count} record(s) dropped",
                class_="gap",
                x1=f"{gx:.1f}",
                y1=top,
                x2=f"{gx:.1f}",
                y2=top + lane_h * len(lanes),
                stroke="#f28e2b",
                stroke_width=2,
                stroke_dasharray="4 3",
            )
        )
    for r in fails:
        t = int(r["tenant_id"])
        if t not in lane_of:
            continue
        fx = x(int(r["timestamp_ns"]))
        y = top + lane_of[t] * lane_h
        tip = (
            f"{SlotStatus.label_of(int(r['slot_status']))}: {FailureClass(int(r['failure_class'])).label} "
            f"{code_label(int(r['backend_error_code']))} (slot {slot_label(int(r['slot_idx']))})"
        )
        points = f"{fx:.1f},{y + 4} {fx - 7:.1f},{y + lane_h - 4} {fx + 7:.1f},{y + lane_h - 4}"
        parts.append(_el("polygon", title=tip, class_="failure", points=points, fill="#b00020"))
    parts.append("</svg>")
    caption = (
        f"The last {sel.size} launch(es), from {_utc(lo)} over {_fmt_ns(hi - lo)}. "
        f"Bars run from a launch's BEGIN to its COMPLETED record; thin ticks have no end record."
    )
    if binned:
        caption = (
            f"The last {sel.size} launch(es), from {_utc(lo)} over {_fmt_ns(hi - lo)}, in {_BINS} time bins "
            f"per track (more than {_MAX_BARS:,} launches are not drawn one by one): darker bins hold more "
            f"launches. Narrow it with --last or --window."
        )
    if hidden:
        caption += f" {hidden} more track(s) not drawn."
    legend = "".join(
        f'<span><i class="sw" style="background:{color[op]}"></i>{_e(opcode_label(op, names))}</span>'
        for op in ops[:12]
    )
    legend += (
        '<span><i class="sw" style="background:#e53935;opacity:.5"></i>crash window</span>'
        '<span><i class="sw" style="background:#b00020"></i>failure</span>'
        '<span><i class="sw" style="background:#f28e2b"></i>gap (dropped records)</span>'
    )
    return "".join(parts), f'{_e(caption)}<div class="legend">{legend}</div>'


def _binned_launches(
    ls: Any,
    sel: npt.NDArray[np.intp],
    lane_of: Mapping[int, int],
    lo: int,
    span: int,
    left: float,
    top: float,
    lane_h: float,
    plot_w: float,
) -> list[str]:
    """One rectangle per run of bins with the same shade (four, by launches per bin), per lane."""
    start = ls.ts[sel]
    b = np.minimum(((start - np.uint64(lo)).astype(np.float64) * (_BINS / span)).astype(np.int64), _BINS - 1)
    tenant = ls.tenant[sel]
    out: list[str] = []
    w = plot_w / _BINS
    for t, lane in lane_of.items():
        counts = np.bincount(b[tenant == t], minlength=_BINS)[:_BINS]
        if not counts.any():
            continue
        level = np.where(
            counts > 0, 1 + np.minimum(3, (np.log1p(counts) / np.log1p(counts.max()) * 4).astype(np.int64)), 0
        )
        edges = np.flatnonzero(np.diff(level)) + 1
        for a, z in zip(
            np.concatenate([[0], edges]).tolist(), np.concatenate([edges, [_BINS]]).tolist(), strict=True
        ):
            lv = int(level[a])
            if not lv:
                continue
            n = int(counts[a:z].sum())
            out.append(
                f'<rect class="launch-bin" x="{left + a * w:.1f}" y="{top + lane * lane_h + 7}" '
                f'width="{(z - a) * w:.1f}" height="{lane_h - 14}" fill="#4e79a7" '
                f'fill-opacity="{0.25 + 0.2 * lv:.2f}"><title>{n} launch(es)</title></rect>'
            )
    return out


def render_report(
    records: npt.NDArray[np.void],
    *,
    source: str = "",
    opcode_names: Mapping[int, str] | None = None,
    header: Mapping[str, Any] | None = None,
    last: int = DEFAULT_LAST,
    streams: npt.NDArray[np.int32] | None = None,
) -> str:
    """The HTML page for a log's records (``header``: optional facts such as capacity, cursor, wrapped)."""
    summary = summarize(whole(_check(records), streams))
    return render_summary(summary, source=source, opcode_names=opcode_names, header=header, last=last)


def render_summary(
    summary: LogSummary,
    *,
    source: str = "",
    opcode_names: Mapping[int, str] | None = None,
    header: Mapping[str, Any] | None = None,
    last: int = DEFAULT_LAST,
) -> str:
    """:func:`render_report` of a log read in chunks (:func:`summarize`): the same page."""
    from vrrl_gpu._version import __version__

    stats = stats_of(summary, opcode_names=opcode_names, buckets=10)
    windows = summary_windows(summary)
    name = Path(source).name if source else "log"
    fails = stats["failures"]["total"]
    cards = [
        ("records", f"{stats['records']:,}"),
        ("launches", f"{stats['launches']:,}"),
        ("failures", f"{fails:,}"),
        ("dropped records", f"{stats['gaps']['dropped_records']:,}"),
        ("span", _fmt_ns(stats["span_ns"])),
    ]
    card_html = "".join(
        f'<div class="card"><b class="{"bad" if k == "failures" and fails else ""}">{_e(v)}</b>{_e(k)}</div>'
        for k, v in cards
    )
    facts: list[tuple[str, Any]] = [("log", source or "-")]
    for k, v in (header or {}).items():
        facts.append((k, v))
    if stats["first_timestamp_ns"] is not None:
        facts.append(("first record", _utc(stats["first_timestamp_ns"])))
        facts.append(("last record", _utc(stats["last_timestamp_ns"])))
    facts.append(("meta-records", stats["meta_records"]))
    facts.append(("GAP records", stats["gaps"]["gap_records"]))

    verdict = (
        f'<p class="bad">{fails} failure record(s); {len(windows)} crash window(s).</p>'
        if fails
        else '<p class="ok">No failures recorded.</p>'
    )
    fm = summary.failures
    frows = []
    for r in fm[:_MAX_FAILURE_ROWS]:
        frows.append(
            (
                _utc(int(r["timestamp_ns"])),
                int(r["tenant_id"]),
                slot_label(int(r["slot_idx"])),
                opcode_label(int(r["opcode"]), opcode_names),
                SlotStatus.label_of(int(r["slot_status"])),
                FailureClass(int(r["failure_class"])).label,
                code_label(int(r["backend_error_code"])),
                f"{int(r['output_digest']):016x}" if int(r["output_digest"]) else "-",
            )
        )
    fail_html = (
        _table(
            ("time", "tenant", "slot", "opcode", "status", "class", "code", "digest"),
            frows,
            ("tenant", "slot"),
        )
        if frows
        else "<p>None.</p>"
    )
    if fm.size > _MAX_FAILURE_ROWS:
        fail_html += f"<p>… and {fm.size - _MAX_FAILURE_ROWS} more (see <code>vrrl dump</code>).</p>"
    win_rows = [
        (
            w.tenant_id,
            "-" if w.stream < 0 else w.stream,
            slot_label(w.slot_idx),
            opcode_label(w.opcode, opcode_names),
            _utc(w.start_ns),
            _fmt_ns(w.end_ns - w.start_ns),
            SlotStatus.label_of(w.fault_status)
            + f": {FailureClass(w.failure_class).label} {code_label(w.backend_error_code)}",
            {True: "yes", False: "no", None: "not knowable"}[w.faulted_here],
        )
        for w in windows
    ]
    win_html = (
        "<h3>Crash windows</h3>"
        "<p>The launch each stream had reached when a fault was seen (a sticky fault stops every stream; "
        "'faulted here' says which stream's launch faulted when the records tell).</p>"
        + _table(
            ("tenant", "stream", "slot", "opcode", "began", "until fault", "fault", "faulted here"),
            win_rows,
            ("tenant", "stream", "slot"),
        )
        if win_rows
        else ""
    )
    svg, caption = _timeline(summary, opcode_names, last, windows)
    op_rows = [
        (
            o["name"],
            f"{o['opcode']:#x}",
            o["launches"],
            o["completed"],
            o["failed"],
            _fmt_ns(o["mean_duration_ns"]) if o["mean_duration_ns"] is not None else "-",
        )
        for o in stats["opcodes"]
    ]
    track_rows = [
        (
            t["tenant_id"],
            t["launches"],
            t["begin"],
            t["completed"],
            f"{t['coverage'] * 100:.1f} %" if t["coverage"] is not None else "-",
            t["failed"],
            t["unclaimed"],
        )
        for t in stats["tracks"]
    ]
    body = f"""
<h1>vrrl report: {_e(name)}</h1>
<p class="sub">{_e(source)}</p>
<section id="summary"><h2>Summary</h2><div class="cards">{card_html}</div>{verdict}
{_table(("fact", "value"), facts)}</section>
<section id="failures"><h2>Failures</h2>{fail_html}{win_html}</section>
<section id="timeline"><h2>Timeline</h2>{svg}<p>{caption}</p></section>
<section id="opcodes"><h2>Per opcode</h2>{
        _table(
            ("opcode", "number", "launches", "completed", "failed", "mean duration"),
            op_rows,
            ("launches", "completed", "failed"),
        )
        if op_rows
        else "<p>None.</p>"
    }</section>
<section id="tracks"><h2>Tracks (tenant ids)</h2>{
        _table(
            ("tenant", "launches", "begin", "completed", "coverage", "failed", "unclaimed"),
            track_rows,
            ("tenant", "launches", "begin", "completed", "failed", "unclaimed"),
        )
        if track_rows
        else "<p>None.</p>"
    }</section>
<footer><p class="sub">Generated by vrrl_gpu {_e(__version__)}.</p></footer>"""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>vrrl report: {_e(name)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def write_report(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    last: int = DEFAULT_LAST,
    force: bool = False,
    salvage: bool = False,
    window: tuple[Any, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    on_counted: Callable[[int], None] | None = None,
) -> int:
    """Render the report of the log at ``path`` into ``out``; returns the number of records shown.

    The log is read in chunks, four times (its span, the streams' session, the two passes of
    :func:`summarize`), never whole; ``progress(n)`` after each chunk of ``n`` records;
    ``on_counted(records)`` after the first pass, when the log's records are known (the later passes read
    as many).

    ``window``: only the records in this time span (``_fleet_report.resolve_window``: ns, a timedelta
    before the newest record, or None for that end of the log).
    """
    from vrrl_gpu.analysis.exporters._output import AtomicOutput
    from vrrl_gpu.format._reader import SalvageTally, iter_record_chunks
    from vrrl_gpu.format._ringlog import read_header
    from vrrl_gpu.format._sidecar import load_sidecar

    p = os.fspath(path)
    # Pass 0: the header's facts, the damage a salvage read skips, the time span (for the window).
    h = read_header(p)
    tally = SalvageTally()
    lo = hi = None
    counted = 0
    for c in iter_record_chunks(p, chunk_records=SUMMARY_CHUNK, salvage=salvage, tally=tally):
        counted += int(c.shape[0])
        if progress is not None:
            progress(int(c.shape[0]))
        if c.shape[0]:
            ts = c["timestamp_ns"]
            lo = int(ts.min()) if lo is None else min(lo, int(ts.min()))
            hi = int(ts.max()) if hi is None else max(hi, int(ts.max()))
    header: dict[str, Any] = {
        "capacity": f"{h.capacity:,} slots",
        "cursor": h.cursor,
        "wrapped": tally.wrapped or h.cursor >= h.capacity,
    }
    if tally.corrupt_slots or tally.missing_slots:
        header["damaged slots skipped"] = len(tally.corrupt_slots) + tally.missing_slots
    span: tuple[int, int] | None = None
    if window is not None and lo is not None and hi is not None:
        from vrrl_gpu.analysis._fleet_report import resolve_window

        wlo, whi = resolve_window(lo, hi, window)
        span = (wlo, whi)
        header["window"] = f"{_utc(wlo)} + {_fmt_ns(whi - wlo)}"
    if on_counted is not None:
        on_counted(counted)
    side = load_sidecar(p)
    names = dict(side.opcode_names) if side else {}
    summary = summarize(read_log(p, salvage=salvage, sidecar=side, window=span, progress=progress))
    page = render_summary(summary, source=p, opcode_names=names, header=header, last=last)
    target = AtomicOutput(out, force=force)
    try:
        with open(target.tmp, "w", encoding="utf-8") as f:
            f.write(page)
        target.commit()
    except OSError as e:
        target.abort()
        raise target.named(e) from e
    except BaseException:
        target.abort()
        raise
    return summary.records
