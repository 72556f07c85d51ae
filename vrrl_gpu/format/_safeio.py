"""Opening logs, sidecars and outputs on a shared machine: regular files only, no foreign symlinks, no hangs.

A FIFO planted where a log is expected would block ``open`` forever, a
character device such as ``/dev/zero`` would be read without end, and another
user's symlink in a shared (1777) directory would redirect our writes into
their choice of file. Every open here is ``O_NONBLOCK | O_NOCTTY`` and checked
with ``fstat`` before a byte is read; writes do not follow a symlink that the
caller does not own (the rule of ``fs.protected_symlinks``, applied whatever
the sysctl says).
"""

from __future__ import annotations

import os
import stat

from vrrl_gpu.errors import VrrlIoError

__all__ = ["NotRegularFileError", "open_regular", "kind_of", "check_writable_target"]

_BASE_FLAGS = os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


class NotRegularFileError(VrrlIoError):
    """The path names a FIFO, device, socket or directory where a regular file is needed."""


def kind_of(mode: int) -> str:
    """``'a FIFO'``, ``'a character device'``, ... for an ``st_mode``."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _refuse_kind(path: str, mode: int, what: str) -> NotRegularFileError:
    return NotRegularFileError(
        f"{path}: is {kind_of(mode)}, not a regular file; {what} must be a regular file"
    )


def _resolve_write_target(path: str, what: str) -> str:
    """``path`` itself, or the target of a symlink the caller owns; a foreign symlink is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise VrrlIoError(f"{path}: cannot examine {what}: {e.strerror or e}") from e
    if not stat.S_ISLNK(st.st_mode):
        return path
    me = os.geteuid()
    if st.st_uid != me:
        raise VrrlIoError(
            f"{path}: is a symlink owned by uid {st.st_uid}, not by you (uid {me}); refusing to write "
            f"{what} through another user's link (name the target directly if it is really meant)"
        )
    return os.path.realpath(path)


def check_writable_target(path: str, what: str) -> str:
    """The path to write ``what`` at: refuses foreign symlinks, returns the resolved path of our own."""
    return _resolve_write_target(path, what)


def open_regular(path: str, flags: int, *, what: str = "a log", mode: int = 0o600) -> int:
    """``os.open`` for a regular file that never blocks, never reads a device, never follows a foreign link.

    ``flags`` are the access flags (``O_RDONLY``, ``O_RDWR``, plus ``O_CREAT``/``O_EXCL``).
    Read-only opens follow symlinks (reading through a link harms nobody) but
    still insist on a regular file at the end; opens for writing follow only
    a symlink the caller owns. OS errors come back as :class:`VrrlIoError`
    with the path and the reason (the ``OSError`` as ``__cause__``).
    """
    writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    target = _resolve_write_target(path, what) if writing else path
    try:
        # A stat before the open: opening some devices (a tape, a tty) already does something.
        pre = os.stat(target)
    except FileNotFoundError:
        pre = None
    except OSError:
        pre = None  # let the open say why
    if pre is not None and not stat.S_ISREG(pre.st_mode):
        raise _refuse_kind(path, pre.st_mode, what)
    open_flags = flags | _BASE_FLAGS | (os.O_NOFOLLOW if writing else 0)
    try:
        fd = os.open(target, open_flags, mode)
    except OSError as e:
        raise VrrlIoError(f"{path}: cannot open {what}: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise VrrlIoError(f"{path}: cannot examine {what}: {e.strerror or e}") from e
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _refuse_kind(path, st.st_mode, what)
    return fd
