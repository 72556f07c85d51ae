"""GPU test helpers: ``@requires_gpu`` marks a test ``gpu`` and skips it (with the reason) without a device.

With ``VRRL_REQUIRE_GPU=1`` (set it on machines that have a GPU) the skip becomes a failure,
so a broken CuPy install cannot pass as "no GPU here".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., Any])


@functools.lru_cache(maxsize=1)
def gpu_status() -> tuple[bool, str]:
    """(usable, reason): CuPy imports and sees at least one CUDA device.

    A host with NVIDIA hardware whose CUDA fails is not reported as "no GPU" (``vrrl doctor`` says why).
    """
    try:
        import cupy
    except Exception as e:
        return False, f"no GPU: CuPy does not import ({type(e).__name__}: {e})"
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:
        from vrrl_gpu.backends._host import probe_host

        host = probe_host()
        if host.present:  # hardware is here and CUDA fails: that is not "no GPU", say so (and what to run)
            return False, (
                f"an NVIDIA device is here ({host.describe()}) but CUDA does not start "
                f"({type(e).__name__}: {e}); run `vrrl doctor`"
            )
        return False, f"no GPU: getDeviceCount() failed ({type(e).__name__}: {e})"
    if n < 1:
        return False, "no GPU: getDeviceCount() returned 0"
    return True, f"{n} CUDA device(s)"


def require_gpu_or_skip() -> None:
    """Skip the running test without a GPU, or fail it when VRRL_REQUIRE_GPU=1."""
    ok, why = gpu_status()
    if ok:
        return
    if os.environ.get("VRRL_REQUIRE_GPU") == "1":
        pytest.fail(f"VRRL_REQUIRE_GPU=1 but {why}")
    pytest.skip(why)


def requires_gpu(fn: F) -> F:
    """Decorator: ``@pytest.mark.gpu`` plus the skip/fail check at the start of the test."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        require_gpu_or_skip()
        return fn(*args, **kwargs)

    return pytest.mark.gpu(wrapper)  # type: ignore[no-any-return]
