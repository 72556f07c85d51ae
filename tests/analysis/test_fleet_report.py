"""The fleet page of ``vrrl report``: lanes binned into an image, the ranks that matter labelled, < 2 MB."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from tests.analysis.test_report import _chromium, _read_png, _render
from tests.helpers.fleet import Fleet, subset_of
from vrrl_gpu._cli import main

pytest.importorskip("duckdb", reason="duckdb (the analysis extra) is not installed")
pytest.importorskip("pyarrow", reason="pyarrow (the analysis extra) is not installed")

from vrrl_gpu.analysis._fleet import analyze_fleet
from vrrl_gpu.analysis._fleet_report import _window, fleet_grid

MAX_PAGE = 2 << 20


@pytest.fixture(scope="module")
def page(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fleet-report") / "fleet.html"
    assert main(["report", str(fleet.root), "-o", str(out)]) == 0
    return out


def _images(text: str) -> list[np.ndarray]:
    return [_read_png(base64.b64decode(m)) for m in re.findall(r'href="data:image/png;base64,([^"]+)"', text)]


def test_the_fleet_page(fleet: Fleet, page: Path) -> None:
    s = fleet.spec
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size < MAX_PAGE
    # Loads nothing but its own inline images.
    assert "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"" in text
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # noqa: PT018
    roles: dict[str, set[int]] = {}
    for m in re.finditer(r'class="lane-label role-(\w+)"[^>]*><title>rank (\d+)', text):
        roles.setdefault(m.group(1), set()).add(int(m.group(2)))
    assert roles["first"] == {s.faulted_first}
    assert roles["failed"] == {r for r, _ in s.late_failures}
    assert roles["hang"] == {s.hung}
    assert roles["behind"] == {r for r, _ in s.lagging}
    assert roles["bad"] == {s.damaged_header, s.damaged_slot, s.missing}
    assert f"first failure: rank {s.faulted_first}" in text
    assert "node091" in text and "NVIDIA H100 80GB HBM3 (synthetic)" in text  # noqa: PT018  # host, GPU
    detail, overview = _images(text)
    # One row per lane: two streams per format-layer rank with a sidecar, one per twin rank (its default
    # stream), one per rank without a stream table (no sidecar), and one for each rank without a log.
    with_sidecar = len(set(range(len(s.twin_ranks), s.no_sidecar_from)) - {s.missing, s.damaged_header})
    lanes = 2 * with_sidecar + len(s.twin_ranks) + (s.ranks - s.no_sidecar_from) + 2
    assert overview.shape[0] == lanes
    # Red only on the lane (stream) of each failed rank that recorded the failure.
    red = (overview[..., 0] > 200) & (overview[..., 1] < 60)
    assert red.any(axis=1).sum() == 1 + len(s.late_failures)
    assert detail.shape[0] < overview.shape[0]


def test_the_dataset_bins_like_the_logs(fleet: Fleet, dataset: Path) -> None:
    from_logs = analyze_fleet(subset_of(fleet))
    lo, hi = _window(from_logs, None)
    a = fleet_grid(subset_of(fleet), from_logs, lo, hi, 300)
    b = fleet_grid([str(dataset)], analyze_fleet([str(dataset)]), lo, hi, 300)
    assert a.lanes == b.lanes
    assert np.array_equal(a.counts, b.counts)
    assert np.array_equal(a.failures, b.failures)
    assert a.counts.sum() > 0 and a.failures.sum() == 3  # noqa: PT018


def test_the_window_option(fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = subset_of(fleet)[:40]
    out = tmp_path / "last.html"
    # The last two minutes: the first failure (minutes earlier) is outside, the lanes are still drawn.
    assert main(["report", *paths, "-o", str(out), "--window=-120..", "--bins", "50"]) == 0
    text = out.read_text()
    assert "first failure: rank" not in text.split('<section id="answers">')[0].split("</svg>")[-1]
    assert 'class="first-failure"' not in text
    assert "+ 2.0 min (50 bins of 2.400 s)" in text
    assert main(["report", *paths, "-o", str(out), "--window=10..5", "--force"]) == 2
    assert "must end after it starts" in capsys.readouterr().err
    # A single log takes the window too.
    one = tmp_path / "one.html"
    assert main(["report", paths[5], "-o", str(one), "--window=-60.."]) == 0
    assert "window" in one.read_text()


def test_the_fleet_page_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    pixels, console = _render(chromium, page, tmp_path)
    assert console == []
    ink = (pixels[..., :3] < 235).any(axis=2)
    assert ink.mean() > 0.02, "the screenshot is (nearly) blank"
    reds = (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    assert reds.sum() > 50, "no red: the first failure did not render"
    purple = (pixels[..., 0] > 90) & (pixels[..., 0] < 150) & (pixels[..., 1] < 90) & (pixels[..., 2] > 130)
    assert purple.sum() > 20, "no purple: the hang suspect's label did not render"


def test_a_long_timeline_is_binned(tmp_path: Path) -> None:
    from tests.helpers.analysis_logs import run_rows, write_log

    log = write_log(tmp_path / "long.vrrl", run_rows(3000, tenants=2, fault_after=2990))
    out = tmp_path / "long.html"
    assert main(["report", str(log), "-o", str(out), "--last", "3000"]) == 0
    text = out.read_text()
    assert 'class="launch-bin"' in text and 'class="launch"' not in text  # noqa: PT018
    assert "in 300 time bins per track" in text
    assert 'class="crash-window"' in text and 'class="failure"' in text  # noqa: PT018
    short = tmp_path / "short.html"
    assert main(["report", str(log), "-o", str(short), "--last", "100"]) == 0
    assert short.read_text().count('class="launch"') == 100
