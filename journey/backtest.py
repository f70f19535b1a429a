"""``journey backtest``: what a candidate journey map would have made of the input topics' history.

Each map runs the engine ``journey run`` runs (the same dataflow, parse, kernels and
windows) over the history as a bounded replay, its records collected in memory instead
of produced: nothing is written to any topic, and the read offsets go to a consumer
group of the back-test's own. The two outcomes are then compared customer by customer.
"""

import itertools
import logging
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import orjson
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from bytewax.run import cli_main
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from config.errors import BrokerError, JourneyError
from config.model import DORMANT, OTHER_CHANNEL, OUTPUT_ROLES, KafkaSettings, Settings
from flows.journey_flow import build_flow
from journey.kafka_io import PART_SEP, KafkaBatchSource, client_config, cluster_metadata, partition_counts
from journey.runner import compile_kernels, find_cause
from operators.base import Output, each_record
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
            self.transitions[rec["from"] or "none", rec["to"]] += 1
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

    def summary(self, stages: Sequence[str]) -> dict[str, Any]:
        """The figures of the report for this map, stages in journey order (then dormant)."""
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
                           for a, b in itertools.pairwise(stages)},
            "dormant": population.get(DORMANT, 0),
            "sessions": self.sessions,
            "converted_sessions": self.converted_sessions,
            "sentiment_by_stage": mean,
            "dead_letters": self.dead_letters,
        }


class _Collecting(StatefulSinkPartition[Sequence[Output], None]):
    def __init__(self, outcome: Outcome, roles: dict[str, str]) -> None:
        self.outcome = outcome
        self.roles = roles

    def write_batch(self, values: list[Sequence[Output]]) -> None:
        for records in values:
            for topic, _key, value in each_record(records):
                self.outcome.take(self.roles[topic], value or b"")

    def snapshot(self) -> None:
        return None


class _CollectingSink(FixedPartitionedSink[Sequence[Output], None]):
    """The flow's records, into an ``Outcome`` instead of Kafka."""

    def __init__(self, outcome: Outcome, roles: dict[str, str]) -> None:
        self.outcome = outcome
        self.roles = roles

    def list_parts(self) -> list[str]:
        return ["backtest"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Collecting:
        return _Collecting(self.outcome, self.roles)


def start_offsets(kafka: KafkaSettings, partitions: dict[str, int], since_ms: int) -> dict[str, int]:
    """Each input partition's first offset at ``since_ms`` or later, as Kafka's offsets for times say.

    A partition with nothing that late is read from its end. (A broker that cannot tell
    answers offset 0: the time filter of the source still keeps the range exact.)
    """
    consumer = Consumer(client_config(kafka))
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(t, p, since_ms) for t, n in partitions.items() for p in range(n)], timeout=15)
    except KafkaException as err:
        msg = f"cannot look up the offsets of time {since_ms} ms at {kafka.brokers}: {err}"
        raise BrokerError(msg) from err
    finally:
        consumer.close()
    return {f"{tp.topic}{PART_SEP}{tp.partition}": tp.offset if tp.offset >= 0 else OFFSET_END
            for tp in found}


def replay(settings: Settings, since_ms: int | None = None, until_ms: int | None = None) -> Outcome:
    """Run the engine over the history, bounded, under ``settings``' map; its outcome.

    With ``since_ms`` or ``until_ms``, only messages whose Kafka timestamp is in that range.
    """
    group = f"journey-backtest-{uuid.uuid4().hex[:8]}"  # not the production group: its lag stays true
    kafka = KafkaSettings(settings.kafka.brokers, {**settings.kafka.properties, "group.id": group},
                          settings.kafka.secret_keys)
    partitions = partition_counts(cluster_metadata(kafka), settings.topics.inputs)
    compile_kernels(settings)
    metrics = EngineMetrics()
    outcome = Outcome()
    roles = {getattr(settings.topics, role): role for role in OUTPUT_ROLES}
    ranged = since_ms is not None or until_ms is not None
    starts = start_offsets(kafka, partitions, since_ms) if since_ms is not None else None
    source = KafkaBatchSource(kafka, partitions, Readers(settings.journey, settings.topics), bounded=True,
                              metrics=metrics, starts=starts,
                              times=(since_ms or 0, until_ms or 2**63 - 1) if ranged else None)
    flow = build_flow(replace(settings, kafka=kafka), source, len(source.list_parts()),
                      _CollectingSink(outcome, roles), metrics=metrics, recoverable=False)
    with _Progress(metrics):
        try:
            cli_main(flow, workers_per_process=1, epoch_interval=timedelta(seconds=10))
        except Exception as err:  # Bytewax wraps what a step raised: ours say what to do, Ctrl-C stops
            cause = find_cause(err, JourneyError) or find_cause(err, KeyboardInterrupt)
            if cause is not None:
                raise cause from err
            raise
    return outcome


class _Progress:
    """A line on stderr every ``every_s`` while a map reads the history: messages read so far.

    Counted from the run's own metrics (events scored, duplicates, dead letters).
    """

    COUNTED = ("journey_events_total", "journey_events_duplicate_total", "journey_events_rejected_total")

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

    def read(self) -> int:
        """Input messages the run has handled so far."""
        return int(sum(s.value for family in self.metrics.registry.collect() for s in family.samples
                       if s.name in self.COUNTED))

    def _show(self) -> None:
        while not self.done.wait(self.every_s):
            self._line(final=False)

    def _line(self, *, final: bool) -> None:
        seconds = time.monotonic() - self.started
        rate = self.read() / seconds if seconds else 0.0
        sys.stderr.write(f"{'read' if final else 'reading'}: {self.read():,} messages in {seconds:.1f} s "
                         f"({rate:,.0f}/s)\n")
        sys.stderr.flush()


def compare(baseline: Outcome, candidate: Outcome, stages: Sequence[str]) -> dict[str, Any]:
    """Both maps' figures side by side, and the customers whose final stage differs."""
    moved: dict[tuple[str, str], list[str]] = {}
    for cid, was in sorted(baseline.stage.items()):
        now = candidate.stage.get(cid, "none")
        if now != was:
            moved.setdefault((was, now), []).append(cid)
    for cid in sorted(set(candidate.stage) - set(baseline.stage)):
        moved.setdefault(("none", candidate.stage[cid]), []).append(cid)
    return {
        "baseline": baseline.summary(stages),
        "candidate": candidate.summary(stages),
        "differing_customers": sum(len(c) for c in moved.values()),
        "differences": [{"baseline": b, "candidate": c, "customers": len(ids), "examples": ids[:EXAMPLES]}
                        for (b, c), ids in sorted(moved.items(), key=lambda kv: -len(kv[1]))],
    }


def backtest(baseline: Settings, candidate: Settings, since_ms: int | None = None,
             until_ms: int | None = None) -> dict[str, Any]:
    """The report: both maps over the same history (messages appended from ``since_ms`` to ``until_ms``)."""
    outcomes = []
    for name, settings in (("baseline", baseline), ("candidate", candidate)):
        started = time.perf_counter()
        outcomes.append(replay(settings, since_ms, until_ms))
        log.info("%s map: %d customers in %.1f s", name, len(outcomes[-1].stage),
                 time.perf_counter() - started)
    stages = list(dict.fromkeys([*baseline.journey.stage_names, *candidate.journey.stage_names]))
    report = compare(outcomes[0], outcomes[1], stages)
    moved = {cid for cid, was in outcomes[0].stage.items() if outcomes[1].stage.get(cid) != was}
    report["attribution"] = attribution(baseline, moved | (set(outcomes[1].stage) - set(outcomes[0].stage)))
    return report


def attribution(settings: Settings, customers: set[str], limit: int = 8) -> list[dict[str, Any]]:
    """The touchpoints and channels most over-represented in the events of ``customers``.

    Each as its share of those customers' events beside its share of all events, and
    their ratio (lift). Read from the history once more, as sent (re-deliveries count).
    """
    if not customers:
        return []
    mine: Counter[str] = Counter()
    every: Counter[str] = Counter()
    for event in _history(settings):
        names = (f"touchpoint {event.get('type')}", f"channel {event.get('channel') or OTHER_CHANNEL}")
        every.update(names)
        if event.get("customer_id") in customers:
            mine.update(names)
    total_mine, total = sum(mine.values()) or 1, sum(every.values()) or 1
    rows = sorted(((n / total_mine, every[name] / total, name) for name, n in mine.items()),
                  key=lambda r: r[1] - r[0])[:limit]
    return [{"name": name, "share": share, "share_all": share_all, "lift": share / share_all}
            for share, share_all, name in rows]


def _history(settings: Settings) -> Iterator[dict[str, Any]]:
    """Every JSON object in the input topics, each partition from its beginning to its end."""
    metadata = cluster_metadata(settings.kafka)
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in settings.topics.inputs
             for p in metadata.topics[t].partitions]
    consumer = Consumer(client_config(settings.kafka, **{
        "group.id": f"journey-backtest-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "enable.partition.eof": True}))
    consumer.assign(parts)
    ended: set[tuple[str, int]] = set()
    try:
        while len(ended) < len(parts):
            for m in consumer.consume(10_000, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add((m.topic() or "", m.partition() or 0))
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
        lines.append(f"{'  conv ' + key:<32}{_pct(b):>12}{_pct(c):>12}")
    lines.append(f"{'sessions converted':<32}{base['converted_sessions']:>12,}"
                 f"{cand['converted_sessions']:>12,}")
    lines.append(f"differing customers: {report['differing_customers']:,}")
    lines += [f"  {d['baseline']} -> {d['candidate']}: {d['customers']:,} (e.g. {', '.join(d['examples'])})"
              for d in report["differences"]]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
