"""Flaky failures: rates over many fresh processes, minimisation with a rate oracle, identity, budget, jitter.

The registry's failure needs two earlier launches (``arm`` and ``load``) and
then fires with probability p, drawn from :func:`vrrl_gpu.reproduce.trial_seed`:
each trial is a fresh child process, and the same candidate and trial number
always draw the same number, so every test here is deterministic. Trials run
with ``device="none"`` (plain Python callables raising real CuPy exceptions).
"""

from __future__ import annotations

import io
import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest

from vrrl_gpu._cli import main
from vrrl_gpu.format import read_sidecar
from vrrl_gpu.reproduce import Budget, Rate, misses_to_reject, read_plan, replay, wilson_interval
from vrrl_gpu.reproduce._minimize import MinimizeResult, minimize

from .test_replay import _seq, write_log

pytest.importorskip("cupy_backends.cuda.api.runtime")

FLAKY_SOURCE = textwrap.dedent(
    """
    import os, random, threading, time
    from concurrent.futures import ThreadPoolExecutor
    from cupy_backends.cuda.api.runtime import CUDARuntimeError
    from vrrl_gpu.reproduce import current_stream, independent, trial_seed

    STATE = {"armed": False, "loaded": False, "landed": False}

    def noop(w, e, t, s):
        return None

    def arm(w, e, t, s):
        STATE["armed"] = True

    def load(w, e, t, s):
        if STATE["armed"]:
            STATE["loaded"] = True

    def fire_with(p, code=700):
        def fire(w, e, t, s):
            if STATE["armed"] and STATE["loaded"] and random.Random(trial_seed()).random() < p:
                raise CUDARuntimeError(code)
        return fire

    def early(w, e, t, s):
        raise CUDARuntimeError(700)

    def start(w, e, t, s):
        # Asynchronous work that lands 30 ms later, like a kernel on another stream.
        def land():
            time.sleep(0.03)
            STATE["landed"] = True
        threading.Thread(target=land, daemon=True).start()

    def consume(w, e, t, s):
        # The bug: consume assumes start's work has not landed yet (it runs a few microseconds after it).
        if STATE["landed"]:
            raise CUDARuntimeError(700)

    def where(w, e, t, s):
        with open(os.environ["VRRL_TEST_MARK"], "a") as f:
            f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "-") + "\\n")

    LANES = {}
    ORDER = []

    def lane(n):
        if n not in LANES:
            LANES[n] = ThreadPoolExecutor(1)
        return LANES[n]

    @independent
    def put_a(w, e, t, s):
        def work():
            time.sleep(0.02)
            ORDER.append("a")
        lane(current_stream()).submit(work)  # without a recorder, current_stream() is a lane number

    @independent
    def put_b(w, e, t, s):
        lane(current_stream()).submit(ORDER.append, "b")

    def check(w, e, t, s):
        # The bug: it assumes a finished before b, true only while they share a stream.
        for ex in LANES.values():
            ex.shutdown(wait=True)
        if ORDER[:2] == ["b", "a"]:
            raise CUDARuntimeError(700)

    def slow(w, e, t, s):
        time.sleep(0.2)

    BASE = {"noop": noop, "arm": arm, "load": load}
    P100 = {**BASE, "fire": fire_with(1.0)}
    P50 = {**BASE, "fire": fire_with(0.5)}
    P20 = {**BASE, "fire": fire_with(0.2)}
    NEVER = {**BASE, "fire": fire_with(0.0)}
    OTHER_CODE = {**BASE, "fire": fire_with(1.0, code=719)}
    EARLY = {**P100, "arm": early}
    RACE = {"noop": noop, "start": start, "consume": consume}
    LANE_RACE = {"noop": noop, "put_a": put_a, "put_b": put_b, "check": check}
    ON_TWIN = {"noop": independent(lambda w, e, t, s: None), "arm": arm, "load": load, "fire": fire_with(1.0)}
    WHERE = {"noop": where, "fire": where}
    SLOW = {"noop": slow}
    """
)

REGISTRIES = {1.0: "P100", 0.5: "P50", 0.2: "P20"}
#: arm at 1, load at 4, the failure at 7: the true minimal sequence is those three launches.
NEEDED = [1, 4, 7]


@pytest.fixture
def reg(tmp_path: Path) -> str:
    (tmp_path / "flaky_reg.py").write_text(FLAKY_SOURCE)
    return str(tmp_path / "flaky_reg.py")


@pytest.fixture
def flaky_log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "flaky.vrrl", _seq(8, arm=1, load=4, fire=7), fail_at=7)


# ------------------------------------------------------------------------------------------ the statistics


def test_wilson_interval_bounds_and_widths() -> None:
    z2 = 1.959963984540054**2
    assert wilson_interval(1, 1) == pytest.approx((1 / (1 + z2), 1.0))  # the closed form at p-hat = 1
    assert wilson_interval(0, 1) == pytest.approx((0.0, z2 / (1 + z2)))
    lo, hi = wilson_interval(10, 20)
    assert lo < 0.5 < hi
    assert hi - 0.5 == pytest.approx(0.5 - lo)  # symmetric at one half
    narrow = wilson_interval(100, 200)
    assert narrow[1] - narrow[0] < hi - lo
    wide = wilson_interval(10, 20, confidence=0.99)
    assert wide[0] < lo
    assert wide[1] > hi


@pytest.mark.parametrize("rate", [1.0, 0.9, 0.5, 0.2, 0.05])
def test_misses_to_reject_is_the_smallest_count_that_bounds_the_miss(rate: float) -> None:
    k = misses_to_reject(rate, 0.95)
    assert (1 - rate) ** k <= 0.05 + 1e-12
    if k > 1:
        assert (1 - rate) ** (k - 1) > 0.05


def test_rate_decides_above_and_below() -> None:
    assert Rate(1, 1).above(0.05)  # one reproduction settles "reproducible at >= 5 %"
    assert not Rate(0, 20).below(0.05)  # twenty misses do not yet show a rate below 5 %
    assert Rate(0, 80).below(0.05)
    assert Rate(0, 0).interval == (0.0, 1.0)


# ------------------------------------------------------------------------------------------ --trials


@pytest.mark.parametrize("p", [1.0, 0.5, 0.2])
def test_trials_report_a_rate_whose_interval_contains_p(
    p: float, reg: str, flaky_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replay", str(flaky_log), "--registry", f"{reg}:{REGISTRIES[p]}", "--device", "none"]
    rc = main([*argv, "--trials", "20", "--min-trials", "20", "--jobs", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    rate = out["rate"]
    assert rc == 0
    assert rate["trials"] == 20
    lo, hi = rate["interval"]
    assert lo <= p <= hi
    assert rate["reproduced"] == round(rate["rate"] * 20)
    # The default stops at the first clear answer; its (wider) interval still contains p.
    rc = main([*argv, "--trials", "20", "--jobs", "2", "--json"])
    early = json.loads(capsys.readouterr().out)["rate"]
    assert rc == 0
    assert early["trials"] < 20
    assert early["interval"][0] <= p <= early["interval"][1]


def test_a_deterministic_failure_costs_one_trial(reg: str, flaky_log: Path) -> None:
    report = replay(read_plan(flaky_log), f"{reg}:P100", device="none", trials=50, jobs=1)
    assert report.reproduced
    assert report.rate is not None
    assert report.rate.trials == 1


def test_a_failure_that_never_comes_back_uses_every_trial(
    reg: str, flaky_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replay", str(flaky_log), "--registry", f"{reg}:NEVER", "--device", "none", "--trials", "6"]
    assert main([*argv, "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    assert "reproduced in 0 of 6 trials" in out
    assert "NOT REPRODUCED" in out


def test_a_different_failure_is_reported_not_counted(
    reg: str, flaky_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replay", str(flaky_log), "--registry", f"{reg}:OTHER_CODE", "--device", "none", "--trials", "3"]
    assert main([*argv, "--json"]) == 1  # 719, not the recorded 700
    rate = json.loads(capsys.readouterr().out)["rate"]
    assert (rate["reproduced"], rate["other_failures"]) == (0, 3)
    assert main([*argv, "--match", "class", "--json"]) == 0  # both are ProgramBug
    assert json.loads(capsys.readouterr().out)["rate"]["trials"] == 1


def test_match_launch_also_needs_the_recorded_launch(reg: str, flaky_log: Path) -> None:
    plan = read_plan(flaky_log)
    # EARLY fails with the recorded class and code, but at 'arm' (position 1), not at the recorded launch.
    assert replay(plan, f"{reg}:EARLY", device="none", match="code").reproduced
    assert not replay(plan, f"{reg}:EARLY", device="none", match="launch").reproduced


def test_devices_give_each_concurrent_trial_its_own(
    reg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = tmp_path / "where"
    monkeypatch.setenv("VRRL_TEST_MARK", str(mark))
    log = write_log(tmp_path / "w.vrrl", ["noop", "fire"])
    plan = read_plan(log)
    report = replay(plan, f"{reg}:WHERE", device="none", trials=4, min_trials=4, jobs=2, devices=("0", "1"))
    assert report.rate is not None
    assert report.rate.trials == 4
    seen = mark.read_text().split()
    assert len(seen) == 8  # two launches per trial
    assert set(seen) == {"0", "1"}


# ------------------------------------------------------------------------------------------ --minimize


def _bound(result: MinimizeResult, trials: int) -> int:
    """The most trials the search may spend: the original and the minimum ``trials`` each, then per candidate
    at most ``misses_to_reject``; ddmin judges at most L^2 + 3L candidates and the suffix search L + 1."""
    n = result.original_length - 1
    return 2 * trials + result.misses_to_reject * (n * n + 4 * n + 1)


@pytest.mark.parametrize("p", [1.0, 0.5, 0.2])
def test_minimize_finds_the_true_minimum_of_a_flaky_failure(p: float, reg: str, flaky_log: Path) -> None:
    trials = 20
    result = minimize(read_plan(flaky_log), f"{reg}:{REGISTRIES[p]}", device="none", trials=trials, jobs=2)
    assert result.reproduced
    assert [x.position for x in result.kept] == NEEDED
    assert result.trials <= _bound(result, trials)
    assert result.candidates <= (7 * 7 + 4 * 7 + 1) + 1
    assert result.original_rate is not None
    assert result.kept_rate is not None
    assert result.kept_rate.trials == trials
    assert result.kept_rate.reproduced > 0
    assert result.misses_to_reject == min(trials, misses_to_reject(result.original_rate.rate))
    lo, hi = result.original_rate.interval
    assert lo <= p <= hi


@pytest.mark.parametrize("seed", [1, 2])
def test_minimize_never_keeps_a_sequence_that_cannot_fail(seed: int, reg: str, flaky_log: Path) -> None:
    # Few trials against a rare failure: misses are likely, so the result may not be minimal, but every
    # sequence it keeps was seen to reproduce, so it always holds the launches the failure needs.
    result = minimize(read_plan(flaky_log), f"{reg}:P20", device="none", trials=3, jobs=2, seed=seed)
    if result.reproduced:
        assert set(NEEDED) <= {x.position for x in result.kept}
        assert result.kept_rate is not None


def test_minimize_cli_records_the_rate_and_says_how_confident(
    reg: str, flaky_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = tmp_path / "small.vrrl"
    argv = ["replay", str(flaky_log), "--registry", f"{reg}:P50", "--device", "none", "--minimize"]
    rc = main([*argv, "--trials", "8", "--jobs", "2", "-o", str(small)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "original:   reproduced in" in out
    assert "minimum:    reproduced in" in out
    assert "confidence: each launch kept is needed" in out
    side = read_sidecar(small)
    assert side is not None
    assert side.extra["kept_positions"] == NEEDED
    assert side.extra["rate"]["trials"] == 8
    assert side.extra["rate"]["reproduced"] > 0
    assert side.extra["trials"] > 8
    assert side.extra["original_rate"]["trials"] == 8


def test_budget_stops_the_search_with_the_best_so_far(reg: str, flaky_log: Path) -> None:
    result = minimize(
        read_plan(flaky_log), f"{reg}:P50", device="none", trials=10, jobs=2, budget=Budget(trials=25)
    )
    assert result.exhausted
    assert result.trials <= 25
    assert set(NEEDED) <= {x.position for x in result.kept}  # the best so far was seen to reproduce


def test_min_rate_sets_the_reference(reg: str, flaky_log: Path) -> None:
    result = minimize(read_plan(flaky_log), f"{reg}:P50", device="none", trials=6, jobs=2, min_rate=0.5)
    assert result.reference_rate == 0.5
    assert result.misses_to_reject == min(6, misses_to_reject(0.5))
    assert [x.position for x in result.kept] == NEEDED
    assert result.miss_probability == pytest.approx(0.5**result.misses_to_reject)


# ------------------------------------------------------------------------------------------ --jitter


def test_a_race_appears_only_with_jitter_and_is_minimised(
    reg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "race.vrrl", _seq(6, start=1, consume=5), fail_at=5)
    argv = ["replay", str(log), "--registry", f"{reg}:RACE", "--device", "none", "--jobs", "2"]
    # Back to back, consume runs microseconds after start: the 30 ms of asynchronous work never land first.
    assert main([*argv, "--trials", "4", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["rate"]["reproduced"] == 0
    # Random host delays of up to 0.12 s between launches let it land: the full sequence reproduces (else
    # the minimisation would exit 1), and it shrinks to the two launches of the race.
    small = tmp_path / "race.min.vrrl"
    jitter = ["--jitter", "0.12", "--trials", "4", "--min-rate", "0.5"]
    rc = main([*argv, *jitter, "--minimize", "-o", str(small), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [k["position"] for k in out["kept"]] == [1, 5]
    assert out["rate"]["reproduced"] > 0
    assert math.isclose(out["miss_probability"], 0.5 ** out["misses_to_reject"])


# ------------------------------------------------------------------------------------------ the command line


def test_best_so_far_reaches_the_progress_callback(reg: str, flaky_log: Path) -> None:
    seen: list[tuple[int, int]] = []
    minimize(
        read_plan(flaky_log),
        f"{reg}:P100",
        device="none",
        trials=2,
        jobs=2,
        on_best=lambda n, length, rate: seen.append((n, length)),
    )
    lengths = [length for _, length in seen]
    assert lengths == sorted(lengths, reverse=True)  # only ever shorter
    assert lengths[0] == 8
    assert lengths[-1] == len(NEEDED)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_the_best_so_far() -> None:
    pytest.importorskip("rich", reason="rich (the cli extra) is not installed")
    from vrrl_gpu._cli._progress import progress_bar

    out = _Tty()
    with progress_bar("minimising", stream=out) as update:
        update(3, 10, "minimising: best 3 launches, rate 0.45")
    assert "best 3 launches" in out.getvalue()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--budget", "5"], "--budget goes with --minimize"),
        (["--minimize", "--budget", "0"], "at least 1"),
        (["--minimize", "--budget=0s"], "positive number of seconds"),
        (["--min-rate", "1.5"], "rate in (0, 1]"),
        (["--confidence", "0.3"], "confidence in [0.5, 1)"),
        (["--devices", "0,x"], "device numbers"),
    ],
)
def test_bad_flaky_options_are_one_line_usage_errors(
    extra: list[str], fragment: str, reg: str, flaky_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["replay", str(flaky_log), "--registry", f"{reg}:P100", "--device", "none", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


def test_a_time_budget_stops_the_search(reg: str, flaky_log: Path, tmp_path: Path) -> None:
    result = minimize(
        read_plan(flaky_log), f"{reg}:P20", device="none", trials=20, jobs=2, budget=Budget(seconds=0.3)
    )
    # However far it got, what it returns was seen to reproduce.
    if result.reproduced:
        assert set(NEEDED) <= {x.position for x in result.kept}


# ------------------------------------------------------------------------------------------ --streams


def test_independent_launches_on_several_streams_provoke_and_minimise_a_race(
    reg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "lanes.vrrl", _seq(6, put_a=1, put_b=3, check=5), fail_at=5)
    argv = ["replay", str(log), "--registry", f"{reg}:LANE_RACE", "--device", "none", "--jobs", "2"]
    assert main([*argv, "--trials", "3"]) == 1  # one stream: a always finishes first
    assert "reproduced in 0 of 3 trials" in capsys.readouterr().out
    small = tmp_path / "lanes.min.vrrl"
    rc = main([*argv, "--streams", "2", "--trials", "3", "--minimize", "-o", str(small), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [k["position"] for k in out["kept"]] == [1, 3, 5]


@pytest.mark.skipif(shutil.which("g++") is None, reason="the twin backend needs a C++ compiler (g++)")
def test_streams_with_a_recorder_on_the_twin(reg: str, flaky_log: Path, tmp_path: Path) -> None:
    report = replay(
        read_plan(flaky_log),
        f"{reg}:ON_TWIN",
        device="twin",
        streams=3,
        trials=2,
        min_trials=2,
        replay_log=tmp_path / "twin.replay.vrrl",
    )
    assert report.reproduced
    assert report.outcome.backend == "twin"
    replayed = read_plan(tmp_path / "twin.replay.vrrl")
    assert replayed.failure is not None
    assert replayed.failure.code == 700


def test_a_trial_past_its_whole_limit_is_hung(reg: str, tmp_path: Path) -> None:
    log = write_log(tmp_path / "slow.vrrl", ["noop"] * 6)
    report = replay(read_plan(log), f"{reg}:SLOW", device="none", timeout=30, trial_timeout=0.5)
    first = report.outcome.first_failure
    assert first is not None
    assert first.kind == "hung"
    assert "longer than 0.5 s" in first.reason
    assert report.outcome.completed < 6  # each launch was well within --timeout; the trial was not
