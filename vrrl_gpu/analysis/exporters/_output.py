"""What every export format shares: the atomic output file, the sink interface, optional extras, the loop."""

from __future__ import annotations

import errno
import fcntl
import importlib
import io
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from vrrl_gpu.analysis._streams import StreamMapper
from vrrl_gpu.analysis.exporters._rows import ProgressFn
from vrrl_gpu.errors import MissingExtraError, VrrlIoError
from vrrl_gpu.format._reader import Records
from vrrl_gpu.format._sidecar import Sidecar

__all__ = [
    "AtomicOutput",
    "STDOUT",
    "STDOUT_PATH",
    "Extra",
    "Sink",
    "SinkContext",
    "drive",
    "is_stdout",
    "open_binary",
    "stdout_binary",
]


#: The output name that means standard output.
STDOUT = "-"
#: What :class:`AtomicOutput` hands the sink for ``-``: :func:`open_binary` gives it ``sys.stdout`` itself.
STDOUT_PATH = Path("/dev/stdout")
# Names of standard output itself, whatever it is (a pipe, a terminal, or a file the shell opened).
_STDOUT_NAMES = (STDOUT, "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")


def is_stdout(out: str | os.PathLike[str]) -> bool:
    """Whether ``out`` names standard output itself (``-``, ``/dev/stdout``, ``/dev/fd/1``)."""
    return os.fspath(out) in _STDOUT_NAMES


class _Borrowed(io.BufferedIOBase):
    """Standard output lent to a sink: writes go through, ``close`` only flushes (the stream is not ours).

    Its byte buffer when it has one; a text stream without one (a test's or an embedding program's
    ``sys.stdout``) gets the bytes decoded.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._raw = getattr(stream, "buffer", None)

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self._raw is not None:
            self._raw.write(b)
        else:
            self._stream.write(bytes(b).decode("utf-8", "replace"))
        return memoryview(b).nbytes

    def flush(self) -> None:
        (self._raw if self._raw is not None else self._stream).flush()

    def close(self) -> None:
        if not self.closed:
            self.flush()
        super().close()


def stdout_binary() -> BinaryIO:
    """Standard output for bytes, borrowed (closing it only flushes); text written before is flushed first."""
    sys.stdout.flush()
    return _Borrowed(sys.stdout)  # type: ignore[return-value]


def open_binary(path: Path) -> BinaryIO:
    """The sink's output file for writing bytes; for ``-``, the process's standard output as it is.

    Standard output is written through ``sys.stdout`` (never reopened: reopening ``/dev/stdout`` would
    truncate a file the shell opened for appending); a FIFO or device is opened without truncating.
    """
    if path == STDOUT_PATH:
        return stdout_binary()
    if _is_stream(path):
        return open(path, "ab")
    return open(path, "wb")


class AtomicOutput:
    """A temporary path beside ``out``; :meth:`commit` renames it into place, :meth:`abort` removes it.

    A character device, a FIFO or ``-`` (standard output) is a *stream*: it is
    written in place (``tmp`` is the stream itself) and never unlinked or
    replaced, whatever ``force`` says. A regular file that a writer holds
    (the log's ``flock``, as a Recorder holds its log) is never replaced: its
    writer would go on writing into the unlinked file.
    """

    def __init__(self, out: str | os.PathLike[str], *, force: bool) -> None:
        self.out = Path(out)
        to_stdout = is_stdout(out)
        self.stream = to_stdout or _is_stream(self.out)
        if self.stream:
            self.tmp = STDOUT_PATH if to_stdout else self.out
            return
        if self.out.is_dir():
            raise VrrlIoError(f"{self.out}: is a directory; give a file name for the output")
        if os.path.lexists(self.out):
            if not force:
                raise VrrlIoError(f"{self.out}: already exists; pass --force (force=True) to replace it")
            if not stat.S_ISLNK(os.lstat(self.out).st_mode):
                _refuse_if_held(self.out)
        if not self.out.parent.is_dir():
            raise VrrlIoError(f"{self.out.parent}: no such directory for the output")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
        except OSError as e:
            raise VrrlIoError(f"{self.out}: cannot write the output: {e.strerror or e}") from e
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        if self.stream:
            return
        if os.path.lexists(self.out) and not stat.S_ISLNK(os.lstat(self.out).st_mode):
            _refuse_if_held(self.out)  # a writer may have started while we wrote
        try:
            # rename() replaces a symlink at ``out`` itself, never the file it points to.
            os.replace(self.tmp, self.out)
        except OSError as e:
            raise VrrlIoError(f"{self.out}: cannot write the output: {e.strerror or e}") from e

    def named(self, err: OSError) -> VrrlIoError:
        """``err`` as one error that names the output (not its temporary name) and says what failed."""
        msg = str(err)
        if isinstance(err, VrrlIoError):
            if str(self.tmp) not in msg:
                return err
            return VrrlIoError(msg.replace(str(self.tmp), str(self.out)))
        why = err.strerror or str(err)
        hint = f"; free space in {self.out.parent}" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        return VrrlIoError(f"{self.out}: cannot write the output ({why}){hint}")

    def abort(self) -> None:
        if not self.stream:
            self.tmp.unlink(missing_ok=True)


def _is_stream(p: Path) -> bool:
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _refuse_if_held(p: Path) -> None:
    """Refuse to replace a file whose ``flock`` another process holds (a Recorder writing that log)."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return  # cannot be opened, so cannot be locked by anyone we could tell apart
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VrrlIoError(
                f"{p}: a writer holds this file's lock (a Recorder is recording into it); not replaced, "
                f"or the writer's next records would go to a deleted file. Close the writer first, or "
                f"write elsewhere"
            ) from None
        except OSError:
            return
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SinkContext:
    """What a sink is told about its output.

    ``opcode_names``: the exported log's sidecar names (None for a merge).
    ``origin_paths`` / ``origin_names``: a merge's inputs and each input's
    names (None / empty for an export). ``total``: the records that will be
    written, when counted beforehand (formats with ``needs_total``), else None.
    ``source``: the exported log's path. ``streams``: maps each batch to its
    records' streams, in reading order (None: not known, or a merge).
    ``sidecar``: the exported log's sidecar as the export read it (None: it has none, or a merge), so that
    no sink parses it again.
    """

    opcode_names: Mapping[int, str] | None = None
    origin_paths: Sequence[str] | None = None
    origin_names: Sequence[Mapping[int, str]] = ()
    total: int | None = None
    source: str = ""
    streams: StreamMapper | None = None
    sidecar: Sidecar | None = None


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
    except OSError as e:
        out.abort()
        raise out.named(e) from e
    except BaseException:
        out.abort()
        raise
    return done
