"""Issue 16, item 13: ``tail -f`` notices a replaced or truncated log, and refuses a damaged one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.analysis_logs import records, run_rows, write_log
from vrrl_gpu import RingLog
from vrrl_gpu._cli import main
from vrrl_gpu.analysis import LogFollower
from vrrl_gpu.errors import TruncatedLogError
from vrrl_gpu.format._layout import HEADER_SIZE, RECORD_SIZE


def test_a_log_replaced_by_one_of_the_same_capacity_is_followed_from_its_oldest_record(
    tmp_path: Path,
) -> None:
    p = tmp_path / "live.vrrl"
    write_log(p, run_rows(5), capacity=64)
    f = LogFollower(p)
    f.last(3)
    # Another run's log of the same capacity, further along, moved into place.
    other = tmp_path / "other.vrrl"
    new = records(run_rows(10, tenant_base=9))
    write_log(other, new, capacity=64)
    os.replace(other, p)
    got = f.poll()
    assert f.replaced
    assert got.tobytes() == new.tobytes(), "every record of the new file, none of the old"
    f.replaced = False
    assert f.poll().shape[0] == 0
    assert not f.replaced


def test_truncation_while_following_is_an_error(tmp_path: Path) -> None:
    p = write_log(tmp_path / "t.vrrl", run_rows(4), capacity=64)
    f = LogFollower(p)
    f.last(1)
    os.truncate(p, HEADER_SIZE + RECORD_SIZE * 10)
    with pytest.raises(TruncatedLogError, match="truncated while following"):
        f.poll()


def test_tail_of_a_damaged_log_exits_2_like_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write_log(tmp_path / "d.vrrl", run_rows(4), capacity=16)
    with open(p, "r+b") as fh:
        fh.seek(HEADER_SIZE + RECORD_SIZE * 2)
        fh.write(b"\x01\x02\x03\x04")
    assert main(["verify", str(p)]) == 1
    assert main(["tail", str(p)]) == 2
    assert main(["tail", "-f", "--max-seconds", "0.1", str(p)]) == 2
    err = capsys.readouterr().err
    assert "slot 2" in err
    short = write_log(tmp_path / "s.vrrl", run_rows(4), capacity=16)
    os.truncate(short, HEADER_SIZE + RECORD_SIZE * 3)
    assert main(["tail", str(short)]) == 2
    assert "expected" in capsys.readouterr().err


def test_tail_f_says_when_the_log_was_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_log(tmp_path / "r.vrrl", run_rows(2), capacity=32)
    other = write_log(tmp_path / "o.vrrl", run_rows(6, tenant_base=3), capacity=32)
    import threading
    import time

    def swap() -> None:
        time.sleep(0.3)
        os.replace(other, p)

    t = threading.Thread(target=swap)
    t.start()
    assert main(["tail", "-f", "--interval", "0.05", "--max-seconds", "1.5", "--json", str(p)]) == 0
    t.join()
    cap = capsys.readouterr()
    assert "was replaced" in cap.err
    assert len(cap.out.splitlines()) == len(run_rows(2)) + len(run_rows(6))


def test_strict_follow_still_reads_a_live_log(tmp_path: Path) -> None:
    p = tmp_path / "w.vrrl"
    with RingLog.open(p, capacity=8) as log:
        f = LogFollower(p)
        f.last(0)
        total = 0
        for i in range(5):
            batch = records(run_rows(3, tenant_base=i))
            log.extend(batch)
            total += int(f.poll().shape[0])
        assert total >= 8
    assert np.all(f.last(8)["magic"] != 0)
