"""A live run scores every event as it is read, whatever the other input partitions do."""

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from config.model import Settings
from journey.kafka_io import ensure_topics
from operators.base import wall_clock_ms
from tests.broker_fixtures import ROOT, read_json, write_config

pytestmark = pytest.mark.slow


def test_scores_do_not_wait_for_a_quiet_input_topic(make_settings: Callable[..., Settings],
                                                    tmp_path: Path) -> None:
    settings = make_settings()  # clickstream and touchpoints; touchpoints stays empty
    ensure_topics(settings.kafka, settings.topics.inputs, 4)
    config = write_config(settings, tmp_path / "live.toml")
    # the quiet partitions never count as idle here: they hold the watermark back all along
    config.write_text(config.read_text().replace('idle_timeout = "10s"', 'idle_timeout = "1h"'))
    log = (tmp_path / "live.log").open("w+")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-P", "-m", "journey.cli", "run", "--config", str(config)],
                                cwd=ROOT, stdout=log, stderr=log, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        producer = Producer({"bootstrap.servers": settings.kafka.brokers, "linger.ms": 5})
        now = wall_clock_ms()
        customers = [f"live-{i}" for i in range(20)]
        for i, cid in enumerate(customers):
            producer.produce(settings.topics.inputs[0], orjson.dumps(
                {"event_id": f"e{i}", "customer_id": cid, "ts": now + i, "type": "add_to_cart",
                 "channel": "web"}), cid.encode())
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 120
        scored: set[str] = set()
        while time.monotonic() < deadline and scored != set(customers):
            time.sleep(1)
            scored = {r["customer_id"] for r in read_json(settings, settings.topics.scores)}
            assert proc.poll() is None, "the run stopped"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.seek(0)
    assert scored == set(customers), log.read()[-3000:]
    transitions = read_json(settings, settings.topics.transitions)
    assert {(t["customer_id"], t["from"], t["to"]) for t in transitions} == {
        (cid, None, "awareness") for cid in customers}
    # sessions and windows follow the watermark, which the quiet topic holds back
    assert read_json(settings, settings.topics.sessions) == []
    assert read_json(settings, settings.topics.metrics) == []
