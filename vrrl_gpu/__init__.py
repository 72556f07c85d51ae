"""vrrl_gpu: a flight recorder for CUDA work driven from Python.

Every recorded kernel launch makes the GPU write a 64-byte breadcrumb into
page-locked host memory; a host thread drains them into a VRRL v1 ring file;
CUDA failures become classified failure evidence. ``import vrrl_gpu`` never
imports CuPy or PyTorch or touches CUDA.

The top level holds what a user of the recorder needs; the layers are public
subpackages, each owning its ``__all__``: :mod:`vrrl_gpu.format` (the record,
the ring file, the sidecar), :mod:`vrrl_gpu.evidence`, :mod:`vrrl_gpu.capture`
(kernels, staging, drain, recovery), :mod:`vrrl_gpu.backends`,
:mod:`vrrl_gpu.recorder`, :mod:`vrrl_gpu.reproduce` and :mod:`vrrl_gpu.analysis`.
:mod:`vrrl_gpu.torch` (PyTorch and Triton; the ``torch`` extra) is imported only by name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vrrl_gpu._version import __version__
from vrrl_gpu.errors import RecorderPoisonedError, VrrlError, VrrlWarning

if TYPE_CHECKING:
    from vrrl_gpu import analysis, backends, capture, errors, evidence, format, recorder, reproduce
    from vrrl_gpu.backends import get_backend
    from vrrl_gpu.evidence import Classification, FailureEvidence, classify, output_digest
    from vrrl_gpu.format import RECORD_DTYPE, FailureClass, MetaOpcode, Record, RingLog, SlotStatus
    from vrrl_gpu.recorder import HangReport, Recorder, RecorderOptions, recorder_disabled
    from vrrl_gpu.reproduce import minimize, replay

__all__ = [
    "__version__",
    # the recorder
    "Recorder",
    "RecorderOptions",
    "HangReport",
    "recorder_disabled",
    "get_backend",
    # the format
    "RECORD_DTYPE",
    "Record",
    "FailureClass",
    "SlotStatus",
    "MetaOpcode",
    "RingLog",
    # failure evidence
    "Classification",
    "FailureEvidence",
    "classify",
    "output_digest",
    # reproduce
    "replay",
    "minimize",
    # errors
    "VrrlError",
    "RecorderPoisonedError",
    "VrrlWarning",
    # the layers
    "analysis",
    "backends",
    "capture",
    "errors",
    "evidence",
    "format",
    "recorder",
    "reproduce",
]

#: Where each lazy name of ``__all__`` is defined (a module's own name for a subpackage): each is imported on
#: first use (PEP 562), so that importing the package costs only the parts a program uses.
_HOMES: dict[str, str] = {
    name: home
    for home, names in (
        ("vrrl_gpu.analysis", ("analysis",)),
        ("vrrl_gpu.backends", ("backends",)),
        ("vrrl_gpu.capture", ("capture",)),
        ("vrrl_gpu.errors", ("errors",)),
        ("vrrl_gpu.evidence", ("evidence",)),
        ("vrrl_gpu.format", ("format",)),
        ("vrrl_gpu.recorder", ("recorder",)),
        ("vrrl_gpu.reproduce", ("reproduce",)),
        ("vrrl_gpu.backends", ("get_backend",)),
        ("vrrl_gpu.evidence", ("Classification", "FailureEvidence", "classify", "output_digest")),
        (
            "vrrl_gpu.format",
            ("RECORD_DTYPE", "FailureClass", "MetaOpcode", "Record", "RingLog", "SlotStatus"),
        ),
        ("vrrl_gpu.recorder", ("HangReport", "Recorder", "RecorderOptions", "recorder_disabled")),
        ("vrrl_gpu.reproduce", ("minimize", "replay")),
    )
    for name in names
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
