"""The fleet commands on 1,000 rank logs, and the report of a 1,048,576-record log.

Run: python benchmarks/bench_fleet.py [--ranks 1000] [--repeat 3]

Builds the synthetic fleet of tests/helpers/fleet.py (three ranks recorded by the Recorder on the twin, the
rest written with numpy), then times, each the best of ``--repeat`` runs: ``vrrl fleet`` on the logs, the
dataset export (``vrrl export ranks/ --format parquet``), ``vrrl fleet`` on the dataset, the fleet page
(``vrrl report ranks/``) with its size, the fleet's Chrome trace, and the single-log page of a 1M-record log
(default ``--last`` and ``--last 100000``) with its size. Each is the whole command through
``vrrl_gpu._cli.main`` in this process (DuckDB imported once, before the first timing). Pages are also
opened in headless Chromium, when installed, and that time is printed (start-up included). Targets: pages
under 2 MB; they open in under 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.fleet import FleetSpec, build_fleet, million_record_log  # noqa: E402
from vrrl_gpu._cli import main  # noqa: E402

PAGE_LIMIT = 2 << 20


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def quiet(*argv: str) -> Callable[[], None]:
    def run() -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = main(list(argv))
        if rc != 0:
            raise SystemExit(f"vrrl {' '.join(argv)} exited {rc}")

    return run


def chromium_open(page: Path, tmp: Path) -> float | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    t = time.perf_counter()
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp / 'p'}",
         f"--screenshot={tmp / 'shot.png'}", "--window-size=1300,1300", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return time.perf_counter() - t


def main_() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    import duckdb  # noqa: F401  # imported once here, so that no timing below includes it

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        fleet = build_fleet(tmp / "ranks", FleetSpec(ranks=a.ranks))
        n = len(fleet.paths())
        print(f"fleet: {n} rank logs ({sum(p.stat().st_size for p in fleet.paths()) / 1e6:.1f} MB) "
              f"built in {time.perf_counter() - t:.1f} s")  # fmt: skip
        rows = [
            ("vrrl fleet ranks/", best(quiet("fleet", str(fleet.root), "--json"), a.repeat)),
            (
                "vrrl export ranks/ --format parquet",
                best(
                    quiet(
                        "export", str(fleet.root), "--format", "parquet", "-o", str(tmp / "fleet"), "--force"
                    ),
                    a.repeat,
                ),
            ),
            ("vrrl fleet fleet/ (the dataset)", best(quiet("fleet", str(tmp / "fleet"), "--json"), a.repeat)),
            (
                "vrrl report ranks/ (fleet page)",
                best(quiet("report", str(fleet.root), "-o", str(tmp / "fleet.html"), "--force"), a.repeat),
            ),
            (
                "vrrl export ranks/ --format chrome",
                best(
                    quiet(
                        "export",
                        str(fleet.root),
                        "--format",
                        "chrome",
                        "-o",
                        str(tmp / "fleet.json"),
                        "--force",
                    ),
                    a.repeat,
                ),
            ),
        ]
        log = million_record_log(tmp / "million.vrrl")
        for last in ("200", "100000"):
            rows.append((f"vrrl report 1M-record log --last {last}", best(
                quiet("report", str(log), "-o", str(tmp / f"log{last}.html"), "--last", last, "--force"),
                a.repeat,
            )))  # fmt: skip
        print(f"\n{'command':<46}{'best of ' + str(a.repeat):>12}")
        for name, secs in rows:
            print(f"{name:<46}{secs:>10.2f} s")
        (tmp / "empty.html").write_text("<!DOCTYPE html><html><body><p>.</p></body></html>")
        empty = chromium_open(tmp / "empty.html", tmp)
        print(f"\nChromium headless screenshot of an empty page (start-up): "
              f"{'-' if empty is None else f'{empty:.2f} s'}; the column below is beyond that")  # fmt: skip
        print(f"{'page':<34}{'size':>12}{'limit':>12}{'Chromium open':>16}  (target < 2 s)")
        for name, page in (("fleet page, " + str(n) + " ranks", tmp / "fleet.html"),
                           ("1M-record log, --last 200", tmp / "log200.html"),
                           ("1M-record log, --last 100000", tmp / "log100000.html")):  # fmt: skip
            size = page.stat().st_size
            opened = chromium_open(page, tmp)
            shown = "-" if opened is None or empty is None else f"{opened - empty:+.2f} s"
            ok = "ok" if size < PAGE_LIMIT else "OVER"
            print(f"{name:<34}{size / 1024:>10.0f} KB{PAGE_LIMIT / 2**20:>10.0f} MB {ok}{shown:>12}")
        print(f"chrome trace of the fleet: {(tmp / 'fleet.json').stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
