"""A pytest plugin: each test that uses CUDA through the ``vrrl_recorder`` fixture records into its own log.

Enabled by installing vrrl_gpu (entry point ``pytest11``). Options:

``--vrrl-dir DIR``
    Where the logs go (default: each test's ``tmp_path``). Logs of passing
    tests are deleted; logs of failing tests are kept and named in the report.
``--vrrl-device auto|cupy|twin``
    The backend of the fixture's Recorder (default: auto).

A kernel that faults after the test body returned (nothing in the body waited for it) fails the test that
launched it, in its call phase, with the CUDA error and the log's path: the plugin synchronizes the fixture's
Recorder as the last step of the call, so the failure is not a PASSED test plus an ERROR in teardown.

>>> def test_step(vrrl_recorder):                                  # doctest: +SKIP
...     k = vrrl_recorder.backend.load("vrrl_demo.cu", "vrrl_demo_axpy")
...     vrrl_recorder.launch(k, 1, 32, (y, x, 1.0, 32, 0), opcode=vrrl_recorder.opcode("axpy"))
"""

from __future__ import annotations

import re
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from vrrl_gpu.backends._registry import BACKEND_NAMES
from vrrl_gpu.format._sidecar import sidecar_path

__all__ = ["pytest_addoption", "pytest_runtest_call", "pytest_runtest_makereport", "vrrl_recorder"]

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_LOG = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vrrl", "vrrl_gpu flight recorder")
    group.addoption(
        "--vrrl-dir",
        default=None,
        metavar="DIR",
        help="keep the VRRL logs of failing tests that use the vrrl_recorder fixture in DIR",
    )
    group.addoption(
        "--vrrl-device",
        default="auto",
        choices=BACKEND_NAMES,
        help="backend of the vrrl_recorder fixture (default: auto)",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    result = yield  # when the body raises, that is the test's failure, with its own traceback
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    rec = funcargs.get("vrrl_recorder")
    if rec is not None and not rec.closed and not rec.poisoned:
        try:
            rec.synchronize()  # work the body left queued faults here, as part of this test
        except BaseException as exc:
            log = item.stash.get(_LOG, None)
            if log is not None and sys.version_info >= (3, 11):
                exc.add_note(f"vrrl: the kernel fault surfaced after the test body returned; log: {log}")
            raise
    return result


def _log_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:200] + ".vrrl"


@pytest.fixture
def vrrl_recorder(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A Recorder logging this test's launches; its log survives only if the test fails."""
    from vrrl_gpu.recorder._recorder import Recorder

    base = request.config.getoption("--vrrl-dir")
    directory = Path(base) if base else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _log_name(request.node.nodeid)
    for stale in (path, sidecar_path(path)):
        stale.unlink(missing_ok=True)
    rec = Recorder(path, device=request.config.getoption("--vrrl-device"))
    request.node.stash[_LOG] = path
    close_error: BaseException | None = None
    try:
        yield rec
    finally:
        try:
            rec.close()
        except BaseException as exc:  # a CUDA error found at close: the test failed, keep the log
            close_error = exc
    reports = request.node.stash.get(_REPORTS, {})
    failed = close_error is not None or any(r.failed for r in reports.values())
    call = reports.get("call")
    if close_error is not None and call is not None and call.failed:
        close_error = None  # the same sticky error already failed the test: one failure, not FAILED + ERROR
    if failed:
        request.node.user_properties.append(("vrrl_log", str(path)))
        request.node.add_report_section("teardown", "vrrl", f"VRRL log kept: {path}")
    else:
        for p in (path, sidecar_path(path)):
            p.unlink(missing_ok=True)
    if close_error is not None:
        raise close_error
