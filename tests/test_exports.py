"""The public surface is explicit: every name in __all__ exists, and importing touches no CUDA."""

from __future__ import annotations

import subprocess
import sys

import vrrl_gpu


def test_all_names_exist() -> None:
    missing = [n for n in vrrl_gpu.__all__ if not hasattr(vrrl_gpu, n)]
    assert missing == []
    assert len(set(vrrl_gpu.__all__)) == len(vrrl_gpu.__all__)


def test_core_names_are_public() -> None:
    for name in (
        "RingLog",
        "Record",
        "RECORD_DTYPE",
        "FailureClass",
        "VrrlError",
        "HeaderMismatchError",
        "ZeroCapacityError",
        "CapacityOverflowError",
        "TruncatedLogError",
        "CorruptRecordError",
        "LogLockedError",
    ):
        assert name in vrrl_gpu.__all__


def test_import_does_not_import_cupy() -> None:
    code = (
        "import sys, vrrl_gpu, vrrl_gpu._cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupy_backends')]\n"
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
