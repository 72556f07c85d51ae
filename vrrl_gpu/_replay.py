"""Replaying a recorded launch sequence to reproduce a crash, and shrinking it to a minimal reproduction.

The log is data only. What runs is the user's *registry*: a mapping from an
opcode (the number, or its name from the log's sidecar) to a callable
``fn(words, epoch, tenant_id, slot_idx) -> outputs | None`` that performs that
launch. Each trial runs in a fresh child process (``python -c`` importing
:func:`_child_main`), so a sticky CUDA error or a hang kills only the child;
the child gets the launches as plain integers in JSON on stdin and reports
back JSON lines on a dedicated pipe. Nothing is pickled in either direction.

Which records are launches: breadcrumbs (``SlotStatus.BEGIN``) and host
``PUBLISHED`` records, in publish order, meta-records excluded, within the
session (``SESSION_START`` meta-record) that holds the failure. The recorded
failure is the last record with a non-zero ``failure_class``; its position is
the position of its launch (the breadcrumb with the same ``slot_idx``) in that
sequence. A replay reproduces it when the replayed launch at the same
position fails with the same failure class and code (a recorded ``HUNG``
failure: when the replay hangs at that position).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vrrl_gpu._format import META_OPCODE_BASE, RECORD_DTYPE, FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu._ringlog import RingLog
from vrrl_gpu._sidecar import Sidecar, opcode_for_name, opcode_label, read_sidecar, write_sidecar
from vrrl_gpu.errors import RecordValueError, RegistryError, ReplayError

__all__ = [
    "Launch",
    "RecordedFailure",
    "ReplayPlan",
    "TrialFailure",
    "TrialOutcome",
    "DigestMismatch",
    "ReplayReport",
    "MinimizeResult",
    "DEFAULT_TIMEOUT",
    "read_plan",
    "load_registry",
    "current_recorder",
    "resolve_registry",
    "run_trial",
    "replay",
    "minimize",
    "write_sequence_log",
]

#: Seconds one replayed launch may take before the trial is killed and counted as hung.
DEFAULT_TIMEOUT = 60.0
#: Seconds the child may take to start (imports, registry, recorder) before it is killed.
_MIN_STARTUP_TIMEOUT = 60.0

Device = Literal["auto", "cupy", "twin", "none"]
_LAUNCH_STATUSES = (int(SlotStatus.BEGIN), int(SlotStatus.PUBLISHED))

RegistryFn = Callable[[tuple[int, int, int, int], int, int, int], Any]


# ---------------------------------------------------------------------------------------------- reading a log


@dataclass(frozen=True)
class Launch:
    """One recorded launch: where it sits in the sequence and the words it was recorded with."""

    position: int
    record_index: int
    slot_idx: int
    tenant_id: int
    opcode: int
    args: tuple[int, int, int, int]
    epoch: int
    #: The output digest the log holds for this launch (end breadcrumb or failure record), if any.
    recorded_digest: int | None = None

    def wire(self) -> list[int]:
        """The launch as the child receives it: ``[opcode, a0, a1, a2, a3, epoch, tenant, slot]``."""
        return [self.opcode, *self.args, self.epoch, self.tenant_id, self.slot_idx]


@dataclass(frozen=True)
class RecordedFailure:
    """The failure evidence the log holds, and the launch it belongs to."""

    position: int
    record_index: int
    slot_idx: int
    opcode: int
    slot_status: int
    failure_class: FailureClass
    code: int
    digest: int

    @property
    def hung(self) -> bool:
        return self.slot_status == int(SlotStatus.HUNG)

    def to_json(self, names: Mapping[int, str]) -> dict[str, Any]:
        return {
            "position": self.position,
            "slot_idx": self.slot_idx,
            "opcode": self.opcode,
            "opcode_name": opcode_label(self.opcode, names),
            "slot_status": _status_name(self.slot_status),
            "failure_class": self.failure_class.label,
            "code": self.code,
            "code_name": _code_name(self.code),
            "output_digest": self.digest,
        }


@dataclass(frozen=True)
class ReplayPlan:
    """A log read for replay: its records, the launch sequence of one session, and the recorded failure."""

    path: str
    records: npt.NDArray[np.void]
    launches: tuple[Launch, ...]
    failure: RecordedFailure | None
    names: Mapping[int, str]
    #: Records the recorder reported lost (GAP meta-records) before the failure: the replay may then differ.
    lost_records: int = 0
    #: The session started at this record index (0 when the log has no SESSION_START meta-record).
    session_start: int = 0

    def select(self, start: int | None = None, stop: int | None = None) -> tuple[Launch, ...]:
        """Launches at positions ``start ..= stop`` (both optional, inclusive)."""
        n = len(self.launches)
        lo = 0 if start is None else start
        hi = n - 1 if stop is None else stop
        if lo < 0 or hi < 0 or (n and (lo >= n or hi >= n)) or lo > hi:
            raise RecordValueError(
                f"{self.path}: launch range {lo}..{hi} is outside the log's launches 0..{n - 1}; "
                f"see 'vrrl replay --list' for the positions"
            )
        return self.launches[lo : hi + 1]


def read_plan(path: str | os.PathLike[str], *, salvage: bool = False) -> ReplayPlan:
    """Read ``path`` for replay (see the module docstring for which records count)."""
    p = os.fspath(path)
    with RingLog.open(p, readonly=True) as log:
        records = log.records(salvage=salvage)
    side = read_sidecar(p)
    names = dict(side.opcode_names) if side else {}
    opcodes = records["opcode"].astype(np.int64)
    status = records["slot_status"].astype(np.int64)
    fclass = records["failure_class"].astype(np.int64)
    not_meta = opcodes < META_OPCODE_BASE
    fail_idx = np.flatnonzero(not_meta & (fclass != 0))
    starts = np.flatnonzero((opcodes == int(MetaOpcode.SESSION_START)) & (status == int(SlotStatus.META)))
    anchor = int(fail_idx[-1]) if fail_idx.size else len(records)
    before = starts[starts < anchor]
    session = int(before[-1]) + 1 if before.size else 0
    later = starts[starts >= anchor]
    session_end = int(later[0]) if later.size and fail_idx.size else len(records)

    launches: list[Launch] = []
    last_by_slot: dict[int, int] = {}  # slot_idx -> index into launches, of the latest launch with that slot
    digests: dict[int, int] = {}
    failure: RecordedFailure | None = None
    gap_at: list[tuple[int, int]] = []  # (record index, records lost)
    rows = records[session:session_end]
    cols = {name: rows[name].tolist() for name in ("slot_idx", "tenant_id", "opcode", "epoch", "slot_status")}
    cols_fc = rows["failure_class"].tolist()
    cols_code = rows["backend_error_code"].tolist()
    cols_dig = rows["output_digest"].tolist()
    args = rows["args"].tolist()
    for k in range(len(rows)):
        op, st, slot = cols["opcode"][k], cols["slot_status"][k], cols["slot_idx"][k]
        if op >= META_OPCODE_BASE:
            if op == int(MetaOpcode.GAP) and st == int(SlotStatus.META):
                a = args[k]
                gap_at.append((session + k, a[2] | (a[3] << 32)))
            continue
        fc = cols_fc[k]
        is_launch = st in _LAUNCH_STATUSES and fc == 0
        if fc != 0 and slot not in last_by_slot:
            # The breadcrumb of the failed launch is missing (lost, or never written): the failure record
            # carries the same words, so it stands in for the launch.
            is_launch = True
        if is_launch:
            last_by_slot[slot] = len(launches)
            launches.append(
                Launch(
                    position=len(launches),
                    record_index=session + k,
                    slot_idx=slot,
                    tenant_id=cols["tenant_id"][k],
                    opcode=op,
                    args=(args[k][0], args[k][1], args[k][2], args[k][3]),
                    epoch=cols["epoch"][k],
                )
            )
        if fc != 0:
            pos = last_by_slot[slot]
            failure = RecordedFailure(
                position=pos,
                record_index=session + k,
                slot_idx=slot,
                opcode=op,
                slot_status=st,
                failure_class=FailureClass(fc),
                code=cols_code[k],
                digest=cols_dig[k],
            )
            if cols_dig[k]:
                digests[pos] = cols_dig[k]
        elif st == int(SlotStatus.COMPLETED) and cols_dig[k] and slot in last_by_slot:
            digests[last_by_slot[slot]] = cols_dig[k]
    if digests:
        launches = [
            dataclasses.replace(ln, recorded_digest=digests[ln.position]) if ln.position in digests else ln
            for ln in launches
        ]
    # Records lost after the failure (the launches that followed a sticky error) do not change its replay.
    end = failure.record_index if failure is not None else len(records)
    lost = sum(n for at, n in gap_at if at < end)
    return ReplayPlan(
        path=p,
        records=records,
        launches=tuple(launches),
        failure=failure,
        names=names,
        lost_records=lost,
        session_start=session,
    )


# ---------------------------------------------------------------------------------------------- the registry


def load_registry(spec: str) -> Mapping[Any, Any]:
    """Import ``module:attribute`` or ``path/to/file.py:attribute`` and return the mapping it names.

    The current directory is importable, as with ``python -m``. The attribute
    may be dotted (``pkg.mod:holder.TABLE``).
    """
    if ":" not in spec:
        raise RegistryError(
            f"a registry is given as 'module:attribute' or 'file.py:attribute', got {spec!r}; "
            f"for example --registry examples/replay_registry.py:REGISTRY"
        )
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise RegistryError(f"registry {spec!r}: expected 'module:attribute' with both parts non-empty")
    try:
        if target.endswith(".py") or os.sep in target:
            module = _import_file(target)
        else:
            cwd = os.getcwd()
            if cwd not in sys.path and "" not in sys.path:
                sys.path.insert(0, cwd)
            module = importlib.import_module(target)
    except RegistryError:
        raise
    except Exception as e:
        raise RegistryError(f"registry {spec!r}: importing {target!r} failed: {type(e).__name__}: {e}") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"registry {spec!r}: {target!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Mapping):
        raise RegistryError(
            f"registry {spec!r}: expected a mapping of opcode (int or name) to callable, "
            f"got {type(obj).__name__}"
        )
    for key, fn in obj.items():
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise RegistryError(f"registry {spec!r}: key {key!r} is neither an opcode number nor a name")
        if not callable(fn):
            raise RegistryError(f"registry {spec!r}: entry {key!r} is {type(fn).__name__}, not a callable")
    return obj


def _import_file(path: str) -> Any:
    p = Path(path).resolve()
    if not p.is_file():
        raise RegistryError(f"registry file {path!r} does not exist (looked at {p})")
    name = "_vrrl_registry_" + "".join(c if c.isalnum() else "_" for c in p.stem)
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise RegistryError(f"registry file {path!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling-free introspection need the module registered
    spec.loader.exec_module(module)
    return module


def resolve_registry(
    registry: Mapping[Any, Any], opcodes: Sequence[int], names: Mapping[int, str]
) -> tuple[dict[int, RegistryFn], list[int]]:
    """Map each opcode to its callable: by number, then by sidecar name, then by the stable name hash.

    Returns ``(table, missing)`` with the opcodes that have no entry, sorted.
    """
    by_name = {k: v for k, v in registry.items() if isinstance(k, str)}
    by_hash = {opcode_for_name(k): v for k, v in by_name.items() if k}
    table: dict[int, RegistryFn] = {}
    missing: list[int] = []
    for op in sorted(set(opcodes)):
        fn = registry.get(op)
        if fn is None and op in names:
            fn = by_name.get(names[op])
        if fn is None:
            fn = by_hash.get(op)
        if fn is None:
            missing.append(op)
        else:
            table[op] = fn
    return table, missing


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
) -> TrialOutcome:
    """Run ``launches`` in a fresh child process and report what happened.

    The child imports ``registry``, checks that every opcode has an entry
    (:class:`RegistryError` naming the missing ones, before any launch runs),
    opens a Recorder on ``replay_log`` (unless ``device="none"`` or no log is
    given) and performs each launch inside ``rec.slot``. A launch that takes
    longer than ``timeout`` seconds is reported as ``hung`` and the child is
    killed. The child stops at a sticky failure, and at any failure with
    ``stop_at_failure``. ``progress(n)`` is called with the number of launches
    done so far.

    Children come from a multiprocessing *forkserver* that has imported only
    vrrl_gpu (never the registry, never CUDA), so each trial starts from a
    pristine interpreter in milliseconds instead of a full interpreter start.
    """
    if timeout <= 0:
        raise RecordValueError(f"timeout must be > 0 seconds, got {timeout}")
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
            return _talk(proc, reader, request, len(launches), timeout, progress)
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
            ctx.set_forkserver_preload(["vrrl_gpu._replay", "vrrl_gpu._evidence"])
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
) -> TrialOutcome:
    last = [time.monotonic() + _startup_limit(timeout)]
    done = 0
    n_ok = 0
    failures: list[TrialFailure] = []
    digests: dict[int, int | None] = {}
    backend = ""
    ended = False
    hung = False
    for ev in _events(reader, lambda: last[0]):
        if ev is None:
            hung = True
            break
        kind = ev.get("e")
        if kind == "ready":
            backend = str(ev.get("backend", ""))
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
                reason=f"no launch finished within {timeout:g} s; the child was killed",
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


# ---------------------------------------------------------------------------------------------- the child

#: The Recorder of the replay running in this process (None outside a replay child, or with device "none").
_CURRENT: Any = None


def current_recorder() -> Any:
    """In a replay child: the Recorder the replay records into (its ``backend`` runs the launches).

    Registry callables that launch kernels use ``current_recorder().backend``
    so that an asynchronous fault is seen by the replay's own recorder. None
    outside a replay, or when the replay runs without a recorder (``device="none"``).
    """
    return _CURRENT


def _child_entry(request_json: str, writer: Any) -> None:
    """Body of a replay child (forked from the forkserver): never returns to multiprocessing on error."""
    os.setsid()
    req = json.loads(request_json)
    fd = os.open(req["output"], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    os.dup2(fd, 1)  # the user's prints must not reach the parent's stdout (it may be --json)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(req["cwd"])

    def emit(**ev: Any) -> None:
        writer.send_bytes(json.dumps(ev, separators=(",", ":")).encode())

    try:
        _child_run(req, emit)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(70)
    sys.stdout.flush()
    sys.stderr.flush()
    writer.close()
    os._exit(0)  # skip atexit handlers inherited from the forkserver


def _child_run(req: Mapping[str, Any], emit: Callable[..., None]) -> None:
    global _CURRENT
    names = {int(k): v for k, v in req["names"].items()}
    launches: list[list[int]] = req["launches"]
    try:
        registry = load_registry(req["registry"])
    except RegistryError as e:
        emit(e="error", where="registry", message=str(e))
        return
    table, missing = resolve_registry(registry, [w[0] for w in launches], names)
    if missing:
        emit(e="missing", opcodes=missing)
        return

    from vrrl_gpu._evidence import classify, output_digest

    rec: Any = None
    backend = "none"
    if req["device"] != "none" and req["replay_log"]:
        try:
            rec = _open_recorder(req["replay_log"], req["device"], launches, names)
        except Exception as e:
            emit(e="error", where="recorder", message=f"cannot open a Recorder on {req['replay_log']}: {e}")
            return
        backend = str(getattr(getattr(rec, "backend", None), "name", req["device"]))
        _CURRENT = rec
    emit(e="ready", backend=backend)

    def digest_of(ret: Any) -> int | None:
        try:
            d = output_digest(ret)
        except Exception:
            return None  # outputs the digest cannot take are not compared
        return None if d is None else int(d)

    want_digests = bool(req["digests"])
    stop = bool(req["stop_at_failure"])
    last = -1
    try:
        for i, w in enumerate(launches):
            op, words, epoch, tenant, slot = w[0], (w[1], w[2], w[3], w[4]), w[5], w[6], w[7]
            last = i
            ret: Any = None
            try:
                if rec is not None:
                    rec.epoch = epoch
                    with rec.slot(op, words=words):
                        ret = table[op](words, epoch, tenant, slot)
                    rec.synchronize()  # an asynchronous fault then surfaces at this launch
                else:
                    ret = table[op](words, epoch, tenant, slot)
            except Exception as exc:
                cause = _unpoison(exc)
                c = classify(cause)
                ev: dict[str, Any] = {
                    "i": i,
                    "class": int(c.failure_class),
                    "code": int(c.code),
                    "name": str(c.name),
                    "sticky": bool(c.sticky),
                    "reason": str(c.reason),
                }
                if want_digests and ret is not None:
                    ev["d"] = digest_of(ret)
                emit(e="fail", **ev)
                if c.sticky or stop or cause is not exc:
                    break
                continue
            if want_digests:
                emit(e="ok", i=i, d=digest_of(ret))
            else:
                emit(e="ok", i=i)
    finally:
        _CURRENT = None
        if rec is not None:
            try:
                rec.close()
            except Exception as exc:
                c = classify(_unpoison(exc))
                emit(
                    e="fail",
                    i=max(last, 0),
                    code=int(c.code),
                    name=str(c.name),
                    sticky=bool(c.sticky),
                    reason="at close: " + str(c.reason),
                    **{"class": int(c.failure_class)},
                )
    emit(e="end")


def _unpoison(exc: BaseException) -> BaseException:
    """A poisoned recorder re-raises with the original CUDA error as the cause: classify that."""
    if type(exc).__name__ == "RecorderPoisonedError" and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def _open_recorder(
    path: str, device: str, launches: Sequence[Sequence[int]], names: Mapping[int, str]
) -> Any:
    from vrrl_gpu._recorder import Recorder

    for suffix in ("", ".json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)  # a replay log is ours: each replay starts a fresh one
    tenant = launches[0][6] if launches else 0
    capacity = max(64, min(1 << 20, 4 * len(launches) + 64))
    rec = Recorder(path, capacity=capacity, device=device, tenant_id=tenant)
    for op in sorted({w[0] for w in launches}):
        if op in names and opcode_for_name(names[op]) == op:
            rec.opcode(names[op])  # so the replay log's sidecar names the same opcodes
    return rec


# ---------------------------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class DigestMismatch:
    position: int
    slot_idx: int
    opcode: int
    recorded: int
    replayed: int | None


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of :func:`replay`."""

    plan: ReplayPlan
    launches: tuple[Launch, ...]
    outcome: TrialOutcome
    #: The recorded failure, if it lies in the replayed range.
    expected: RecordedFailure | None
    reproduced: bool
    digests_compared: int = 0
    digest_mismatch: DigestMismatch | None = None

    @property
    def ok(self) -> bool:
        """Exit-code truth: the failure outcome matched and no digest differed."""
        return self.reproduced and self.digest_mismatch is None

    def to_json(self) -> dict[str, Any]:
        names = self.plan.names
        start = self.launches[0].position if self.launches else 0
        out = self.outcome
        first = out.first_failure
        return {
            "log": self.plan.path,
            "range": [start, start + len(self.launches) - 1] if self.launches else [],
            "launches": len(self.launches),
            "lost_records": self.plan.lost_records,
            "recorded_failure": self.expected.to_json(names) if self.expected else None,
            "replay": {
                "status": out.status,
                "completed": out.completed,
                "backend": out.backend,
                "replay_log": out.replay_log,
                "failure": _abs_failure(first, self.launches, names) if first else None,
                "failures": [_abs_failure(f, self.launches, names) for f in out.failures],
            },
            "reproduced": self.reproduced,
            "digests": {
                "compared": self.digests_compared,
                "first_mismatch": None
                if self.digest_mismatch is None
                else {
                    "position": self.digest_mismatch.position,
                    "slot_idx": self.digest_mismatch.slot_idx,
                    "opcode_name": opcode_label(self.digest_mismatch.opcode, names),
                    "recorded": self.digest_mismatch.recorded,
                    "replayed": self.digest_mismatch.replayed,
                },
            },
        }


def _abs_failure(f: TrialFailure, launches: Sequence[Launch], names: Mapping[int, str]) -> dict[str, Any]:
    d = f.to_json()
    if f.position < len(launches):
        ln = launches[f.position]
        d.update(
            position=ln.position,
            slot_idx=ln.slot_idx,
            opcode=ln.opcode,
            opcode_name=opcode_label(ln.opcode, names),
        )
    return d


def matches(expected: RecordedFailure, failure: TrialFailure | None, position: int) -> bool:
    """Does ``failure`` (at trial index ``position`` of the expected launch) reproduce ``expected``?"""
    if failure is None or failure.position != position:
        return False
    if expected.hung:
        return failure.kind == "hung"
    return failure.kind == "exception" and (
        failure.failure_class == expected.failure_class and failure.code == expected.code
    )


def replay(
    plan: ReplayPlan,
    registry: str,
    *,
    start: int | None = None,
    stop: int | None = None,
    device: Device = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    stop_at_failure: bool = False,
    compare_digests: bool = False,
    replay_log: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Replay the launches at positions ``start ..= stop`` of ``plan`` once, in a fresh child."""
    launches = plan.select(start, stop)
    if replay_log is None and device != "none":
        replay_log = default_replay_log(plan.path)
    outcome = run_trial(
        launches,
        registry,
        names=plan.names,
        device=device,
        timeout=timeout,
        stop_at_failure=stop_at_failure,
        digests=compare_digests,
        replay_log=replay_log,
        progress=progress,
    )
    expected = plan.failure
    if (
        expected is not None
        and launches
        and not (launches[0].position <= expected.position <= launches[-1].position)
    ):
        expected = None
    if expected is None:
        reproduced = not outcome.failures
    else:
        idx = expected.position - launches[0].position
        reproduced = any(matches(expected, f, idx) for f in outcome.failures)
    compared = 0
    mismatch = None
    if compare_digests:
        for i, ln in enumerate(launches):
            if ln.recorded_digest is None or i not in outcome.digests:
                continue
            compared += 1
            got = outcome.digests[i]
            if got != ln.recorded_digest and mismatch is None:
                mismatch = DigestMismatch(ln.position, ln.slot_idx, ln.opcode, ln.recorded_digest, got)
    return ReplayReport(plan, launches, outcome, expected, reproduced, compared, mismatch)


def default_replay_log(path: str) -> str:
    """``run.vrrl`` → ``run.replay.vrrl`` (next to it)."""
    p = Path(path)
    stem = p.name[: -len(".vrrl")] if p.name.endswith(".vrrl") else p.name
    return str(p.with_name(stem + ".replay.vrrl"))


# ---------------------------------------------------------------------------------------------- minimise


@dataclass(frozen=True)
class MinimizeResult:
    """The smallest launch sequence found that still reproduces the recorded failure (failure launch last).

    ``reproduced`` is False when even the full sequence did not reproduce the
    failure; ``kept`` is then empty.
    """

    kept: tuple[Launch, ...]
    failure: RecordedFailure
    trials: int
    #: Launches in the shortest reproducing suffix (failure launch included), before delta debugging.
    suffix_length: int
    original_length: int
    reproduced: bool = True
    #: What the first trial (the full sequence) did, for the report when it did not reproduce.
    first_outcome: TrialOutcome | None = None


def minimize(
    plan: ReplayPlan,
    registry: str,
    *,
    start: int | None = None,
    device: Device = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    jobs: int | None = None,
    on_trial: Callable[[int, int, bool], None] | None = None,
) -> MinimizeResult:
    """Shrink the launches before the recorded failure to a minimal sequence that still reproduces it.

    First the shortest suffix ending at the failure that reproduces (a search
    over its length that assumes a longer suffix reproduces whenever a shorter
    one does; the result is always a suffix that was seen to reproduce), then
    delta debugging (ddmin) over the launches of that suffix, the failure
    launch always kept last. Every trial is a fresh child with ``timeout``;
    up to ``jobs`` trials run at once (default: the CPU count, at most 4), which
    changes how many trials run but never the result. ``on_trial(n, length,
    reproduced)`` is called after each. Raises :class:`ReplayError` when the
    log holds no failure.
    """
    failure = plan.failure
    if failure is None:
        raise ReplayError(f"{plan.path}: the log holds no failure record; there is nothing to minimise")
    lo = 0 if start is None else start
    if not 0 <= lo <= failure.position:
        raise RecordValueError(f"--from {lo} must be between 0 and the failure's position {failure.position}")
    workers = max(1, min(4, os.cpu_count() or 1) if jobs is None else jobs)
    fail_launch = plan.launches[failure.position]
    before = list(plan.launches[lo : failure.position])
    cache: dict[tuple[int, ...], bool] = {}
    lock = threading.Lock()
    counter = [0]
    first: list[TrialOutcome] = []

    with tempfile.TemporaryDirectory(prefix="vrrl-minimize-") as tmp, ThreadPoolExecutor(workers) as pool:

        def one(prefix: Sequence[Launch]) -> bool:
            seq = [*prefix, fail_launch]
            key = tuple(ln.position for ln in seq)
            with lock:
                if key in cache:
                    return cache[key]
                counter[0] += 1
                n = counter[0]
            log = os.path.join(tmp, f"trial{n}.vrrl")
            outcome = run_trial(
                seq,
                registry,
                names=plan.names,
                device=device,
                timeout=timeout,
                stop_at_failure=True,
                replay_log=log,
            )
            ok = matches(failure, outcome.first_failure, len(seq) - 1)
            for suffix in ("", ".json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(log + suffix)
            with lock:
                cache[key] = ok
                if not first:
                    first.append(outcome)
                if on_trial is not None:
                    on_trial(n, len(seq), ok)
            return ok

        def first_true(cands: Sequence[Sequence[Launch]]) -> int | None:
            """Index of the first candidate that reproduces, testing ``workers`` at a time, in order."""
            for b in range(0, len(cands), workers):
                batch = cands[b : b + workers]
                results = list(pool.map(one, batch))
                for i, ok in enumerate(results):
                    if ok:
                        return b + i
            return None

        if not one(before):
            outcome = first[0] if first else None
            return MinimizeResult((), failure, counter[0], 0, len(before) + 1, False, outcome)
        # Shortest reproducing suffix: k launches just before the failure. k_hi always reproduces.
        # A failure that needs no earlier launch is the common case: one trial settles it.
        k_lo, k_hi = (0, 0) if before and one([]) else (0, len(before))
        while k_lo < k_hi:
            span = k_hi - k_lo
            points = sorted({k_lo + span * (j + 1) // (workers + 1) for j in range(workers)} - {k_hi})
            if not points:
                points = [k_lo]
            hit = first_true([before[len(before) - k :] for k in points])
            if hit is None:
                k_lo = points[-1] + 1
            else:
                k_hi = points[hit]
                k_lo = points[hit - 1] + 1 if hit > 0 else k_lo
        suffix = before[len(before) - k_hi :]
        kept = _ddmin(suffix, first_true)
    return MinimizeResult(
        kept=(*kept, fail_launch),
        failure=failure,
        trials=counter[0],
        suffix_length=len(suffix) + 1,
        original_length=len(before) + 1,
        first_outcome=first[0] if first else None,
    )


def _ddmin(
    items: list[Launch], first_true: Callable[[Sequence[Sequence[Launch]]], int | None]
) -> list[Launch]:
    """Zeller's ddmin: a 1-minimal subsequence of ``items`` that reproduces (``items`` itself does).

    ``first_true(candidates)`` returns the index of the first candidate that
    reproduces, or None; candidates keep the original order of the launches.
    """
    c = list(items)
    if c and first_true([[]]) is not None:
        return []
    n = 2
    while len(c) >= 2:
        chunks = [c[len(c) * i // n : len(c) * (i + 1) // n] for i in range(n)]
        hit = first_true(chunks)
        if hit is not None:
            c, n = chunks[hit], 2
            continue
        comps = [[x for j, ch in enumerate(chunks) if j != i for x in ch] for i in range(n)] if n > 2 else []
        hit = first_true(comps) if comps else None
        if hit is not None:
            c, n = comps[hit], max(n - 1, 2)
            continue
        if n >= len(c):
            break
        n = min(len(c), 2 * n)
    return c


def write_sequence_log(
    path: str | os.PathLike[str],
    plan: ReplayPlan,
    launches: Sequence[Launch],
    *,
    note: Mapping[str, Any] | None = None,
) -> int:
    """Write ``launches`` (their original records, in order) and the recorded failure as a new VRRL log.

    The sidecar copies the original's opcode names, so the new log replays
    with the same registry. Refuses to overwrite. Returns the records written.
    """
    p = os.fspath(path)
    rows = [plan.records[ln.record_index] for ln in launches]
    if plan.failure is not None and any(ln.position == plan.failure.position for ln in launches):
        fi = plan.failure.record_index
        if all(ln.record_index != fi for ln in launches):
            rows.append(plan.records[fi])
    arr = np.array(rows, dtype=RECORD_DTYPE)
    with RingLog.create(p, capacity=max(8, len(arr))) as log:
        log.extend(arr)
        log.sync()
    side = read_sidecar(plan.path) or Sidecar()
    write_sidecar(
        p,
        Sidecar(
            opcode_names=dict(plan.names),
            host=side.host,
            user=side.user,
            device=side.device,
            backend=side.backend,
            breadcrumbs=side.breadcrumbs,
            tenant_id=side.tenant_id,
            extra={"minimized_from": plan.path, **(dict(note) if note else {})},
        ),
    )
    return len(arr)


# ---------------------------------------------------------------------------------------------- labels


def _status_name(value: int) -> str:
    try:
        return SlotStatus(value).name.lower()
    except ValueError:
        return str(value)


def _code_name(code: int) -> str:
    if not code:
        return "-"
    try:
        from vrrl_gpu._evidence import code_name
    except ImportError:
        return str(code)
    return str(code_name(code))
