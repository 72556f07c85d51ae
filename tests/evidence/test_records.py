"""FailureEvidence (the four record words), pickling, the twin's errors, and the generated docs page."""

from __future__ import annotations

import builtins
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cupy_backends.cuda.api import runtime

import vrrl_gpu
from vrrl_gpu import (
    Classification,
    FailureClass,
    FailureEvidence,
    Record,
    SlotStatus,
    classify,
    output_digest,
)
from vrrl_gpu.backends import TwinCudaError
from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.evidence._docs import main, render_classification_markdown
from vrrl_gpu.format import as_record_array

DOCS = Path(__file__).resolve().parents[2] / "docs"


class _DeadArray:
    def to_host(self) -> np.ndarray:  # type: ignore[type-arg]
        raise runtime.CUDARuntimeError(700)


def test_from_exception_builds_the_four_words() -> None:
    out = np.arange(16, dtype=np.float32).reshape(4, 4)[:, ::2]
    exc = runtime.CUDARuntimeError(700)
    ev = FailureEvidence.from_exception(exc, slot_status=SlotStatus.FAULTED, outputs=out)
    assert ev.words == (int(SlotStatus.FAULTED), int(FailureClass.PROGRAM_BUG), 700, output_digest(out))
    assert ev.classification == classify(runtime.CUDARuntimeError(700))
    assert ev.digest_note == ""
    assert ev.output_digest != 0


def test_without_outputs_or_with_a_dead_device_the_digest_is_zero_and_says_why() -> None:
    ev = FailureEvidence.from_exception(RuntimeError("queue full"), slot_status=2)
    assert ev.words == (2, int(FailureClass.TRANSIENT_QUEUE), 0x00F0_0002, 0)
    assert ev.digest_note == "no outputs given"
    dead = FailureEvidence.from_exception(runtime.CUDARuntimeError(719), slot_status=3, outputs=_DeadArray())
    assert dead.output_digest == 0
    assert "could not be read" in dead.digest_note
    assert "cudaErrorIllegalAddress" in dead.digest_note


def test_unsupported_outputs_never_hide_the_failure() -> None:
    ev = FailureEvidence.from_exception(runtime.CUDARuntimeError(700), slot_status=3, outputs=object())
    assert ev.backend_error_code == 700
    assert ev.output_digest == 0
    assert "EvidenceTypeError" in ev.digest_note


def test_a_given_classification_is_used_as_it_is() -> None:
    given = Classification(FailureClass.DEVICE_LOSS, 719, "cudaErrorLaunchFailure", True, "NVML said so")
    ev = FailureEvidence.from_exception(runtime.CUDARuntimeError(719), slot_status=3, classification=given)
    assert ev.classification is given
    assert ev.failure_class is FailureClass.DEVICE_LOSS


def test_twin_errors_classify_through_the_cuda_table() -> None:
    for code in (700, 2, 719, 999, 5555):
        twin, real = classify(TwinCudaError(code)), classify(runtime.CUDARuntimeError(code))
        assert (twin.failure_class, twin.code, twin.sticky, twin.reason) == (
            real.failure_class,
            real.code,
            real.sticky,
            real.reason,
        )
    # The twin words unknown codes as cudaErrorUnknown; the name must not claim code 999.
    assert classify(TwinCudaError(5555)).name == "unknown CUDA error 5555"


def test_evidence_applies_to_a_record_and_survives_the_record_dtype() -> None:
    base = Record(timestamp_ns=1, slot_idx=7, tenant_id=0, opcode=3, args=(1, 2, 3, 4), epoch=0)
    exc = runtime.CUDARuntimeError(716)
    ev = FailureEvidence.from_exception(exc, slot_status=3, outputs=b"partial-output")
    rec = ev.apply(base)
    assert rec.has_evidence
    assert (rec.slot_status, int(rec.failure_class), rec.backend_error_code, rec.output_digest) == ev.words
    assert Record.from_row(as_record_array([rec])[0]) == rec
    assert rec.output_digest == 0x1AE06847172EB845


def test_words_are_validated() -> None:
    with pytest.raises(RecordValueError):
        FailureEvidence.from_exception(RuntimeError("x"), slot_status=-1)
    with pytest.raises(RecordValueError):
        FailureEvidence(slot_status=1 << 32, failure_class=FailureClass.UNCLASSIFIED, backend_error_code=0)
    with pytest.raises(RecordValueError):
        FailureEvidence(
            slot_status=3,
            failure_class=FailureClass.UNCLASSIFIED,
            backend_error_code=0,
            output_digest=1 << 64,
        )
    assert FailureEvidence(3, 9, 1).failure_class is FailureClass.UNCLASSIFIED  # type: ignore[arg-type]


def test_classification_and_evidence_pickle_round_trip() -> None:
    c = classify(runtime.CUDARuntimeError(700))
    assert pickle.loads(pickle.dumps(c)) == c
    ev = FailureEvidence.from_exception(runtime.CUDARuntimeError(700), slot_status=3, outputs=b"x")
    back = pickle.loads(pickle.dumps(ev))
    assert back == ev
    assert back.classification == c
    bare = FailureEvidence(3, FailureClass.PROGRAM_BUG, 700)
    assert pickle.loads(pickle.dumps(bare)) == bare


def test_public_names() -> None:
    for name in (
        "classify",
        "classify_code",
        "code_name",
        "output_digest",
        "Classification",
        "FailureEvidence",
        "CUDA_ERROR_TABLE",
        "CudaErrorInfo",
        "EvidenceTypeError",
    ):
        assert name in vrrl_gpu.evidence.__all__ or name in vrrl_gpu.errors.__all__
    assert vrrl_gpu.evidence.CUDA_ERROR_TABLE[700].runtime_name == "cudaErrorIllegalAddress"


# ---------------------------------------------------------------- docs


def test_the_classification_page_equals_the_generated_one() -> None:
    page = DOCS / "error-classification.md"
    assert page.read_text(encoding="utf-8") == render_classification_markdown(), (
        "docs/error-classification.md is out of date: run python docs/gen_error_classification.py"
    )


def test_the_page_lists_every_code() -> None:
    text = render_classification_markdown()
    for code, info in vrrl_gpu.evidence.CUDA_ERROR_TABLE.items():
        assert f"| {code} | " in text
        assert info.reason in text


def test_the_regeneration_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "page.md"
    assert main(["--check", str(target)]) == 1  # missing
    assert "out of date" in capsys.readouterr().err
    assert main(["--write", str(target)]) == 0
    assert main(["--check", str(target)]) == 0
    target.write_text("stale", encoding="utf-8")
    assert main(["--check", str(target)]) == 1
    assert main([]) == 0
    assert capsys.readouterr().out == render_classification_markdown()


def test_the_generator_script_checks_the_page() -> None:
    r = subprocess.run(
        [sys.executable, str(DOCS / "gen_error_classification.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_the_error_handling_page_names_only_real_errors() -> None:
    text = (DOCS / "error-handling.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(\w+(?:Error|Warning))`", text))
    assert {"RecorderPoisonedError", "DrainError", "VrrlWarning"} <= named
    builtin = {n for n in named if hasattr(builtins, n)}
    cupy = {"CUDARuntimeError", "CUDADriverError", "OutOfMemoryError", "NVRTCError", "CompileException"}
    for name in named - builtin - cupy:
        assert hasattr(vrrl_gpu.errors, name), name
