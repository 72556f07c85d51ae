"""``record_triton``: the hooks go in and come out exactly, with the real Triton package; a hook call (what
Triton's launcher makes before and after each launch) records the kernel's name on the launch's stream.
The launch of a real ``@triton.jit`` kernel needs a GPU (tests/torch/test_torch_gpu.py)."""

from __future__ import annotations

import shutil
import types
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.recorder import log_records, with_status
from tests.helpers.torch_env import require
from vrrl_gpu import Recorder, SlotStatus, VrrlWarning
from vrrl_gpu.format import META_OPCODE_BASE, read_sidecar

vt = require("vrrl_gpu.torch")
triton = require("triton")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")


def _metadata(name: str, stream: int) -> Any:
    """What Triton's launcher hands its hooks: a LazyDict of the name, the function and the stream handle."""
    from triton.compiler.compiler import LazyDict

    return LazyDict({"name": name, "function": None, "stream": stream})


def _site_hooks(site: Any) -> tuple[Any, Any]:
    enter, exit_ = site.launch_enter_hook, site.launch_exit_hook
    calls = getattr(enter, "calls", None)
    if calls is not None:
        return list(calls), list(exit_.calls)
    return enter, exit_


def test_the_hooks_are_installed_and_removed_exactly(tmp_path: Path) -> None:
    site = vt._triton.hook_site()
    seen: list[str] = []

    def theirs(metadata: Any) -> None:
        seen.append(metadata.data["name"])

    chain = getattr(site.launch_enter_hook, "calls", None)
    if chain is not None:
        site.launch_enter_hook.add(theirs)
    else:
        site.launch_enter_hook = theirs
    try:
        before = _site_hooks(site)
        with Recorder(tmp_path / "run.vrrl", device="twin", capacity=1024) as rec:
            with vt.record_triton(rec) as hooks:
                assert _site_hooks(site) != before
                site.launch_enter_hook(_metadata("add_kernel", 0))  # what the launcher calls
                if site.launch_exit_hook is not None:
                    site.launch_exit_hook(_metadata("add_kernel", 0))
            assert _site_hooks(site) == before
            assert hooks.launches == 1
            assert seen == ["add_kernel"]  # the hook that was there before still ran, before ours
    finally:
        if chain is not None:
            site.launch_enter_hook.remove(theirs)
        else:
            site.launch_enter_hook = None


def test_a_launch_is_a_breadcrumb_named_for_its_kernel_on_its_stream(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    site = vt._triton.hook_site()
    with Recorder(path, device="twin", capacity=1024, breadcrumbs="begin+end") as rec:
        s = rec.backend.new_stream()
        with vt.record_triton(rec):
            for name in ("add_kernel", "softmax_kernel", "add_kernel"):
                site.launch_enter_hook(_metadata(name, s.ptr))
                site.launch_exit_hook(_metadata(name, s.ptr))
        rec.synchronize()
        keys = {st.key for st in rec._streams.values()}
    assert s.ptr in keys  # the breadcrumbs went on the launch's stream, not the default one
    side = read_sidecar(path)
    assert side is not None
    recs = log_records(path)
    recs = recs[recs["opcode"] < META_OPCODE_BASE]
    got = [(side.opcode_names[int(r["opcode"])], int(r["args"][0]), SlotStatus(int(r["slot_status"])).name)
           for r in with_status(recs, SlotStatus.BEGIN, SlotStatus.COMPLETED)]  # fmt: skip
    assert got == [
        ("triton:add_kernel", 0, "BEGIN"), ("triton:add_kernel", 0, "COMPLETED"),
        ("triton:softmax_kernel", 1, "BEGIN"), ("triton:softmax_kernel", 1, "COMPLETED"),
        ("triton:add_kernel", 2, "BEGIN"), ("triton:add_kernel", 2, "COMPLETED"),
    ]  # fmt: skip


def test_single_callable_hooks_of_older_triton_are_chained_and_restored(tmp_path: Path) -> None:
    # Older Triton keeps one callable per hook (CompiledKernel.launch_enter_hook): the same install path,
    # on a stand-in object with those two attributes.
    calls: list[str] = []

    def prev_enter(metadata: Any) -> None:
        calls.append("prev-enter")

    site = types.SimpleNamespace(launch_enter_hook=prev_enter, launch_exit_hook=None)
    with Recorder(tmp_path / "run.vrrl", device="twin", capacity=1024) as rec:
        with vt._triton.TritonHooks(rec, site=site) as hooks:
            assert site.launch_enter_hook is not prev_enter
            site.launch_enter_hook(_metadata("k", 0))
            site.launch_exit_hook(_metadata("k", 0))
        assert site.launch_enter_hook is prev_enter
        assert site.launch_exit_hook is None
        assert calls == ["prev-enter"]
        assert hooks.launches == 1
        # A hook set over ours while installed stays, with a warning.
        with pytest.warns(VrrlWarning, match="replaced"), vt._triton.TritonHooks(rec, site=site):
            site.launch_enter_hook = print
        assert site.launch_enter_hook is print
        assert site.launch_exit_hook is None  # the one not replaced is restored


def test_record_triton_without_triton_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_triton(name: str, *a: Any, **kw: Any) -> Any:
        if name == "triton" or name.startswith("triton."):
            raise ImportError("No module named 'triton'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_triton)
    with pytest.raises(ImportError, match="pip install triton"):
        vt._triton.hook_site()


def _failed(path: Path) -> list[tuple[str, int]]:
    side = read_sidecar(path)
    assert side is not None
    return [(side.opcode_names[int(r["opcode"])], int(r["args"][0]))
            for r in with_status(log_records(path), SlotStatus.FAILED_AT_LAUNCH)]  # fmt: skip


def test_a_launch_that_raises_out_of_the_block_is_recorded_with_its_exception(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    site = types.SimpleNamespace(launch_enter_hook=None, launch_exit_hook=None)
    with Recorder(path, device="twin", capacity=1024, breadcrumbs="begin+end") as rec:

        def launches() -> None:
            with vt._triton.TritonHooks(rec, site=site):
                site.launch_enter_hook(_metadata("ok_kernel", 0))
                site.launch_exit_hook(_metadata("ok_kernel", 0))
                site.launch_enter_hook(_metadata("bad_kernel", 0))
                raise ValueError("bad grid")  # the launch call raised: no exit hook

        with pytest.raises(ValueError, match="bad grid"):
            launches()
        rec.synchronize()
    assert _failed(path) == [("triton:bad_kernel", 1)]
    recs = log_records(path)
    (failed,) = with_status(recs, SlotStatus.FAILED_AT_LAUNCH)
    assert int(failed["failure_class"]) != 0


def test_a_launch_that_raised_and_was_caught_is_closed_at_the_next_launch(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    site = types.SimpleNamespace(launch_enter_hook=None, launch_exit_hook=None)
    with Recorder(path, device="twin", capacity=1024, breadcrumbs="begin+end") as rec:
        with vt._triton.TritonHooks(rec, site=site):
            site.launch_enter_hook(_metadata("bad_kernel", 0))  # raised; the caller caught it
            site.launch_enter_hook(_metadata("next_kernel", 0))
            site.launch_exit_hook(_metadata("next_kernel", 0))
        rec.synchronize()
    assert _failed(path) == [("triton:bad_kernel", 0)]
    side = read_sidecar(path)
    assert side is not None
    ends = [side.opcode_names[int(r["opcode"])] for r in with_status(log_records(path), SlotStatus.COMPLETED)]
    assert ends == ["triton:next_kernel"]
