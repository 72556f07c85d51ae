"""The producer half of the staging protocol in Python: the reference packer and host-written records."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vrrl_gpu.capture._staging import _COMMIT_STRUCT, _RECORD_STRUCT, CONTROL_SIZE, StagingRing
from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.format._layout import RECORD_DTYPE, RECORD_MAGIC, RECORD_SIZE, MetaOpcode, SlotStatus

__all__ = ["pack_reference", "meta_record", "gap_record", "recovered_record"]


# ---------------------------------------------------------------- producer side


def pack_reference(
    ring: StagingRing,
    seq: int,
    *,
    slot_idx: int,
    tenant_id: int,
    opcode: int,
    words: Sequence[int],
    epoch: int,
    slot_status: int,
    timestamp_ns: int,
) -> None:
    """Write the record for ``seq`` and commit it, leaving the bytes ``vrrl_pack`` leaves.

    The order is the producer protocol: commit word 0, record, commit word
    ``seq + 1`` (docs/staging-protocol.md says why the first store matters).

    The evidence words ``failure_class``, ``backend_error_code`` and
    ``output_digest`` are zero, as the kernel writes them.
    """
    if len(words) != 4:
        raise RecordValueError(f"words must hold 4 integers, got {len(words)}")
    off = ring.records_offset + RECORD_SIZE * (seq & ring.mask)
    commit_off = CONTROL_SIZE + 8 * (seq & ring.mask)
    try:
        # Invalidate first: a consumer that copied the slot meanwhile sees the word change and drops the copy.
        _COMMIT_STRUCT.pack_into(ring._mv, commit_off, 0)
        _RECORD_STRUCT.pack_into(
            ring._mv,
            off,
            RECORD_MAGIC,
            timestamp_ns,
            slot_idx,
            tenant_id,
            opcode,
            words[0],
            words[1],
            words[2],
            words[3],
            epoch,
            slot_status,
            0,
            0,
            0,
        )
        _COMMIT_STRUCT.pack_into(ring._mv, commit_off, seq + 1)
    except struct.error as e:
        raise RecordValueError(f"a record field is out of range for its u32/u64 word: {e}") from None


def meta_record(
    opcode: MetaOpcode,
    args: Sequence[int],
    *,
    timestamp_ns: int,
    tenant_id: int = 0,
    slot_idx: int = 0,
    epoch: int = 0,
) -> npt.NDArray[np.void]:
    """A one-element ``RECORD_DTYPE`` array holding a meta-record (slot_status ``META``)."""
    rec = np.zeros(1, RECORD_DTYPE)
    rec["magic"] = RECORD_MAGIC
    rec["timestamp_ns"] = timestamp_ns
    rec["slot_idx"] = slot_idx
    rec["tenant_id"] = tenant_id
    rec["opcode"] = int(opcode)
    rec["args"] = [int(a) for a in args]
    rec["epoch"] = epoch
    rec["slot_status"] = int(SlotStatus.META)
    return rec


def _split64(v: int) -> tuple[int, int]:
    return v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF


def gap_record(first_seq: int, count: int, *, timestamp_ns: int, tenant_id: int = 0) -> npt.NDArray[np.void]:
    """A GAP meta-record: ``args`` = (first lost sequence low, high, count low, high)."""
    return meta_record(
        MetaOpcode.GAP,
        (*_split64(first_seq), *_split64(count)),
        timestamp_ns=timestamp_ns,
        tenant_id=tenant_id,
    )


def recovered_record(pid: int, count: int, *, timestamp_ns: int, tenant_id: int = 0) -> npt.NDArray[np.void]:
    """A RECOVERED meta-record: ``args`` = (pid, count low, count high, 0)."""
    return meta_record(
        MetaOpcode.RECOVERED,
        (pid & 0xFFFFFFFF, *_split64(count), 0),
        timestamp_ns=timestamp_ns,
        tenant_id=tenant_id,
    )
