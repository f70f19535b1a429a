"""Journey maps applied live: ``journey apply-map`` publishes them to the control topic, flows read it.

The control topic (``[topics] control``, one partition, compacted) holds one record per
map published, never deleted: the map's tables, its version (a short hash), who
published it, when, and whether ``apply-map`` did or a flow starting with its
``--config`` (``origin``). It is the audit trail of the maps applied, and it decides
which map flows run (``current``): the one the last flow started with, then each map
applied since that a running flow can take (``live_changes``); the others are refused.

A live flow at start reads the topic to its end: if its ``--config`` holds the map the
last flow started with, it runs the current map; if not (the first start, or the file
was edited since), the file's map is in force and the flow publishes it. One worker then
follows the topic (``ControlSource``) and hands each map to every shard, which take it
over at the end of the same epoch.
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
from confluent_kafka.admin import AdminClient, ConfigResource

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
                "(`journey run --config FILE`; with a new --recovery-dir if the state layout changes)")
RUN, APPLY = "run", "apply-map"
"""Who published a map: a flow as it started with its ``--config``, or ``journey apply-map``."""


@dataclass(frozen=True)
class Published:
    """One record of the control topic, read and validated."""

    offset: int
    change: MapChange
    origin: str  # RUN or APPLY (a record written by other means counts as APPLY)


def who() -> str:
    """Who publishes a map, for the audit trail: the user and the machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def encode(journey: JourneyMap, applied_by: str, applied_at: datetime, origin: str) -> tuple[bytes, bytes]:
    """A control record: keyed by version and time, so compaction keeps every publication.

    It holds the map and who/when/how, nothing of ``[kafka]`` or ``[topics]``.
    """
    at = applied_at.astimezone(UTC).isoformat(timespec="milliseconds")
    value = {"version": journey.version, "applied_by": applied_by, "applied_at": at, "origin": origin,
             "map": map_document(journey)}
    return f"{journey.version}@{at}".encode(), orjson.dumps(value)


def decode(topic: str, offset: int, value: bytes | None) -> Published:
    """A control record, its map validated as ``check-config`` validates a file (ConfigError otherwise).

    Whatever the record holds, the answer is a map or a ConfigError: a record that cannot
    be a map (written by hand, or by another tool) must never stop a flow.
    """
    where = f"control topic {topic!r} offset {offset}"
    hint = "publish maps with `journey apply-map FILE`"
    try:
        record: Any = orjson.loads(value or b"")
    except orjson.JSONDecodeError as err:
        msg = f"{where}: not JSON ({err}); {hint}"
        raise ConfigError(msg) from err
    if not isinstance(record, dict) or not isinstance(record.get("map"), dict):
        msg = f"{where}: not a control record (no map); {hint}"
        raise ConfigError(msg)
    try:
        journey = parse_map(where, record["map"])
        _ = journey.arrays, journey.frame, journey.version  # what the engine derives: now, not in a step
    except ConfigError:
        raise
    except Exception as err:  # values the file's loader cannot hold (a check-config file never has them)
        msg = f"{where}: not a journey map ({type(err).__name__}: {err}); {hint}"
        raise ConfigError(msg) from err
    change = MapChange(journey, str(record.get("applied_by", "unknown")), str(record.get("applied_at", "")))
    return Published(offset, change, RUN if record.get("origin") == RUN else APPLY)


def ensure_control_topic(settings: Settings) -> None:
    """Create the control topic if it is missing: one partition (one order of maps), compacted.

    One that exists is left as it is, but if it deletes by retention (created by hand, or
    by a broker's auto-creation), the maps' history would go: that is said.
    """
    topic = settings.topics.control
    if ensure_topics(settings.kafka, [topic], 1, replication=settings.topics.replication_factor,
                     configs={topic: CONTROL_CONFIG}):
        return
    admin = AdminClient(client_config(settings.kafka))
    try:
        (found,) = admin.describe_configs([ConfigResource("topic", topic)], request_timeout=10).values()
        entry = found.result(10).get("cleanup.policy")
    except Exception as err:  # a broker that does not describe topics: nothing to say
        log.debug("cannot read the settings of the control topic %r: %s", topic, err)
        return
    policy = "delete" if entry is None or entry.value is None else entry.value  # Kafka's default
    if "compact" not in policy:
        log.warning("the control topic %r has cleanup.policy=%s: retention will delete the maps published "
                    "to it, the audit trail and the map a restart runs with them; set cleanup.policy=compact "
                    "(kafka-configs --alter --entity-type topics --entity-name %s --add-config "
                    "cleanup.policy=compact)", topic, policy, topic)


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
            if datetime.now(UTC) > deadline:
                msg = (f"reading the control topic {topic!r} at {settings.kafka.brokers} did not reach "
                       f"its end in {timeout_s:.0f} s; check that the brokers answer, then run again")
                raise BrokerError(msg)
            message = consumer.poll(0.5)
            if message is None:
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
                yield offset, decode(topic, offset, message.value())
            except ConfigError as problem:
                yield offset, problem
    finally:
        consumer.close()


def current(published: list[Published]) -> Published | None:
    """The map running flows run: the one the last flow started with, then each applied since that fits.

    ``published``: the topic's valid records in order. Before any flow started (only
    ``apply-map`` records), the first stands for the start. A map that does not fit the
    one in force is refused by running flows and passed over here.
    """
    if not published:
        return None
    starts = [i for i, p in enumerate(published) if p.origin == RUN]
    first = starts[-1] if starts else 0
    taken = published[first]
    for p in published[first + 1:]:
        if not live_changes(taken.change.journey, p.change.journey):
            taken = p
    return taken


@dataclass(frozen=True)
class InForce:
    """The map a live flow starts with, and where it follows the control topic from."""

    journey: JourneyMap
    publish: bool  # --config's map is new to the topic: the flow publishes it as it starts
    follow_from: int  # the offset the control source starts at


def in_force(settings: Settings) -> InForce:
    """The map in force as a live flow starts, and where its control source starts reading.

    ``--config``'s map when it is not the one the last flow started with (a first start,
    or the file was edited since: the newest intent); otherwise ``current``, which holds
    every map applied live since. Records that hold no map are logged and left out.
    Reading resumes at the record of the map in force, so that a process that read the
    topic before another's start published still ends up with the others' map.
    """
    ensure_control_topic(settings)
    published: list[Published] = []
    end = 0
    for offset, item in read_published(settings):
        end = offset + 1
        if isinstance(item, ConfigError):
            log.warning("%s; it is left out", item)
        else:
            published.append(item)
    file = settings.journey
    starts = [p for p in published if p.origin == RUN]
    if not starts or starts[-1].change.journey.version != file.version:
        if published:
            log.info("journey map %s of %s is not the one the last flow started with: it is in force, and "
                     "published to %r as this flow starts", file.version, settings.path,
                     settings.topics.control)
        return InForce(file, publish=True, follow_from=end)
    now = current(published)
    assert now is not None  # a start was published
    if now.change.journey.version != file.version:
        log.info("journey map %s (applied by %s at %s) is in force: it was applied live after the last "
                 "flow started with %s's map %s; `journey apply-map FILE` changes it",
                 now.change.journey.version, now.change.applied_by, now.change.applied_at, settings.path,
                 file.version)
    return InForce(now.change.journey, publish=False, follow_from=now.offset)


def publish(settings: Settings, journey: JourneyMap, applied_by: str, origin: str,
            timeout_s: float = 30.0) -> int:
    """Publish ``journey`` to the control topic and wait until it is stored; its offset.

    Not idempotent (the broker's producer ids cost half a second here): a retry that
    stores the record twice stores the same map twice, which flows take as one.
    """
    key, value = encode(journey, applied_by, datetime.now(UTC), origin)
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

    Compares with the map running flows run (``current``); says what it did.
    """
    ensure_control_topic(settings)
    now = current([item for _offset, item in read_published(settings) if isinstance(item, Published)])
    new = settings.journey
    topic = settings.topics.control
    if now is not None:
        was = now.change
        if was.journey.version == new.version:
            return (f"map {new.version} is already in force on {topic!r} (applied by {was.applied_by} at "
                    f"{was.applied_at}): nothing published")
        changes = live_changes(was.journey, new)
        if changes:
            msg = (f"{settings.path}: a running flow cannot take this map: it changes "
                   f"{'; '.join(changes)} (from map {was.journey.version}); {RESTART_HINT}")
            raise ConfigError(msg)
    offset = publish(settings, new, applied_by, APPLY)
    since = "" if now is None else f", after {now.change.journey.version}"
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
        """The record's map if the flow can take it; else None, said in the log and counted.

        The map in force is handed on too (the first record read is its own): a shard
        that runs it already changes nothing, one of a process that started before it
        was published takes it over.
        """
        try:
            change = decode(self.topic, offset, value).change
        except ConfigError as problem:
            log.error("%s: refused, the flow runs on with map %s", problem, self.running.version)
            self.metrics.map_updates.labels("refused").inc()
            return None
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
        """Leave the control topic (nothing to commit: it is read from where ``in_force`` says)."""
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

