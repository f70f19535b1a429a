"""Kafka around the dataflow: a source of whole batches, a sink that never loses a message.

The source keeps each partition's next offset in Bytewax's recovery snapshots (not
in consumer groups), so a restart resumes exactly where the last snapshot was taken.
The sink produces whole lists as they come and waits for every delivery at the end
of each epoch (Bytewax snapshots a sink partition before it commits the epoch): a
write that cannot be delivered raises there at the latest, which stops the flow
before the epoch that read its input is committed.
"""

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from config.errors import BrokerError, ConfigError, DeliveryError
from config.model import BROKER_DEFAULT_REPLICATION, KafkaSettings
from journey.redaction import keep_secret, redact
from operators.base import END, NO_TIME, EventBatch, InputTimes, Output, OutRecord, RecordBlock
from operators.metrics import EngineMetrics
from operators.reading import PartitionReader, Readers, SourceRead

log = logging.getLogger(__name__)


class _Once(logging.Filter):
    """Passes a line once a minute at most, numbers in it aside.

    librdkafka repeats a failed connect at every retry, and a refused commit fails again
    at every epoch.
    """

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text, now = re.sub(r"\d+", "#", record.getMessage()), time.monotonic()
        if now - self.last.get(text, -self.every_s) < self.every_s:
            return False
        if len(self.last) > 1_000:  # lines differ forever (counters in them): forget old ones
            self.last.clear()
        self.last[text] = now
        return True


kafka_log = logging.getLogger("journey.librdkafka")
kafka_log.addFilter(_Once())
commit_log = logging.getLogger("journey.consumer_group")
commit_log.addFilter(_Once())

PART_SEP = "#"
IDLE_POLL = timedelta(milliseconds=2)
"""How long a partition that had nothing to hand over waits before it is asked again."""
SETTLE_EVERY_S = 0.005
"""How often the sink's watcher serves delivery reports while batches wait for theirs."""


def client_config(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """Client config with librdkafka's own log lines routed to Python logging."""
    return kafka.client_config(logger=kafka_log, **extra)


def check_client_settings(kafka: KafkaSettings) -> None:
    """Refuse settings librdkafka refuses, naming the key, before any client is built for the flow.

    librdkafka names the property in some messages, the value in others ("Unsupported
    SASL mechanism: X"); failing both, the culprit is the key without which the settings
    pass. Secret values never reach the message.
    """
    config = client_config(kafka)
    error = _refusal(config)
    if error is None:
        return
    props = kafka.properties
    culprit = (next((k for k in props if f'"{k}"' in error or f'"{k}s"' in error), None)
               or next((k for k, v in props.items() if v and k not in kafka.secret_keys and v in error), None)
               or next((k for k in props if _refusal({c: v for c, v in config.items() if c != k}) is None),
                       None))
    keep_secret(kafka.properties[key] for key in kafka.secret_keys)
    error = redact(error)
    where = ("[kafka]" if culprit is None
             else f"[kafka.{'secrets' if culprit in kafka.secret_keys else 'properties'}] {culprit!r}")
    msg = (f"{where}: librdkafka refuses the client settings: {error}; see the settings librdkafka "
           "documents (CONFIGURATION.md of the librdkafka release confluent-kafka ships)")
    raise ConfigError(msg)


def _refusal(config: dict[str, Any]) -> str | None:
    """Why librdkafka refuses ``config``; None when it builds a client from it."""
    try:
        Producer(config)
    except KafkaException as err:
        return str(err.args[0].str())
    return None


def cluster_metadata(kafka: KafkaSettings, timeout_s: float = 10.0) -> ClusterMetadata:
    """Topic metadata, or a BrokerError that says which brokers did not answer."""
    admin = AdminClient(client_config(kafka))
    try:
        return admin.list_topics(timeout=timeout_s)
    except Exception as err:
        admin.poll(0)  # librdkafka's own log lines (why it could not connect) reach the log here
        msg = (f"cannot reach Kafka at {kafka.brokers} within {timeout_s:g} s ({err}); "
               "start a broker (`journey broker`) or pass --brokers")
        raise BrokerError(msg) from err


def partition_counts(metadata: ClusterMetadata, topics: Iterable[str]) -> dict[str, int]:
    """Partitions of each topic; a BrokerError lists the topics that do not exist."""
    missing = [t for t in topics if t not in metadata.topics or metadata.topics[t].error]
    if missing:
        msg = (f"input topic(s) {', '.join(missing)} do not exist; create them "
               "(`journey simulate` does) or set [topics].inputs in the config")
        raise BrokerError(msg)
    return {t: len(metadata.topics[t].partitions) for t in topics}


def ensure_topics(kafka: KafkaSettings, topics: Iterable[str], partitions: int,
                  metadata: ClusterMetadata | None = None, *, replication: int = BROKER_DEFAULT_REPLICATION,
                  configs: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the ones created.

    ``BROKER_DEFAULT_REPLICATION`` is the broker's ``default.replication.factor`` (a cluster with
    ``min.insync.replicas`` 2 refuses writes to topics of one replica); ``configs``
    holds each topic's settings (``cleanup.policy`` and the like).
    """
    metadata = metadata or cluster_metadata(kafka)
    wanted = [t for t in dict.fromkeys(topics) if t not in metadata.topics]
    if not wanted:
        return []
    configs = configs or {}
    admin = AdminClient(client_config(kafka))
    futures = admin.create_topics([NewTopic(t, partitions, replication, config=dict(configs.get(t, {})))
                                   for t in wanted], request_timeout=15)
    for topic, future in futures.items():
        try:
            future.result(timeout=15)
        except Exception as err:
            code = err.args[0].code() if err.args and hasattr(err.args[0], "code") else None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                msg = (f"cannot create topic {topic!r} at {kafka.brokers}: {err}; create it yourself, or "
                       "check the topic settings ([topics] replication_factor, [topics.config]) and "
                       "the permissions of the client")
                raise BrokerError(msg) from err
    return wanted


def misfit_offsets(kafka: KafkaSettings, offsets: Mapping[tuple[str, int], int],
                   partitions: Mapping[str, int], timeout_s: float = 10.0) -> list[str]:
    """The saved offsets that do not fit the topics as they are: why, partition by partition.

    An offset fits when its partition exists and its log reaches the offset. The quick
    proof is a fetch from the offset before it (the last message the store's run read)
    that returns a message. When none comes, the partition's range decides: Kafka
    answers an offset past the end (or deleted by retention) with an error, the
    embedded broker with silence, and its list-offsets answer under-reports the end,
    so only a range that the offset exceeds counts against it. An emptied broker,
    another cluster or a topic made anew shorter than the store read fail this, and
    resuming would skip input or read it twice. No answer at all is a BrokerError.
    """
    misfit = [f"{t}[{p}] does not exist" for t, p in offsets if p >= partitions.get(t, 0)]
    probe = {(t, p): o for (t, p), o in offsets.items() if o > 0 and p < partitions.get(t, 0)}
    if not probe:
        return misfit
    consumer = Consumer(client_config(kafka, **{
        "group.id": "journey-stream-resume-check", "enable.auto.commit": False,
        "auto.offset.reset": "error", "enable.partition.eof": True}))
    try:
        consumer.assign([TopicPartition(t, p, o - 1) for (t, p), o in probe.items()])
        waiting, undecided = dict(probe), {}
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            for m in consumer.consume(1_000, 0.2):
                key = (m.topic() or "", m.partition() or 0)
                err = m.error()
                if key in waiting and (err is None or err.code() != KafkaError._PARTITION_EOF):
                    offset = waiting.pop(key)  # a message: the log holds the one before the offset
                    if err is not None:  # out of range: the partition's range decides
                        undecided[key] = offset
        for (topic, partition), offset in {**waiting, **undecided}.items():
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            except KafkaException as err:
                msg = (f"cannot check the recovery store's offsets against {kafka.brokers}: no answer "
                       f"about {topic}[{partition}] ({err}); is the broker overloaded? Run again once "
                       "it answers")
                raise BrokerError(msg) from err
            if not low <= offset <= high:
                misfit.append(f"{topic}[{partition}] holds offsets {low} to {high}, not the saved {offset}")
    finally:
        consumer.close()
    return misfit


class StallWatch:
    """Says once when the brokers stop answering, and once when they answer again.

    A paused or overloaded broker keeps its connections open: clients only wait, the
    flow's output waits with them, and nothing else would tell the operator. A thread
    asks for the metadata of one topic every ``every_s``; no answer within ``after_s``
    is a stall. (Nothing is lost meanwhile: the flow's input does not advance past
    output that was not delivered.)
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, every_s: float = 1.0,
                 after_s: float = 5.0) -> None:
        self.kafka = kafka
        self.topic = topic
        self.every_s = every_s
        self.after_s = after_s
        self.admin = AdminClient(client_config(kafka))
        self.stalled_since: float | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="journey-stall-watch", daemon=True)

    def __enter__(self) -> "StallWatch":
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _watch(self) -> None:
        while not self.done.wait(self.every_s):
            asked = time.monotonic()
            try:
                self.admin.list_topics(self.topic, timeout=self.after_s)
            except KafkaException:
                if self.stalled_since is None:
                    self.stalled_since = asked
                    log.warning("Kafka at %s stalled: no answer within %g s; output waits for it, "
                                "nothing is lost", self.kafka.brokers, self.after_s)
                continue
            if self.stalled_since is not None:
                log.warning("Kafka at %s answers again after a stall of %.1f s", self.kafka.brokers,
                            time.monotonic() - self.stalled_since)
                self.stalled_since = None


CONSUMER_TUNING: dict[str, object] = {"fetch.wait.max.ms": 10, "group.id": "journey-stream"}
"""The source consumer's defaults that ``[kafka.properties]`` may override. At the head of
the log a fetch waits at most 10 ms for new messages (latency when caught up); behind it,
fetches come back full at once (batch size when behind). The group is where the read
offsets are committed for lag tools (``kafka-consumer-groups --describe --group``)."""


class _WorkerConsumer:
    """One consumer for every input partition one worker reads, not a client per partition.

    It fetches for all of them at once and queues what came for each, errors and
    end-of-partition events in their place; a partition whose queue is a batch long is
    paused until its reader has taken from it, so a partition held back by alignment does
    not fill memory while the others read on.
    """

    def __init__(self, kafka: KafkaSettings, batch_size: int) -> None:
        tuning = {k: v for k, v in CONSUMER_TUNING.items() if k not in kafka.properties}
        self.consumer = Consumer(client_config(
            kafka, **tuning, **{"enable.auto.commit": False, "enable.partition.eof": True,
                                "auto.offset.reset": "earliest", "on_commit": _committed}))
        self.batch_size = batch_size
        self.queues: dict[tuple[str, int], deque[Message]] = {}
        self.paused: set[tuple[str, int]] = set()
        self.to_commit: dict[tuple[str, int], int] = {}

    def add(self, topic: str, partition: int, start: int) -> None:
        """Read ``topic[partition]`` from offset ``start`` (or its beginning) on."""
        self.queues[topic, partition] = deque()
        self.consumer.incremental_assign([TopicPartition(topic, partition, start)])

    def take(self, topic: str, partition: int, room: int) -> list[Message]:
        """Up to ``room`` of the partition's messages, in order; fetches first when it has none."""
        key = (topic, partition)
        queue = self.queues[key]
        if not queue:
            self._fetch()
        out = [queue.popleft() for _ in range(min(room, len(queue)))]
        if key in self.paused and len(queue) < self.batch_size // 2:
            self.consumer.resume([TopicPartition(topic, partition)])
            self.paused.discard(key)
        return out

    def _send_commits(self, *, wait: bool = False) -> None:
        if not self.to_commit:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.to_commit.items()]
        self.to_commit = {}
        if not wait:  # ``_committed`` hears how it went
            self.consumer.commit(offsets=offsets, asynchronous=True)
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as err:
            _committed(err.args[0], offsets)

    def _fetch(self) -> None:
        self._send_commits()
        for m in self.consumer.consume(self.batch_size, 0):  # never blocks the worker
            queue = self.queues.get((m.topic() or "", m.partition() or 0))
            if queue is not None:
                queue.append(m)
                continue
            err = m.error()  # not about one of our partitions: about the client or the cluster
            if err is not None and (err.fatal() or not err.retriable()):
                msg = f"reading the input topics failed: {err.str()}"
                raise BrokerError(msg)
            if err is not None:
                log.warning("reading the input topics: %s (retrying)", err.str())
        full = [key for key, q in self.queues.items() if len(q) >= self.batch_size and key not in self.paused]
        if full:
            self.consumer.pause([TopicPartition(t, p) for t, p in full])
            self.paused.update(full)

    def log_range(self, topic: str, partition: int) -> tuple[int, int] | None:
        """The partition's first offset and its head, as of the last fetch response.

        No request is made; None until a response has come back.
        """
        low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        return None if high < 0 else (low, high)

    def commit(self, topic: str, partition: int, next_offset: int) -> None:
        """Tell the consumer group how far the flow has read, for lag tools only.

        Kept until the worker's next fetch, which sends every partition's in one request
        (Bytewax snapshots the partitions one by one). Recovery never reads these: a
        restart resumes from its snapshots.
        """
        if next_offset >= 0:
            self.to_commit[topic, partition] = next_offset

    def release(self, topic: str, partition: int) -> bool:
        """The partition is done with; True when it was the last, and the consumer is closed.

        Until then the consumer reads on for the others, no longer fetching this one: what
        is written to it after its end (a bounded run over a topic in use) is not read.
        """
        del self.queues[topic, partition]
        self.paused.discard((topic, partition))
        if self.queues:
            self.consumer.incremental_unassign([TopicPartition(topic, partition)])
            return False
        self._send_commits(wait=True)  # the last snapshot's offsets: no fetch comes after it
        self.consumer.close()
        return True


def _lag(log_range: tuple[int, int], offset: int) -> int:
    """Messages from ``offset`` (the start of the log before any was read) to the head."""
    low, high = log_range
    return high - (offset if offset >= 0 else low)


def _committed(err: KafkaError | None, _partitions: list[TopicPartition]) -> None:
    if err is not None:
        commit_log.warning("committing read offsets to the consumer group failed: %s (lag tools see "
                           "old offsets; recovery does not depend on them)", err.str())


class _SourcePartition(StatefulSourcePartition[SourceRead, int]):
    def __init__(self, source: "KafkaBatchSource", shared: _WorkerConsumer, topic: str, partition: int,
                 start: int, reader: PartitionReader) -> None:
        self.source = source
        self.shared = shared
        self.topic = topic
        self.partition = partition
        self.next_offset = start
        self.bounded = source.bounded
        self.batch_size = source.batch_size
        self.reader = reader
        self.at_end = False
        self.done = False
        self.awake: datetime | None = None
        self.lag_gauge = source.metrics.consumer_lag.labels(topic, str(partition))
        shared.add(topic, partition, start)

    def next_batch(self) -> list[SourceRead]:
        if self.done:
            raise StopIteration
        if self.source.stopping.is_set():  # a stop: what was handed over is all this run reads
            self.done = True
            raise StopIteration
        reader = self.reader
        room = self.batch_size - reader.buffered
        if room > 0 and not self.at_end:
            # read on while held back too: the others align on how far this one has read
            read = self.shared.take(self.topic, self.partition, room)
            messages = [m for m in read if m.error() is None]
            if len(messages) < len(read):
                self._read_errors(err for m in read if (err := m.error()) is not None)
            if messages:
                self.next_offset = int(messages[-1].offset() or 0) + 1  # a consumed message has one
                if self.source.times is not None:  # read, but maybe none to hand over
                    messages = self._in_range(messages, *self.source.times)
                if messages:
                    self._observe_read_delay(reader.add(messages))
            else:
                reader.drained()
        known = self.shared.log_range(self.topic, self.partition)
        if known is not None and not self.bounded and room > 0 and not self.at_end:
            reader.behind_by(_lag(known, self.next_offset))  # a bounded run replays: always aligned
        out = [r for r in (reader.take(),) if r is not None]
        if known is not None:  # not handed over yet, held back here or not read at all
            self.lag_gauge.set(_lag(known, self._position()))
        if self.at_end and not reader.pending:
            self.done = True
            out.append(reader.finish())
        if out:
            self.source.show_watermark()
            self.awake = None
        else:  # nothing new (caught up, or held back by alignment): let the worker do other work
            self.awake = datetime.now(UTC) + IDLE_POLL
        return out

    def _in_range(self, messages: list[Message], low: int, high: int) -> list[Message]:
        """The messages whose Kafka timestamp is in [low, high]; past ``high`` the partition ends.

        Timestamps grow along a partition (as Kafka's offsets for times assume), so a
        bounded read stops there instead of chasing what is produced meanwhile.
        """
        kept = [m for m in messages if low <= m.timestamp()[1] <= high]
        if self.bounded and messages[-1].timestamp()[1] > high:
            self.at_end = True
        return kept

    def _observe_read_delay(self, events: EventBatch) -> None:
        """How long the events just parsed waited from their Kafka timestamps until the flow took them.

        Beside the end-to-end latency, which starts at the same ``appended`` times, it says
        whether time goes before the engine has an event (producers, broker, fetch, the
        consumer's queue) or after. A producer clock ahead of ours counts as 0.
        """
        metrics = self.source.metrics
        metrics.read_delay.observe(np.maximum(metrics.clock() - events.appended, 0) / 1000)

    def next_awake(self) -> datetime | None:
        return self.awake

    def _read_errors(self, errors: Iterable[KafkaError]) -> None:
        for err in errors:
            if err.code() == KafkaError._PARTITION_EOF:
                self.at_end = self.bounded
            elif err.fatal() or not err.retriable():
                msg = f"reading {self.topic}[{self.partition}] failed: {err.str()}"
                raise BrokerError(msg)
            else:
                log.warning("reading %s[%d]: %s (retrying)", self.topic, self.partition, err.str())

    def _position(self) -> int:
        """The offset of the first message not handed over to the flow yet."""
        pending = self.reader.pending_offset()
        return self.next_offset if pending is None else pending

    def snapshot(self) -> int:
        offset = self._position()
        self.shared.commit(self.topic, self.partition, offset)
        return offset

    def close(self) -> None:
        self.source.release(self.shared, self.topic, self.partition)


class KafkaBatchSource(FixedPartitionedSource[SourceRead, int]):
    """Every partition of the input topics, read in batches of up to ``batch_size`` messages.

    Each partition's reader (from ``readers``) parses, aligns and classifies what was
    read; ``bounded`` stops each partition at its end (``--until-end``). ``starts`` and
    ``times`` serve a back-test over a time range: where each partition is first read
    (else its beginning), and the Kafka timestamps a message must have to count.
    """

    def __init__(self, kafka: KafkaSettings, partitions: dict[str, int], readers: Readers, *,
                 bounded: bool, metrics: EngineMetrics, batch_size: int = 10_000,
                 starts: Mapping[str, int] | None = None, times: tuple[int, int] | None = None) -> None:
        self.stopping = threading.Event()  # set by a stop: every partition ends, the flow drains
        self.kafka = kafka
        self.partitions = partitions
        self.readers = readers
        self.metrics = metrics
        self.watermark = NO_TIME
        metrics.watermark_lag.set_function(self.watermark_lag_s)
        self.bounded = bounded
        self.batch_size = batch_size
        self.consumers: dict[int, _WorkerConsumer] = {}  # by worker thread
        self.starts = starts or {}  # where a fresh start reads each partition from (else its beginning)
        self.times = times  # only messages whose Kafka timestamp is in [low, high] (a back-test's range)

    def list_parts(self) -> list[str]:
        """Every partition of every input topic; Bytewax assigns each to one worker."""
        return [f"{t}{PART_SEP}{p}" for t, n in self.partitions.items() for p in range(n)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _SourcePartition:
        """Open one partition at its snapshotted offset, or at the beginning on a fresh start.

        Bytewax builds a worker's partitions on that worker's thread: they share its one
        consumer.
        """
        topic, _, partition = for_part.rpartition(PART_SEP)
        start = self.starts.get(for_part, OFFSET_BEGINNING) if resume_state is None else resume_state
        worker = threading.get_ident()
        shared = self.consumers.get(worker)
        if shared is None:
            shared = self.consumers[worker] = _WorkerConsumer(self.kafka, self.batch_size)
        return _SourcePartition(self, shared, topic, int(partition), start,
                                self.readers.reader(for_part, topic))

    def show_watermark(self) -> None:
        """Note the watermark after a hand-over (it moves only then)."""
        self.watermark = self.readers.watermark()

    def watermark_lag_s(self) -> float:
        """``journey_watermark_lag_seconds``, as of the scrape.

        A process that stops moving its watermark shows a lag that grows with the wall
        clock. 0 before there is a watermark and after the input ended.
        """
        if self.watermark in (NO_TIME, END):
            return 0.0
        return max(0, self.metrics.clock() - self.watermark) / 1000

    def release(self, shared: _WorkerConsumer, topic: str, partition: int) -> None:
        """A partition closed; its worker's consumer closes with the last one."""
        if shared.release(topic, partition):
            self.consumers = {w: c for w, c in self.consumers.items() if c is not shared}


class SinkPartition(StatefulSinkPartition[Sequence[Output], None]):
    """The process's producer: writes as records come, waits for every delivery at the end of an epoch.

    End-to-end latency is observed when the records that answer a batch of input have been
    delivered, or nearly: a batch counts as delivered once the producer has delivered as
    many messages as it had been given up to the batch's last (it reads low when one output
    partition is much slower than the others). A watcher thread looks every
    ``SETTLE_EVERY_S``, so a quiet moment does not hold an observation back.
    """

    def __init__(self, config: dict[str, object], delivery_timeout_s: float, metrics: EngineMetrics) -> None:
        # one delivery callback for the producer, not an object per message
        self.producer = Producer({**config, "on_delivery": self._on_delivery})
        self.delivery_timeout_s = delivery_timeout_s
        self.metrics = metrics
        self.failed: list[tuple[OutRecord, Any]] = []
        self.failing = threading.Lock()  # reports come on the worker's polls and the watcher's
        self.produced = 0
        self.outputs: dict[str, Any] = {}  # topic -> its counter
        self.awaiting: deque[_Awaited] = deque()
        self.settling = threading.Lock()
        self.wake = threading.Event()
        self.closing = False
        self.watcher = threading.Thread(target=self._watch, name="journey-deliveries", daemon=True)
        self.watcher.start()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            with self.failing:
                self.failed.append(((msg.topic(), msg.key(), msg.value()), err))
            self.metrics.delivery_errors.inc()

    def _produce(self, records: Iterable[Output]) -> dict[str, int]:
        """Produce ``records``; how many went to each topic."""
        produce = self.producer.produce
        counts: dict[str, int] = {}
        for record in records:
            if isinstance(record, InputTimes):
                self.awaiting.append(_Awaited(self.produced, record.appended))
                self.wake.set()
                continue
            if isinstance(record, RecordBlock):
                self._produce_block(record)
                counts[record.topic] = counts.get(record.topic, 0) + len(record.keys)
                self.produced += len(record.keys)
                continue
            topic, key, value = record
            try:
                produce(topic, value, key)
            except BufferError:
                self._produce_when_room(topic, value, key)
            counts[topic] = counts.get(topic, 0) + 1
            self.produced += 1
        return counts

    def _produce_block(self, block: RecordBlock) -> None:
        """Each record of the block, cut from its data here (nothing per record before)."""
        produce, topic, data, start = self.producer.produce, block.topic, block.data, 0
        for key, end in zip(block.keys, block.ends, strict=True):
            try:
                produce(topic, data[start:end], key)
            except BufferError:
                self._produce_when_room(topic, data[start:end], key)
            start = end

    def _produce_when_room(self, topic: str, value: bytes, key: bytes | None) -> None:
        while True:  # the local queue is full: let deliveries drain
            self.producer.poll(0.05)
            try:
                self.producer.produce(topic, value, key)
                return
            except BufferError:
                continue

    def write_batch(self, values: list[Sequence[Output]]) -> None:
        """Produce without waiting; failures reported so far end the flow here already."""
        for records in values:
            for topic, n in self._produce(records).items():
                counter = self.outputs.get(topic)
                if counter is None:
                    counter = self.outputs[topic] = self.metrics.output.labels(topic)
                counter.inc(n)
        self.producer.poll(0)
        if self.failed:
            self._wait_for_deliveries()

    def _watch(self) -> None:
        """Observe latency as deliveries come in, while there are batches waiting for theirs.

        It looks every ``SETTLE_EVERY_S`` (the resolution of the latency observed), not at
        every delivery report: in a replay those come without pause, and a thread woken by
        each would take the interpreter from the worker as often.
        """
        while True:
            self.wake.wait()
            if self.closing:
                return
            time.sleep(SETTLE_EVERY_S)
            self.producer.poll(0)
            self._settle()
            if not self.awaiting:
                self.wake.clear()
                if self.awaiting or self.closing:  # set between the check and the clear: not lost
                    self.wake.set()

    def _settle(self) -> None:
        """Observe the latency of every waiting batch whose records have been delivered."""
        with self.settling:
            delivered = self.produced - len(self.producer)
            done = []
            while self.awaiting and self.awaiting[0].produced <= delivered:
                done.append(self.awaiting.popleft().appended)
        if done:
            now_ms = self.metrics.clock()
            appended = np.concatenate(done)
            self.metrics.latency.observe(np.maximum(now_ms - appended, 0) / 1000)

    def snapshot(self) -> None:
        """End of an epoch: every message written in it is delivered before Bytewax commits it."""
        self._wait_for_deliveries()

    def _wait_for_deliveries(self) -> None:
        deadline = time.monotonic() + self.delivery_timeout_s
        while True:
            left = self.producer.flush(max(0.1, deadline - time.monotonic()))
            with self.failing:
                failed, self.failed = self.failed, []
            if left == 0 and not failed:
                self._settle()
                return
            fatal = [err for _, err in failed if err.fatal() or not err.retriable()]
            if fatal or time.monotonic() >= deadline:
                first = fatal[0] if fatal else (failed[0][1] if failed else "no delivery report")
                count = len(failed) + left
                msg = (f"{count} output message(s) not delivered within "
                       f"{self.delivery_timeout_s:g} s: {first}; stopping before input advances")
                raise DeliveryError(msg)
            log.warning("re-sending %d output message(s) after: %s", len(failed), failed[0][1])
            self._produce(record for record, _ in failed)

    def close(self) -> None:
        """The flow ended: deliver what is left."""
        try:
            self._wait_for_deliveries()
        finally:
            self.stop_watching()

    def stop_watching(self) -> None:
        """End the watcher thread (it holds no output of its own)."""
        self.closing = True
        self.wake.set()
        self.watcher.join()


@dataclass(frozen=True)
class _Awaited:
    """Input times of a batch, waiting until the producer has delivered ``produced`` messages."""

    produced: int
    appended: npt.NDArray[np.int64]


PRODUCER_TUNING: dict[str, object] = {"linger.ms": 5, "queue.buffering.max.messages": 500_000}
"""The sink's producer defaults that ``[kafka.properties]`` may override (the partitioner,
acks and delivery reports it sets are part of what the outputs promise)."""

SINK_PART = "process-{:05d}"
"""This process's one output partition: output is produced by the process that made it."""


class KafkaBatchSink(FixedPartitionedSink[Sequence[Output], None]):
    """Produces lists of records and record blocks; keys partition with murmur2 like JVM clients.

    One partition (a producer) per process, listed only by that process, and items keyed
    with ``local_part`` go to it: nothing crosses processes on its way out. Bytewax
    snapshots a partition at the end of every epoch it wrote in, and that is where the
    sink waits for its deliveries, not after every write.
    """

    def __init__(self, kafka: KafkaSettings, *, metrics: EngineMetrics, process: int = 0,
                 delivery_timeout_s: float = 120.0) -> None:
        self.kafka = kafka
        self.metrics = metrics
        self.local_part = SINK_PART.format(process)
        self.delivery_timeout_s = delivery_timeout_s
        self.built: list[SinkPartition] = []

    def list_parts(self) -> list[str]:
        """Only this process's partition (every worker of the process lists it)."""
        return [self.local_part]

    def part_fn(self, item_key: str) -> int:
        """The process number: Bytewax indexes the sorted partitions of all processes with it."""
        return int(item_key.rpartition("-")[2])

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> SinkPartition:
        """One producer for the process.

        Only failed deliveries are reported (a Python callback per delivered message cost
        more than producing it); ``flush`` still waits until every message is delivered
        or has failed, and a failure's report reaches ``_on_delivery``.
        """
        tuning = {k: v for k, v in PRODUCER_TUNING.items() if k not in self.kafka.properties}
        part = SinkPartition(client_config(
            self.kafka, **tuning,
            **{"partitioner": "murmur2_random", "acks": "all", "delivery.report.only.error": True},
        ), self.delivery_timeout_s, self.metrics)
        self.built.append(part)
        return part

    def deliver_rest(self, timeout_s: float) -> None:
        """After a stop (Ctrl-C): deliver what was produced but not yet waited for.

        Bytewax does not close sink partitions when it is interrupted; their producers
        may still hold the last milliseconds of output. What is left after ``timeout_s``
        is logged (a recovery store produces it again on restart).
        """
        left = sum(part.producer.flush(timeout_s) for part in self.built)
        for part in self.built:
            part.stop_watching()
        if left:
            log.warning("%d output message(s) not delivered at stop; a run from a recovery "
                        "store produces them again", left)
