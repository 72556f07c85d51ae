"""docs/error-classification.md, generated from the CUDA error table (docs/gen_error_classification.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vrrl_gpu.evidence._codes import (
    _LIBRARIES,
    _MARKER_CODE_BASE,
    CODE_COMPILE_FAILURE,
    CODE_CUPY_OUT_OF_MEMORY,
    CODE_MARKER_DEVICE_LOSS,
    CODE_MARKER_PROGRAM_BUG,
    CODE_MARKER_TRANSIENT,
    CODE_NO_MARKER,
    CUDA_CODE_OUT_OF_RANGE,
    LIBRARY_STATUS_OUT_OF_RANGE,
)
from vrrl_gpu.evidence._cuda_table import (
    CUDA_ERROR_TABLE,
    DEVICE_LOSS_XIDS,
    MESSAGE_MARKERS,
    NVML_RECLASSIFIABLE_CODES,
    STARTUP_CONFIG_CODES,
)

__all__ = ["render_classification_markdown", "main"]


# --------------------------------------------------------------------------- docs


_RULES = """\
- **ProgramBug**: what the program did: illegal or misaligned address, device assert, illegal
  instruction, invalid launch configuration, out of launch resources, missing kernel image, symbol or
  PTX, stale handles, stream-capture misuse. A kernel executing `trap` surfaces as 719 (sometimes 715
  or 710); all three are ProgramBug.
- **TransientQueue**: pressure that can be retried: allocation failure, devices unavailable or busy,
  not ready, timeout, MPS server busy or at capacity.
- **DeviceLoss**: the device or its context is gone: ECC or NVLink uncorrectable, contained hardware
  error, watchdog launch timeout, external device, MPS client terminated, system not ready or driver
  mismatch, and no-device / not-initialised errors *after* the device had been working.
- **Unclassified**: unknown (999), shutdown, driver/toolkit/installation mismatches, and anything not
  in a table. A code not in a table is Unclassified, never an exception.
"""


def _md_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render_classification_markdown() -> str:
    """docs/error-classification.md, generated from the tables (a test keeps the file equal to this)."""
    out: list[str] = [
        "# Error classification",
        "",
        (
            "<!-- Generated from vrrl_gpu/evidence/_cuda_table.py by "
            "`python docs/gen_error_classification.py`. "
            "Do not edit by hand: a test keeps this file equal to the code. -->"
        ),
        "",
        (
            "`vrrl_gpu.classify(exc)` turns an exception into a failure class, a stable code (the record's "
            "`backend_error_code`), a name, a sticky flag and a one-line reason. These are its tables."
        ),
        "",
        "## Classes",
        "",
        _RULES,
        "## Stable codes",
        "",
        (
            "`backend_error_code` is a u32 whose meaning never changes. `vrrl_gpu.code_name(code)` gives the "
            "readable name (`cudaErrorIllegalAddress (700)`)."
        ),
        "",
        _md_row(["code", "meaning"]),
        _md_row(["---", "---"]),
        _md_row(["`0`", "no error"]),
        _md_row(["`1` ..= `0xFFFE`", "a `cudaError_t` / `CUresult` code, as itself"]),
        _md_row([f"`0x{CUDA_CODE_OUT_OF_RANGE:04X}`", "a CUDA status outside `0 ..= 0xFFFE`"]),
    ]
    for lib in _LIBRARIES:
        out.append(_md_row([f"`0x{lib.base:08X}` + s", f"{lib.label} status `s` ({lib.header})"]))
    out += [
        _md_row([f"`0x{CODE_CUPY_OUT_OF_MEMORY:08X}`", "CuPy `OutOfMemoryError` (memory-pool allocation)"]),
        _md_row(
            [
                f"`0x{CODE_COMPILE_FAILURE:08X}`",
                "kernel compile failure (CuPy `CompileException`, vrrl_gpu `KernelCompileError`)",
            ]
        ),
        _md_row([f"`0x{CODE_MARKER_DEVICE_LOSS:08X}`", "no CUDA status; a device-loss marker matched"]),
        _md_row([f"`0x{CODE_MARKER_TRANSIENT:08X}`", "no CUDA status; a transient marker matched"]),
        _md_row([f"`0x{CODE_MARKER_PROGRAM_BUG:08X}`", "no CUDA status; a program-bug marker matched"]),
        _md_row([f"`0x{CODE_NO_MARKER:08X}`", "no CUDA status and no marker matched"]),
        "",
        (
            f"In each library range, base + `0x{LIBRARY_STATUS_OUT_OF_RANGE:04X}` means the error carried no "
            "status in range. Every other code is unassigned and decodes as Unclassified."
        ),
        "",
        "## CUDA runtime and driver errors",
        "",
        (
            "From `driver_types.h` (`enum cudaError`) and `cuda.h` (`CUresult`) of the CUDA 13.0 toolkit; "
            "rows "
            "marked *since* come from later 13.x headers. CUDA 12.x uses a subset of the same numbers. "
            "*Sticky*: the header says the process must be terminated and relaunched to use CUDA again."
        ),
        "",
        _md_row(["code", "runtime name", "driver name", "class", "sticky", "reason"]),
        _md_row(["---:", "---", "---", "---", "---", "---"]),
    ]
    for info in sorted(CUDA_ERROR_TABLE.values(), key=lambda i: i.code):
        rt = f"`{info.runtime_name}`" if info.runtime_name else "(driver only)"
        if info.since:
            rt += f" *since {info.since}*"
        drv = f"`{info.driver_name}`" if info.driver_name else "(runtime only)"
        out.append(
            _md_row([info.code, rt, drv, info.failure_class.label, "yes" if info.sticky else "", info.reason])
        )
    out += [
        "",
        "Adjustments:",
        "",
        "- " + ", ".join(str(c) for c in sorted(STARTUP_CONFIG_CODES)) + " are DeviceLoss only when the "
        "device had been working (`classify(exc, device_was_working=True)`, the default); at start-up they "
        "are configuration problems (Unclassified).",
        "- With `classify(exc, nvml=True)` and nvidia-ml-py installed, "
        + " and ".join(str(c) for c in sorted(NVML_RECLASSIFIABLE_CODES))
        + " become DeviceLoss when NVML reports the GPU lost or an Xid of device-loss kind was seen: "
        + ", ".join(f"{x} ({d})" for x, d in DEVICE_LOSS_XIDS.items())
        + ". Without NVML nothing changes.",
        (
            "- `cudaErrorFabricNotReady` (a later 13.x; its number was not found in any source) is not in "
            "the "
            "table and decodes as Unclassified."
        ),
        "",
    ]
    for lib in _LIBRARIES:
        out += [
            f"## {lib.label} statuses",
            "",
            (
                f"Code `0x{lib.base:08X}` + status, from `{lib.header}`. CuPy raises them as "
                f"`{lib.class_name}` (status in `.{lib.status_attr}`; matched by class name, never imported)."
            ),
            "",
            _md_row(["status", "code", "name", "class", "reason"]),
            _md_row(["---:", "---", "---", "---", "---"]),
        ]
        for s, st in sorted(lib.table.items()):
            cells = [s, f"`0x{lib.base + s:08X}`", f"`{st.name}`", st.failure_class.label, st.reason]
            out.append(_md_row(cells))
        out.append("")
    out += [
        "## Exceptions without a CUDA status",
        "",
        (
            "Other backends' errors and plain exceptions: first a CUDA error name in the message "
            "(`cudaErrorIllegalAddress`, `CUDA_ERROR_LAUNCH_FAILED`: classified by the CUDA table), or "
            "`cudaGetErrorString`'s wording after `CUDA error:`, `CUDA driver error:` or "
            "`Triton Error [CUDA]:` (PyTorch's and Triton's messages; the wordings known are the table's "
            "`text` column, so `CUDA error: an illegal memory access was encountered` is 700, sticky); "
            "PyTorch's `OutOfMemoryError` is 2 (`cudaErrorMemoryAllocation`). Then "
            "these case-insensitive markers, on word boundaries, after `_` and `-` become spaces and "
            "CamelCase words are split (`DeviceLost` reads `device lost`), in this "
            "order (the exception's `__cause__`/`__context__` messages count too):"
        ),
        "",
        _md_row(["order", "class", "code", "markers"]),
        _md_row(["---:", "---", "---", "---"]),
    ]
    for i, (cls, markers) in enumerate(MESSAGE_MARKERS, 1):
        out.append(
            _md_row(
                [i, cls.label, f"`0x{_MARKER_CODE_BASE + cls:08X}`", ", ".join(f"`{m}`" for m in markers)]
            )
        )
    out += [
        _md_row([len(MESSAGE_MARKERS) + 1, "Unclassified", f"`0x{CODE_NO_MARKER:08X}`", "nothing matched"]),
        "",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vrrl_gpu.evidence._docs``: print, ``--write`` or ``--check`` the classification page."""
    p = argparse.ArgumentParser(prog="python -m vrrl_gpu.evidence._docs", description=main.__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", metavar="PATH", help="write the page to PATH")
    g.add_argument("--check", metavar="PATH", help="exit 1 when PATH differs from the generated page")
    args = p.parse_args(argv)
    text = render_classification_markdown()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        return 0
    if args.check:
        path = Path(args.check)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            sys.stderr.write(
                f"{path} is out of date; run: python -m vrrl_gpu.evidence._docs --write {path}\n"
            )
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
