"""What the metrics say agrees with what the flow wrote, and their series do not grow with customers."""

import zlib
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from config.model import Settings
from journey.kafka_io import ensure_topics
from journey.runner import RunOptions, run
from journey.simulate import SimMessage, SimOptions, messages, produce
from operators.base import wall_clock_ms
from operators.metrics import (
    CONSUMER_LAG,
    CUSTOMERS,
    DUPLICATES,
    EVENTS,
    LATENCY,
    OUTPUT,
    READ_DELAY,
    REJECTED,
    TRANSITIONS,
    EngineMetrics,
)
from tests.broker_fixtures import read_json, read_topic

pytestmark = pytest.mark.slow


def bounded_run(settings: Settings, produced: list[SimMessage], workers: int = 1) -> EngineMetrics:
    produce(settings, produced, progress=None)
    metrics = EngineMetrics()
    run(settings, RunOptions(until_end=True, workers=workers), metrics)
    return metrics


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_agree_with_the_outputs_of_a_bounded_run(
        make_settings: Callable[..., Settings], workers: int) -> None:
    settings = make_settings()
    t = settings.topics
    produced = messages(settings, SimOptions(customers=500, events=20_000, seed=7, duplicates=0.03,
                                             out_of_order=0.05, late=0.01, malformed=0.02))
    m = bounded_run(settings, produced, workers)

    valid = sum(1 for p in produced if p.kind != "malformed")
    assert m.total(EVENTS.name) + m.total(DUPLICATES.name) == valid
    assert m.total(DUPLICATES.name) > 0
    firsts = Counter(p.topic for p in produced if p.kind == "event")
    assert {topic: m.total(EVENTS.name, topic=topic) for topic in t.inputs} == firsts

    dlq = Counter(r["reason"] for r in read_json(settings, t.dlq))
    assert dlq and {reason: m.value(REJECTED.name, reason=reason) for reason in dlq} == dlq
    assert m.total(REJECTED.name) == sum(dlq.values())

    transitions = Counter((r["from"] or "none", r["to"]) for r in read_json(settings, t.transitions))
    assert transitions
    for (before, after), n in transitions.items():
        assert m.value(TRANSITIONS.name, from_stage=before, to_stage=after) == n
    assert m.total(TRANSITIONS.name) == sum(transitions.values())

    for topic in t.outputs:
        assert m.value(OUTPUT.name, topic=topic) == len(read_topic(settings, topic)), topic

    final: dict[str, str] = {}
    for r in read_json(settings, t.transitions):  # each customer's in order on its partition
        final[r["customer_id"]] = r["to"]
    for stage, n in Counter(final.values()).items():
        assert m.value(CUSTOMERS.name, stage=stage) == n, stage
    assert m.total(CUSTOMERS.name) == len(final) == 500

    # every valid event's score was delivered, and its latency observed once, as was the
    # time until it was read (the first part of that latency)
    assert m.value(f"{LATENCY.name}_count") == valid
    assert m.value(f"{READ_DELAY.name}_count") == valid
    assert m.total(CONSUMER_LAG.name) == 0


def test_read_delay_is_each_messages_wait_from_its_kafka_timestamp_to_its_read(
        make_settings: Callable[..., Settings]) -> None:
    """Messages with known create times, read under a clock the test holds: the exact sum."""
    settings = make_settings()
    first = wall_clock_ms() - 600_000
    stamps = [first + 37 * i for i in range(300)]
    ensure_topics(settings.kafka, settings.topics.inputs, 4)
    producer = Producer({"bootstrap.servers": settings.kafka.brokers})
    failed: list[object] = []
    for i, ts in enumerate(stamps):
        event = {"event_id": f"e{i}", "customer_id": f"c{i % 40}", "ts": ts, "type": "page_view"}
        producer.produce(settings.topics.inputs[i % 2], orjson.dumps(event), f"c{i % 40}".encode(),
                         timestamp=ts, on_delivery=lambda err, _msg: err is None or failed.append(err))
    assert producer.flush(30) == 0 and not failed
    now = stamps[-1] + 5_000
    metrics = EngineMetrics(clock=lambda: now)
    run(settings, RunOptions(until_end=True), metrics)
    assert metrics.value(f"{READ_DELAY.name}_count") == len(stamps)
    assert metrics.value(f"{READ_DELAY.name}_sum") == pytest.approx(sum(now - t for t in stamps) / 1000)


def test_read_offsets_are_committed_to_the_consumer_group(make_settings: Callable[..., Settings]) -> None:
    """Lag tools see how far the flow read: the group's offsets are the ends of the input."""
    settings = make_settings()
    produced = messages(settings, SimOptions(customers=50, events=2_000, seed=3))
    bounded_run(settings, produced)
    consumer = Consumer({"bootstrap.servers": settings.kafka.brokers, "group.id": "journey-stream"})
    parts = [TopicPartition(topic, p) for topic in settings.topics.inputs for p in range(4)]
    committed = consumer.committed(parts, timeout=10)
    consumer.close()
    read: Counter[str] = Counter()
    for tp in committed:
        assert tp.error is None and tp.offset >= 0, tp
        read[tp.topic] += tp.offset  # the next offset to read: how many messages the partition had
    assert read == Counter(p.topic for p in produced)


def _series(m: EngineMetrics, topics: dict[str, str]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample's name and labels, topic names written as ``topics`` maps them."""
    return {(s.name, tuple(sorted((k, topics.get(v, v)) for k, v in s.labels.items())))
            for family in m.registry.collect() for s in family.samples if s.name.startswith("journey_")}


def test_series_do_not_grow_with_customers(make_settings: Callable[..., Settings]) -> None:
    """The same events spoken by 100 or by 10,000 customers: the same series, none per customer."""
    many = make_settings()
    produced = messages(many, SimOptions(customers=10_000, events=30_000, seed=11, malformed=0.01))
    few = make_settings()
    topic_of = dict(zip(many.topics.inputs, few.topics.inputs, strict=True))
    same_topic = {f: m for m, f in zip((*many.topics.inputs, *many.topics.outputs),
                                       (*few.topics.inputs, *few.topics.outputs), strict=True)}

    def as_one_of_100(p: SimMessage) -> SimMessage:
        if p.kind == "malformed" or p.value is None:
            return p._replace(topic=topic_of[p.topic])
        event = orjson.loads(p.value)
        cid = f"customer-{zlib.crc32(event['customer_id'].encode()) % 100}"
        return p._replace(topic=topic_of[p.topic], key=cid.encode(),
                          value=orjson.dumps({**event, "customer_id": cid}))

    remapped = [as_one_of_100(p) for p in produced]
    m_many = bounded_run(many, produced)
    m_few = bounded_run(few, remapped)

    def customers(msgs: list[SimMessage]) -> int:
        return len({p.key for p in msgs if p.kind != "malformed"})

    assert m_many.value("journey_customers_tracked") == customers(produced) > 5_000
    assert m_few.value("journey_customers_tracked") == customers(remapped) == 100
    a, b = _series(m_many, {}), _series(m_few, same_topic)
    assert a == b, (sorted(a - b)[:10], sorted(b - a)[:10])
    assert 100 < len(a) < 1_000  # the map and the topics: here 194
