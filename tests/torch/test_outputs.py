"""``outputs=`` takes PyTorch tensors: the digest is a tensor's logical bytes, read only when a failure is."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.recorder import log_records
from tests.helpers.torch_env import require
from vrrl_gpu import Recorder, SlotStatus
from vrrl_gpu.evidence import output_digest

torch = require("torch")


@pytest.mark.parametrize("dtype", ["float32", "int64", "float16", "bool", "complex64"])
def test_a_cpu_tensor_digests_like_the_numpy_array_of_its_values(dtype: str) -> None:
    t = (torch.arange(24) % 5).to(getattr(torch, dtype)).reshape(4, 6)
    assert output_digest(t) == output_digest(t.numpy())
    # Views, transposes and lazy conjugation digest their logical values, as numpy's C order has them.
    assert output_digest(t.T) == output_digest(np.ascontiguousarray(t.numpy().T))
    assert output_digest(t[:, ::2]) == output_digest(t.numpy()[:, ::2])


def test_bfloat16_has_no_numpy_dtype_and_still_digests_its_bytes() -> None:
    t = torch.linspace(0, 1, 10, dtype=torch.bfloat16)
    raw = t.view(torch.int16).numpy().tobytes()
    assert output_digest(t) == output_digest(raw)
    assert output_digest(t) != output_digest(t.to(torch.float32))


def test_a_conjugated_view_digests_its_values_not_its_storage() -> None:
    z = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    assert output_digest(z.conj()) == output_digest(np.conj(z.numpy()))
    assert output_digest(z.conj()) != output_digest(z)


def test_parameters_and_lists_of_tensors() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    assert output_digest(p) == output_digest(np.ones(3, dtype=np.float32))
    want = output_digest([np.ones(3, np.float32), np.zeros(2, np.float32)])
    assert output_digest([p, torch.zeros(2)]) == want


@pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs g++")
def test_a_failed_slot_records_the_digest_of_its_tensor_outputs(tmp_path: Path) -> None:
    path = tmp_path / "run.vrrl"
    out = torch.full((8,), 3.0)
    with Recorder(path, device="twin", capacity=1024) as rec:
        with (
            pytest.raises(ValueError, match="boom"),
            rec.slot(rec.opcode("step"), (1, 0, 0, 0), outputs=out),
        ):
            raise ValueError("boom")
        # The tensor is read when the failure is written, not at the slot: a later change is not seen.
        out.fill_(0.0)
    recs = log_records(path)
    failed = recs[recs["slot_status"] == SlotStatus.FAILED_AT_LAUNCH]
    assert failed["output_digest"].tolist() == [output_digest(torch.full((8,), 3.0))]
