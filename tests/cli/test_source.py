"""The source: partitions of one worker share a consumer, and one that ends does not disturb the rest."""

import time
from collections.abc import Callable

import orjson
from bytewax.inputs import StatefulSourcePartition
from confluent_kafka import Producer

from config.model import Settings
from journey.kafka_io import PART_SEP, KafkaBatchSource, ensure_topics
from operators.metrics import EngineMetrics
from operators.reading import Readers, SourceRead


def send(settings: Settings, topic: str, partition: int, first: int, count: int) -> None:
    """``count`` valid events to ``topic[partition]``, event ids from ``first`` on."""
    producer = Producer({"bootstrap.servers": settings.kafka.brokers})
    now = int(time.time() * 1000)
    for i in range(first, first + count):
        event = {"event_id": f"e-{partition}-{i}", "customer_id": f"c-{i}", "ts": now + i,
                 "type": "page_view"}
        producer.produce(topic, orjson.dumps(event), f"c-{i}".encode(), partition=partition)
    assert producer.flush(10) == 0


def read_to_end(part: StatefulSourcePartition[SourceRead, int], deadline_s: float = 30.0) -> list[SourceRead]:
    """Every hand-over of a bounded partition until it ends (as Bytewax calls ``next_batch``)."""
    reads: list[SourceRead] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            reads += part.next_batch()
        except StopIteration:
            return reads
        time.sleep(0.005)
    msg = f"the partition did not end within {deadline_s:g} s"
    raise AssertionError(msg)


def test_a_partition_closed_first_does_not_stop_the_others(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(inputs=("clickstream",))
    (topic,) = settings.topics.inputs
    ensure_topics(settings.kafka, [topic], 2)
    send(settings, topic, 0, 0, 5)
    send(settings, topic, 1, 0, 5)
    source = KafkaBatchSource(settings.kafka, {topic: 2}, Readers(settings.journey, settings.topics),
                              bounded=True, metrics=EngineMetrics())
    first, second = (source.build_part("in", f"{topic}{PART_SEP}{p}", None) for p in (0, 1))
    assert sum(len(r.events) for r in read_to_end(first)) == 5
    (shared,) = source.consumers.values()  # the worker's one consumer
    first.close()  # as Bytewax does with a partition that ended; the consumer reads on for the other
    assert [(tp.topic, tp.partition) for tp in shared.consumer.assignment()] == [(topic, 1)]
    send(settings, topic, 0, 5, 5)  # more for the closed partition: not fetched, and no error
    time.sleep(1)
    assert sum(len(r.events) for r in read_to_end(second)) == 5
    second.close()
    assert not source.consumers  # the last partition closed its worker's consumer
