"""``FailureEvidence``: a classified failure as a VRRL record."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.evidence._classify import Classification, _as_int, _safe_str, classify
from vrrl_gpu.evidence._codes import _U32, _U64
from vrrl_gpu.evidence._digest import _digest
from vrrl_gpu.format._layout import FailureClass, Record

__all__ = ["FailureEvidence"]


# --------------------------------------------------------------------------- evidence


def _check_word(name: str, value: object, limit: int) -> int:
    n = _as_int(value)
    if n is None or not 0 <= n <= limit:
        raise RecordValueError(f"FailureEvidence.{name} must be an integer 0 ..= {limit}, got {value!r}")
    return n


@dataclass(frozen=True, slots=True)
class FailureEvidence:
    """The four evidence words of a VRRL record, with the classification they came from.

    ``output_digest`` is 0 when there is none; ``digest_note`` then says why
    (no outputs given, the device array could not be read, an unsupported type).
    """

    slot_status: int
    failure_class: FailureClass
    backend_error_code: int
    output_digest: int = 0
    classification: Classification | None = None
    digest_note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "slot_status", _check_word("slot_status", self.slot_status, _U32))
        fc = _check_word("failure_class", self.failure_class, _U32)
        object.__setattr__(self, "failure_class", FailureClass(fc))
        object.__setattr__(
            self, "backend_error_code", _check_word("backend_error_code", self.backend_error_code, _U32)
        )
        object.__setattr__(self, "output_digest", _check_word("output_digest", self.output_digest, _U64))

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        slot_status: int,
        outputs: Any = None,
        stream: Any = None,
        device_was_working: bool = True,
        nvml: bool = False,
        classification: Classification | None = None,
    ) -> FailureEvidence:
        """Classify ``exc`` and digest ``outputs``. Never raises because of the outputs.

        ``slot_status`` is where the failure was seen (a :class:`~vrrl_gpu.SlotStatus`).
        ``classification``, when the caller already classified ``exc``, is used as it is.
        """
        status = _check_word("slot_status", slot_status, _U32)
        c = classification or classify(exc, device_was_working=device_was_working, nvml=nvml)
        digest: int | None = None
        if outputs is None:
            note = "no outputs given"
        else:
            try:
                digest, note = _digest(outputs, stream)
            except Exception as err:  # evidence must not replace the failure it describes
                note = f"outputs could not be digested: {type(err).__name__}: {_safe_str(err)}"
        return cls(
            slot_status=status,
            failure_class=c.failure_class,
            backend_error_code=c.code,
            output_digest=digest or 0,
            classification=c,
            digest_note=note,
        )

    @property
    def words(self) -> tuple[int, int, int, int]:
        """``(slot_status, failure_class, backend_error_code, output_digest)`` as plain ints."""
        return (self.slot_status, int(self.failure_class), self.backend_error_code, self.output_digest)

    def apply(self, record: Record) -> Record:
        """``record`` with its four evidence words replaced by these."""
        return replace(
            record,
            slot_status=self.slot_status,
            failure_class=self.failure_class,
            backend_error_code=self.backend_error_code,
            output_digest=self.output_digest,
        )
