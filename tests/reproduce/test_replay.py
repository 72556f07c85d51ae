"""Replay and minimisation, CPU only: registries of plain Python callables raising real CuPy exceptions.

Trials run in real child processes (device "none": no Recorder), so these test
the whole path: registry import in the child, the JSON protocol, timeouts, the
reproduction check, the suffix search and ddmin, and the written minimal log.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrrl_gpu import FailureClass, FailureEvidence, MetaOpcode, Record, RingLog, SlotStatus, replay
from vrrl_gpu._cli import main
from vrrl_gpu.errors import RegistryError
from vrrl_gpu.format import Sidecar, opcode_for_name, write_sidecar
from vrrl_gpu.reproduce import Launch, load_registry, read_plan, resolve_registry, run_trial
from vrrl_gpu.reproduce._minimize import _ddmin, minimize

cupy_runtime = pytest.importorskip("cupy_backends.cuda.api.runtime")

REGISTRY_SOURCE = textwrap.dedent(
    """
    import os, time
    from cupy_backends.cuda.api.runtime import CUDARuntimeError

    STATE = {"armed": False, "loaded": False}
    MARK = os.environ.get("VRRL_TEST_MARK")

    def noop(words, epoch, tenant, slot):
        if MARK:
            open(MARK, "a").write(f"{slot}\\n")
        return bytes([words[0] & 0xFF])

    def arm(words, epoch, tenant, slot):
        STATE["armed"] = True

    def load(words, epoch, tenant, slot):
        if STATE["armed"]:
            STATE["loaded"] = True

    def fire(words, epoch, tenant, slot):
        # The fault needs two specific earlier launches: minimisation must keep both.
        if STATE["armed"] and STATE["loaded"]:
            raise CUDARuntimeError(700)
        return b"ok"

    def spin(words, epoch, tenant, slot):
        time.sleep(3600)

    def die(words, epoch, tenant, slot):
        os._exit(3)

    def soft(words, epoch, tenant, slot):
        raise ValueError("a host-side bug, not sticky")

    REGISTRY = {"noop": noop, "arm": arm, "load": load, "fire": fire, "spin": spin, "die": die, "soft": soft}
    PARTIAL = {"noop": noop, "arm": arm, "fire": fire}
    NOT_A_MAPPING = [noop]
    BAD_VALUE = {"noop": 3}
    """
)

FAULT = cupy_runtime.CUDARuntimeError(700)


def _seq(n: int = 40, **at: int) -> list[str]:
    names = ["noop"] * n
    for name, pos in at.items():
        names[pos] = name
    return names


def write_log(
    path: Path,
    names: Sequence[str],
    *,
    fail_at: int | None = None,
    exc: BaseException = FAULT,
    digests: dict[int, int] | None = None,
    prefix: Sequence[Record] = (),
) -> Path:
    """A log as a Recorder writes it: BEGIN breadcrumbs, an end breadcrumb with digest, the failure record."""
    recs = list(prefix)
    for i, name in enumerate(names):
        op = opcode_for_name(name)
        base = Record(timestamp_ns=10_000 + i, slot_idx=i, tenant_id=0, opcode=op, args=(i, 1, 2, 3), epoch=5)
        recs.append(base)
        if digests and i in digests:
            recs.append(
                Record(
                    timestamp_ns=10_000 + i,
                    slot_idx=i,
                    tenant_id=0,
                    opcode=op,
                    args=(i, 1, 2, 3),
                    epoch=5,
                    slot_status=int(SlotStatus.COMPLETED),
                    output_digest=digests[i],
                )
            )
        if i == fail_at:
            ev = FailureEvidence.from_exception(exc, slot_status=int(SlotStatus.FAILED_AT_LAUNCH))
            recs.append(ev.apply(base))
    with RingLog.open(path, capacity=256) as log:
        log.extend(recs)
    write_sidecar(path, Sidecar(opcode_names={opcode_for_name(n): n for n in set(names)}))
    return path


@pytest.fixture
def reg(tmp_path: Path) -> str:
    (tmp_path / "stateful_reg.py").write_text(REGISTRY_SOURCE)
    return str(tmp_path / "stateful_reg.py")


@pytest.fixture
def crash_log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "run.vrrl", _seq(arm=22, load=33, fire=39), fail_at=39)


# ------------------------------------------------------------------------------------------ reading a log


def test_plan_launches_and_failure(crash_log: Path) -> None:
    plan = read_plan(crash_log)
    assert len(plan.launches) == 40
    assert [x.position for x in plan.launches] == list(range(40))
    f = plan.failure
    assert f is not None
    assert (f.position, f.slot_idx, f.failure_class, f.code) == (39, 39, FailureClass.PROGRAM_BUG, 700)
    assert plan.names[plan.launches[22].opcode] == "arm"


def test_plan_keeps_only_the_failing_session_and_skips_meta(tmp_path: Path) -> None:
    old = [
        Record(
            timestamp_ns=1,
            slot_idx=i,
            tenant_id=0,
            opcode=opcode_for_name("noop"),
            args=(9, 9, 9, 9),
            epoch=0,
        )
        for i in range(5)
    ]
    meta = [
        Record(
            timestamp_ns=2,
            slot_idx=0,
            tenant_id=0,
            opcode=int(MetaOpcode.SESSION_START),
            args=(1, 0, 0, 0),
            epoch=0,
            slot_status=int(SlotStatus.META),
        ),
        Record(
            timestamp_ns=2,
            slot_idx=0,
            tenant_id=0,
            opcode=int(MetaOpcode.GAP),
            args=(0, 0, 4, 0),
            epoch=0,
            slot_status=int(SlotStatus.META),
        ),
    ]
    path = write_log(tmp_path / "s.vrrl", _seq(6, fire=5), fail_at=5, prefix=old + meta)
    plan = read_plan(path)
    assert len(plan.launches) == 6  # the first session's 5 launches are not part of this crash
    assert plan.failure is not None
    assert plan.failure.position == 5
    assert plan.lost_records == 4


def test_failure_without_breadcrumb_stands_in_for_its_launch(tmp_path: Path) -> None:
    ev = FailureEvidence.from_exception(FAULT, slot_status=int(SlotStatus.FAULTED))
    recs = [
        Record(timestamp_ns=1, slot_idx=i, tenant_id=0, opcode=7, args=(i, 0, 0, 0), epoch=0)
        for i in range(3)
    ]
    recs.append(
        ev.apply(Record(timestamp_ns=2, slot_idx=3, tenant_id=0, opcode=8, args=(3, 0, 0, 0), epoch=0))
    )
    with RingLog.open(tmp_path / "n.vrrl", capacity=16) as log:
        log.extend(recs)
    plan = read_plan(tmp_path / "n.vrrl")
    assert [x.opcode for x in plan.launches] == [7, 7, 7, 8]
    assert plan.failure is not None
    assert plan.failure.position == 3


def test_failure_record_before_its_own_begin_counts_the_launch_once(tmp_path: Path) -> None:
    """Older recorders wrote a FAILED_AT_LAUNCH record before its launch's begin had arrived."""
    ev = FailureEvidence.from_exception(MemoryError("oom"), slot_status=int(SlotStatus.FAILED_AT_LAUNCH))
    recs = [Record(timestamp_ns=1, slot_idx=0, tenant_id=0, opcode=7, args=(0, 0, 0, 0), epoch=0)]
    failed = Record(timestamp_ns=2, slot_idx=1, tenant_id=0, opcode=8, args=(1, 0, 0, 0), epoch=0)
    recs.append(ev.apply(failed))
    recs.append(Record(timestamp_ns=3, slot_idx=1, tenant_id=0, opcode=8, args=(1, 0, 0, 0), epoch=0))
    recs.append(Record(timestamp_ns=4, slot_idx=2, tenant_id=0, opcode=7, args=(2, 0, 0, 0), epoch=0))
    with RingLog.open(tmp_path / "n.vrrl", capacity=16) as log:
        log.extend(recs)
    plan = read_plan(tmp_path / "n.vrrl")
    assert [(x.slot_idx, x.opcode) for x in plan.launches] == [(0, 7), (1, 8), (2, 7)]
    assert plan.failure is not None
    assert plan.failure.position == 1


# ------------------------------------------------------------------------------------------ the registry


def test_registry_resolves_numbers_names_and_name_hashes(reg: str) -> None:
    registry = dict(load_registry(f"{reg}:REGISTRY"))
    registry[1234] = registry["noop"]
    ops = [1234, opcode_for_name("arm"), 99]
    table, missing = resolve_registry(registry, ops, {99: "nope"})
    assert set(table) == {1234, opcode_for_name("arm")}
    assert missing == [99]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_colon", "module:attribute"),
        ("{reg}:MISSING", "no attribute"),
        ("{reg}:NOT_A_MAPPING", "expected a mapping"),
        ("{reg}:BAD_VALUE", "not a callable"),
        ("surely_not_a_module_xyz:R", "importing"),
        ("/nonexistent/dir/r.py:R", "does not exist"),
    ],
)
def test_registry_errors(reg: str, spec: str, fragment: str) -> None:
    with pytest.raises(RegistryError, match=fragment):
        load_registry(spec.format(reg=reg))


def test_missing_opcodes_named_before_anything_runs(
    reg: str,
    crash_log: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mark = tmp_path / "ran"
    monkeypatch.setenv("VRRL_TEST_MARK", str(mark))
    rc = main(["replay", str(crash_log), "--registry", f"{reg}:PARTIAL", "--device", "none"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "load" in err
    assert "no entry" in err
    assert len(err.strip().splitlines()) == 1
    assert not mark.exists()  # not one launch ran


# ------------------------------------------------------------------------------------------ replay


def test_replay_reproduces(reg: str, crash_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["replay", str(crash_log), "--registry", f"{reg}:REGISTRY", "--device", "none", "--json"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert rc == 0
    assert out["reproduced"] is True
    assert out["replay"]["failure"]["position"] == 39
    assert out["replay"]["failure"]["code"] == 700
    assert out["replay"]["failure"]["failure_class"] == "ProgramBug"
    assert captured.err == ""  # no progress bar when stderr is not a terminal


def test_replay_range_without_the_arming_launch_does_not_reproduce(
    reg: str, crash_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["replay", str(crash_log), "--registry", f"{reg}:REGISTRY", "--device", "none", "--from", "30"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "NOT REPRODUCED" in out
    assert "replayed:   no failure" in out


def test_replay_outside_range_compares_to_no_failure(reg: str, crash_log: Path) -> None:
    report = replay(read_plan(crash_log), f"{reg}:REGISTRY", device="none", start=0, stop=10)
    assert report.expected is None
    assert report.reproduced
    assert report.outcome.status == "clean"


def test_nonsticky_failure_continues_unless_stop_at_failure(reg: str, tmp_path: Path) -> None:
    path = write_log(tmp_path / "soft.vrrl", _seq(6, soft=2), fail_at=2, exc=ValueError("a host-side bug"))
    plan = read_plan(path)
    report = replay(plan, f"{reg}:REGISTRY", device="none")
    assert report.reproduced
    assert report.outcome.completed == 5
    stopped = replay(plan, f"{reg}:REGISTRY", device="none", stop_at_failure=True)
    assert stopped.reproduced
    assert stopped.outcome.completed == 2


def test_hung_launch_is_killed_and_reported(reg: str, tmp_path: Path) -> None:
    launches = [
        Launch(i, i, i, 0, opcode_for_name(n), (i, 0, 0, 0), 0) for i, n in enumerate(["noop", "spin"])
    ]
    out = run_trial(launches, f"{reg}:REGISTRY", device="none", timeout=0.5)
    assert out.status == "hung"
    assert out.first_failure is not None
    assert out.first_failure.position == 1
    assert out.completed == 1


def test_child_death_is_reported_as_crash(reg: str) -> None:
    launches = [
        Launch(i, i, i, 0, opcode_for_name(n), (i, 0, 0, 0), 0) for i, n in enumerate(["noop", "die"])
    ]
    out = run_trial(launches, f"{reg}:REGISTRY", device="none")
    assert out.status == "crashed"
    assert out.first_failure is not None
    assert out.first_failure.position == 1
    assert out.returncode == 3


def test_compare_digests_names_first_difference(
    reg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vrrl_gpu import output_digest

    good = {i: int(output_digest(bytes([i])) or 0) for i in range(8)}
    digests = {**good, 5: 0x1234}  # launch 5's recorded output differs from what the replay produces
    path = write_log(tmp_path / "d.vrrl", _seq(8), digests=digests)
    rc = main(
        [
            "replay",
            str(path),
            "--registry",
            f"{reg}:REGISTRY",
            "--device",
            "none",
            "--compare-digests",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert out["digests"]["compared"] == 8
    assert out["digests"]["first_mismatch"]["position"] == 5
    assert out["digests"]["first_mismatch"]["recorded"] == 0x1234


# ------------------------------------------------------------------------------------------ minimise


def test_minimize_end_to_end(
    reg: str, crash_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = tmp_path / "small.vrrl"
    rc = main(
        [
            "replay",
            str(crash_log),
            "--registry",
            f"{reg}:REGISTRY",
            "--device",
            "none",
            "--minimize",
            "-o",
            str(small),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [k["position"] for k in out["kept"]] == [22, 33, 39]
    assert [k["opcode_name"] for k in out["kept"]] == ["arm", "load", "fire"]
    assert out["suffix_length"] == 18
    small_plan = read_plan(small)
    assert [x.slot_idx for x in small_plan.launches] == [22, 33, 39]
    assert small_plan.failure is not None
    assert small_plan.failure.code == 700
    # The minimal log is a reproduction on its own.
    assert main(["replay", str(small), "--registry", f"{reg}:REGISTRY", "--device", "none"]) == 0
    assert "REPRODUCED" in capsys.readouterr().out


def test_minimize_refuses_to_overwrite_and_needs_a_failure(
    reg: str, crash_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "exists.vrrl"
    existing.write_bytes(b"")
    assert main(["replay", str(crash_log), "--registry", f"{reg}:R", "--minimize", "-o", str(existing)]) == 2
    clean = write_log(tmp_path / "clean.vrrl", _seq(4))
    assert main(["replay", str(clean), "--registry", f"{reg}:REGISTRY", "--minimize"]) == 2
    assert "nothing to minimise" in capsys.readouterr().err


def test_minimize_reports_when_the_full_sequence_does_not_reproduce(reg: str, tmp_path: Path) -> None:
    # The log says launch 5 failed with 700, but the registry's 'fire' cannot fail without arm and load.
    path = write_log(tmp_path / "flaky.vrrl", _seq(6, fire=5), fail_at=5)
    result = minimize(read_plan(path), f"{reg}:REGISTRY", device="none")
    assert not result.reproduced
    assert result.kept == ()
    assert result.trials == 1


def test_list_shows_positions_and_failure(crash_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(crash_log), "--list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["launches"]) == 40
    assert out["recorded_failure"]["position"] == 39


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), data=st.data())
def test_ddmin_finds_a_one_minimal_subset(n: int, data: st.DataObject) -> None:
    items = [Launch(i, i, i, 0, 1, (0, 0, 0, 0), 0) for i in range(n)]
    needed = set(data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=4))) if n else set()

    def test(c: Sequence[Launch]) -> bool:
        return needed <= {x.position for x in c}

    def first_true(cands: Sequence[Sequence[Launch]]) -> int | None:
        return next((i for i, c in enumerate(cands) if test(c)), None)

    kept = _ddmin(items, first_true)
    assert {x.position for x in kept} == needed
    assert [x.position for x in kept] == sorted(x.position for x in kept)  # order is preserved
