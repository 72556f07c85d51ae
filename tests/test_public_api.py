"""The public surface is explicit and narrow: the top level holds what a recorder user needs, each layer is a
subpackage that owns its ``__all__``, every listed name exists, and importing touches no CUDA."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types

import pytest

import vrrl_gpu

SUBPACKAGES = (
    "format",
    "evidence",
    "capture",
    "backends",
    "recorder",
    "reproduce",
    "analysis",
    "analysis.exporters",
)


def _namespace(name: str) -> types.ModuleType:
    return importlib.import_module(f"vrrl_gpu.{name}")


@pytest.mark.parametrize("mod", [vrrl_gpu, *(_namespace(s) for s in SUBPACKAGES)], ids=lambda m: m.__name__)
def test_every_listed_name_exists_once(mod: types.ModuleType) -> None:
    names = mod.__all__
    assert [n for n in names if not hasattr(mod, n)] == []
    assert len(set(names)) == len(names)
    assert [n for n in names if n.startswith("_") and n != "__version__"] == []


def test_the_top_level_is_narrow_and_holds_the_recorder_api() -> None:
    top = set(vrrl_gpu.__all__)
    layers = {s for s in SUBPACKAGES if "." not in s} | {"errors"}
    assert layers <= top
    names = top - layers
    assert 15 <= len(names) <= 25, sorted(names)
    for name in (
        "Recorder",
        "RecorderOptions",
        "RingLog",
        "Record",
        "RECORD_DTYPE",
        "FailureClass",
        "SlotStatus",
        "classify",
        "output_digest",
        "FailureEvidence",
        "replay",
        "minimize",
        "VrrlError",
    ):
        assert name in top
    # Internals of the capture path stay in their layer.
    for internal in ("StagingRing", "ShmSegment", "Drainer", "RingPointers", "TwinBackend", "read_plan"):
        assert internal not in top
        assert not hasattr(vrrl_gpu, internal)


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_each_public_name_has_one_home_in_its_layer(sub: str) -> None:
    ns = _namespace(sub)
    for name in ns.__all__:
        obj = getattr(ns, name)
        if isinstance(obj, type) or inspect.isfunction(obj):
            home = obj.__module__
            assert home.startswith(ns.__name__ + ".") or home == ns.__name__, (name, home)


def test_the_analysis_functions_are_public() -> None:
    from vrrl_gpu import analysis

    for name in (
        "find_launches",
        "crash_windows",
        "compute_stats",
        "diff_records",
        "merge_logs",
        "export_log",
        "write_report",
        "LogFollower",
    ):
        assert name in analysis.__all__


def test_every_error_is_in_errors_all() -> None:
    from vrrl_gpu import errors

    classes = {
        n
        for n, v in vars(errors).items()
        if isinstance(v, type) and issubclass(v, (Exception, Warning)) and v.__module__ == errors.__name__
    }
    assert classes == set(errors.__all__)


def test_import_does_not_import_cupy() -> None:
    code = (
        "import sys, vrrl_gpu, vrrl_gpu._cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupy_backends')]\n"
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
