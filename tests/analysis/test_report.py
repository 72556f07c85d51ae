"""vrrl report: a self-contained HTML page; rendered in headless Chromium, not blank, no console errors."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.helpers.analysis_logs import GEMM, NAMES, gap, records, run_rows, write_log
from vrrl_gpu import RECORD_DTYPE
from vrrl_gpu._cli import main
from vrrl_gpu.analysis import render_report


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    rows = [*run_rows(300, fault_after=297), gap(280_500, 12), gap(10_000, 3)]
    return write_log(tmp_path / "crashed.vrrl", rows, names=NAMES)


def _svg(page: str) -> ET.Element:
    m = re.search(r"<svg.*?</svg>", page, re.S)
    assert m, "no SVG timeline"
    return ET.fromstring(m.group(0))  # well-formed XML, or this raises


def _cls(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("class") == name]


def test_report_has_every_section_and_loads_nothing(crashed: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(crashed), "-o", str(out), "--last", "50"]) == 0
    page = out.read_text(encoding="utf-8")
    for section in ("summary", "failures", "timeline", "opcodes", "tracks"):
        assert f'<section id="{section}">' in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert "@import" not in page
    assert "default-src 'none'" in page
    assert "cudaErrorIllegalAddress (700)" in page
    svg = _svg(page)
    assert len(_cls(svg, "launch")) == 50
    (window,) = _cls(svg, "crash-window")
    assert "crash window: gemm slot 297" in (window.findtext("{http://www.w3.org/2000/svg}title") or "")
    assert len(_cls(svg, "failure")) == 1
    assert len(_cls(svg, "gap")) == 1  # the GAP at 10 us lies before the last 50 launches
    assert "gemm" in page
    assert "softmax" in page


def test_report_escapes_names_from_the_sidecar(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    page = render_report(records(run_rows(4, fault_after=2)), source="x&y.vrrl", opcode_names={GEMM: evil})
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "x&amp;y.vrrl" in page
    _svg(page)


def test_report_of_an_empty_log() -> None:
    page = render_report(np.empty(0, RECORD_DTYPE), source="empty.vrrl")
    assert "No launches recorded." in page
    assert "No failures recorded." in page


def test_report_refuses_to_overwrite(
    crashed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.html"
    out.write_text("mine")
    assert main(["report", str(crashed), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == "mine"
    assert main(["report", str(crashed), "-o", str(out), "--force"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


# ------------------------------------------------------------------ chromium


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail(
            "CI is set but Chromium is missing; .ci/run installs Debian's chromium (apt-get install chromium)"
        )
    pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")


def _read_png(data: bytes) -> npt.NDArray[np.uint8]:
    """RGB(A) pixels of an 8-bit, non-interlaced PNG (what Chromium's --screenshot writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    w = h = bpp = 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)  # noqa: PT018
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), np.uint8)
    prev = np.zeros(w * bpp, np.int64)
    for y in range(h):
        f, line = int(raw[y, 0]), raw[y, 1:].astype(np.int64)
        if f == 0:
            cur = line
        elif f == 1:  # Sub: a running sum per channel
            cur = line.reshape(w, bpp).cumsum(axis=0).reshape(-1) & 255
        elif f == 2:  # Up
            cur = (line + prev) & 255
        else:  # Average, Paeth: sequential along the row
            cur = line.copy()
            for i in range(cur.size):
                a = int(cur[i - bpp]) if i >= bpp else 0
                b = int(prev[i])
                if f == 3:
                    cur[i] = (cur[i] + ((a + b) >> 1)) & 255
                else:
                    c = int(prev[i - bpp]) if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)


def _render(chromium: str, page: Path, tmp: Path) -> tuple[npt.NDArray[np.uint8], list[str]]:
    """(screenshot pixels, the page's console lines) of ``page`` in headless Chromium."""
    png = tmp / f"{page.stem}.png"
    profile = tmp / f"profile-{page.stem}"
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,900",
        "--enable-logging=stderr", "--v=0", page.as_uri(),
    ]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert png.exists(), p.stderr[-2000:]
    console = [line for line in p.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return _read_png(png.read_bytes()), console


def test_report_renders_in_headless_chromium(crashed: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    out = tmp_path / "report.html"
    assert main(["report", str(crashed), "-o", str(out)]) == 0
    pixels, console = _render(chromium, out, tmp_path)
    assert console == []
    ink = (pixels[..., :3] < 235).any(axis=2)
    assert ink.shape == (900, 1200)
    assert ink.mean() > 0.02, "the screenshot is (nearly) blank"
    reds = (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    assert reds.sum() > 50, "no red on the page: the failure count / crash window did not render"

    # The console check can see errors: the same pipeline on a page that throws reports it.
    bad = tmp_path / "throws.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><p>x</p><script>throw new Error('boom-7731')</script></body></html>"
    )
    _, console = _render(chromium, bad, tmp_path)
    assert any("boom-7731" in line for line in console), console
