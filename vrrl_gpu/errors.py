"""Every error vrrl_gpu raises, in one place (but the CPU twin's CUDA error, ``backends/_twin_errors.py``).

Each class subclasses :class:`VrrlError` *and* the builtin whose meaning it
shares, so ``except ValueError`` / ``except OSError`` keep working for callers
that do not know this package. Messages say what was expected, what was found
and, where there is one, the fix.

The first group mirrors the error table of the VRRL v1 format
(``ZeroCapacity``, ``CapacityOverflow``, ``HeaderMismatch``, ``Io``).
"""

from __future__ import annotations

__all__ = [
    "VrrlError",
    "VrrlIoError",
    "HeaderMismatchError",
    "ZeroCapacityError",
    "CapacityOverflowError",
    "TruncatedLogError",
    "CorruptRecordError",
    "LogLockedError",
    "RecordValueError",
    "KernelSourceError",
    "KernelCompileError",
    "BackendUnavailableError",
    "CudaUnavailableError",
    "StagingError",
    "StagingSpaceError",
    "DrainError",
    "RecorderClosedError",
    "RecorderPoisonedError",
    "WrongDeviceError",
    "CaptureError",
    "InstrumentError",
    "SidecarError",
    "RegistryError",
    "ReplayError",
    "RecoverError",
    "EvidenceTypeError",
    "KernelArgumentError",
    "MissingExtraError",
    "VrrlWarning",
]


class VrrlError(Exception):
    """Base class of every error raised by vrrl_gpu."""


class VrrlIoError(VrrlError, OSError):
    """A read or write of a log failed (the format's ``Io``)."""


class HeaderMismatchError(VrrlError, ValueError):
    """The header's magic or version is not VRRL v1 (the format's ``HeaderMismatch``)."""


class ZeroCapacityError(VrrlError, ValueError):
    """A capacity of 0 was asked for or found in a header (the format's ``ZeroCapacity``)."""


class CapacityOverflowError(VrrlError, ValueError):
    """A capacity over 1,048,576 was asked for or found (the format's ``CapacityOverflow``)."""


class TruncatedLogError(VrrlIoError):
    """The file is shorter than its header says (the format's ``Io``).

    Carries ``expected`` and ``found`` byte counts.
    """

    def __init__(self, message: str, *, expected: int, found: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_truncated, (str(self), self.expected, self.found))


def _rebuild_truncated(message: str, expected: int, found: int) -> TruncatedLogError:
    return TruncatedLogError(message, expected=expected, found=found)


class CorruptRecordError(HeaderMismatchError):
    """A record slot holds a magic that is neither 0 nor 0xDEADBEEF.

    The original reader reports this as ``HeaderMismatch``, hence the base
    class. Carries ``slot`` (the slot index in the file) and ``magic``.
    """

    def __init__(self, message: str, *, slot: int, magic: int) -> None:
        super().__init__(message)
        self.slot = slot
        self.magic = magic

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_corrupt, (str(self), self.slot, self.magic))


def _rebuild_corrupt(message: str, slot: int, magic: int) -> CorruptRecordError:
    return CorruptRecordError(message, slot=slot, magic=magic)


class LogLockedError(VrrlError, BlockingIOError):
    """Another writer holds the log's exclusive lock."""


class RecordValueError(VrrlError, ValueError):
    """A record field is out of range or a record array has the wrong layout."""


class KernelSourceError(VrrlError, FileNotFoundError):
    """A file of ``kernels/`` could not be found in the installed package."""


class KernelCompileError(VrrlError, RuntimeError):
    """A kernel failed to compile; keeps ``source``, ``name``, ``options`` and ``log``."""

    def __init__(self, message: str, *, source: str, name: str, options: tuple[str, ...], log: str) -> None:
        super().__init__(message)
        self.source = source
        self.name = name
        self.options = tuple(options)
        self.log = log

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_compile, (str(self), self.source, self.name, self.options, self.log))

    def dump(self) -> str:
        """The source with line numbers, then the compiler's log (like CuPy's ``CompileException.dump``)."""
        width = len(str(self.source.count("\n") + 1))
        listing = "\n".join(f"{i:>{width}} {line}" for i, line in enumerate(self.source.splitlines(), 1))
        return f"{self.name} ({' '.join(self.options)})\n{listing}\n--- compiler log ---\n{self.log}"


def _rebuild_compile(
    message: str, source: str, name: str, options: tuple[str, ...], log: str
) -> KernelCompileError:
    return KernelCompileError(message, source=source, name=name, options=options, log=log)


class BackendUnavailableError(VrrlError, RuntimeError):
    """The requested backend (CuPy, a CUDA device, a C++ compiler) is not available here."""


class CudaUnavailableError(BackendUnavailableError):
    """An NVIDIA device is here but CUDA does not start: ``cuda_error_code``/``cuda_error_name`` and ``fix``.

    Raised instead of falling back to the CPU twin (a driver older than CuPy's
    runtime, 35; a stopped fabric manager, 802; ...). ``status`` is the code too,
    as on CuPy's errors.
    """

    def __init__(self, message: str, *, cuda_error_code: int, cuda_error_name: str, fix: str) -> None:
        super().__init__(message)
        self.cuda_error_code = int(cuda_error_code)
        self.status = self.cuda_error_code
        self.cuda_error_name = cuda_error_name
        self.fix = fix

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_cuda_unavailable, (str(self), self.cuda_error_code, self.cuda_error_name, self.fix))


def _rebuild_cuda_unavailable(message: str, code: int, name: str, fix: str) -> CudaUnavailableError:
    return CudaUnavailableError(message, cuda_error_code=code, cuda_error_name=name, fix=fix)


class StagingError(VrrlError, ValueError):
    """A staging ring is malformed, too small, or not ours."""


class StagingSpaceError(VrrlError, OSError):
    """No room for a staging segment (``posix_fallocate`` failed on a full tmpfs); nothing was mapped."""


class DrainError(VrrlError, RuntimeError):
    """The drain thread failed; the original exception is the ``__cause__``."""


class RecorderClosedError(VrrlError, RuntimeError):
    """The recorder was used after ``close()``."""


class RecorderPoisonedError(VrrlError, RuntimeError):
    """A sticky CUDA error made the context unusable; the recorder refuses further CUDA work.

    The original CUDA exception is the ``__cause__``.
    """


class WrongDeviceError(VrrlError, ValueError):
    """A recorder bound to one device was used from another."""


class CaptureError(VrrlError, RuntimeError):
    """A recorded launch under CUDA graph capture cannot be recorded without a call the capture forbids."""


class InstrumentError(VrrlError, ValueError):
    """A kernel ``rec.instrument`` cannot rewrite (the message says why; ``rec.wrap`` records it instead)."""


class SidecarError(VrrlError, ValueError):
    """The JSON sidecar beside a log is malformed."""


class RegistryError(VrrlError, LookupError):
    """A replay registry could not be loaded or lacks opcodes the log needs."""


class ReplayError(VrrlError, RuntimeError):
    """A replay trial could not be run (not: the failure did not reproduce)."""


class RecoverError(VrrlError, PermissionError):
    """A staging segment cannot be recovered (another user's, or still owned by a live process)."""


class EvidenceTypeError(VrrlError, TypeError):
    """``classify`` or ``output_digest`` was given an object it cannot take."""


class KernelArgumentError(VrrlError, TypeError):
    """Kernel arguments do not fit the kernel's parameters (count, type or range), found before launching."""


class MissingExtraError(VrrlError, ImportError):
    """An optional dependency (an extra such as ``parquet`` = pyarrow) is needed and not installed."""


class VrrlWarning(RuntimeWarning):
    """Something went wrong that must not raise where it happened (a destructor, a thread at exit)."""
