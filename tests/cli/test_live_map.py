"""A map applied to a running two-process cluster under load: one epoch, every customer evaluated once."""

import pickle
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Producer

from config.model import Settings, load_settings
from flows.journey_flow import FLOW_ID, SCORE_STEP
from journey.control import APPLY, publish
from journey.simulate import SimMessage, SimOptions, messages
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

pytestmark = pytest.mark.slow


class StoreWatch(threading.Thread):
    """Which map each shard's snapshots name, by epoch, as the recovery store holds them over time.

    Bytewax deletes a key's snapshot once a newer one is old enough to resume from, so the
    store is read every 100 ms while the flow runs.
    """

    def __init__(self, store: Path) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.seen: dict[tuple[str, int], str] = {}  # (shard, epoch) -> the map in force
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.read()

    def read(self) -> None:
        for part in sorted(self.store.glob("part-*.sqlite3")):
            try:
                with closing(sqlite3.connect(part.resolve().as_uri() + "?mode=ro", uri=True)) as db:
                    rows = db.execute("SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ? "
                                      "AND ser_change IS NOT NULL", (f"{FLOW_ID}.{SCORE_STEP}",)).fetchall()
            except sqlite3.Error:  # being written: the next read sees it
                continue
            for key, epoch, blob in rows:
                if (key, epoch) not in self.seen:
                    self.seen[key, epoch] = pickle.loads(blob)["in_force"]

    def stop(self) -> dict[tuple[str, int], str]:
        self.done.set()
        self.join()
        self.read()
        return self.seen


def test_a_running_cluster_takes_a_new_threshold_at_one_epoch_and_refuses_a_layout_change(
        make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    produced, config, lower = live_switch(settings, tmp_path, events=60_000, seed=41)
    total = len(produced)
    old, new = load_settings(config).journey, load_settings(lower).journey
    layout = load_settings(variant(lower, tmp_path / "layout.toml", 'half_life = "14d"', 'half_life = "7d"'))
    store, log = tmp_path / "store", tmp_path / "cluster.log"
    watch = StoreWatch(store)
    with producing(settings, produced, rate=5_000) as producer:
        cluster = spawn_journey("run", "--config", str(config), "--recovery-dir", str(store),
                                "--processes", "2", "--snapshot-interval", "1", log=log)
        try:
            wait_until(lambda: sum(committed(settings).values()) >= 0.3 * total, 120, "30% read")
            watch.start()
            applied = journey_cli("apply-map", str(lower), "--brokers", settings.kafka.brokers)
            assert applied.returncode == 0, applied.stderr
            read_at_apply = sum(committed(settings).values())
            wait_until(lambda: log.read_text().count(f"journey map {new.version}") == 2, 60,
                       "both processes take the map over")
            publish(layout, layout.journey, "tests (past apply-map's check)", APPLY)  # refused by flows too
            garbage = Producer({"bootstrap.servers": settings.kafka.brokers})
            garbage.produce(settings.topics.control, b"{not a map", partition=0)
            assert garbage.flush(10) == 0
            wait_until(lambda: log.read_text().count("refused, the flow runs on with map") == 2, 60,
                       "both refusals")
            refused_at = sum(committed(settings).values())
            producer.join()
            code = stop_once_read(cluster, settings, total)
        finally:
            seen = watch.stop() if watch.is_alive() else {}
            if cluster.poll() is None:
                cluster.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text and "panic" not in text.lower()
    assert "it changes [journey].half_life: 14d -> 7d" in text and ": not JSON (" in text
    assert refused_at < total  # the flow read on after refusing

    # the final state is the new map's, as the reference computes it over every event
    assert_matches_reference(settings, reference_from(replace(settings, journey=new), produced))

    # every customer evaluated once; after a customer's first record of the new map, no old one
    moves = moves_by_map(settings, old.version, new.version)
    assert max(Counter(m["customer_id"] for m in moves).values()) == 1
    assert {(m["event_id"], m["from"], m["to"]) for m in moves} == {(None, "awareness", "consideration")}
    assert layout.journey.version not in {r["map"] for r in read_json(settings, settings.topics.scores)}

    # both processes' shards took it over at the end of one and the same epoch
    shards = {key for key, _ in seen}
    assert len(shards) == 8  # 4 per worker, one worker in each of two processes
    first_new = {key: min(e for (k, e), v in seen.items() if k == key and v == new.version) for key in shards}
    (switch,) = set(first_new.values())
    assert {v for (_, e), v in seen.items() if e < switch} == {old.version}
    assert {v for (_, e), v in seen.items() if e >= switch} == {new.version}
    assert sum(1 for _, e in seen if e == switch - 1) >= 1  # the epoch before was seen: it was old
    with capsys.disabled():
        print(f"\nmap applied at {read_at_apply:,} of {total:,} messages read: {len(moves):,} customers "
              f"moved by it; all 8 shards took it over at the end of epoch {switch}")


def live_switch(settings: Settings, tmp_path: Path, events: int,
                seed: int) -> tuple[list[SimMessage], Path, Path]:
    """Input to produce live (3,000 customers), the map a flow starts with, and that map with the
    consideration threshold lowered (a change a running flow takes)."""
    produced = messages(settings, SimOptions(customers=3_000, events=events, seed=seed, duplicates=0.02,
                                             out_of_order=0.02, span_ms=LIVE_SPAN_MS))
    config = write_live_config(settings, tmp_path / "map.toml")
    return produced, config, variant(config, tmp_path / "lower.toml", *LOWER)


def moves_by_map(settings: Settings, old: str, new: str) -> list[dict]:
    """The transitions map ``new`` caused, once checked that, customer by customer, the records
    of ``new`` follow every record of ``old``, and that no other map made any."""
    for topic in (settings.topics.scores, settings.topics.transitions):
        seen_new: set[str] = set()  # a customer's records are in one partition, in order
        for record in read_json(settings, topic):
            if record["map"] == new:
                seen_new.add(record["customer_id"])
            else:
                assert record["map"] == old and record["customer_id"] not in seen_new, record
    moves = [m for m in read_json(settings, settings.topics.transitions) if m["cause"] == "map"]
    assert moves and {m["map"] for m in moves} == {new}
    return moves

