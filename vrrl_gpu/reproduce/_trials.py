"""One trial: a launch sequence replayed in a fresh child process, watched from the parent."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vrrl_gpu.errors import RecordValueError, RegistryError, ReplayError
from vrrl_gpu.format._layout import FailureClass
from vrrl_gpu.format._sidecar import opcode_label
from vrrl_gpu.reproduce._child import _child_entry
from vrrl_gpu.reproduce._plan import _MIN_STARTUP_TIMEOUT, DEFAULT_TIMEOUT, Device, Launch

__all__ = ["TrialFailure", "TrialOutcome", "run_trial", "REPLAY_LOG_ENV"]

#: Set in every trial (by the Sampler) to the absolute path of the log being replayed.
REPLAY_LOG_ENV = "VRRL_REPLAY_LOG"


# ---------------------------------------------------------------------------------------------- one trial


@dataclass(frozen=True)
class TrialFailure:
    """How a replayed launch failed.

    ``kind``: ``exception`` (it raised), ``hung`` (timed out), ``crashed`` (the child died).
    """

    position: int
    kind: str
    failure_class: FailureClass
    code: int
    name: str = ""
    sticky: bool = False
    reason: str = ""
    digest: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "kind": self.kind,
            "failure_class": self.failure_class.label,
            "code": self.code,
            "name": self.name,
            "sticky": self.sticky,
            "reason": self.reason,
            "output_digest": self.digest,
        }


@dataclass(frozen=True)
class TrialOutcome:
    """What one child process did with a launch sequence (positions are indices into that sequence)."""

    launches: int
    completed: int
    failures: tuple[TrialFailure, ...]
    digests: Mapping[int, int | None] = field(default_factory=dict)
    replay_log: str | None = None
    backend: str = ""
    returncode: int | None = None
    output_tail: str = ""

    @property
    def first_failure(self) -> TrialFailure | None:
        return self.failures[0] if self.failures else None

    @property
    def status(self) -> str:
        """``clean``, or the kind of the first failure."""
        return self.failures[0].kind if self.failures else "clean"


def _startup_limit(timeout: float) -> float:
    return max(_MIN_STARTUP_TIMEOUT, timeout)


def run_trial(
    launches: Sequence[Launch],
    registry: str,
    *,
    names: Mapping[int, str] | None = None,
    device: Device = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    stop_at_failure: bool = False,
    digests: bool = False,
    replay_log: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
    seed: int | None = None,
    jitter: float = 0.0,
    env: Mapping[str, str] | None = None,
    streams: int = 1,
    trial_timeout: float | None = None,
) -> TrialOutcome:
    """Run ``launches`` in a fresh child process and report what happened.

    The child imports ``registry``, checks that every opcode has an entry
    (:class:`RegistryError` naming the missing ones, before any launch runs),
    opens a Recorder on ``replay_log`` (unless ``device="none"`` or no log is
    given) and performs each launch inside ``rec.slot``. A launch that takes
    longer than ``timeout`` seconds is reported as ``hung`` and the child is
    killed. The child stops at a sticky failure, and at any failure with
    ``stop_at_failure``. ``progress(n)`` is called with the number of launches
    done so far. ``seed`` is what :func:`trial_seed` returns in the child;
    ``jitter`` sleeps a random ``0..jitter`` seconds (drawn from the seed)
    before each launch after the first. The child runs in the parent's
    environment as it is now, plus ``env``, set before the registry is imported.
    ``streams`` > 1 spreads the launches marked independent over that many
    streams (see :func:`current_stream`). ``trial_timeout`` limits the whole
    trial (after start-up): past it the trial is ``hung`` at the launch it had reached.

    Children come from a multiprocessing *forkserver* that has imported only
    vrrl_gpu (never the registry, never CUDA), so each trial starts from a
    pristine interpreter in milliseconds instead of a full interpreter start.
    """
    if timeout <= 0:
        raise RecordValueError(f"timeout must be > 0 seconds, got {timeout}")
    if trial_timeout is not None and not trial_timeout > 0:
        raise RecordValueError(f"trial_timeout must be > 0 seconds, got {trial_timeout}")
    if streams < 1:
        raise RecordValueError(f"streams must be at least 1, got {streams}")
    if jitter < 0:
        raise RecordValueError(f"jitter must be >= 0 seconds, got {jitter}")
    ctx = _context()
    with tempfile.NamedTemporaryFile(prefix="vrrl-replay-child-", suffix=".out", delete=False) as f:
        out_path = f.name
    request = {
        "registry": registry,
        "names": {str(k): v for k, v in (names or {}).items()},
        "launches": [ln.wire() for ln in launches],
        "device": device,
        "replay_log": os.fspath(replay_log) if replay_log is not None else None,
        "stop_at_failure": stop_at_failure,
        "digests": digests,
        "output": out_path,
        "cwd": os.getcwd(),
        "seed": seed,
        "jitter": jitter,
        "streams": streams,
        # The forkserver kept the environment of the first trial's time; each child gets the current one.
        "env": {**os.environ, **(env or {})},
    }
    reader, writer = ctx.Pipe(duplex=False)
    # Plain data only crosses: the request as one JSON string and the pipe's write end.
    proc = ctx.Process(
        target=_child_entry, args=(json.dumps(request), writer), name="vrrl-replay-trial", daemon=True
    )
    try:
        with _START_LOCK, _main_hidden():
            proc.start()
        writer.close()
        try:
            return _talk(proc, reader, request, len(launches), timeout + jitter, progress, trial_timeout)
        finally:
            if proc.is_alive():
                _kill(proc)
            proc.join()
    finally:
        reader.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out_path)


_CTX: Any = None
_CTX_LOCK = threading.Lock()


def _context() -> Any:
    global _CTX
    with _CTX_LOCK:
        if _CTX is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["vrrl_gpu.reproduce", "vrrl_gpu.evidence"])
            _CTX = ctx
        return _CTX


_START_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Keep multiprocessing from re-running the parent's ``__main__`` (a script, ``vrrl``) in the child.

    A forkserver child normally imports the parent's main module by path or
    name before running its target; a replay child must run nothing but
    vrrl_gpu and the registry, so the main module is hidden while it starts.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _kill(proc: Any) -> None:
    if proc.pid is not None:
        # The child made itself a session leader: this reaches whatever it started too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, ValueError):
        proc.kill()


def _tail(path: str, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _events(reader: Any, deadline: Callable[[], float]) -> Iterator[dict[str, Any] | None]:
    """JSON messages from the child; ``None`` once when the deadline passes; stops when the child hangs up."""
    while True:
        wait = deadline() - time.monotonic()
        if wait <= 0:
            yield None
            return
        try:
            if not reader.poll(wait):
                continue
            data = reader.recv_bytes()
        except (EOFError, OSError):
            return
        yield json.loads(data)


def _talk(
    proc: Any,
    reader: Any,
    request: Mapping[str, Any],
    n: int,
    timeout: float,
    progress: Callable[[int], None] | None,
    trial_timeout: float | None = None,
) -> TrialOutcome:
    last = [time.monotonic() + _startup_limit(timeout)]
    # The whole trial's limit starts once the child is ready: start-up has its own.
    whole = [float("inf")]
    done = 0
    n_ok = 0
    failures: list[TrialFailure] = []
    digests: dict[int, int | None] = {}
    backend = ""
    ended = False
    hung = False
    for ev in _events(reader, lambda: min(last[0], whole[0])):
        if ev is None:
            hung = True
            break
        kind = ev.get("e")
        if kind == "ready":
            backend = str(ev.get("backend", ""))
            if trial_timeout is not None:
                whole[0] = time.monotonic() + trial_timeout
        elif kind == "ok":
            done = int(ev["i"]) + 1
            n_ok += 1
            if "d" in ev:
                digests[int(ev["i"])] = ev["d"]
        elif kind == "fail":
            done = int(ev["i"]) + 1
            failures.append(
                TrialFailure(
                    position=int(ev["i"]),
                    kind="exception",
                    failure_class=FailureClass(int(ev["class"])),
                    code=int(ev["code"]),
                    name=str(ev.get("name", "")),
                    sticky=bool(ev.get("sticky", False)),
                    reason=str(ev.get("reason", "")),
                    digest=ev.get("d"),
                )
            )
        elif kind == "missing":
            names = request["names"]
            listed = ", ".join(
                f"{opcode_label(op, {op: names[str(op)]} if str(op) in names else None)} ({op:#x})"
                for op in ev["opcodes"]
            )
            raise RegistryError(
                f"registry {request['registry']!r} has no entry for {len(ev['opcodes'])} opcode(s) "
                f"of the log: "
                f"{listed}; add them (by number or by name) before replaying"
            )
        elif kind == "error":
            cls = RegistryError if ev.get("where") == "registry" else ReplayError
            raise cls(str(ev["message"]))
        elif kind == "end":
            ended = True
        if kind in ("ok", "fail", "ready"):
            last[0] = time.monotonic() + timeout
            if progress is not None and kind != "ready":
                progress(done)
    if hung:
        _kill(proc)
        failures.append(
            TrialFailure(
                position=done,
                kind="hung",
                failure_class=FailureClass.TRANSIENT_QUEUE,
                code=0,
                name="hung",
                reason=(
                    f"the trial took longer than {trial_timeout:g} s; the child was killed"
                    if time.monotonic() >= whole[0]
                    else f"no launch finished within {timeout:g} s; the child was killed"
                ),
            )
        )
    proc.join()
    rc = proc.exitcode
    if not hung and not ended:
        if not backend and not failures:
            raise ReplayError(
                f"the replay child exited ({_exit_name(rc)}) before it was ready; its output ends:\n"
                f"{_tail(request['output']) or '(nothing)'}"
            )
        failures.append(
            TrialFailure(
                position=done,
                kind="crashed",
                failure_class=FailureClass.UNCLASSIFIED,
                code=0,
                name=_exit_name(rc),
                reason=f"the child process died ({_exit_name(rc)}) during the launch",
            )
        )
    return TrialOutcome(
        launches=n,
        completed=n_ok,
        failures=tuple(failures),
        digests=digests,
        replay_log=request["replay_log"] if request["device"] != "none" else None,
        backend=backend,
        returncode=rc,
        output_tail=_tail(request["output"]),
    )


def _exit_name(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return signal.Signals(-rc).name
        except ValueError:
            return f"signal {-rc}"
    return f"exit status {rc}"
