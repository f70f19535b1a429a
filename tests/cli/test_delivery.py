"""A delivery that cannot succeed stops the sink with an error; it is never dropped quietly."""

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from itertools import accumulate
from typing import Any

import numpy as np
import pytest

from config.errors import DeliveryError
from config.model import DEFAULT_PATH, KafkaSettings, Settings, load_settings
from journey.broker import EmbeddedBroker
from journey.kafka_io import SINK_PART, KafkaBatchSink, SinkPartition, ensure_topics
from operators.base import InputTimes, RecordBlock
from operators.metrics import EngineMetrics
from tests.broker_fixtures import read_topic


def own_part(kafka: KafkaSettings, **options: Any) -> SinkPartition:
    """The sink partition of process 0, as the flow builds it."""
    sink = KafkaBatchSink(kafka, metrics=EngineMetrics(), **options)
    return sink.build_part("out", SINK_PART.format(0), None)


def test_epoch_end_raises_when_broker_is_gone() -> None:
    broker = EmbeddedBroker().start()
    settings = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
    ensure_topics(settings.kafka, ["out"], 1)
    sink = own_part(settings.kafka, delivery_timeout_s=3.0)
    sink.write_batch([[("out", b"k", b"delivered")]])
    sink.snapshot()  # works while the broker is up
    broker.stop()
    sink.write_batch([[("out", b"k", b"lost?")] * 10])
    with pytest.raises(DeliveryError, match="not delivered"):  # before Bytewax commits the epoch
        sink.snapshot()


def test_failed_delivery_reports_stop_the_sink() -> None:
    """Failed deliveries are reported by librdkafka (only those are) and end in DeliveryError."""
    broker = EmbeddedBroker().start()
    settings = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
    ensure_topics(settings.kafka, ["out"], 1)
    kafka = replace(settings.kafka, properties={**settings.kafka.properties, "message.timeout.ms": "500"})
    sink = own_part(kafka, delivery_timeout_s=3.0)
    sink.write_batch([[("out", b"k", b"delivered")]])
    sink.snapshot()
    broker.stop()
    sink.write_batch([[("out", b"k", b"lost?")] * 10])
    time.sleep(1.5)  # the messages time out and librdkafka reports them
    with pytest.raises(DeliveryError, match="timed out"):  # at the next write, not only at epoch end
        sink.write_batch([[("out", b"k", b"after")]])


def test_items_stay_in_their_process() -> None:
    """Each process lists only its own partition, and ``part_fn`` finds it in the sorted set."""
    settings = load_settings(DEFAULT_PATH)
    sinks = [KafkaBatchSink(settings.kafka, process=p, metrics=EngineMetrics()) for p in range(12)]
    every = sorted(part for sink in sinks for part in sink.list_parts())
    for p, sink in enumerate(sinks):
        (own,) = sink.list_parts()
        assert every[sink.part_fn(own) % len(every)] == own == every[p]


def test_blocks_and_records_arrive_once_each_in_order(make_settings: Callable[..., Settings]) -> None:
    """Record blocks are cut into their records at the sink; a full local queue only waits."""
    settings = make_settings()
    topic = settings.topics.sessions
    ensure_topics(settings.kafka, [topic], 1)
    tiny = replace(settings.kafka, properties={**settings.kafka.properties,
                                               "queue.buffering.max.messages": "7"})
    sink = own_part(tiny)
    records = [(topic, f"k{i}".encode(), f"value {i}".encode()) for i in range(40)]
    values = [v for _, _, v in records[10:35]]
    data = b"".join(values)
    block = RecordBlock(topic, [k for _, k, _ in records[10:35]], data,
                        list(accumulate(len(v) for v in values)))
    assert block.records() == records[10:35]
    sink.write_batch([records[:10], [block], records[35:]])
    sink.snapshot()
    assert [(k, v) for k, v, _ in read_topic(settings, topic)] == [(k, v) for _, k, v in records]


def test_latency_is_observed_once_delivered_and_close_always_returns(
        make_settings: Callable[..., Settings]) -> None:
    """Each batch's input times are observed after its records are delivered; a close racing the
    watcher thread still ends it (200 closes right after a write)."""
    settings = make_settings()
    ensure_topics(settings.kafka, ["out"], 2)
    appended = np.array([1_000, 2_000, 3_000], dtype=np.int64)
    for _ in range(200):
        metrics = EngineMetrics(clock=lambda: 10_000)
        part = KafkaBatchSink(settings.kafka, metrics=metrics).build_part("out", SINK_PART.format(0), None)
        part.write_batch([[("out", b"k", b"v"), ("out", b"k2", b"v"), InputTimes(appended)]])
        closer = threading.Thread(target=part.close, daemon=True)
        closer.start()
        closer.join(timeout=30)
        assert not closer.is_alive(), "close() hung"
        assert metrics.value("journey_end_to_end_latency_seconds_count") == 3
        assert metrics.value("journey_end_to_end_latency_seconds_sum") == 9 + 8 + 7
        assert metrics.value("journey_output_messages_total", topic="out") == 2
