"""Runs ``vrrl`` invocations in one child process, each under an alarm, and reports what each did.

Used by the hostile-input tests: a FIFO or device must never hang a command, so
each call gets ``SIGALRM`` after a few seconds (a blocking ``open`` of a FIFO is
interrupted by it), and a traceback is told apart from a one-line refusal.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import sys
import traceback
from typing import Any


class _Hang(BaseException):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang


def run_one(argv: list[str], seconds: int) -> dict[str, Any]:
    from vrrl_gpu._cli import main

    out, err = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    result: dict[str, Any] = {"argv": argv}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result["rc"] = main(argv)
        result["outcome"] = "ok"
    except _Hang:
        result["outcome"] = "hang"
    except BaseException:
        result["outcome"] = "traceback"
        result["traceback"] = traceback.format_exc()
    finally:
        signal.alarm(0)
    result["stdout"] = out.getvalue()[-2000:]
    result["stderr"] = err.getvalue()[-2000:]
    return result


def main() -> int:
    spec = json.loads(sys.stdin.read())
    results = [run_one(list(a), int(spec.get("seconds", 10))) for a in spec["calls"]]
    sys.stdout.write(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
