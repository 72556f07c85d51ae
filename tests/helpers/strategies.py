"""The hypothesis strategies for records, shared by every test that generates them."""

from __future__ import annotations

from hypothesis import strategies as st

from vrrl_gpu import Record, SlotStatus

__all__ = ["U32", "U64", "WORDS", "KNOWN_STATUSES", "records"]

#: Any value of a u32 / u64 field of the format.
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
#: The four ``args`` words of a record.
WORDS = st.tuples(U32, U32, U32, U32)
#: The ``slot_status`` values this version names (others are legal in a file and stay numbers).
KNOWN_STATUSES = st.sampled_from([int(s) for s in SlotStatus])


def records(*, slot_status: st.SearchStrategy[int] = U32) -> st.SearchStrategy[Record]:
    """Any :class:`Record` the format can hold (``slot_status`` narrowed where a kernel writes it)."""
    return st.builds(
        Record,
        timestamp_ns=U64,
        slot_idx=U32,
        tenant_id=U32,
        opcode=U32,
        args=WORDS,
        epoch=U32,
        slot_status=slot_status,
        failure_class=U32,
        backend_error_code=U32,
        output_digest=U64,
    )
