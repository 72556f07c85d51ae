"""The ``vrrl`` command. ``main(argv)`` is testable in-process and returns the exit code.

Exit codes: 0 success; 1 the command's own "no" (verify found damage, replay did
not reproduce, diff found divergence); 2 bad input or bad arguments, always as
one line on stderr and never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from vrrl_gpu.errors import VrrlError, VrrlWarning

__all__ = ["main", "build_parser", "UsageError", "COMMAND_MODULES"]

#: Each module defines ``register(subparsers)``, which adds its commands and sets ``func`` on them.
COMMAND_MODULES = (
    "vrrl_gpu._cli._log_cmds",
    "vrrl_gpu._cli._demo",
    "vrrl_gpu._cli._replay_cmds",
    "vrrl_gpu._cli._analysis_cmds",
    "vrrl_gpu._cli._fleet_cmds",
    "vrrl_gpu._cli._doctor",
)


class UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vrrl",
        description="Read, check and replay VRRL v1 flight-recorder logs written by vrrl_gpu.",
    )
    from vrrl_gpu._version import __version__

    parser.add_argument("--version", action="version", version=f"vrrl_gpu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vrrl`` with ``argv`` (None: ``sys.argv[1:]``, as the ``vrrl`` process); return the exit code."""
    if argv is None:
        _process_defaults()
    with warnings.catch_warnings():
        shown: set[str] = set()

        def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
            # One line per distinct warning, never a source location: the CLI's warnings are for users.
            text = _one_line(message if isinstance(message, BaseException) else Exception(message))
            if text not in shown:
                shown.add(text)
                print(f"vrrl: warning: {text}", file=sys.stderr)

        warnings.showwarning = show  # restored by catch_warnings
        warnings.simplefilter("always", VrrlWarning)
        return _main(argv)


#: pyarrow's allocator for the ``vrrl`` process, unless its caller chose one.
ARROW_POOL = "system"


def _process_defaults() -> None:
    """Settings for ``vrrl`` as its own process; an in-process ``main(argv)`` (a test, a program) gets none.

    pyarrow's default allocator (mimalloc or jemalloc) keeps the pages that a Parquet export frees after each
    row group for later use, so the export's peak RSS grows past what it holds at once; the system allocator
    gives them back (about 10 MiB less on a 1M-record export, at the same speed). pyarrow reads the variable
    as it is imported: once it is, setting it would change nothing but the environment, so it is left alone.
    """
    if "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", ARROW_POOL)


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(list(argv) if argv is not None else None)
        code: int = args.func(args)
    except UsageError as e:
        print(_one_line(e), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of our output went away (| head): nothing more to say.
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print("vrrl: interrupted", file=sys.stderr)
        return 130
    except (VrrlError, OSError, ValueError) as e:
        print(f"vrrl: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
