"""``journey backtest``: what a candidate journey map would have made of the input topics' history.

Both maps run the engine ``journey run`` runs (the same steps, parse, kernels and
windows) over the history in one bounded replay: the history is read and parsed once,
and each batch is scored under both maps, side by side. Their records are collected in
memory instead of produced: nothing is written to any topic, and the read offsets go to
a consumer group of the back-test's own. The two outcomes are then compared customer by
customer.
"""

import itertools
import logging
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import orjson
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from bytewax.run import cli_main
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from config.errors import BrokerError, JourneyError
from config.model import (
    BEFORE_ENTRY,
    DORMANT,
    OTHER_CHANNEL,
    OUTPUT_ROLES,
    JourneyMap,
    KafkaSettings,
    Settings,
)
from flows.journey_flow import build_comparison_flow
from journey.kafka_io import PART_SEP, KafkaBatchSource, client_config, cluster_metadata, partition_counts
from journey.runner import compile_kernels, find_cause
from operators.base import Output, each_record, wall_clock_ms
from operators.metrics import EngineMetrics
from operators.reading import Readers

log = logging.getLogger(__name__)

EXAMPLES = 5
"""Customer ids shown for each (baseline stage -> candidate stage) difference."""


@dataclass
class Outcome:
    """What one map made of the history: final stage and sentiment per customer, and the counts."""

    stage: dict[str, str] = field(default_factory=dict)
    sentiment: dict[str, float | None] = field(default_factory=dict)
    version: dict[str, int] = field(default_factory=dict)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    sessions: int = 0
    converted_sessions: int = 0
    dead_letters: int = 0

    def take(self, role: str, value: bytes) -> None:
        """One output record of the replay (its topic's role in ``[topics]``)."""
        if role == "transitions":
            rec = orjson.loads(value)
            self.transitions[rec["from"] or BEFORE_ENTRY, rec["to"]] += 1
            # the last in output order: one worker replays, so a customer's records come in order
            self.stage[rec["customer_id"]] = rec["to"]
        elif role == "scores":
            rec = orjson.loads(value)
            cid = rec["customer_id"]
            if rec["events"] >= self.version.get(cid, 0):
                self.version[cid] = rec["events"]
                self.sentiment[cid] = rec["sentiment"]
        elif role == "sessions":
            self.sessions += 1
            self.converted_sessions += orjson.loads(value)["converted"]
        elif role == "dlq":
            self.dead_letters += 1

    def summary(self, stages: Sequence[str], own: Sequence[str]) -> dict[str, Any]:
        """The figures of the report for this map.

        Populations over ``stages`` (both maps', then dormant), so the two sides line up;
        conversion from each of the map's ``own`` stages to its next, in journey order.
        """
        names = [*stages, DORMANT]
        population = Counter(self.stage.values())
        arrivals: Counter[str] = Counter()
        for (_from, to), n in self.transitions.items():
            arrivals[to] += n
        mean: dict[str, float | None] = {}
        for s in names:
            known = [v for c, v in self.sentiment.items() if self.stage.get(c) == s and v is not None]
            mean[s] = sum(known) / len(known) if known else None
        return {
            "customers": len(self.stage),
            "populations": {s: population.get(s, 0) for s in names},
            "transitions": {f"{f}>{t}": n for (f, t), n in sorted(self.transitions.items())},
            "conversion": {f"{a}>{b}": self.transitions.get((a, b), 0) / arrivals[a] if arrivals[a] else None
                           for a, b in itertools.pairwise(own)},
            "sessions": self.sessions,
            "converted_sessions": self.converted_sessions,
            "sentiment_by_stage": mean,
            "dead_letters": self.dead_letters,
        }


Tagged = tuple[str, Sequence[Output]]
"""A list of records and the name of the map that made it."""


class _Collecting(StatefulSinkPartition[Tagged, None]):
    """The one partition of ``_CollectingSink``: each record into its map's outcome, as it comes."""

    def __init__(self, outcomes: Mapping[str, Outcome], roles: dict[str, str]) -> None:
        self.outcomes = outcomes
        self.roles = roles

    def write_batch(self, values: list[Tagged]) -> None:
        for name, records in values:
            outcome = self.outcomes[name]
            for topic, _key, value in each_record(records):
                outcome.take(self.roles[topic], value or b"")

    def snapshot(self) -> None:
        """Nothing to keep: a back-test runs without a recovery store."""
        return None


class _CollectingSink(FixedPartitionedSink[Tagged, None]):
    """The flow's records, into each map's ``Outcome`` instead of Kafka."""

    def __init__(self, outcomes: Mapping[str, Outcome], roles: dict[str, str]) -> None:
        self.outcomes = outcomes
        self.roles = roles

    def list_parts(self) -> list[str]:
        return ["backtest"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Collecting:
        return _Collecting(self.outcomes, self.roles)


def start_offsets(kafka: KafkaSettings, partitions: dict[str, int], since_ms: int) -> dict[str, int]:
    """Each input partition's first offset at ``since_ms`` or later, as Kafka's offsets for times say.

    A partition with nothing that late is read from its end. (The embedded broker answers
    offset 0 whatever the time: the source's time filter still keeps the range exact.)
    """
    consumer = Consumer(client_config(kafka))
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(t, p, since_ms) for t, n in partitions.items() for p in range(n)], timeout=15)
    except KafkaException as err:
        msg = (f"cannot look up the offsets of time {since_ms} ms at {kafka.brokers} ({err}); check that "
               "the brokers answer, then run again")
        raise BrokerError(msg) from err
    finally:
        consumer.close()
    failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in found if tp.error is not None]
    if failed:
        msg = (f"cannot look up where the history starts in {', '.join(failed)}; run again once every "
               "partition has a leader")
        raise BrokerError(msg)
    return {f"{tp.topic}{PART_SEP}{tp.partition}": tp.offset if tp.offset >= 0 else OFFSET_END
            for tp in found}


def replay(settings: Settings, maps: Mapping[str, JourneyMap], history: "History") -> dict[str, Outcome]:
    """Run the engine over ``history``, bounded, parsed as ``settings`` says, under each of ``maps``.

    The outcome of each map, by its name.
    """
    group = f"journey-backtest-{uuid.uuid4().hex[:8]}"  # not the production group: its lag stays true
    kafka = KafkaSettings(settings.kafka.brokers, {**settings.kafka.properties, "group.id": group},
                          settings.kafka.secret_keys)
    partitions = partition_counts(cluster_metadata(kafka), settings.topics.inputs)
    compile_kernels(settings)
    metrics = {name: EngineMetrics() for name in maps}
    outcomes = {name: Outcome() for name in maps}
    roles = {getattr(settings.topics, role): role for role in OUTPUT_ROLES}
    first = metrics[next(iter(maps))]  # the source's figures, and what the progress line counts
    source = KafkaBatchSource(kafka, partitions, Readers(settings.journey, settings.topics), bounded=True,
                              metrics=first, starts=history.starts(kafka, partitions), times=history.times)
    flow = build_comparison_flow(replace(settings, kafka=kafka), maps, source, len(source.list_parts()),
                                 _CollectingSink(outcomes, roles), metrics=metrics)
    with _Progress(first):
        try:
            cli_main(flow, workers_per_process=1, epoch_interval=timedelta(seconds=10))
        except Exception as err:  # Bytewax wraps what a step raised: ours say what to do, Ctrl-C stops
            cause = find_cause(err, JourneyError) or find_cause(err, KeyboardInterrupt)
            if cause is not None:
                raise cause from err
            raise
    return outcomes


class _Progress:
    """A line on stderr every ``every_s`` while a map reads the history: messages read so far.

    Counted from the run's own metrics (``EngineMetrics.handled``).
    """

    def __init__(self, metrics: EngineMetrics, every_s: float = 2.0) -> None:
        self.metrics = metrics
        self.every_s = every_s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._show, name="journey-backtest-progress", daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> "_Progress":
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done.set()
        self.thread.join()
        self._line(final=True)

    def _show(self) -> None:
        while not self.done.wait(self.every_s):
            self._line(final=False)

    def _line(self, *, final: bool) -> None:
        seconds, read = time.monotonic() - self.started, self.metrics.handled()
        rate = read / seconds if seconds else 0.0
        sys.stderr.write(f"{'read' if final else 'reading'}: {read:,} messages in {seconds:.1f} s "
                         f"({rate:,.0f}/s)\n")
        sys.stderr.flush()


def moves(baseline: Outcome, candidate: Outcome) -> dict[tuple[str, str], list[str]]:
    """The customers whose final stage differs, by (baseline stage, candidate stage), ids sorted.

    A customer only one map tracks (its events were valid under that map alone) is
    ``none`` under the other.
    """
    moved: dict[tuple[str, str], list[str]] = {}
    for cid in sorted(set(baseline.stage) | set(candidate.stage)):
        was, now = baseline.stage.get(cid, BEFORE_ENTRY), candidate.stage.get(cid, BEFORE_ENTRY)
        if now != was:
            moved.setdefault((was, now), []).append(cid)
    return moved


def compare(baseline: Outcome, candidate: Outcome, base_stages: Sequence[str],
            cand_stages: Sequence[str]) -> dict[str, Any]:
    """Both maps' figures side by side, and the customers whose final stage differs."""
    moved = moves(baseline, candidate)
    stages = list(dict.fromkeys([*base_stages, *cand_stages]))
    return {
        "customers": len(set(baseline.stage) | set(candidate.stage)),
        "baseline": baseline.summary(stages, base_stages),
        "candidate": candidate.summary(stages, cand_stages),
        "differing_customers": sum(len(c) for c in moved.values()),
        "differences": [{"baseline": b, "candidate": c, "customers": len(ids), "examples": ids[:EXAMPLES]}
                        for (b, c), ids in sorted(moved.items(), key=lambda kv: -len(kv[1]))],
    }


def backtest(baseline: Settings, candidate: Settings, since_ms: int | None = None,
             until_ms: int | None = None) -> dict[str, Any]:
    """The report: both maps over the same history, the baseline's topics on the baseline's brokers.

    The history is the messages whose Kafka timestamp is ``since_ms`` or later (all when
    None) and ``until_ms`` or earlier, which is the back-test's start unless given: each
    map reads the same messages, however much is produced meanwhile.
    """
    candidate = replace(candidate, kafka=baseline.kafka, topics=baseline.topics)
    window = History(baseline, since_ms, wall_clock_ms() if until_ms is None else until_ms)
    started = time.perf_counter()
    base_map, cand_map = baseline.journey, candidate.journey
    differ = [key for key, value in base_map.reading.items() if cand_map.reading[key] != value]
    if not differ:
        outcomes = replay(baseline, {"baseline": base_map, "candidate": cand_map}, window)
    else:  # each map must parse the events itself: two replays of the same messages
        log.info("the maps parse events differently (%s): each replays the history with its own parse",
                 ", ".join(differ))
        outcomes = {**replay(baseline, {"baseline": base_map}, window),
                    **replay(candidate, {"candidate": cand_map}, window)}
    base, cand = outcomes["baseline"], outcomes["candidate"]
    log.info("replayed the history in %.1f s: %d and %d customers", time.perf_counter() - started,
             len(base.stage), len(cand.stage))
    report = compare(base, cand, base_map.stage_names, cand_map.stage_names)
    moved = {cid for ids in moves(base, cand).values() for cid in ids}
    report["attribution"] = attribution(window, moved)
    return report


@dataclass(frozen=True)
class History:
    """The part of the input topics a back-test reads: where each partition starts, which timestamps count."""

    settings: Settings
    since_ms: int | None
    until_ms: int

    @property
    def times(self) -> tuple[int, int]:
        """The Kafka timestamps a message must have, both ends included."""
        return (self.since_ms or 0, self.until_ms)

    def starts(self, kafka: KafkaSettings, partitions: dict[str, int]) -> dict[str, int] | None:
        """Each partition's first offset, by Kafka's offsets for times (None: their beginnings)."""
        return None if self.since_ms is None else start_offsets(kafka, partitions, self.since_ms)


def attribution(history: History, customers: set[str], limit: int = 8) -> list[dict[str, Any]]:
    """The touchpoints and channels over-represented in the events of ``customers``.

    Each with its share of those customers' events beside its share of all events, and
    their ratio (lift), the most over-represented first. Counted from the history again,
    as sent (re-deliveries count, dead letters do not name a known type), so that the
    engine's steps stay as ``run`` has them.
    """
    if not customers:
        return []
    mine: Counter[str] = Counter()
    every: Counter[str] = Counter()
    for event in _events(history):
        names = (f"touchpoint {event.get('type')}", f"channel {event.get('channel') or OTHER_CHANNEL}")
        every.update(names)
        cid = event.get("customer_id")
        if isinstance(cid, str) and cid in customers:
            mine.update(names)
    total_mine, total = sum(mine.values()) or 1, sum(every.values()) or 1
    rows = sorted(((n / total_mine, every[name] / total, name) for name, n in mine.items()
                   if n / total_mine > every[name] / total), key=lambda r: r[1] - r[0])[:limit]
    return [{"name": name, "share": share, "share_all": share_all, "lift": share / share_all}
            for share, share_all, name in rows]


def _events(history: History) -> Iterator[dict[str, Any]]:
    """Every JSON object of the history, read as the replays read it (start offsets, timestamps)."""
    settings = history.settings
    partitions = partition_counts(cluster_metadata(settings.kafka), settings.topics.inputs)
    starts = history.starts(settings.kafka, partitions) or {}
    low, high = history.times
    consumer = Consumer(client_config(settings.kafka, **{
        "group.id": f"journey-backtest-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "enable.partition.eof": True}))
    parts = [(t, p) for t, n in partitions.items() for p in range(n)]
    consumer.assign([TopicPartition(t, p, starts.get(f"{t}{PART_SEP}{p}", OFFSET_BEGINNING))
                     for t, p in parts])
    ended: set[tuple[str, int]] = set()
    try:
        while len(ended) < len(parts):
            for m in consumer.consume(10_000, 0.5):
                key, err = (m.topic() or "", m.partition() or 0), m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add(key)
                    elif err.fatal() or not err.retriable():
                        msg = f"reading the history again for attribution failed: {err.str()}"
                        raise BrokerError(msg)
                    continue
                stamp = m.timestamp()[1]
                if stamp > high:
                    ended.add(key)  # past the range: the replays stopped here too
                if key in ended or stamp < low:
                    continue
                try:
                    event = orjson.loads(m.value() or b"")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    yield event
    finally:
        consumer.close()


def table(report: dict[str, Any]) -> str:
    """The report as a terminal table."""
    base, cand = report["baseline"], report["candidate"]
    lines = [f"{'':<32}{'baseline':>12}{'candidate':>12}"]
    lines += [f"{'customers':<32}{base['customers']:>12,}{cand['customers']:>12,}"]
    for s, n in base["populations"].items():
        lines.append(f"{'  ' + s:<32}{n:>12,}{cand['populations'].get(s, 0):>12,}")
    for key in base["conversion"]:
        b, c = base["conversion"][key], cand["conversion"].get(key)
        lines.append(f"{'  conv ' + key:<32}{percent(b):>12}{percent(c):>12}")
    lines.append(f"{'sessions converted':<32}{base['converted_sessions']:>12,}"
                 f"{cand['converted_sessions']:>12,}")
    lines.append(f"differing customers: {report['differing_customers']:,}")
    lines += [f"  {d['baseline']} -> {d['candidate']}: {d['customers']:,} (e.g. {', '.join(d['examples'])})"
              for d in report["differences"]]
    return "\n".join(lines)


def percent(value: float | None) -> str:
    """A share as the report shows it (``-``: undefined, nothing to divide by)."""
    return "-" if value is None else f"{100 * value:.1f}%"
