"""Instrumented kernels: the kernel's own source rewritten so that it writes its breadcrumbs itself.

``instrument_source(source, name)`` turns ``extern "C" __global__ void name(P) { body }`` into a
``__device__`` function ``name__vrrl_body(P)`` holding the body, and a generated ``extern "C"
__global__ void name(P, <ring and per-launch values>)`` that writes the BEGIN record (thread 0 of
block 0, device-claimed sequence, ``%globaltimer``), calls the body, and with begin+end has the
last thread of the grid write the COMPLETED record (``kernels/vrrl_instrument.cuh``). An early
``return`` in the body returns from the function, so the end is still reached; a fault is not (that is
the point). What cannot be rewritten is refused with :class:`~vrrl_gpu.errors.InstrumentError`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vrrl_gpu.capture._kernels import KernelSignature, parse_kernels
from vrrl_gpu.errors import InstrumentError, KernelSourceError
from vrrl_gpu.recorder._hot import DONE_SLOTS, make_instr, new_slot_counter
from vrrl_gpu.recorder._state import _words

__all__ = [
    "INSTRUMENT_PARAMS",
    "InstrumentedKernel",
    "instrument_source",
    "instrumented_file",
    "kernel_source",
]

#: The wrapper's extra parameters, after the kernel's own (kernels/vrrl_instrument.cuh uses these names).
INSTRUMENT_PARAMS = (
    ("vrrl_record*", "vrrl_records"),
    ("unsigned long long*", "vrrl_commits"),
    ("unsigned long long", "vrrl_mask"),
    ("unsigned long long*", "vrrl_counter"),
    ("unsigned int*", "vrrl_done"),
    ("unsigned int", "vrrl_tenant"),
    ("unsigned int", "vrrl_opcode"),
    ("unsigned int", "vrrl_end"),
    ("long long", "vrrl_ts_offset"),
    # Per launch (the launcher binds the ones above once: Backend.bind_launch).
    ("unsigned int", "vrrl_done_slot"),
    ("unsigned int", "vrrl_a0"),
    ("unsigned int", "vrrl_a1"),
    ("unsigned int", "vrrl_a2"),
    ("unsigned int", "vrrl_a3"),
    ("unsigned int", "vrrl_epoch"),
)
#: How many of INSTRUMENT_PARAMS are bound once per instrumented kernel (the rest change per launch).
FIXED_PARAMS = 9

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_STRING = re.compile(r'"(?:\\.|[^"\\\n])*"')
_WRAP_HINT = "; record it with rec.wrap(kernel, opcode=...) instead (a pack kernel before each launch)"


def _mask(source: str) -> str:
    """The source with comments and string literals blanked (same offsets), for finding braces and names."""
    blank = _COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), source)
    return _STRING.sub(
        lambda m: m.group() if m.group() == '"C"' else '"' + " " * (len(m.group()) - 2) + '"', blank
    )


def _closing(text: str, start: int, open_c: str, close_c: str) -> int:
    """Index of the bracket closing the one at ``start``, or -1."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return i
    return -1


def _refuse(name: str, why: str) -> InstrumentError:
    return InstrumentError(f"kernel {name!r} cannot be instrumented: {why}{_WRAP_HINT}")


def instrument_source(source: str, name: str) -> str:
    """The source with kernel ``name`` rewritten to record itself (see the module docstring)."""
    masked = _mask(source)
    head = re.compile(
        r'extern\s+"C"\s+__global__\s+((?:__launch_bounds__\s*\([^)]*\)\s*)?)void\s+'
        r"((?:__launch_bounds__\s*\([^)]*\)\s*)?)" + re.escape(name) + r"\s*\("
    )
    found = None
    for m in head.finditer(masked):
        close = _closing(masked, m.end() - 1, "(", ")")
        if close < 0:
            raise _refuse(name, "its parameter list is not closed")
        after = masked[close + 1 :].lstrip()
        if after.startswith("{"):
            found = (m, close)
            break
    if found is None:
        if re.search(r"template\s*<[^>]*>\s*__global__[^;{]*\b" + re.escape(name) + r"\s*\(", masked):
            raise _refuse(name, "it is a template (instantiated by name expression), and only extern \"C\" "
                                "kernels can be rewritten")  # fmt: skip
        if re.search(r"__global__[^;{]*\b" + re.escape(name) + r"\s*\(", masked):
            raise _refuse(name, 'it is not declared extern "C" (its name is mangled)')
        raise _refuse(name, 'no extern "C" __global__ void definition of that name in the source')
    m, close = found
    body_open = masked.index("{", close)
    body_close = _closing(masked, body_open, "{", "}")
    if body_close < 0:
        raise _refuse(name, "its body is not closed")
    body = masked[body_open : body_close + 1]
    exits = ("VRRL_EXIT_THREAD", "vrrl_fail_and_exit")
    if re.search(r"\bexit\s*;", source[body_open : body_close + 1]) or any(e in body for e in exits):
        raise _refuse(name, "it exits threads (asm exit;), which would never reach the end record")
    if re.search(r"\bthis_grid\s*\(|\bgrid_group\b", body):
        raise _refuse(name, "it synchronizes the grid (cooperative launch)")
    if "vrrl_" in masked[m.end() : close] or re.search(r"\b" + re.escape(name) + r"__vrrl_body\b", masked):
        raise _refuse(name, "it already uses vrrl_ names (instrumented twice?)")
    params_text = source[m.end() : close]
    try:
        sig = parse_kernels(f'extern "C" __global__ void {name}({params_text})')[name]
    except KernelSourceError as e:
        raise _refuse(name, str(e)) from e
    unnamed = [i for i, p in enumerate(sig.params) if not p.name]
    if unnamed:
        raise _refuse(name, f"parameter {unnamed[0]} has no name, so the wrapper cannot pass it on")
    bounds = (m.group(1) + " " + m.group(2)).strip()
    fn = f"{name}__vrrl_body"
    params = params_text.strip()
    device_fn = f"static __device__ __forceinline__ void {fn}({params}) "
    own = ", ".join(p.name for p in sig.params)
    extra = ", ".join(f"{t} {n}" for t, n in INSTRUMENT_PARAMS)
    all_params = f"{params}, {extra}" if sig.params else extra
    wrapper = (
        f"\n// Generated by vrrl_gpu rec.instrument: {name} writes its own breadcrumbs.\n"
        f'extern "C" __global__ {bounds + " " if bounds else ""}void {name}({all_params}) {{\n'
        f"    VRRL_INSTR_BEGIN();\n"
        f"    {fn}({own});\n"
        f"    VRRL_INSTR_END();\n"
        f"}}\n"
    )
    return (
        '#include "vrrl_instrument.cuh"\n'
        + source[: m.start()]
        + device_fn
        + source[body_open : body_close + 1]
        + source[body_close + 1 :]
        + wrapper
    )


def instrumented_signature(text: str, name: str) -> KernelSignature:
    """The wrapper's signature in an instrumented source."""
    return parse_kernels(_COMMENT.sub(" ", text))[name]


def instrumented_file(source: str, name: str) -> Path:
    """Write the instrumented source into the cache (``$VRRL_CACHE_DIR/instrumented``) once; its path."""
    return plain_file(instrument_source(source, name), name)


def plain_file(text: str, name: str) -> Path:
    """``text`` as a .cu file in the cache, named by its hash (backends load kernels from files)."""
    base = os.environ.get("VRRL_CACHE_DIR")
    root = (Path(base) if base else Path.home() / ".cache" / "vrrl_gpu") / "instrumented"
    root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:20]
    path = root / f"{name}-{key}.cu"
    if not path.is_file():
        staged = root / f".{path.name}.{os.getpid()}"
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, path)
    return path


class InstrumentedKernel:
    """Binds an instrumented kernel to a recorder; its :attr:`call` is what ``rec.instrument`` returns:
    ``call(grid, block, args, *, shared_mem=0, stream=None)`` records itself.

    One backend launch per call through a launcher with the ring's pointers, the opcode and the mode bound
    once (``Backend.bind_launch``): per call only the kernel's own arguments, the completion slot, the
    words and the epoch are passed. No lock: the completion slot comes from an atomic counter
    (``_hot.new_slot_counter``), and the sequence is claimed on the device. The call is ``_hot.make_instr``
    (C when the accelerator loads), not a method: calling an instance costs a bound method per call.
    """

    def __init__(self, rec: Any, kernel: Any, opcode: int, words: Any) -> None:
        self.kernel = kernel
        self.name = kernel.name
        rec._require_usable()
        _ring, ptrs, counter = rec._ensure_device_ring()
        if rec._instr_done is None:  # completion counters: device memory, made once, outside any capture
            rec._instr_done = rec._backend.alloc_device(4 * DONE_SLOTS)
            # One counter per recorder: kernels launched at once on two streams must not share a slot.
            rec._instr_slots = new_slot_counter()
        end = 1 if rec.options.breadcrumbs == "begin+end" else 0
        done_ptr = int(rec._instr_done.device_ptr)
        fixed = (ptrs.records_ptr, ptrs.commits_ptr, ptrs.mask, int(counter.device_ptr), done_ptr,
                 rec.options.tenant_id, opcode, end, rec._ts_offset)  # fmt: skip
        own = len(kernel.signature.params) - len(INSTRUMENT_PARAMS)
        self.bound = rec._backend.bind_launch(kernel, own, fixed)
        self.call = make_instr(rec, self.bound, opcode, words, rec._instr_slots)


def kernel_source(kernel: Any, name: str | None) -> tuple[str, str]:
    """(source, kernel name) of source text, a .cu path, a loaded KernelHandle or a cupy.RawKernel."""
    if isinstance(kernel, str) and name is not None and ("__global__" in kernel or "\n" in kernel):
        return kernel, name
    if isinstance(kernel, (str, os.PathLike)):
        path = Path(kernel)
        if name is None:
            raise InstrumentError(
                f"instrumenting {path} needs the kernel's name: rec.instrument(path, 'name')"
            )
        return path.read_text(encoding="utf-8"), name
    source = getattr(kernel, "source", None)
    if isinstance(source, Path):  # a KernelHandle
        return source.read_text(encoding="utf-8"), name or str(kernel.name)
    code = getattr(kernel, "code", None)  # a cupy.RawKernel / RawModule
    if isinstance(code, str):
        kname = name or getattr(kernel, "name", None)
        if not isinstance(kname, str):
            raise InstrumentError(
                "instrumenting a RawModule needs the kernel's name: rec.instrument(mod, 'name')"
            )
        return code, kname
    raise InstrumentError(
        f"expected CUDA source text, a .cu path, a kernel from rec.backend.load or a cupy.RawKernel, got "
        f"{type(kernel).__name__}{_WRAP_HINT}"
    )


def instrument(rec: Any, kernel: Any, name: str | None, opcode: int, words: Any) -> Callable[..., None]:
    """``Recorder.instrument``: rewrite, compile once (cached by the rewritten text), bind to ``rec``."""
    source, kname = kernel_source(kernel, name)
    path = instrumented_file(source, kname)
    with rec._lock:
        rec._require_usable()
        k = rec._backend.load(path, kname)
        return InstrumentedKernel(rec, k, opcode, words if callable(words) else _words(words)).call
