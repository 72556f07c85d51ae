"""Each reading command parses the log's sidecar once (the names and the stream table come from one read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.analysis_logs import recorder_like_log
from vrrl_gpu._cli import main
from vrrl_gpu.format import _sidecar


@pytest.mark.parametrize(
    "argv",
    [
        ["dump", "{log}"],
        ["dump", "--json", "{log}"],
        ["dump", "--csv", "{log}"],
        ["export", "--format", "jsonl", "-o", "{out}", "{log}"],
        ["export", "--format", "chrome", "-o", "{out}", "{log}"],
        ["stats", "{log}"],
        ["report", "-o", "{out}", "{log}"],
        ["replay", "--list", "{log}"],
    ],
    ids=lambda a: " ".join(x for x in a if not x.startswith("{")),
)
def test_the_sidecar_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    log = recorder_like_log(tmp_path / "run.vrrl", 301, seed=2)
    reads: list[str] = []
    real = _sidecar.read_sidecar

    def counted(path: object) -> object:
        reads.append(str(path))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(_sidecar, "read_sidecar", counted)
    assert main([a.format(log=log, out=tmp_path / "out") for a in argv]) == 0
    capsys.readouterr()
    assert reads == [str(log)]
