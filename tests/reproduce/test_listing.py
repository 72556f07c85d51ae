"""The streamed launch listing (reproduce/_listing.py) against the replay plan it must equal (read_plan)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.analysis_logs import NAMES, T0, recorder_like_log, write_log
from vrrl_gpu._cli import main
from vrrl_gpu._cli._replay_cmds import _code, _describe_failed, _launch_json, _print_launches
from vrrl_gpu.format import RECORD_DTYPE, RECORD_MAGIC, FailureClass, MetaOpcode, SlotStatus
from vrrl_gpu.format._layout import UNKNOWN_SLOT
from vrrl_gpu.reproduce import read_plan
from vrrl_gpu.reproduce._listing import LaunchIndex, scan_launches

_S = SlotStatus
# Every kind of record the rules treat differently; slots from a small set so that they repeat.
_STATUS = [_S.BEGIN, _S.BEGIN, _S.PUBLISHED, _S.COMPLETED, _S.FAILED_AT_LAUNCH, _S.FAULTED, _S.HUNG, _S.META]
_SLOTS = [0, 1, 2, 3, UNKNOWN_SLOT]


@st.composite
def _random_log(draw: st.DrawFn) -> npt.NDArray[np.void]:
    n = draw(st.integers(0, 60))
    r = np.zeros(n, RECORD_DTYPE)
    r["magic"] = RECORD_MAGIC
    r["timestamp_ns"] = T0 + np.arange(n, dtype=np.uint64)
    for i in range(n):
        status = draw(st.sampled_from(_STATUS))
        r["slot_status"][i] = status
        if status == _S.META:
            kind = draw(st.sampled_from([MetaOpcode.SESSION_START, MetaOpcode.GAP]))
            r["opcode"][i] = kind
            r["args"][i] = (1, 2, draw(st.integers(0, 5)), draw(st.integers(0, 1)))
            continue
        r["slot_idx"][i] = draw(st.sampled_from(_SLOTS))
        r["tenant_id"][i] = draw(st.integers(0, 1))
        r["opcode"][i] = draw(st.sampled_from(list(NAMES)))
        r["args"][i] = (draw(st.integers(0, 1)), 0, 0, 0)
        r["epoch"][i] = i
        if status in (_S.FAILED_AT_LAUNCH, _S.FAULTED, _S.HUNG) or draw(st.integers(0, 9)) == 0:
            r["failure_class"][i] = draw(
                st.sampled_from([FailureClass.PROGRAM_BUG, FailureClass.TRANSIENT_QUEUE])
            )
            r["backend_error_code"][i] = 700
            r["output_digest"][i] = draw(st.integers(0, 3))
    return r


def _columns(ix: LaunchIndex, lo: int = 0, hi: int | None = None) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for c in ix.columns(lo, hi):
        for k in range(len(c)):
            out.append(
                (
                    int(c.position[k]),
                    int(c.slot_idx[k]),
                    int(c.tenant_id[k]),
                    int(c.opcode[k]),
                    tuple(c.args[k].tolist()),
                    int(c.epoch[k]),
                )
            )
    return out


def _assert_same(path: Path, ix: LaunchIndex) -> None:
    plan = read_plan(path)
    assert ix.launches == len(plan.launches)
    assert _columns(ix) == [
        (x.position, x.slot_idx, x.tenant_id, x.opcode, x.args, x.epoch) for x in plan.launches
    ]
    assert ix.failure == plan.failure
    assert ix.lost_records == plan.lost_records
    assert ix.session_start == plan.session_start
    if plan.failure is not None and not plan.failure.unknown:
        x = plan.launches[plan.failure.position]
        assert ix.failed_launch == (x.position, x.slot_idx, x.opcode)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), chunk=st.sampled_from([1, 2, 3, 7, 64]))
def test_streamed_launches_equal_the_plans_at_any_chunk_size(
    tmp_path: Path, data: st.DataObject, chunk: int
) -> None:
    r = data.draw(_random_log())
    path = write_log(tmp_path / f"random-{chunk}.vrrl", r, capacity=max(1, int(r.shape[0])))
    _assert_same(path, scan_launches(path, chunk_records=chunk))


def _awkward_log(tmp_path: Path) -> Path:
    """Faults, a GAP, three streams, an earlier session, a failure record standing in for a lost begin (and
    the late begin it stands for), an unknown-slot failure: each rule of the plan once at least."""
    p = recorder_like_log(tmp_path / "awkward.vrrl", 2001, seed=3)
    from vrrl_gpu import RingLog

    with RingLog.open(p, readonly=True) as log:
        r = log.records()
    older = r[:300].copy()  # an earlier session first: the listing starts after its SESSION_START
    older["timestamp_ns"] -= np.uint64(10**9)
    stand = r[1000:1001].copy()  # a failure whose launch's begin was lost, then a late begin for it
    stand["slot_idx"] = 900_000
    stand["slot_status"] = SlotStatus.FAULTED
    stand["failure_class"] = FailureClass.PROGRAM_BUG
    stand["backend_error_code"] = 719
    late = stand.copy()
    late["slot_status"] = SlotStatus.BEGIN
    late["failure_class"] = 0
    late["backend_error_code"] = 0
    unknown = r[1500:1501].copy()
    unknown["slot_idx"] = UNKNOWN_SLOT
    unknown["slot_status"] = SlotStatus.FAULTED
    unknown["failure_class"] = FailureClass.PROGRAM_BUG
    allr = np.concatenate([older, r[:1200], stand, late, r[1200:1600], unknown, r[1600:]])
    out = tmp_path / "awkward2.vrrl"
    write_log(out, allr, capacity=int(allr.shape[0]))
    (tmp_path / "awkward2.vrrl.json").write_bytes((tmp_path / "awkward.vrrl.json").read_bytes())
    return out


def test_awkward_log_streams_like_the_plan(tmp_path: Path) -> None:
    p = _awkward_log(tmp_path)
    plan = read_plan(p)
    assert plan.failure is not None
    assert plan.session_start > 0
    assert plan.lost_records
    for chunk in (5, 97, 1 << 16):
        _assert_same(p, scan_launches(p, chunk_records=chunk))
    ix = scan_launches(p, chunk_records=97)
    assert ix.skipped.size == 1  # the stand-in rule was exercised
    assert ix.standins.size == 1
    assert _columns(ix, 10, 20) == _columns(ix)[10:20]


def _old_listing(path: Path, start: int | None, stop: int | None, as_json: bool, capsys: Any) -> str:
    """What ``replay --list`` printed when it listed a :func:`read_plan` (the code it had, kept here)."""
    plan = read_plan(path)
    launches = plan.select(start, stop) if plan.launches else ()
    if as_json:
        return (
            json.dumps(
                {
                    "log": plan.path,
                    "launches": [_launch_json(x, plan.names) for x in launches],
                    "recorded_failure": plan.failure.to_json(plan.names) if plan.failure else None,
                    "lost_records": plan.lost_records,
                }
            )
            + "\n"
        )
    capsys.readouterr()
    _print_launches(f"{plan.path}: {len(plan.launches)} launches", launches, plan)
    text = capsys.readouterr().out
    fl = plan.failure
    if fl is None:
        return text + "recorded failure: none\n"
    return (
        text + f"recorded failure: {_describe_failed(plan, fl)}: "
        f"{fl.failure_class.label} {_code(fl.code)} [{SlotStatus.label_of(fl.slot_status)}]\n"
    )


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize(("start", "stop"), [(None, None), (3, 450), (0, 0)])
def test_replay_list_prints_what_the_plan_listing_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool, start: int | None, stop: int | None
) -> None:
    p = _awkward_log(tmp_path)
    want = _old_listing(p, start, stop, as_json, capsys)
    argv = ["replay", str(p), "--list"]
    argv += ["--json"] if as_json else []
    argv += ["--from", str(start)] if start is not None else []
    argv += ["--to", str(stop)] if stop is not None else []
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    got = captured.out
    assert got == want
    assert captured.err == ""  # no progress bar when stderr is not a terminal
    if as_json:
        assert json.loads(got)["recorded_failure"]["position"] >= 0


def test_replay_list_of_a_log_without_launches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_log(tmp_path / "empty.vrrl", [], capacity=4)
    for as_json in (False, True):
        want = _old_listing(p, None, None, as_json, capsys)
        assert main(["replay", str(p), "--list", *(["--json"] if as_json else [])]) == 0
        assert capsys.readouterr().out == want


def test_replay_list_refuses_a_range_outside_the_launches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _awkward_log(tmp_path)
    n = len(read_plan(p).launches)
    assert main(["replay", str(p), "--list", "--from", str(n)]) == 2
    assert "outside the log's launches" in capsys.readouterr().err
