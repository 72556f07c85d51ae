"""PyTorch's CUDA exceptions, as real torch exception objects (constructed: the CPU build raises none)."""

from __future__ import annotations

import pytest

from tests.helpers.torch_env import require
from vrrl_gpu import FailureClass, classify
from vrrl_gpu.errors import RecorderPoisonedError

torch = require("torch")

#: What c10's CUDA check puts after cudaGetErrorString (PyTorch 2.x), and the DSA hint of an assert.
SUFFIX = (
    "\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below "
    "might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
    "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n"
)


def _accelerator_error(message: str) -> BaseException:
    # torch.AcceleratorError (2.8+) where it exists; a plain RuntimeError is what older releases raise.
    cls = getattr(torch, "AcceleratorError", RuntimeError)
    err: BaseException = cls(message)
    return err


@pytest.mark.parametrize(
    ("wording", "code", "cls", "sticky"),
    [
        ("an illegal memory access was encountered", 700, FailureClass.PROGRAM_BUG, True),
        ("device-side assert triggered", 710, FailureClass.PROGRAM_BUG, True),
        ("unspecified launch failure", 719, FailureClass.PROGRAM_BUG, True),
        ("misaligned address", 716, FailureClass.PROGRAM_BUG, True),
        ("an illegal instruction was encountered", 715, FailureClass.PROGRAM_BUG, True),
        ("invalid configuration argument", 9, FailureClass.PROGRAM_BUG, False),
        ("no kernel image is available for execution on the device", 209, FailureClass.PROGRAM_BUG, False),
        ("out of memory", 2, FailureClass.TRANSIENT_QUEUE, False),
        ("operation not permitted when stream is capturing", 900, FailureClass.PROGRAM_BUG, False),
        ("uncorrectable ECC error encountered", 214, FailureClass.DEVICE_LOSS, False),
    ],
)
def test_torch_cuda_errors_classify_by_their_wording(
    wording: str, code: int, cls: FailureClass, sticky: bool
) -> None:
    message = f"CUDA error: {wording}{SUFFIX}"
    for err in (_accelerator_error(message), RuntimeError(message)):
        c = classify(err)
        assert (c.code, c.failure_class, c.sticky) == (code, cls, sticky), (type(err), wording)
        assert c.fatal is (sticky or cls is FailureClass.DEVICE_LOSS)


def test_accelerator_error_exists_in_this_torch_and_is_a_runtime_error() -> None:
    if not hasattr(torch, "AcceleratorError"):
        pytest.skip(f"torch {torch.__version__} has no AcceleratorError (added in 2.8)")
    assert issubclass(torch.AcceleratorError, RuntimeError)
    assert type(torch.AcceleratorError("x")).__module__ == "torch"


def test_an_error_code_attribute_wins_over_the_wording() -> None:
    err = _accelerator_error("CUDA error: an illegal memory access was encountered")
    err.error_code = 719  # type: ignore[attr-defined]  # as a build that carries the code sets it
    c = classify(err)
    if type(err).__name__ == "AcceleratorError":
        assert c.code == 719
    else:
        assert c.code == 700  # a RuntimeError's attributes are not trusted: only AcceleratorError's


def test_torch_out_of_memory_is_cuda_code_2_transient_not_sticky() -> None:
    err = torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.11 GiB of which "
        "3.12 GiB is free. Of the allocated memory 70.2 GiB is allocated by PyTorch"
    )
    assert isinstance(err, torch.OutOfMemoryError)
    c = classify(err)
    assert (c.code, c.failure_class, c.sticky, c.fatal) == (2, FailureClass.TRANSIENT_QUEUE, False, False)
    assert c.name == "torch.OutOfMemoryError"


def test_a_torch_error_wrapped_by_another_exception_is_found_in_the_chain() -> None:
    try:
        try:
            raise _accelerator_error(f"CUDA error: device-side assert triggered{SUFFIX}")
        except RuntimeError as inner:
            raise RecorderPoisonedError("the context is gone") from inner
    except RecorderPoisonedError as outer:
        c = classify(outer)
    assert (c.code, c.sticky) == (710, True)


def test_triton_launcher_errors_classify_by_their_wording() -> None:
    c = classify(RuntimeError("Triton Error [CUDA]: an illegal memory access was encountered"))
    assert (c.code, c.sticky) == (700, True)
    assert c.name == "CUDA_ERROR_ILLEGAL_ADDRESS"  # Triton calls the driver API


def test_other_torch_errors_are_not_cuda_errors() -> None:
    c = classify(torch.AcceleratorError("XPU error: something") if hasattr(torch, "AcceleratorError") else
                 RuntimeError("XPU error: something"))  # fmt: skip
    assert c.failure_class is FailureClass.UNCLASSIFIED
    with pytest.raises(IndexError) as info:
        torch.zeros(2)[5]
    c = classify(info.value)  # a host-side index check: a program bug by its words, no CUDA code
    assert (c.failure_class, c.code, c.sticky) == (FailureClass.PROGRAM_BUG, 0x00F0_0000 + 3, False)
