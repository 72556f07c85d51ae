"""Many trials of one sequence: failure identity, seeds, devices, the budget, the sequential stopping rule."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from vrrl_gpu.errors import RecordValueError
from vrrl_gpu.reproduce._plan import DEFAULT_TIMEOUT, MATCH_MODES, Device, Launch, Match, RecordedFailure
from vrrl_gpu.reproduce._rate import DEFAULT_CONFIDENCE, Rate
from vrrl_gpu.reproduce._trials import REPLAY_LOG_ENV, TrialFailure, TrialOutcome, run_trial

__all__ = ["MATCH_MODES", "Match", "Budget", "Sampler", "matches"]



def matches(
    expected: RecordedFailure, failure: TrialFailure | None, position: int, match: Match = "launch"
) -> bool:
    """Does ``failure`` reproduce ``expected`` (whose launch is at trial index ``position``)?

    A recorded hang is reproduced by a hang. ``class`` compares the failure
    class, ``code`` also the CUDA code, ``launch`` also the launch (the replay
    failed at the recorded launch, so the same opcode and slot; any launch up
    to it when the recorder could not tell which one failed). A failure after
    the recorded launch never reproduces it.
    """
    if failure is None:
        return False
    if match not in MATCH_MODES:
        raise RecordValueError(f"match must be one of {', '.join(MATCH_MODES)}, got {match!r}")
    if failure.position > position:
        return False
    if match == "launch" and failure.position != position and not expected.unknown:
        return False
    if expected.hung:
        return failure.kind == "hung"
    if failure.kind != "exception" or failure.failure_class != expected.failure_class:
        return False
    return match == "class" or failure.code == expected.code


@dataclass(frozen=True)
class Budget:
    """A cap on a whole search: trials started, seconds since it began, or both (None: no cap)."""

    trials: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.trials is not None and self.trials < 1:
            raise RecordValueError(f"a trial budget must be at least 1, got {self.trials}")
        if self.seconds is not None and not self.seconds > 0:
            raise RecordValueError(f"a time budget must be > 0 seconds, got {self.seconds}")


class BudgetExhausted(Exception):
    """Control flow only: the search stops and reports its best result so far."""


@dataclass
class Sampler:
    """Runs trials of launch sequences with one configuration, counting what they cost."""

    registry: str
    names: Mapping[int, str]
    expected: RecordedFailure | None
    device: Device = "auto"
    timeout: float = DEFAULT_TIMEOUT
    match: Match = "code"
    seed: int = 0
    jitter: float = 0.0
    streams: int = 1
    trial_timeout: float | None = None
    jobs: int = 1
    devices: Sequence[str] = ()
    budget: Budget = field(default_factory=Budget)
    confidence: float = DEFAULT_CONFIDENCE
    stop_at_failure: bool = True
    #: The log being replayed: each trial sees its absolute path as ``VRRL_REPLAY_LOG`` (registries that
    #: read the log's sidecar, e.g. ``vrrl_gpu.torch.op_registry()``, find it there).
    source_log: str | None = None

    def __post_init__(self) -> None:
        if self.match not in MATCH_MODES:
            raise RecordValueError(f"match must be one of {', '.join(MATCH_MODES)}, got {self.match!r}")
        self.jobs = max(1, self.jobs)
        self.spent = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._tokens: queue.Queue[str | None] = queue.Queue()
        for i in range(self.jobs):
            # One token per concurrent trial: with as many devices as jobs, no two trials share a device.
            self._tokens.put(self.devices[i % len(self.devices)] if self.devices else None)
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ one trial

    def seed_for(self, seq: Sequence[Launch], index: int) -> int:
        """The seed of trial ``index`` of ``seq``: fixed by the sequence and the number, not by the order."""
        h = hashlib.blake2b(digest_size=8)
        h.update(f"{self.seed}:{index}:".encode())
        h.update(",".join(str(ln.position) for ln in seq).encode())
        return int.from_bytes(h.digest(), "little") >> 1

    def exhausted(self) -> bool:
        b = self.budget
        if b.trials is not None and self.spent >= b.trials:
            return True
        return b.seconds is not None and time.monotonic() - self.started >= b.seconds

    def trial(
        self,
        seq: Sequence[Launch],
        index: int,
        *,
        replay_log: str | None = None,
        digests: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> TrialOutcome:
        with self._lock:
            if self.exhausted():
                raise BudgetExhausted
            self.spent += 1
        token = self._tokens.get()
        try:
            return run_trial(
                seq,
                self.registry,
                names=self.names,
                device=self.device,
                timeout=self.timeout,
                stop_at_failure=self.stop_at_failure,
                digests=digests,
                replay_log=replay_log,
                progress=progress,
                seed=self.seed_for(seq, index),
                jitter=self.jitter,
                streams=self.streams,
                trial_timeout=self.trial_timeout,
                env=self._env(token),
            )
        finally:
            self._tokens.put(token)

    def _env(self, token: str | None) -> dict[str, str] | None:
        env = {}
        if token is not None:
            env["CUDA_VISIBLE_DEVICES"] = token
        if self.source_log is not None:
            env[REPLAY_LOG_ENV] = os.path.abspath(self.source_log)
        return env or None

    def judge(self, seq: Sequence[Launch], outcome: TrialOutcome) -> tuple[bool, bool]:
        """``(reproduced, failed otherwise)`` for one trial of ``seq``.

        Without an expected failure in ``seq`` a clean trial is the reproduction.
        """
        exp = self.expected
        idx = -1
        if exp is not None:
            idx = next((i for i, ln in enumerate(seq) if ln.position == exp.position), -1)
        if exp is None or idx < 0:
            return not outcome.failures, bool(outcome.failures)
        ok = any(matches(exp, f, idx, self.match) for f in outcome.failures)
        return ok, bool(outcome.failures) and not ok

    # ------------------------------------------------------------------------------------------ many trials

    def measure(
        self,
        seq: Sequence[Launch],
        *,
        max_trials: int,
        stop: Callable[[Rate], bool],
        first_index: int = 0,
        parallel: int = 1,
        keep_log: str | None = None,
        digests: bool = False,
        on_trial: Callable[[Rate], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[Rate, list[TrialOutcome]]:
        """Up to ``max_trials`` trials of ``seq``, in batches of ``parallel``, until ``stop(rate)``.

        Trials are numbered from ``first_index`` (their seeds follow) and
        judged in that order, so the rate does not depend on which trial of
        a batch finished first; trials of a batch after the stopping point
        cost budget but are not counted. With ``keep_log`` each trial records
        into its own file and the first reproducing trial's log (else the
        first's) is moved there. Raises :class:`BudgetExhausted` (once at
        least one trial is counted, it returns what it has instead).
        """
        rate = Rate(0, 0, confidence=self.confidence)
        outcomes: list[TrialOutcome] = []
        logs: list[str | None] = []
        kept: str | None = None
        tmp = None
        if keep_log is not None and max_trials > 1:
            import tempfile

            tmp = tempfile.mkdtemp(prefix="vrrl-trials-", dir=os.path.dirname(os.path.abspath(keep_log)))
        width = max(1, min(parallel, self.jobs))
        try:
            i = 0
            while i < max_trials:
                n = min(width, max_trials - i)
                paths = [
                    keep_log if tmp is None else os.path.join(tmp, f"trial{first_index + i + j}.vrrl")
                    for j in range(n)
                ]
                try:
                    if n == 1:
                        batch: list[TrialOutcome | None] = [
                            self.trial(
                                seq, first_index + i, replay_log=paths[0], digests=digests, progress=progress
                            )
                        ]
                    else:
                        pool = self._trial_pool()
                        futs = [
                            pool.submit(
                                self.trial, seq, first_index + i + j, replay_log=paths[j], digests=digests
                            )
                            for j in range(n)
                        ]
                        batch = _results(futs)
                except BudgetExhausted:
                    batch = [None]
                if batch[0] is None and not rate.trials:
                    raise BudgetExhausted
                done = False
                for j, out in enumerate(batch):
                    if out is None:  # the budget ran out: judge what ran before it, in order
                        done = True
                        break
                    ok, other = self.judge(seq, out)
                    rate = rate.add(ok, other)
                    outcomes.append(out)
                    logs.append(paths[j])
                    if on_trial is not None:
                        on_trial(rate)
                    if ok and kept is None:
                        kept = paths[j]
                    if stop(rate):
                        done = True
                        break
                i += n
                if done:
                    break
            if tmp is not None and keep_log is not None:
                src = kept or (logs[0] if logs else None)
                if src is not None and os.path.exists(src):
                    for suffix in ("", ".json"):
                        with contextlib.suppress(FileNotFoundError):
                            os.replace(src + suffix, keep_log + suffix)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        return rate, outcomes

    def _trial_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="vrrl-trial")
            return self._pool


def _results(futs: Sequence[Future[TrialOutcome]]) -> list[TrialOutcome | None]:
    """Every future's result in order (None where the budget refused the trial), after all have finished."""
    out: list[TrialOutcome | None] = []
    err: BaseException | None = None
    for f in futs:
        try:
            out.append(f.result())
        except BudgetExhausted:
            out.append(None)
        except BaseException as e:  # re-raised below, once the whole batch has finished
            if err is None:
                err = e
    if err is not None:
        raise err
    return out
