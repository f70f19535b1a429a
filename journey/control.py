"""Journey maps applied live: ``journey apply-map`` publishes them to the control topic, flows read it.

The control topic (``[topics] control``, one partition, compacted) holds one record per
map published, never deleted: the map's tables, its version (a short hash), who
published it and when. It is the audit trail of the maps applied, and it decides which
map a flow runs: starting from ``--config``'s, each map in the order published takes
over if a running flow can take it (``live_changes``), and is refused otherwise.

A flow at start reads the topic to its end and runs the map that leaves in force; one
worker then follows the topic (``ControlSource``) and hands each new map to every
shard, which take it over at the end of the same epoch.
"""

import getpass
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from config.errors import BrokerError, ConfigError
from config.model import CONTROL_CONFIG, JourneyMap, Settings, live_changes, map_document, parse_map
from journey.kafka_io import client_config, ensure_topics
from operators.metrics import EngineMetrics
from operators.routing import MapChange

log = logging.getLogger(__name__)

CONTROL_PART = "control"
"""The one partition of the control source (the control topic has one)."""
FOLLOW_EVERY = timedelta(seconds=1)
"""How often a running flow looks for a new map."""
RESTART_HINT = ("back-test it (`journey backtest --candidate FILE`), then restart the flow with it "
                "(`journey run --config FILE`)")


@dataclass(frozen=True)
class Published:
    """One record of the control topic, read and validated."""

    offset: int
    change: MapChange


def who() -> str:
    """Who publishes a map, for the audit trail: the user and the machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def encode(journey: JourneyMap, applied_by: str, applied_at: datetime) -> tuple[bytes, bytes]:
    """A control record: keyed by version and time, so compaction keeps every publication."""
    at = applied_at.astimezone(UTC).isoformat(timespec="milliseconds")
    value = {"version": journey.version, "applied_by": applied_by, "applied_at": at,
             "map": map_document(journey)}
    return f"{journey.version}@{at}".encode(), orjson.dumps(value)


def decode(topic: str, offset: int, value: bytes | None) -> MapChange:
    """A control record's map, validated as ``check-config`` validates a file (ConfigError otherwise)."""
    where = f"control topic {topic!r} offset {offset}"
    try:
        record: Any = orjson.loads(value or b"")
    except orjson.JSONDecodeError as err:
        msg = f"{where}: not JSON ({err}); publish maps with `journey apply-map FILE`"
        raise ConfigError(msg) from err
    if not isinstance(record, dict) or not isinstance(record.get("map"), dict):
        msg = f"{where}: not a control record (no map); publish maps with `journey apply-map FILE`"
        raise ConfigError(msg)
    journey = parse_map(where, record["map"])
    return MapChange(journey, str(record.get("applied_by", "unknown")), str(record.get("applied_at", "")))


def ensure_control_topic(settings: Settings) -> None:
    """Create the control topic if it is missing: one partition (one order of maps), compacted."""
    topic = settings.topics.control
    ensure_topics(settings.kafka, [topic], 1, replication=settings.topics.replication_factor,
                  configs={topic: CONTROL_CONFIG})


def read_published(settings: Settings,
                   timeout_s: float = 15.0) -> Iterator[tuple[int, Published | ConfigError]]:
    """Every record of the control topic in order: its offset, and its map or why it is no map."""
    topic = settings.topics.control
    consumer = Consumer(client_config(settings.kafka, **{
        "group.id": f"journey-control-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    try:
        while True:
            message = consumer.poll(0.5)
            if message is None:
                if datetime.now(UTC) > deadline:
                    msg = (f"reading the control topic {topic!r} at {settings.kafka.brokers} timed out "
                           f"after {timeout_s:.0f} s; check that the brokers answer, then run again")
                    raise BrokerError(msg)
                continue
            err = message.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return
                if err.fatal() or not err.retriable():
                    msg = f"reading the control topic {topic!r} failed: {err.str()}"
                    raise BrokerError(msg)
                continue
            offset = int(message.offset() or 0)
            try:
                yield offset, Published(offset, decode(topic, offset, message.value()))
            except ConfigError as problem:
                yield offset, problem
    finally:
        consumer.close()


@dataclass(frozen=True)
class InForce:
    """The map a flow starts with, and where it follows the control topic from."""

    journey: JourneyMap
    published: Published | None  # the record it comes from (None: --config's, nothing taken over)
    follow_from: int  # the offset the control source starts at
    latest: str | None  # the version of the last map the topic holds


def in_force(settings: Settings) -> InForce:
    """The map in force at start: ``--config``'s, then each published map a running flow could take.

    Records that hold no valid map are logged and left out; maps of another layout than
    ``--config``'s (published before a restart for such a change) are passed over. The
    control source starts at the record of the map in force, so that a process that read
    the topic before the others still ends up with the same map.
    """
    ensure_control_topic(settings)
    journey, taken, end, latest = settings.journey, None, 0, None
    for offset, item in read_published(settings):
        end = offset + 1
        if isinstance(item, ConfigError):
            log.warning("%s; it is left out", item)
            continue
        latest = item.change.journey.version
        changes = live_changes(journey, item.change.journey)
        if changes:
            log.debug("control topic offset %d: map %s does not fit --config's: %s", item.offset,
                      latest, "; ".join(changes))
            continue
        journey, taken = item.change.journey, item
    if taken is not None and journey.version != settings.journey.version:
        log.info("journey map %s from the control topic %r (applied by %s at %s) is in force, not "
                 "%s's %s; `journey apply-map FILE` changes it", journey.version, settings.topics.control,
                 taken.change.applied_by, taken.change.applied_at, settings.path, settings.journey.version)
    return InForce(journey, taken, end if taken is None else taken.offset, latest)


def publish(settings: Settings, journey: JourneyMap, applied_by: str, timeout_s: float = 30.0) -> int:
    """Publish ``journey`` to the control topic and wait until it is stored; its offset.

    Not idempotent (the broker's producer ids cost half a second here): a retry that
    stores the record twice stores the same map twice, which flows take as one.
    """
    key, value = encode(journey, applied_by, datetime.now(UTC))
    producer = Producer(client_config(settings.kafka))
    stored: list[int] = []
    failed: list[str] = []

    def delivered(err: KafkaError | None, message: Any) -> None:
        if err is None:
            stored.append(int(message.offset()))
        else:
            failed.append(err.str())

    producer.produce(settings.topics.control, value, key, partition=0, on_delivery=delivered)
    producer.flush(timeout_s)
    if failed or not stored:
        reason = failed[0] if failed else f"no answer in {timeout_s:.0f} s"
        msg = (f"publishing map {journey.version} to {settings.topics.control!r} at "
               f"{settings.kafka.brokers} failed: {reason}; nothing was applied, run again")
        raise BrokerError(msg)
    return stored[0]


def apply_map(settings: Settings, applied_by: str) -> str:
    """``journey apply-map``: publish ``settings``' map unless it is in force or cannot be taken live.

    Compares with the last map the control topic holds (what running flows run); says
    what it did.
    """
    ensure_control_topic(settings)
    last: Published | None = None
    for _offset, item in read_published(settings):
        if isinstance(item, Published):
            last = item
    new = settings.journey
    topic = settings.topics.control
    if last is not None:
        was = last.change
        if was.journey.version == new.version:
            return (f"map {new.version} is already the last on {topic!r} (applied by {was.applied_by} at "
                    f"{was.applied_at}): nothing published")
        changes = live_changes(was.journey, new)
        if changes:
            msg = (f"{settings.path}: a running flow cannot take this map: it changes "
                   f"{'; '.join(changes)} (from map {was.journey.version}); {RESTART_HINT}")
            raise ConfigError(msg)
    offset = publish(settings, new, applied_by)
    since = "" if last is None else f", after {last.change.journey.version}"
    return (f"published map {new.version} to {topic!r} at offset {offset}{since}: running flows take it "
            "over at the end of their current epoch (--snapshot-interval)")


class _ControlPartition(StatefulSourcePartition[MapChange, None]):
    """Follows the control topic: each map a running flow can take, refused ones logged and counted."""

    def __init__(self, settings: Settings, start: InForce, metrics: EngineMetrics,
                 stopping: threading.Event) -> None:
        self.topic = settings.topics.control
        self.stopping = stopping
        self.running = start.journey
        self.metrics = metrics
        self.consumer = Consumer(client_config(settings.kafka, **{
            "group.id": f"journey-control-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}))
        self.consumer.assign([TopicPartition(self.topic, 0, start.follow_from)])
        self.awake: datetime | None = None

    def next_batch(self) -> list[MapChange]:
        if self.stopping.is_set():  # the flow is stopping: it ends when every input has
            raise StopIteration
        out = []
        for message in self.consumer.consume(100, 0):
            err = message.error()
            if err is not None:
                if err.fatal():
                    msg = f"reading the control topic {self.topic!r} failed: {err.str()}"
                    raise BrokerError(msg)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("reading the control topic %r: %s (retrying)", self.topic, err.str())
                continue
            change = self._taken(int(message.offset() or 0), message.value())
            if change is not None:
                out.append(change)
        self.awake = None if out else datetime.now(UTC) + FOLLOW_EVERY
        return out

    def _taken(self, offset: int, value: bytes | None) -> MapChange | None:
        """The record's map if the flow can take it; else None, said in the log and counted."""
        try:
            change = decode(self.topic, offset, value)
        except ConfigError as problem:
            log.error("%s: refused, the flow runs on with map %s", problem, self.running.version)
            self.metrics.map_updates.labels("refused").inc()
            return None
        if change.journey.version == self.running.version:
            return None  # in force already: applying it again changes nothing
        changes = live_changes(self.running, change.journey)
        if changes:
            log.error("control topic %r offset %d: map %s (applied by %s) refused, the flow runs on "
                      "with map %s: it changes %s; %s", self.topic, offset, change.journey.version,
                      change.applied_by, self.running.version, "; ".join(changes), RESTART_HINT)
            self.metrics.map_updates.labels("refused").inc()
            return None
        self.running = change.journey
        return change

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> None:
        """Nothing: a flow starts following the topic where ``in_force`` says, resumed or not."""
        return None

    def close(self) -> None:
        """Leave the control topic (nothing to commit: the consumer has no group of its own)."""
        self.consumer.close()


class ControlSource(FixedPartitionedSource[MapChange, None]):
    """The control topic as the flow's second input: one partition, read by one worker.

    It ends when ``stopping`` is set (the event input's stop), so that a stopped flow ends.
    """

    def __init__(self, settings: Settings, start: InForce, metrics: EngineMetrics,
                 stopping: threading.Event) -> None:
        self.settings = settings
        self.start = start
        self.metrics = metrics
        self.stopping = stopping

    def list_parts(self) -> list[str]:
        """The one partition; Bytewax gives it to one worker of the cluster."""
        return [CONTROL_PART]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ControlPartition:
        """The reader of the control topic, from where the map in force was published."""
        return _ControlPartition(self.settings, self.start, self.metrics, self.stopping)

