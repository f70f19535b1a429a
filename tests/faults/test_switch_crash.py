"""kill -9 the moment a new map takes over, then resume: one map in force, everyone evaluated under it."""

import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from config.model import Settings, load_settings
from journey.simulate import SimOptions, messages
from tests.broker_fixtures import (
    LIVE_SPAN_MS,
    committed,
    journey_cli,
    producing,
    read_json,
    spawn_journey,
    stop_once_read,
    wait_until,
    write_live_config,
)
from tests.cli.test_apply_map import LOWER, variant
from tests.flows.test_end_to_end import assert_matches_reference, reference_from

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def test_a_crash_during_a_switch_resumes_into_exactly_one_map(
        make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    produced = messages(settings, SimOptions(customers=3_000, events=50_000, seed=43, duplicates=0.02,
                                             out_of_order=0.02, span_ms=LIVE_SPAN_MS))
    total = len(produced)
    config = write_live_config(settings, tmp_path / "map.toml")
    lower = variant(config, tmp_path / "lower.toml", *LOWER)
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
    moves = [m for m in read_json(settings, settings.topics.transitions) if m["cause"] == "map"]
    per_customer = Counter(m["customer_id"] for m in moves)
    assert moves and max(per_customer.values()) <= 2  # at least once: before the kill, and again
    assert {m["map"] for m in moves} == {new.version}
    for topic in (settings.topics.scores, settings.topics.transitions):
        seen_new: set[str] = set()  # per customer: the old map's records, then only the new one's
        for record in read_json(settings, topic):
            if record["map"] == new.version:
                seen_new.add(record["customer_id"])
            else:
                assert record["map"] == old.version and record["customer_id"] not in seen_new, record
    with capsys.disabled():
        print(f"\nkilled as map {new.version} took over; resumed into it: {len(per_customer):,} customers "
              f"moved by it, {sum(n - 1 for n in per_customer.values()):,} of their moves produced again")

