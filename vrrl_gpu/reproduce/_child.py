"""The child side of a trial: open a recorder, perform the launches, report events."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vrrl_gpu.errors import RegistryError
from vrrl_gpu.format._sidecar import opcode_for_name
from vrrl_gpu.reproduce._registry import is_independent, load_registry, resolve_registry

__all__ = ["current_recorder", "current_stream", "trial_seed"]


# ---------------------------------------------------------------------------------------------- the child

#: The Recorder of the replay running in this process (None outside a replay child, or with device "none").
_CURRENT: Any = None
#: This trial's seed (None outside a replay child).
_SEED: int | None = None
#: The stream of the launch in progress (--streams): a backend stream, or a lane number without a recorder.
_STREAM: Any = None


def current_recorder() -> Any:
    """In a replay child: the Recorder the replay records into (its ``backend`` runs the launches).

    Registry callables that launch kernels use ``current_recorder().backend``
    so that an asynchronous fault is seen by the replay's own recorder. None
    outside a replay, or when the replay runs without a recorder (``device="none"``).
    """
    return _CURRENT


def trial_seed() -> int | None:
    """In a replay child: this trial's seed (from the replay's seed, the sequence and the trial number).

    The same candidate sequence and trial number always get the same seed, so
    a registry that draws its randomness from it makes flaky replays
    repeatable; ``--jitter`` draws its delays from it too. None outside a replay.
    """
    return _SEED


def current_stream() -> Any:
    """In a replay child: the stream the launch in progress should run on.

    With ``--streams K`` the launches whose registry callable is marked
    :func:`independent` are spread round robin over K streams. With a recorder
    this is a stream of ``current_recorder().backend`` (None: the current
    stream); without one (``device="none"``) it is the lane number ``0..K-1``.
    None outside a replay.
    """
    return _STREAM


def _child_entry(request_json: str, writer: Any) -> None:
    """Body of a replay child (forked from the forkserver): never returns to multiprocessing on error."""
    os.setsid()
    req = json.loads(request_json)
    fd = os.open(req["output"], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    os.dup2(fd, 1)  # the user's prints must not reach the parent's stdout (it may be --json)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(req["cwd"])
    # Before the registry imports CUDA: the parent's environment now, and the device this trial may see.
    env = req.get("env")
    if env is not None:
        os.environ.clear()
        os.environ.update(env)

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
    global _CURRENT, _SEED, _STREAM
    _SEED = req.get("seed")
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

    from vrrl_gpu.evidence._classify import classify
    from vrrl_gpu.evidence._digest import output_digest

    rec: Any = None
    backend = "none"
    if req["device"] != "none" and req["replay_log"]:
        try:
            rec = _open_recorder(req["replay_log"], req["device"], launches, names, bool(req["digests"]))
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
    jitter = float(req.get("jitter") or 0.0)
    rng = random.Random(_SEED)
    n_streams = max(1, int(req.get("streams") or 1))
    lanes: list[Any] = [None]
    if n_streams > 1 and rec is not None:
        lanes += [rec.backend.new_stream() for _ in range(n_streams - 1)]
    independent = {op: n_streams > 1 and is_independent(fn) for op, fn in table.items()}
    spread = 0
    last = -1
    try:
        for i, w in enumerate(launches):
            op, words, epoch, tenant, slot = w[0], (w[1], w[2], w[3], w[4]), w[5], w[6], w[7]
            last = i
            if jitter and i:
                # A host delay between launches lets earlier asynchronous work run ahead: schedules differ.
                time.sleep(rng.uniform(0.0, jitter))
            lane = 0
            if independent[op]:
                lane, spread = spread % n_streams, spread + 1
            _STREAM = lane if rec is None else lanes[lane]
            # Independent launches may overlap: the next dependent launch (or the last) waits for them.
            wait = not independent[op] or i == len(launches) - 1
            ret: Any = None
            try:
                if rec is not None:
                    rec.epoch = epoch
                    box: list[Any] = [None]
                    # The replay log gets the digest of what the registry returned (digests mode).
                    with rec.slot(op, words=words, stream=lanes[lane], outputs=lambda box=box: box[0]):
                        ret = box[0] = table[op](words, epoch, tenant, slot)
                    if wait:
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
        _STREAM = None
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
    path: str, device: str, launches: Sequence[Sequence[int]], names: Mapping[int, str], digests: bool
) -> Any:
    from vrrl_gpu.recorder._recorder import Recorder

    for suffix in ("", ".json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)  # a replay log is ours: each replay starts a fresh one
    tenant = launches[0][6] if launches else 0
    capacity = max(64, min(1 << 20, 4 * len(launches) + 64))
    rec = Recorder(path, capacity=capacity, device=device, tenant_id=tenant, digests=digests)
    for op in sorted({w[0] for w in launches}):
        if op in names and opcode_for_name(names[op]) == op:
            rec.opcode(names[op])  # so the replay log's sidecar names the same opcodes
    return rec
