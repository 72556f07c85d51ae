"""The CPU twin's CUDA error: named, worded and sticky exactly as the CUDA error table says.

Nothing here is a second copy of a CUDA fact: names, ``cudaGetErrorString``
texts and the sticky flag come from :mod:`vrrl_gpu.evidence._cuda_table`.
"""

from __future__ import annotations

from vrrl_gpu.errors import VrrlError
from vrrl_gpu.evidence._cuda_table import CUDA_ERROR_TABLE

__all__ = ["TwinCudaError", "TWIN_STICKY_CODES", "twin_error_text"]

#: Codes after which a CUDA context is unusable (the headers' "must be terminated and relaunched").
TWIN_STICKY_CODES = frozenset(code for code, info in CUDA_ERROR_TABLE.items() if info.sticky)


def twin_error_text(code: int) -> tuple[str, str]:
    """``(cudaGetErrorName, cudaGetErrorString)`` for ``code``, as the runtime words them."""
    info = CUDA_ERROR_TABLE.get(int(code))
    if info is None:
        return ("cudaErrorUnknown", "unrecognized error code")
    return (info.name, info.text or info.reason)


class TwinCudaError(VrrlError, RuntimeError):
    """A CUDA error raised by the CPU twin backend, worded like CuPy's ``CUDARuntimeError``.

    ``cuda_error_code`` (also ``status``, as on CuPy's errors) is the
    ``cudaError_t`` the real device would have returned; the evidence module
    classifies any exception with that attribute through the CUDA table.
    ``sticky`` says whether the twin context is now poisoned; ``detail`` says
    where in the twin it happened (kernel, block, thread), or is empty.
    """

    def __init__(self, cuda_error_code: int, detail: str = "") -> None:
        code = int(cuda_error_code)
        name, text = twin_error_text(code)
        super().__init__(f"{name}: {text} (twin)")
        self.cuda_error_code = code
        self.detail = detail

    @property
    def status(self) -> int:
        """The same as ``cuda_error_code`` (CuPy's attribute name)."""
        return self.cuda_error_code

    @property
    def sticky(self) -> bool:
        """True when this error poisons the context."""
        return self.cuda_error_code in TWIN_STICKY_CODES

    def __reduce__(self) -> tuple[object, ...]:
        return (TwinCudaError, (self.cuda_error_code, self.detail))
