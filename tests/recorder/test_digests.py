"""Per-launch output digests (``digests=True``, ``vrrl demo --digests``): one host COMPLETED record per launch
given ``outputs=``, carrying the BLAKE3 digest of the outputs after the launch; what ``vrrl diff`` and
``vrrl replay --compare-digests`` compare."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.recorder import log_records, recorders
from vrrl_gpu import Recorder, SlotStatus, output_digest
from vrrl_gpu._cli import main
from vrrl_gpu._cli._demo import demo_x

REGISTRY = str(Path(__file__).resolve().parents[2] / "examples" / "replay_registry.py") + ":REGISTRY"
N = 256


@pytest.fixture
def make_rec(tmp_path: Path) -> Iterator[Callable[..., Recorder]]:
    with recorders(tmp_path) as make:
        yield make


def run_axpy(rec: Recorder, launches: int, *, perturb_at: int | None = None, slot: bool = False) -> None:
    """y += x per launch (x = demo_x); at ``perturb_at`` x is doubled first (a run that diverges there)."""
    b = rec.backend
    k = b.load("vrrl_demo.cu", "vrrl_demo_axpy")
    x, y = b.alloc_device(4 * N), b.alloc_device(4 * N)
    x.from_host(demo_x(N).view(np.uint8))
    op = rec.opcode("axpy")
    for i in range(launches):
        if i == perturb_at:
            rec.synchronize()
            x.from_host((2 * demo_x(N)).view(np.uint8))
        if slot:
            with rec.slot(op, words=(i, N, 0, 0), outputs=lambda: y):
                b.launch(k, 1, N, (y, x, 1.0, N, 0))
        else:
            rec.launch(k, 1, N, (y, x, 1.0, N, 0), opcode=op, words=(i, N, 0, 0), outputs=y)
    rec.close()


@pytest.mark.parametrize("mode", ["begin", "begin+end"])
@pytest.mark.parametrize("slot", [False, True], ids=["launch", "slot"])
def test_every_launch_gets_the_digest_of_its_output(
    make_rec: Callable[..., Recorder], mode: str, slot: bool
) -> None:
    rec = make_rec(digests=True, breadcrumbs=mode)
    run_axpy(rec, 12, slot=slot)
    recs = log_records(rec.path)
    is_digest = (recs["slot_status"] == int(SlotStatus.COMPLETED)) & (recs["output_digest"] != 0)
    done = recs[is_digest]
    assert [int(s) for s in done["slot_idx"]] == list(range(12))
    want = [output_digest(((i + 1) * demo_x(N)).astype(np.float32)) for i in range(12)]
    assert [int(d) for d in done["output_digest"]] == want
    # Each digest record comes after its launch's begin in the log (what replay and diff read).
    begin_at = {
        int(r["slot_idx"]): k for k, r in enumerate(recs) if r["slot_status"] == int(SlotStatus.BEGIN)
    }
    digest_at = np.flatnonzero(
        (recs["slot_status"] == int(SlotStatus.COMPLETED)) & (recs["output_digest"] != 0)
    )
    assert all(begin_at[int(recs[k]["slot_idx"])] < k for k in digest_at)


def test_without_digests_nothing_is_synchronized_or_written(make_rec: Callable[..., Recorder]) -> None:
    rec = make_rec()
    run_axpy(rec, 6)
    recs = log_records(rec.path)
    assert not (recs["output_digest"] != 0).any()


def test_diff_names_the_first_launch_whose_output_differs(
    make_rec: Callable[..., Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = make_rec(digests=True), make_rec(digests=True)
    run_axpy(a, 10)
    run_axpy(b, 10, perturb_at=6)
    assert main(["diff", a.path, b.path, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == {"digest": 4}  # launches 6..9: y differs from there on
    first = out["divergences"][0]
    assert (first["kind"], first["position"], first["a_slot"]) == ("digest", 6, 6)


def test_demo_digests_replay_compares_them_and_the_replay_log_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(tmp_path / "d.vrrl")
    argv = ["demo", log, "--device", "twin", "--launches", "40", "--fault-at", "30", "--digests"]
    assert main([*argv, "--elements", str(N)]) == 3
    capsys.readouterr()
    rc = main(["replay", log, "--registry", REGISTRY, "--device", "twin", "--compare-digests", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["reproduced"] is True
    assert out["digests"]["compared"] == 30  # launches 0..29 completed; 30 faulted
    assert out["digests"]["first_mismatch"] is None
    replay_log = out["replay"]["replay_log"]
    assert main(["diff", log, replay_log, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["agree"] is True
