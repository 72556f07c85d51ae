"""One home for each backend fact: the name list every entry point reads, and the twin's CUDA error texts and
sticky set taken from the CUDA error table."""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any, get_args

import pytest

import vrrl_gpu
from vrrl_gpu._cli import build_parser
from vrrl_gpu.backends import BACKEND_FACTORIES, BACKEND_NAMES, BackendName, TwinCudaError
from vrrl_gpu.backends._twin_errors import TWIN_STICKY_CODES
from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.evidence._cuda_table import CUDA_ERROR_TABLE
from vrrl_gpu.recorder import RecorderOptions
from vrrl_gpu.reproduce import REPLAY_DEVICES, Device

PKG = Path(vrrl_gpu.__file__).resolve().parent


def _flat_literal(tp: Any) -> tuple[str, ...]:
    out: list[str] = []
    for a in get_args(tp):
        out += _flat_literal(a) if get_args(a) else [a]
    return tuple(out)


def test_the_literal_types_match_the_one_list() -> None:
    assert ("auto", *BACKEND_FACTORIES) == BACKEND_NAMES
    assert _flat_literal(BackendName) == BACKEND_NAMES
    assert _flat_literal(Device) == REPLAY_DEVICES == (*BACKEND_NAMES, "none")


def _choices(parser: argparse.ArgumentParser, command: str, dest: str) -> tuple[str, ...]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if a.dest == dest)
    assert action.choices is not None
    return tuple(action.choices)


def test_every_entry_point_offers_the_registered_names() -> None:
    parser = build_parser()
    assert _choices(parser, "demo", "device") == BACKEND_NAMES
    assert _choices(parser, "doctor", "device") == BACKEND_NAMES
    assert _choices(parser, "replay", "device") == REPLAY_DEVICES
    for name in BACKEND_NAMES:
        assert RecorderOptions(device=name).device == name
    with pytest.raises(RecordValueError, match="'metal'") as bad:
        RecorderOptions(device="metal")
    assert all(repr(n) in str(bad.value) for n in BACKEND_NAMES)


def test_no_module_keeps_its_own_copy_of_the_backend_names() -> None:
    # A literal tuple of backend names anywhere but the registry is a second list that drifts.
    copy = re.compile(r"""\(\s*["']auto["']\s*,\s*["'](?:cupy|twin)["']""")
    holders = sorted(
        str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if copy.search(p.read_text(encoding="utf-8"))
    )
    assert holders == []


def test_the_pytest_plugin_offers_the_registered_names() -> None:
    from vrrl_gpu import _pytest_plugin

    seen: dict[str, Any] = {}

    class Group:
        def addoption(self, name: str, **kw: Any) -> None:
            seen[name] = kw

    class Parser:
        def getgroup(self, *a: object) -> Group:
            return Group()

    _pytest_plugin.pytest_addoption(Parser())  # type: ignore[arg-type]
    assert tuple(seen["--vrrl-device"]["choices"]) == BACKEND_NAMES


# ---- the twin's CUDA errors come from the CUDA table -----------------------------------------------


def _codes_the_twin_raises() -> set[int]:
    twin = (PKG / "backends" / "_twin.py").read_text(encoding="utf-8")
    shim = (PKG.parent / "kernels" / "twin_shim.h").read_text(encoding="utf-8")
    codes = {int(c) for c in re.findall(r"TwinCudaError\(\s*(\d+)", twin)}
    codes |= {int(c) for c in re.findall(r"\b(?:fault|record)\((\d+)\s*,", shim)}
    return codes


def test_every_code_the_twin_raises_is_worded_by_the_table() -> None:
    raised = _codes_the_twin_raises()
    assert {700, 710, 719, 1, 2} <= raised  # the parse found the twin's faults and call errors
    for code in raised:
        info = CUDA_ERROR_TABLE[code]
        assert info.runtime_name, code
        assert info.text, code
        assert str(TwinCudaError(code)) == f"{info.runtime_name}: {info.text} (twin)"


def test_the_sticky_set_is_the_tables() -> None:
    assert {c for c, i in CUDA_ERROR_TABLE.items() if i.sticky} == TWIN_STICKY_CODES
    for code, info in CUDA_ERROR_TABLE.items():
        assert TwinCudaError(code).sticky is info.sticky, code
    assert not TwinCudaError(4242).sticky


def test_the_twin_error_pickles_from_its_new_home() -> None:
    e = TwinCudaError(716, "k: block 3")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is TwinCudaError
    assert (back.cuda_error_code, back.detail, str(back), back.sticky) == (716, "k: block 3", str(e), True)
    assert TwinCudaError.__module__ == "vrrl_gpu.backends._twin_errors"
