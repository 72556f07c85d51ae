"""What every export format shares: the atomic output file, the sink interface, optional extras, the loop."""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._streams import StreamMapper
from vrrl_gpu.analysis.exporters._rows import ProgressFn
from vrrl_gpu.errors import MissingExtraError, VrrlIoError
from vrrl_gpu.format._reader import Records

__all__ = ["AtomicOutput", "Extra", "Sink", "SinkContext", "drive"]


class AtomicOutput:
    """A temporary path beside ``out``; :meth:`commit` renames it into place, :meth:`abort` removes it."""

    def __init__(self, out: str | os.PathLike[str], *, force: bool) -> None:
        self.out = Path(out)
        if self.out.is_dir():
            raise VrrlIoError(f"{self.out}: is a directory; give a file name for the output")
        if self.out.exists() and not force:
            raise VrrlIoError(f"{self.out}: already exists; pass --force (force=True) to replace it")
        if not self.out.parent.is_dir():
            raise VrrlIoError(f"{self.out.parent}: no such directory for the output")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class SinkContext:
    """What a sink is told about its output.

    ``opcode_names``: the exported log's sidecar names (None for a merge).
    ``origin_paths`` / ``origin_names``: a merge's inputs and each input's
    names (None / empty for an export). ``total``: the records that will be
    written, when counted beforehand (formats with ``needs_total``), else None.
    ``source``: the exported log's path. ``streams``: maps each batch to its
    records' streams, in reading order (None: not known, or a merge).
    """

    opcode_names: Mapping[int, str] | None = None
    origin_paths: Sequence[str] | None = None
    origin_names: Sequence[Mapping[int, str]] = ()
    total: int | None = None
    source: str = ""
    streams: StreamMapper | None = None


class Sink:
    """One output being written: :meth:`write` per batch, :meth:`finish` after the last, :meth:`close` always.

    ``finish`` is not called when reading or writing failed (the output is
    then removed), so a format that writes everything at the end does so there.
    """

    def write(self, records: Records, origin: npt.NDArray[np.int32] | None) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the output after the last batch (only when every write succeeded)."""

    def close(self) -> None:
        """Release the file; called once, after ``finish`` or after a failure."""


@dataclass(frozen=True)
class Extra:
    """An optional dependency a format needs: the pip extra, the package, the modules to import."""

    name: str
    package: str
    modules: tuple[str, ...]

    def load(self, what: str) -> tuple[ModuleType, ...]:
        """The modules, or :class:`MissingExtraError` saying which extra to install for ``what``."""
        try:
            return tuple(importlib.import_module(m) for m in self.modules)
        except ImportError:
            raise MissingExtraError(
                f"{what} needs {self.package}, which is not installed; "
                f"install the extra: pip install 'vrrl_gpu[{self.name}]' (or write --format jsonl)"
            ) from None


def drive(
    out: AtomicOutput,
    make: Callable[[Path], Sink],
    batches: Iterable[tuple[Records, npt.NDArray[np.int32] | None]],
    progress: ProgressFn | None,
    total: int | None,
) -> int:
    """Write ``batches`` through a new sink into ``out`` and commit it; on any failure remove it."""
    done = 0
    try:
        sink = make(out.tmp)
        try:
            for recs, origin in batches:
                sink.write(recs, origin)
                done += int(recs.shape[0])
                if progress is not None:
                    progress(done, total)
            sink.finish()
        finally:
            sink.close()
        out.commit()
    except BaseException:
        out.abort()
        raise
    return done
