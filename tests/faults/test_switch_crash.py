"""kill -9 the moment a new map takes over, then resume: one map in force, everyone evaluated under it."""

import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from config.model import Settings, load_settings
from tests.broker_fixtures import (
    committed,
    journey_cli,
    producing,
    spawn_journey,
    stop_once_read,
    wait_until,
)
from tests.cli.test_live_map import live_switch, moves_by_map
from tests.flows.test_end_to_end import assert_matches_reference, reference_from

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def test_a_crash_during_a_switch_resumes_into_exactly_one_map(
        make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    produced, config, lower = live_switch(settings, tmp_path, events=50_000, seed=43)
    total = len(produced)
    old, new = load_settings(config).journey, load_settings(lower).journey
    store = tmp_path / "store"
    args = ("run", "--config", str(config), "--recovery-dir", str(store), "--snapshot-interval", "1")
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with producing(settings, produced, rate=5_000) as producer:
        flow = spawn_journey(*args, log=first_log)
        try:
            wait_until(lambda: sum(committed(settings).values()) >= 0.3 * total, 120, "30% read")
            applied = journey_cli("apply-map", str(lower))
            assert applied.returncode == 0, applied.stderr
            wait_until(lambda: f"journey map {new.version}" in first_log.read_text(), 60, "the take-over",
                       every_s=0.01)
            flow.send_signal(signal.SIGKILL)  # within the epoch's end: its snapshot may not be kept
            flow.wait(timeout=30)
            flow = spawn_journey(*args, log=second_log)
            producer.join()
            code = stop_once_read(flow, settings, total)
        finally:
            if flow.poll() is None:
                flow.kill()
    text = second_log.read_text()
    assert code == 0, text[-3000:]
    assert f"journey map {new.version} (applied by" in text and "is in force" in text  # not --config's

    assert_matches_reference(settings, reference_from(replace(settings, journey=new), produced))
    per_customer = Counter(m["customer_id"] for m in moves_by_map(settings, old.version, new.version))
    assert max(per_customer.values()) <= 2  # at least once: before the kill, and again
    with capsys.disabled():
        print(f"\nkilled as map {new.version} took over; resumed into it: {len(per_customer):,} customers "
              f"moved by it, {sum(n - 1 for n in per_customer.values()):,} of their moves produced again")

