"""End-to-end throughput: Kafka in → scores out, ours against the per-event baseline, in one run.

    python -m benchmarks.bench_e2e [--events N] [--customers C] [--runs R] [--days D] [--padded]

Produces N simulated events to the embedded broker once, then alternates runs of
``journey run --until-end``'s dataflow with windows (sessions, channel and funnel
metrics), the same without windows (``--no-windows``), and the scoring job done per
event in plain Python on Bytewax (stock KafkaSource → stateful_map with dict state →
stock KafkaSink). Each run is timed from its first consumed message until its last output
was delivered (process start-up, consumer creation and compilation are not counted);
it writes to fresh output topics. Prints events/s per run, the medians, the ratio
to the baseline and what windows cost. The machine is shared: trust the ratio more than the absolutes.

``--padded`` adds a fourth flow: ``--no-windows`` whose sink also produces as many
constant messages as windows add (counted in the first runs), which tells how much of
what windows cost is producing their records at all.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

import orjson
from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.run import cli_main
from confluent_kafka import Message

from config.model import DEFAULT_PATH, OUTPUT_ROLES, Settings, Topics, load_settings
from flows.journey_flow import build_flow
from journey.broker import EmbeddedBroker
from journey.kafka_io import (
    KafkaBatchSink,
    KafkaBatchSource,
    SinkPartition,
    cluster_metadata,
    ensure_topics,
    partition_counts,
)
from journey.runner import settle_heap
from journey.simulate import SimOptions, messages, produce
from operators.base import InputTimes, Output, RecordBlock
from operators.events import EventParser, Rejected
from operators.metrics import EngineMetrics
from operators.raw_records import dead_letter
from operators.reading import Readers, SourceRead
from operators.shard import warm_up
from tests.reference import Customer, apply_event, score_record

X = TypeVar("X")
S = TypeVar("S")


def outputs(settings: Settings, tag: str) -> Settings:
    t = settings.topics
    names: dict[str, Any] = {name: f"{tag}.{getattr(t, name)}" for name in
                             OUTPUT_ROLES}
    topics = replace(t, **names)
    ensure_topics(settings.kafka, topics.outputs, 4)
    return replace(settings, topics=topics)


def _carries_messages(item: object) -> bool:
    """A consumed message (baseline) or a hand-over with events or dead letters (ours)."""
    if isinstance(item, SourceRead):
        return bool(len(item.events) or item.dead_letters)
    return True


class FirstRead(FixedPartitionedSource[X, S]):
    """A source that notes when any of its partitions first handed over a consumed message."""

    def __init__(self, inner: FixedPartitionedSource[X, S]) -> None:
        self.inner = inner
        self.at: float | None = None

    def list_parts(self) -> list[str]:
        """The inner source's partitions."""
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: S | None
                   ) -> StatefulSourcePartition[X, S]:
        """The inner partition, its ``next_batch`` wrapped to note the first read."""
        part = self.inner.build_part(step_id, for_part, resume_state)
        next_batch = part.next_batch

        def timed_next_batch() -> list[X]:
            batch = list(next_batch())
            if self.at is None and any(_carries_messages(item) for item in batch):
                self.at = time.perf_counter()
            return batch

        part.next_batch = timed_next_batch  # type: ignore[method-assign]
        return part


def ours(settings: Settings, *, windows: bool, sink: KafkaBatchSink | None = None
         ) -> tuple[Dataflow, FirstRead[Any, Any]]:
    partitions = partition_counts(cluster_metadata(settings.kafka), settings.topics.inputs)
    metrics = EngineMetrics()
    readers = Readers(settings.journey, settings.topics)
    source = FirstRead(KafkaBatchSource(settings.kafka, partitions, readers, bounded=True, metrics=metrics))
    flow = build_flow(settings, source, len(source.list_parts()),
                      sink or KafkaBatchSink(settings.kafka, metrics=metrics),
                      metrics=metrics, windows=windows, recoverable=False)
    return flow, source


PADDING = orjson.dumps({"customer_id": "customer-000123", "session_start": 1_700_000_000_000,
                        "session_end": 1_700_000_060_000, "duration_ms": 60_000, "events": 3,
                        "channels": {"web": 2, "email": 1}, "converted": False,
                        "stage_end": "consideration"})
"""A constant message about the size of a session or channel record."""


class CountingSink(KafkaBatchSink):
    """Our sink, counting the messages it writes.

    With ``ratio`` > 0 it also produces ``ratio`` times as many constant messages to
    ``pad_topic``: what producing that much more output costs, with nothing computed for it.
    """

    def __init__(self, settings: Settings, ratio: float = 0.0) -> None:
        super().__init__(settings.kafka, metrics=EngineMetrics())
        self.pad_topic = f"{settings.topics.scores}.padding"
        self.ratio = ratio
        self.written = 0
        self.padded = 0
        if ratio:
            ensure_topics(settings.kafka, [self.pad_topic], 4)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> SinkPartition:
        """The partition, its ``write_batch`` wrapped to count and pad."""
        part = super().build_part(step_id, for_part, resume_state)
        write_batch = part.write_batch

        def counted(values: list[Sequence[Output]]) -> None:
            self.written += sum(len(r.keys) if isinstance(r, RecordBlock)
                                else int(not isinstance(r, InputTimes))
                                for records in values for r in records)
            n = round(self.written * self.ratio) - self.padded
            if n > 0:
                self.padded += n
                values = [*values, [RecordBlock(self.pad_topic, [b"padding"] * n, PADDING * n,
                                                list(range(len(PADDING), (n + 1) * len(PADDING),
                                                           len(PADDING))))]]
            write_batch(values)

        part.write_batch = counted  # type: ignore[method-assign]
        return part


def baseline(settings: Settings) -> tuple[Dataflow, FirstRead[Any, Any]]:
    """The same job per event: validate, de-duplicate, score, one score message per event."""
    j, topics = settings.journey, settings.topics
    parser = EventParser(j, topics.dlq)
    type_names = list(j.touchpoints)
    channel_names = ["", *j.channels]

    def parse(msg: Any) -> tuple[str, Any]:  # (customer_id, event) or ("", a dead letter)
        try:
            cid, eid, t, tp, ch, sent = parser.validate(msg.value, parser.clock() + j.max_future_ms)
        except Rejected as rej:
            raw = Message(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key,
                          value=msg.value)
            topic, key, value = dead_letter(topics.dlq, raw, rej.reason, rej.detail)
            return ("", KafkaSinkMessage(key, value, topic=topic))
        return (cid, {"customer_id": cid, "event_id": eid, "ts": t, "type": type_names[tp],
                      "channel": channel_names[ch], "sentiment": None if sent != sent else sent})

    def score(customer: Customer | None, item: Any
              ) -> tuple[Customer | None, list[KafkaSinkMessage[bytes, bytes]]]:
        if isinstance(item, KafkaSinkMessage):
            return customer, [item]
        c = customer or Customer(E={s: 0.0 for s in j.stage_names})
        before = c.stage
        if not apply_event(j, c, item):
            return c, []
        cid = item["customer_id"]
        out = [KafkaSinkMessage(cid.encode(), orjson.dumps(score_record(j, cid, c)),
                                topic=topics.scores)]
        if c.stage != before:
            out.append(KafkaSinkMessage(cid.encode(), orjson.dumps(
                {"customer_id": cid, "from": before, "to": c.stage, "ts": item["ts"],
                 "event_id": item["event_id"], "version": c.n}), topic=topics.transitions))
        return c, out

    flow = Dataflow("baseline")
    source = FirstRead(KafkaSource([settings.kafka.brokers], list(topics.inputs), tail=False))
    msgs = op.input("in", flow, source)
    keyed = op.map("parse", msgs, parse)
    scored = op.stateful_map("score", keyed, score)
    flat = op.flat_map("flatten", scored, lambda kv: kv[1])
    op.output("out", flat, KafkaSink([settings.kafka.brokers], topic=None,
                                     add_config={"partitioner": "murmur2_random"}))
    return flow, source


def timed(flow_and_source: tuple[Dataflow, FirstRead[Any, Any]]) -> float:
    """Seconds from the first consumed message until the flow ends (its sink flushed on close)."""
    flow, source = flow_and_source
    cli_main(flow, workers_per_process=1, epoch_interval=timedelta(seconds=10))
    assert source.at is not None, "the flow read nothing"
    return time.perf_counter() - source.at


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--days", type=float, default=30.0,
                   help="event-time span of the history (denser history: fewer, fuller windows)")
    p.add_argument("--padded", action="store_true",
                   help="also run --no-windows producing as many messages as windows add")
    args = p.parse_args()
    with EmbeddedBroker() as broker:
        base = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
        base = replace(base, topics=Topics(inputs=("bench.clickstream", "bench.touchpoints")))
        produced = messages(base, SimOptions(customers=args.customers, events=args.events,
                                             seed=42, duplicates=0.01, malformed=0.001,
                                             span_ms=round(args.days * 86_400_000)))
        produce(base, produced, progress=sys.stderr)
        n = len(produced)
        warm_up(base.journey, base.topics)
        settle_heap()  # as `journey run` does after warming up
        names = ["windows", "no-windows", "baseline"] + (["padded"] if args.padded else [])
        rates: dict[str, list[float]] = {name: [] for name in names}
        written: dict[str, int] = {}  # messages out, of the first run with and without windows
        for run in range(args.runs):
            for name in names:
                settings = outputs(base, f"bench-{run}-{name}")
                if name == "baseline":
                    seconds = timed(baseline(settings))
                else:
                    ratio = written["windows"] / written["no-windows"] - 1 if name == "padded" else 0.0
                    sink = CountingSink(settings, ratio)
                    seconds = timed(ours(settings, windows=name == "windows", sink=sink))
                    written.setdefault(name, sink.written + sink.padded)
                rates[name].append(n / seconds)
                print(f"run {run + 1} {name:>10}: {n:,} messages in {seconds:6.2f} s = "
                      f"{n / seconds:>9,.0f} events/s", flush=True)
        median = {name: statistics.median(r) for name, r in rates.items()}
        for name, rate in median.items():
            print(f"median {name:>10}: {rate:>9,.0f} events/s")
        print(f"ratio windows / baseline    : {median['windows'] / median['baseline']:.1f}x")
        print(f"ratio no-windows / baseline : {median['no-windows'] / median['baseline']:.1f}x")
        print(f"cost of windows             : {1 - median['windows'] / median['no-windows']:.0%}")
        if args.padded:
            print(f"messages out                : {written['windows']:,} with windows, "
                  f"{written['no-windows']:,} without, {written['padded']:,} padded")
            print(f"cost of producing as many   : {1 - median['padded'] / median['no-windows']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
