"""Recorder(nvtx=True): an NVTX range named after opcode and slot around each launch (fake nvtx module)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from vrrl_gpu import Recorder
from vrrl_gpu.backends import TwinCudaError
from vrrl_gpu.errors import MissingExtraError


class FakeNvtx(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("nvtx")
        self.events: list[tuple[str, str | None, str | None]] = []

    def push_range(
        self,
        message: str | None = None,
        color: object = None,
        domain: str | None = None,
        category: object = None,
        payload: object = None,
    ) -> None:
        self.events.append(("push", message, domain))

    def pop_range(self, domain: str | None = None) -> None:
        self.events.append(("pop", None, domain))


@pytest.fixture
def fake_nvtx(monkeypatch: pytest.MonkeyPatch) -> FakeNvtx:
    fake = FakeNvtx()
    monkeypatch.setitem(sys.modules, "nvtx", fake)
    return fake


def test_each_launch_and_slot_gets_a_balanced_range(tmp_path: Path, fake_nvtx: FakeNvtx) -> None:
    with Recorder(tmp_path / "n.vrrl", device="twin", nvtx=True) as rec:
        k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
        op = rec.opcode("spin")
        rec.launch(k, 1, 1, (0,), opcode=op)
        with rec.slot(rec.opcode("library_call")):
            pass
        with pytest.raises(ZeroDivisionError), rec.slot(op):
            1 / 0  # noqa: B018 - the body raises; the range must still be popped
    assert fake_nvtx.events == [
        ("push", "spin #0", "vrrl"),
        ("pop", None, "vrrl"),
        ("push", "library_call #1", "vrrl"),
        ("pop", None, "vrrl"),
        ("push", "spin #2", "vrrl"),
        ("pop", None, "vrrl"),
    ]


def test_a_failing_launch_call_still_pops(tmp_path: Path, fake_nvtx: FakeNvtx) -> None:
    with Recorder(tmp_path / "n.vrrl", device="twin", nvtx=True) as rec:
        k = rec.backend.load("vrrl_demo.cu", "vrrl_demo_spin")
        with pytest.raises(TwinCudaError, match="cudaErrorInvalidValue"):  # block of 4096 threads
            rec.launch(k, 1, 4096, (0,), opcode=7)
    assert [e[0] for e in fake_nvtx.events] == ["push", "pop"]
    assert fake_nvtx.events[0][1] == "0x7 #0"


def test_no_ranges_without_the_option(tmp_path: Path, fake_nvtx: FakeNvtx) -> None:
    with Recorder(tmp_path / "n.vrrl", device="twin") as rec, rec.slot(1):
        pass
    assert fake_nvtx.events == []


def test_missing_nvtx_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nvtx", None)  # makes `import nvtx` raise ImportError
    with pytest.raises(MissingExtraError, match=r"vrrl_gpu\[nvtx\]"):
        Recorder(tmp_path / "n.vrrl", device="twin", nvtx=True)


def test_the_real_nvtx_package_works_without_a_profiler(tmp_path: Path) -> None:
    pytest.importorskip("nvtx", reason="the nvtx extra is not installed")
    with Recorder(tmp_path / "n.vrrl", device="twin", nvtx=True) as rec, rec.slot(rec.opcode("x")):
        pass
