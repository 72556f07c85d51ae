"""``vrrl report`` of a fleet: one self-contained HTML page, one lane per rank and stream over a time window.

Thousands of lanes of thousands of launches cannot be SVG rectangles (a 1,000-rank fleet would be tens of
megabytes and seconds to lay out). The lanes are binned instead: each lane is one row of a PNG, each
time bin one pixel (launch records counted per bin, numpy), embedded as a ``data:`` image that the page's
Content-Security-Policy admits and nothing else. Lanes are shaded by activity, red where a failure record
falls, grey after the lane's last breadcrumb (a hang shows as a long grey tail). An SVG over the image
labels the ranks that matter (the first failure, later failures, the ranks behind the majority, hang
suspects, damaged and missing logs) with their host and GPU; the tables below list them all.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._defaults import DEFAULT_BINS
from vrrl_gpu.analysis._fleet import (
    FleetResult,
    _sql_str,
    analyze_fleet,
    duckdb_module,
    is_dataset,
    load_fleet,
)
from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.format._layout import UNKNOWN_SLOT, FailureClass, SlotStatus

__all__ = [
    "DEFAULT_BINS",
    "Bound",
    "FleetGrid",
    "fleet_grid",
    "render_fleet_report",
    "resolve_window",
    "write_fleet_report",
]

_LAUNCH = (int(SlotStatus.BEGIN), int(SlotStatus.COMPLETED))
_FAILED = (int(SlotStatus.FAILED_AT_LAUNCH), int(SlotStatus.FAULTED), int(SlotStatus.HUNG))
_META = int(SlotStatus.META)
_PLOT_W = 900
_LABEL_W = 300
_MAX_LABELS = 60
_FAILURE_COLS = (
    "rank", "after", "stream", "slot", "epoch", "opcode", "status", "class", "code", "host", "time",
)  # fmt: skip

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;margin:0 0 12px}table{border-collapse:collapse;margin:4px 0}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}th{background:#f4f4f6}
td.n{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#b00020;font-weight:600}
.ok{color:#1b7f3b;font-weight:600}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px}.card b{display:block;font-size:20px}
svg{border:1px solid #ddd;background:#fff}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px;border-radius:2px}
"""

# Lane colours (RGB): idle, four activity levels, silent (after the last breadcrumb), failure, no log.
_IDLE = (247, 248, 250)
_LEVELS = ((198, 219, 239), (129, 175, 220), (66, 128, 192), (16, 72, 140))
_SILENT = (210, 210, 216)
_FAIL = (214, 39, 40)
_NOLOG = (253, 226, 226)
_ROLE_COLOR = {"first": "#b00020", "failed": "#d62728", "behind": "#e07b00", "hang": "#7b3fa0", "bad": "#777"}


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _hex(c: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c)


def _utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    secs, frac = divmod(int(ns), 1_000_000_000)
    try:
        base = dt.datetime.fromtimestamp(secs, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns"
    return f"{base}.{frac // 1000:06d} UTC"


def _dur(ns: float) -> str:
    a = abs(ns)
    if a >= 60e9:
        return f"{ns / 60e9:.1f} min"
    if a >= 1e9:
        return f"{ns / 1e9:.3f} s"
    if a >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    return f"{ns / 1e3:.1f} µs"


@dataclass
class FleetGrid:
    """Per lane (rank, stream; stream -1: unknown) and time bin: launch records and failure records."""

    lanes: list[tuple[int, int]]
    lo: int
    hi: int
    counts: npt.NDArray[np.int64]
    failures: npt.NDArray[np.int64]

    @property
    def bins(self) -> int:
        return int(self.counts.shape[1])


#: One end of a time window: ns since the epoch, a span before the newest record, or None (the data's end).
Bound = int | dt.timedelta | None


def resolve_window(first_ns: int, last_ns: int, window: tuple[Bound, Bound] | None) -> tuple[int, int]:
    """``window`` over data spanning ``[first_ns, last_ns]``: absolute ends as given, a timedelta counted
    back from ``last_ns``, None for the data's own end."""

    def end(b: Bound, default: int) -> int:
        if b is None:
            return default
        if isinstance(b, dt.timedelta):
            return last_ns - round(b.total_seconds() * 1e9)
        return int(b)

    lo, hi = (first_ns, last_ns) if window is None else (end(window[0], first_ns), end(window[1], last_ns))
    if hi <= lo:
        if window is None:
            return lo, lo + 1
        raise RecordValueError(f"the time window must end after it starts, got {lo} .. {hi} ns")
    return lo, hi


def _window(res: FleetResult, window: tuple[Bound, Bound] | None) -> tuple[int, int]:
    firsts = [r.first_ns for r in res.ranks if r.first_ns is not None]
    lasts = [r.last_ns for r in res.ranks if r.last_ns is not None]
    lo = min(firsts) if firsts else 0
    return resolve_window(lo, max(lasts) if lasts else lo + 1, window)


def _lanes(res: FleetResult) -> list[tuple[int, int]]:
    """Every rank's streams (from its newest launches), one lane of stream -1 for a rank without any."""
    by_rank: dict[int, set[int]] = {}
    for x in res.last_launches:
        by_rank.setdefault(x.rank, set()).add(-1 if x.stream is None else x.stream)
    for r in res.ranks:
        by_rank.setdefault(r.rank, {-1})
    return [(r, s) for r in sorted(by_rank) for s in sorted(by_rank[r])]


def fleet_grid(
    inputs: Sequence[str | os.PathLike[str]], res: FleetResult, lo: int, hi: int, bins: int
) -> FleetGrid:
    """Bin every lane's launch and failure records over ``[lo, hi]`` (logs: numpy; a dataset: DuckDB)."""
    lanes = _lanes(res)
    index = {k: i for i, k in enumerate(lanes)}
    counts = np.zeros((len(lanes), bins), np.int64)
    fails = np.zeros((len(lanes), bins), np.int64)
    span = hi - lo
    if len(inputs) == 1 and is_dataset(inputs[0]):
        con = duckdb_module().connect()
        try:
            glob = _sql_str(os.path.join(os.fspath(inputs[0]), "rank=*", "*.parquet"))
            rows = con.execute(
                f"SELECT CAST(rank AS BIGINT), coalesce(stream, -1), "
                f"CAST((timestamp_ns - {lo}::UBIGINT) * {bins}::UBIGINT // {span}::UBIGINT AS BIGINT) AS b, "
                f"count(*) FILTER (WHERE slot_status IN {_LAUNCH} AND slot_idx <> {UNKNOWN_SLOT}), "
                f"count(*) FILTER (WHERE slot_status IN {_FAILED} OR "
                f"(slot_status <> {_META} AND failure_class <> 0)) "
                f"FROM read_parquet({glob}, hive_partitioning = true) "
                f"WHERE timestamp_ns >= {lo}::UBIGINT AND timestamp_ns <= {hi}::UBIGINT GROUP BY ALL"
            ).fetchall()
        finally:
            con.close()
        for r, s, b, n, f in rows:
            i = index.get((int(r), int(s)))
            if i is not None:
                bb = min(int(b), bins - 1)
                counts[i, bb] += int(n)
                fails[i, bb] += int(f)
        return FleetGrid(lanes, lo, hi, counts, fails)
    _, loaded = load_fleet(inputs)
    for g in loaded:
        recs = g.records
        if not recs.shape[0]:
            continue
        ts = recs["timestamp_ns"]
        inside = (ts >= np.uint64(lo)) & (ts <= np.uint64(hi))
        if not inside.any():
            continue
        st = recs["slot_status"]
        launch = inside & np.isin(st, _LAUNCH) & (recs["slot_idx"] != UNKNOWN_SLOT)
        failed = inside & (np.isin(st, _FAILED) | ((st != _META) & (recs["failure_class"] != 0)))
        b = np.minimum(((ts - np.uint64(lo)).astype(np.float64) * (bins / span)).astype(np.int64), bins - 1)
        for s in np.unique(g.streams[inside]).tolist():
            i = index.get((g.log.rank, int(s)))
            if i is None:
                continue
            on = g.streams == s
            counts[i] += np.bincount(b[launch & on], minlength=bins)[:bins]
            fails[i] += np.bincount(b[failed & on], minlength=bins)[:bins]
    return FleetGrid(lanes, lo, hi, counts, fails)


def _png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """An 8-bit RGB PNG (filter 0 on every row; zlib squeezes runs of one colour to almost nothing)."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", head)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _image(grid: FleetGrid, res: FleetResult) -> npt.NDArray[np.uint8]:
    n, bins = grid.counts.shape
    img = np.empty((n, bins, 3), np.uint8)
    img[:] = _IDLE
    c = grid.counts
    active = c > 0
    if active.any():
        top = float(np.log1p(c.max()))
        level = np.minimum((np.log1p(c) / max(top, 1e-9) * len(_LEVELS)).astype(np.int64), len(_LEVELS) - 1)
        palette = np.array(_LEVELS, np.uint8)
        img[active] = palette[level[active]]
    # After a lane's last breadcrumb in the window, and only when its rank went quiet (a hang suspect or a
    # failed rank), the lane is grey: the gaps between a healthy rank's launches stay idle.
    quiet = {h.rank for h in res.hang_suspects} | {f.rank for f in res.failed_after}
    if res.first_failure is not None:
        quiet.add(res.first_failure.rank)
    cols = np.arange(bins)
    for i, (rank, _) in enumerate(grid.lanes):
        if rank in quiet:
            nz = np.flatnonzero(active[i] | (grid.failures[i] > 0))
            after = cols > (nz[-1] if nz.size else -1)
            img[i, after] = _SILENT
    nolog = {r.rank for r in res.ranks if r.state == "missing" or (r.state == "damaged" and not r.records)}
    for i, (rank, _) in enumerate(grid.lanes):
        if rank in nolog:
            img[i] = _NOLOG
    # A failure is one bin: widened to five so that it shows at any zoom.
    f = grid.failures > 0
    wide = f.copy()
    for k in (1, 2):
        wide[:, k:] |= f[:, :-k]
        wide[:, :-k] |= f[:, k:]
    img[wide] = _FAIL
    return img


def _roles(res: FleetResult) -> dict[int, tuple[str, str]]:
    """Rank → (role, why) for the ranks the page labels, most important role first."""
    roles: dict[int, tuple[str, str]] = {}
    for g in res.ranks:
        if g.state == "missing":
            roles[g.rank] = ("bad", "no log")
        elif g.state == "damaged":
            roles[g.rank] = ("bad", "damaged log")
    for b in res.behind:
        roles[b.rank] = ("behind", f"{b.behind_epochs} epoch(s), {b.behind_slots} launch(es) behind")
    for h in res.hang_suspects:
        roles[h.rank] = (
            "hang",
            f"silent {_dur(h.silent_ns)}" if h.silent_ns is not None else "no breadcrumb",
        )
    for f in res.failed_after:
        roles[f.rank] = ("failed", f"failed {_dur(f.after_ns)} later")
    if res.first_failure is not None:
        roles[res.first_failure.rank] = ("first", "FIRST FAILURE")
    return roles


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(v)}</td>' if c in numeric else f"<td>{_e(v)}</td>"
            for c, v in zip(columns, r, strict=True)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _lanes_svg(grid: FleetGrid, res: FleetResult, rows: Sequence[int], *, detail: bool) -> str:
    """An SVG of the lanes ``rows`` of the grid over its window.

    ``detail``: tall lanes, each labelled (rank, stream, host, why it is shown); else the overview, a thin
    lane per rank and stream with a rank scale and a coloured tick beside each rank that matters.
    """
    n = len(rows)
    if not n:
        return ""
    lane_h = 14.0 if detail else max(1.0, min(6.0, 1200.0 / n))
    top, axis_h = 28, 24
    plot_h = lane_h * n
    width, height = _LABEL_W + _PLOT_W + 10, int(top + plot_h + axis_h)
    sub = FleetGrid([grid.lanes[i] for i in rows], grid.lo, grid.hi, grid.counts[rows], grid.failures[rows])
    png = base64.b64encode(_png(_image(sub, res))).decode("ascii")
    info = res.rank_info()
    roles = _roles(res)
    span = grid.hi - grid.lo

    def x(ns: int) -> float:
        return _LABEL_W + (ns - grid.lo) / span * _PLOT_W

    what = "ranks that matter" if detail else "every rank and stream"
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="lanes: {what}">'
        ),
        (
            f'<image x="{_LABEL_W}" y="{top}" width="{_PLOT_W}" height="{plot_h:.1f}" '
            f'preserveAspectRatio="none" style="image-rendering:pixelated" '
            f'href="data:image/png;base64,{png}"/>'
        ),
    ]
    for k in range(6):
        ns = grid.lo + span * k // 5
        xx = x(ns)
        anchor = "start" if k == 0 else ("end" if k == 5 else "middle")
        parts.append(f'<line x1="{xx:.1f}" y1="{top - 4}" x2="{xx:.1f}" y2="{top + plot_h:.1f}" '
                     f'stroke="#bbb" '
                     f'stroke-width="0.5"/>')  # fmt: skip
        parts.append(f'<text x="{xx:.1f}" y="{top - 8}" font-size="11" text-anchor="{anchor}">'
                     f"+{_e(_dur(ns - grid.lo))}</text>")  # fmt: skip
    if detail:
        for i, (rank, stream) in enumerate(sub.lanes):
            role = roles.get(rank, ("", ""))
            g = info.get(rank)
            color = _ROLE_COLOR.get(role[0], "#333")
            y = top + (i + 0.5) * lane_h + 3.5
            s = "" if stream < 0 else f" s{stream}"
            text = f"rank {rank}{s} · {g.host or '?' if g else 'no log'} · {role[1]}"
            tip = f"{text} · {g.device if g and g.device else 'device unknown'}"
            weight = ' font-weight="700"' if role[0] == "first" else ""
            parts.append(
                f'<text class="lane-label role-{role[0] or "none"}" x="{_LABEL_W - 8}" y="{y:.1f}" '
                f'font-size="11" text-anchor="end" fill="{color}"{weight}><title>{_e(tip)}</title>'
                f"{_e(text if len(text) <= 46 else text[:45] + '…')}</text>"
            )
    else:
        first_lane: dict[int, int] = {}
        for i, (rank, _) in enumerate(sub.lanes):
            first_lane.setdefault(rank, i)
        ranks = sorted(first_lane)
        step = max(1, len(ranks) // 10)
        for rank in ranks[::step]:
            y = top + first_lane[rank] * lane_h
            parts.append(f'<text x="{_LABEL_W - 40}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
                         f'fill="#666">rank {rank}</text>')  # fmt: skip
        for rank, (kind, why) in sorted(roles.items()):
            if rank not in first_lane:
                continue
            y = top + first_lane[rank] * lane_h
            color = _ROLE_COLOR[kind]
            parts.append(
                f'<rect class="tick role-{kind}" x="{_LABEL_W - 34}" y="{y - 1:.1f}" width="30" height="3" '
                f'fill="{color}"><title>rank {rank}: {_e(why)}</title></rect>'
            )
    f0 = res.first_failure
    if f0 is not None and grid.lo <= f0.time_ns <= grid.hi:
        fx = x(f0.time_ns)
        parts.append(f'<line class="first-failure" x1="{fx:.1f}" y1="{top}" x2="{fx:.1f}" '
                     f'y2="{top + plot_h:.1f}" '
                     f'stroke="#b00020" stroke-width="1.5" stroke-dasharray="5 3"/>')  # fmt: skip
        parts.append(f'<text x="{min(fx + 4, width - 200):.1f}" y="{top + plot_h + 16:.1f}" font-size="11" '
                     f'fill="#b00020">first failure: rank {f0.rank}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def render_fleet_report(res: FleetResult, grid: FleetGrid) -> str:
    """The HTML page of a fleet's answers and lanes (self-contained; the only resource is its own image)."""
    from vrrl_gpu._version import __version__

    info = res.rank_info()
    live = [r for r in res.ranks if r.state != "missing"]
    hosts = sorted({r.host for r in live if r.host})
    devices = sorted({r.device for r in live if r.device})
    f0 = res.first_failure
    cards = [
        ("rank logs", f"{len(live):,}"),
        ("hosts", f"{len(hosts):,}"),
        ("behind the majority", f"{len(res.behind):,}"),
        ("failed ranks", f"{len(res.failed_after) + (1 if f0 else 0):,}"),
        ("hang suspects", f"{len(res.hang_suspects):,}"),
        ("missing / damaged", f"{len(res.missing)} / {len(res.damaged)}"),
    ]
    card_html = "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in cards)
    m = res.majority
    facts = [
        ("majority", f"epoch {m.epoch}, slot {m.slot} ({m.ranks} of {m.of} ranks)" if m else "-"),
        ("newest breadcrumb", _utc(res.newest_ns)),
        ("hang cut-off", _utc(res.hang_cutoff_ns)),
        (
            "window",
            (
                f"{_utc(grid.lo)} + {_dur(grid.hi - grid.lo)} "
                f"({grid.bins} bins of {_dur((grid.hi - grid.lo) / grid.bins)})"
            ),
        ),
        (
            "devices",
            ", ".join(devices[:6]) + (f" and {len(devices) - 6} more" if len(devices) > 6 else "") or "-",
        ),
        ("source", res.source),
    ]
    if f0 is not None:
        g = info.get(f0.rank)
        verdict = (
            f'<p class="bad">First failure: rank {f0.rank} (host {_e(g.host if g else "?")}, '
            f"{_e(g.device if g else '?')}) stream {'-' if f0.stream is None else f0.stream} slot {f0.slot} "
            f"epoch {f0.epoch} {_e(f0.opcode_name)}: {_e(f0.status)} "
            f"{_e(FailureClass(f0.failure_class).label)} "
            f"code {f0.backend_error_code} at {_e(_utc(f0.time_ns))}.</p>"
        )
    else:
        verdict = '<p class="ok">No failure recorded.</p>'
    roles = _roles(res)
    order = {"first": 0, "failed": 1, "hang": 2, "behind": 3, "bad": 4}
    flagged = sorted(
        (i for i, (rank, _) in enumerate(grid.lanes) if rank in roles),
        key=lambda i: (order[roles[grid.lanes[i][0]][0]], grid.lanes[i]),
    )[:_MAX_LABELS]
    detail = _lanes_svg(grid, res, flagged, detail=True)
    overview = _lanes_svg(grid, res, list(range(len(grid.lanes))), detail=False)
    legend = "".join(
        f'<span><i class="sw" style="background:{c}"></i>{_e(t)}</span>'
        for c, t in (
            (_hex(_LEVELS[1]), "launches (darker: more per bin)"),
            (_hex(_SILENT), "silent after its last breadcrumb"),
            (_hex(_FAIL), "failure record"),
            (_hex(_NOLOG), "no (readable) log"),
            (_ROLE_COLOR["first"], "first failure"),
            (_ROLE_COLOR["behind"], "behind the majority"),
            (_ROLE_COLOR["hang"], "hang suspect"),
        )
    )

    def host(r: int) -> str:
        g = info.get(r)
        return g.host if g else "-"

    rows_failed = [
        (f.rank, _dur(f.after_ns), "-" if f.stream is None else f.stream, f.slot, f.epoch, f.opcode_name,
         f.status,
         FailureClass(f.failure_class).label, f.backend_error_code, host(f.rank), _utc(f.time_ns))
        for f in ([f0] if f0 else []) + res.failed_after
    ]  # fmt: skip
    rows_behind = [
        (b.rank, b.epoch, b.slot, b.behind_epochs, b.behind_slots, _utc(b.last_ns), host(b.rank))
        for b in res.behind
    ]
    rows_hang = [
        (h.rank, _utc(h.last_ns), _dur(h.silent_ns) if h.silent_ns is not None else "-", h.opcode_name or "-",
         host(h.rank), info[h.rank].device if h.rank in info else "-")
        for h in res.hang_suspects
    ]  # fmt: skip
    rows_bad = [(g.rank, g.state, g.path or "-", g.reason) for g in res.missing + res.damaged]

    def section(title: str, cols: Sequence[str], rows: Sequence[Sequence[Any]], num: Sequence[str]) -> str:
        return f"<h3>{_e(title)}</h3>" + (_table(cols, rows[:500], num) if rows else "<p>None.</p>")

    behind_cols = ("rank", "epoch", "slot", "behind (epochs)", "behind (slots)", "last breadcrumb", "host")
    sections = "\n".join(
        (
            section(
                "Failures (each rank's first, in wall-clock order)",
                _FAILURE_COLS,
                rows_failed,
                ("rank", "slot", "epoch", "code"),
            ),
            section("Ranks behind the majority", behind_cols, rows_behind, behind_cols[:5]),
            section(
                "Hang suspects",
                ("rank", "last breadcrumb", "silent for", "opcode", "host", "device"),
                rows_hang,
                ("rank",),
            ),
            section("Missing and damaged logs", ("rank", "state", "path", "reason"), rows_bad, ("rank",)),
        )
    )
    body = f"""
<h1>vrrl fleet report</h1><p class="sub">{_e(res.source)}</p>
<section id="summary"><h2>Summary</h2><div class="cards">{card_html}</div>{verdict}
{_table(("fact", "value"), facts)}</section>
<section id="lanes"><h2>Ranks over time</h2><div class="legend">{legend}</div>
<h3>The ranks that matter</h3>{detail or "<p>None: every rank is with the majority.</p>"}
<h3>Every rank</h3>{overview}
<p>One lane per rank and stream (stream unknown: one lane per rank), binned over the window; the ticks on
the left mark the ranks shown above.</p></section>
<section id="answers"><h2>Answers</h2>
{sections}
</section>
<footer><p class="sub">Generated by vrrl_gpu {_e(__version__)}.</p></footer>"""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>vrrl fleet report</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def write_fleet_report(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    window: tuple[Bound, Bound] | None = None,
    bins: int = DEFAULT_BINS,
    force: bool = False,
    world_size: int | None = None,
) -> FleetResult:
    """Analyse the fleet (:func:`analyze_fleet`), bin its lanes over ``window`` (:func:`resolve_window`;
    default: every record's span) and write the page to ``out``."""
    from vrrl_gpu.analysis.exporters._output import AtomicOutput

    if bins < 1:
        raise RecordValueError(f"bins must be at least 1, got {bins}")
    target = AtomicOutput(out, force=force)
    try:
        res = analyze_fleet(inputs, world_size=world_size)
        lo, hi = _window(res, window)
        page = render_fleet_report(res, fleet_grid(inputs, res, lo, hi, bins))
        with open(target.tmp, "w", encoding="utf-8") as f:
            f.write(page)
        target.commit()
    except BaseException:
        target.abort()
        raise
    return res
