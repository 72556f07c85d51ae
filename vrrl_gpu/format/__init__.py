"""The VRRL v1 format: the record layout, the ring file, its reader and the JSON sidecar.

Nothing here touches CUDA.
"""

from __future__ import annotations

from vrrl_gpu.format._layout import (
    FILE_MAGIC,
    FORMAT_VERSION,
    HEADER_DTYPE,
    HEADER_SIZE,
    MAX_CAPACITY,
    META_OPCODE_BASE,
    RECORD_DTYPE,
    RECORD_MAGIC,
    RECORD_SIZE,
    UNKNOWN_SLOT,
    FailureClass,
    MetaOpcode,
    Record,
    SlotStatus,
    as_record_array,
    check_capacity,
    file_size_for,
)
from vrrl_gpu.format._reader import count_records, iter_record_chunks
from vrrl_gpu.format._ringlog import Header, RingLog, ScanResult, read_header
from vrrl_gpu.format._sidecar import (
    SIDECAR_SUFFIX,
    Sidecar,
    opcode_for_name,
    opcode_label,
    read_sidecar,
    sidecar_path,
    slot_label,
    write_sidecar,
)

__all__ = [
    # layout
    "FILE_MAGIC",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "RECORD_SIZE",
    "RECORD_MAGIC",
    "MAX_CAPACITY",
    "HEADER_DTYPE",
    "RECORD_DTYPE",
    "FailureClass",
    "SlotStatus",
    "MetaOpcode",
    "META_OPCODE_BASE",
    "UNKNOWN_SLOT",
    "Record",
    "as_record_array",
    "check_capacity",
    "file_size_for",
    # ringlog
    "Header",
    "RingLog",
    "ScanResult",
    "read_header",
    # reader
    "iter_record_chunks",
    "count_records",
    # sidecar
    "SIDECAR_SUFFIX",
    "Sidecar",
    "opcode_for_name",
    "opcode_label",
    "slot_label",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]
