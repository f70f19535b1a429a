"""SIGTERM and Ctrl-C stop a live run cleanly: exit 0, one line, every event read is scored and delivered."""

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from config.model import Settings
from tests.broker_fixtures import LiveFlow, read_json, read_topic

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_delivers_the_output_of_everything_read(
        make_settings: Callable[..., Settings], tmp_path: Path, signum: signal.Signals) -> None:
    settings = make_settings()
    live = LiveFlow(settings, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not read_topic(settings, settings.topics.scores):
            assert live.flow.poll() is None and time.monotonic() < deadline, live.log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # mid-stream: the simulator keeps producing
        stopped = time.monotonic()
        live.flow.send_signal(signum)
        code = live.flow.wait(timeout=60)
        took = time.monotonic() - stopped
    finally:
        live.stop()
    log = live.log.read_text()
    assert code == 0, log[-3000:]
    assert took < 15, took
    assert f"{signum.name}: stopping" in log and "stopped: every output of what was read is delivered" in log
    assert "Traceback" not in log and "panick" not in log
    assert "no --recovery-dir: nothing is kept for a restart" in log  # said at start

    # what the flow read is what it committed to the consumer group at its last epoch
    consumer = Consumer({"bootstrap.servers": settings.kafka.brokers, "group.id": "journey-stream"})
    committed = consumer.committed([TopicPartition(t, p) for t in settings.topics.inputs for p in range(4)],
                                   timeout=10)
    consumer.close()
    ends = {(tp.topic, tp.partition): tp.offset for tp in committed}
    read: Counter[str] = Counter()
    for topic in settings.topics.inputs:
        offsets: Counter[int] = Counter()
        for _key, value, partition in read_topic(settings, topic):
            offsets[partition] += 1  # read_topic keeps each partition in offset order
            if value is not None and offsets[partition] <= ends[topic, partition]:
                read[orjson.loads(value)["customer_id"]] += 1
    assert 0 < sum(read.values()) < 60_000  # stopped mid-stream
    last: dict[str, int] = {}
    for record in read_json(settings, settings.topics.scores):
        last[record["customer_id"]] = max(last.get(record["customer_id"], 0), record["events"])
    assert last == dict(read)  # every event read was scored, and its score delivered; nothing more
