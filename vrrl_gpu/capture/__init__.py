"""Capture: the kernel sources, the device → host staging ring, ``/dev/shm`` segments, the drain thread
and the recovery of orphaned segments. A record goes kernel → staging ring → drain → ring file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vrrl_gpu.capture._drain import Drainer, DrainOptions, DrainStatistics
    from vrrl_gpu.capture._kernels import (
        KERNEL_FILES,
        KernelParam,
        KernelSignature,
        kernel_path,
        kernel_source,
        kernels_dir,
        parse_kernels,
        sources_digest,
    )
    from vrrl_gpu.capture._records import gap_record, meta_record, pack_reference, recovered_record
    from vrrl_gpu.capture._recover import (
        RECOVERED_LOG_CAPACITY,
        RecoveryResult,
        find_orphans,
        recover_orphans,
        recover_segment,
    )
    from vrrl_gpu.capture._shm import SegmentInfo, ShmSegment, list_segments, owner_alive, pid_alive
    from vrrl_gpu.capture._staging import (
        CONTROL_DTYPE,
        CONTROL_SIZE,
        DEFAULT_SHM_DIR,
        MAX_SLOTS,
        MIN_SLOTS,
        STAGING_MAGIC,
        STAGING_VERSION,
        ConsumeResult,
        StagingRing,
    )

__all__ = [
    # kernels
    "KERNEL_FILES",
    "KernelParam",
    "KernelSignature",
    "kernels_dir",
    "kernel_source",
    "kernel_path",
    "sources_digest",
    "parse_kernels",
    # staging
    "CONTROL_SIZE",
    "STAGING_MAGIC",
    "STAGING_VERSION",
    "MIN_SLOTS",
    "MAX_SLOTS",
    "CONTROL_DTYPE",
    "ConsumeResult",
    "StagingRing",
    "DEFAULT_SHM_DIR",
    # records
    "pack_reference",
    "meta_record",
    "gap_record",
    "recovered_record",
    # shm
    "ShmSegment",
    "SegmentInfo",
    "list_segments",
    "pid_alive",
    "owner_alive",
    # drain
    "DrainOptions",
    "DrainStatistics",
    "Drainer",
    # recover
    "RecoveryResult",
    "find_orphans",
    "recover_segment",
    "recover_orphans",
    "RECOVERED_LOG_CAPACITY",
]

#: Where each lazy name of ``__all__`` is defined (a module's own name for a subpackage): each is imported on
#: first use (PEP 562), so that importing the package costs only the parts a program uses.
_HOMES: dict[str, str] = {
    name: home
    for home, names in (
        ("vrrl_gpu.capture._drain", ("Drainer", "DrainOptions", "DrainStatistics")),
        (
            "vrrl_gpu.capture._kernels",
            (
                "KERNEL_FILES",
                "KernelParam",
                "KernelSignature",
                "kernel_path",
                "kernel_source",
                "kernels_dir",
                "parse_kernels",
                "sources_digest",
            ),
        ),
        ("vrrl_gpu.capture._records", ("gap_record", "meta_record", "pack_reference", "recovered_record")),
        (
            "vrrl_gpu.capture._recover",
            (
                "RECOVERED_LOG_CAPACITY",
                "RecoveryResult",
                "find_orphans",
                "recover_orphans",
                "recover_segment",
            ),
        ),
        ("vrrl_gpu.capture._shm", ("SegmentInfo", "ShmSegment", "list_segments", "owner_alive", "pid_alive")),
        (
            "vrrl_gpu.capture._staging",
            (
                "CONTROL_DTYPE",
                "CONTROL_SIZE",
                "DEFAULT_SHM_DIR",
                "MAX_SLOTS",
                "MIN_SLOTS",
                "STAGING_MAGIC",
                "STAGING_VERSION",
                "ConsumeResult",
                "StagingRing",
            ),
        ),
    )
    for name in names
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
