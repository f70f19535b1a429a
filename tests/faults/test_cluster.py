"""Two processes under ``journey run --processes 2``: one killed, both restarted, nothing lost."""

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from config.model import Settings
from journey.simulate import SimOptions, messages
from tests.broker_fixtures import (
    LIVE_SPAN_MS,
    committed,
    producing,
    spawn_journey,
    stop_once_read,
    wait_until,
    write_live_config,
)
from tests.flows.test_end_to_end import assert_matches_reference, reference_from

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_the_supervisor_restarts_the_whole_cluster_from_the_store(
        make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    produced = messages(settings, SimOptions(customers=3_000, events=60_000, seed=22, duplicates=0.02,
                                             out_of_order=0.02, span_ms=LIVE_SPAN_MS))
    total = len(produced)
    config = str(write_live_config(settings, tmp_path / "map.toml"))
    log = tmp_path / "supervisor.log"
    with producing(settings, produced, rate=5_000) as producer:
        supervisor = spawn_journey("run", "--config", config, "--recovery-dir", str(tmp_path / "store"),
                                   "--processes", "2", "--snapshot-interval", "1", log=log)
        try:
            wait_until(lambda: len(children(supervisor.pid)) == 2, 30, "two processes started")
            first = children(supervisor.pid)
            wait_until(lambda: sum(committed(settings).values()) >= 0.3 * total, 120, "30% read")
            read_at_kill = sum(committed(settings).values())
            os.kill(first[1], signal.SIGKILL)
            killed = time.monotonic()
            wait_until(lambda: "restarting all 2 processes from the recovery store" in log.read_text(),
                       30, "the supervisor's line")
            wait_until(lambda: len(set(children(supervisor.pid)) - set(first)) == 2, 60,
                       "both processes started again")
            wait_until(lambda: sum(committed(settings).values()) > read_at_kill, 120, "reading on")
            recovered = time.monotonic() - killed
            producer.join()
            code = stop_once_read(supervisor, settings, total)
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "process 1 was killed by SIGKILL; restarting all 2 processes from the recovery store in 1 s" \
        in text, text[-3000:]
    assert "Traceback" not in text and "panic" not in text.lower()
    assert text.count("resuming from epoch") >= 2  # each restarted process says where
    scores = assert_matches_reference(settings, reference_from(settings, produced))  # 0 wrong, 0 lost
    with capsys.disabled():
        print(f"\ncluster of 2, one killed: reading on {recovered:.1f} s after the kill; "
              f"{len(scores):,} customers exact")
