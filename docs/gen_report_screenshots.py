"""Regenerate docs/img/report-log.png and docs/img/report-fleet.png (headless Chromium, the twin, no GPU).

Run from the repository root: ``PYTHONPATH=. python3 docs/gen_report_screenshots.py``. The single-log page is
of a 1,048,576-record log whose last launch faulted, its newest 100,000 launches binned
(``vrrl report LOG --last 100000``); the fleet page of the synthetic 1,000-rank fleet (both from
tests/helpers/fleet.py: three ranks recorded by the Recorder on the twin, the rest written with numpy).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers.fleet import build_fleet, million_record_log
from vrrl_gpu._cli import main

IMG = Path(__file__).resolve().parent / "img"


def shoot(page: Path, png: Path, size: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={size}", page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


def main_() -> int:
    IMG.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        log = million_record_log(tmp / "million.vrrl")
        assert main(["report", str(log), "-o", str(tmp / "log.html"), "--last", "100000"]) == 0
        shoot(tmp / "log.html", IMG / "report-log.png", "1200,1100")
        build_fleet(tmp / "ranks")
        assert main(["report", str(tmp / "ranks"), "-o", str(tmp / "fleet.html")]) == 0
        shoot(tmp / "fleet.html", IMG / "report-fleet.png", "1300,1250")
    print(f"wrote {IMG / 'report-log.png'} and {IMG / 'report-fleet.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
