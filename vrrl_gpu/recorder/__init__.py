"""The Recorder: wrap live CUDA launches, have the device write a breadcrumb for each, attribute faults."""

from __future__ import annotations

from vrrl_gpu.recorder._options import HangReport, RecorderOptions, recorder_disabled
from vrrl_gpu.recorder._recorder import Recorder

__all__ = [
    # options
    "HangReport",
    "RecorderOptions",
    "recorder_disabled",
    # recorder
    "Recorder",
]
