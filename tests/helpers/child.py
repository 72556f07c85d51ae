"""The one line a test's child process reports on: a marker, then JSON.

Device printf output (a failed device ``assert`` prints from the driver) may be flushed before or after the
child's own output, so a parent never takes "the last line of stdout" for the result.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["RESULT_MARKER", "print_result", "parse_result"]

RESULT_MARKER = "VRRL-CHILD-RESULT "


def print_result(result: object) -> None:
    """Print ``result`` as JSON on one line after :data:`RESULT_MARKER` (stdout flushed before and after)."""
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(result), flush=True)


def parse_result(stdout: str) -> dict[str, Any]:
    """The JSON object of the one marked line of ``stdout``; fails the test on none or several."""
    found = [line[len(RESULT_MARKER) :] for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if len(found) != 1:
        want = RESULT_MARKER.strip()
        raise AssertionError(
            f"expected one {want} line in the child's stdout, got {len(found)}:\n" + stdout[-4000:]
        )
    out: dict[str, Any] = json.loads(found[0])
    return out
