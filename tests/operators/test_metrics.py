"""Parts of the metrics: the bulk histogram against prometheus_client's, the census against the reference."""

import math
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from config.model import Settings
from operators.metrics import (
    CUSTOMERS,
    ENGAGEMENT,
    ENGINE_METRICS,
    LATENCY,
    LATENCY_BUCKETS,
    REJECTED,
    SENTIMENT,
    TRANSITIONS,
    BulkHistogram,
    EngineMetrics,
)
from operators.records import RecordBuilder
from operators.routing import ShardInput
from operators.shard import ShardScorer
from tests.operators.test_scoring import BASE, batch_of
from tests.reference import Reference

DAY = 86_400_000


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for f in registry.collect() for s in f.samples
            if s.name == name}


@given(st.lists(st.one_of(st.sampled_from(LATENCY_BUCKETS), st.floats(0, 1_000, allow_nan=False)),
                max_size=300), st.integers(1, 4))
def test_bulk_histogram_counts_as_prometheus_histogram_does(values: list[float], cuts: int) -> None:
    """Fed in slices, the bulk histogram's buckets, count and sum equal one ``observe`` per value."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram(LATENCY, LATENCY_BUCKETS, ours)
    one_by_one = Histogram(LATENCY.name, LATENCY.help, registry=theirs, buckets=LATENCY_BUCKETS)
    for part in np.array_split(np.array(values, dtype=np.float64), cuts):
        bulk.observe(part)
    for v in values:
        one_by_one.observe(v)
    for suffix in ("_bucket", "_count"):
        assert samples(ours, LATENCY.name + suffix) == samples(theirs, LATENCY.name + suffix)
    assert math.isclose(samples(ours, LATENCY.name + "_sum")[()], samples(theirs, LATENCY.name + "_sum")[()],
                        rel_tol=1e-9, abs_tol=1e-9)


@given(st.integers(0, 2**32 - 1))
@hsettings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_census_is_the_reference_grouped_by_stage(settings: Settings, seed: int) -> None:
    """Population, mean sentiment and mean engagement per stage, over two shards of one process."""
    j = settings.journey
    rng = random.Random(seed)
    types = list(j.touchpoints)
    events = [{"customer_id": f"c{rng.randrange(60)}", "event_id": f"e{i}",
               "ts": BASE + rng.randrange(90 * DAY), "type": rng.choice(types),
               "channel": rng.choice([*j.channels, "kiosk"]),
               "sentiment": rng.choice([None, rng.uniform(-1, 1)])} for i in range(3_000)]
    metrics = EngineMetrics()
    records = RecordBuilder(j, settings.topics)
    shards = [ShardScorer(j, records, metrics, 1, None) for _ in range(2)]
    for k, shard in enumerate(shards):
        mine = [e for e in events if int(e["customer_id"][1:]) % 2 == k]
        shard.on_batch([ShardInput(batch_of(mine, j), None)])

    ref = Reference(j)
    for e in sorted(events, key=lambda e: e["ts"]):
        ref.apply(e)
    by_stage: dict[str, list[dict]] = defaultdict(list)
    for cid in ref.customers:
        record = ref.score_record(cid)
        by_stage[record["stage"]].append(record)
    for stage in (*j.stage_names, "dormant"):
        group = by_stage.get(stage, [])
        assert metrics.value(CUSTOMERS.name, stage=stage) == len(group), stage
        felt = [r["sentiment"] for r in group if r["sentiment"] is not None]
        got_sentiment = metrics.value(SENTIMENT.name, stage=stage)
        got_engagement = metrics.value(ENGAGEMENT.name, stage=stage)
        if felt:
            assert math.isclose(got_sentiment, sum(felt) / len(felt), rel_tol=1e-9, abs_tol=1e-12), stage
        else:
            assert math.isnan(got_sentiment), stage
        if group:
            assert math.isclose(got_engagement, sum(r["engagement"] for r in group) / len(group),
                                rel_tol=1e-9), stage
        else:
            assert math.isnan(got_engagement), stage
    assert sum(len(g) for g in by_stage.values()) == 60


def arrays_in(obj: object, seen: set[int] | None = None) -> dict[int, np.ndarray]:
    """Every numpy array ``obj`` holds, through attributes, tuples, lists and dicts (by identity)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return {}
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return {id(obj): obj}
    parts = (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (tuple, list))
             else vars(obj).values() if hasattr(obj, "__dict__") else ())
    found: dict[int, np.ndarray] = {}
    for part in parts:
        found |= arrays_in(part, seen)
    return found


def test_state_bytes_are_every_array_the_shards_hold(settings: Settings) -> None:
    j = settings.journey
    metrics = EngineMetrics()
    records = RecordBuilder(j, settings.topics)
    shards = [ShardScorer(j, records, metrics, 1, None, windows=w) for w in (True, False)]
    for n, shard in enumerate(shards):
        events = [{"customer_id": f"c{i % (40 + n)}", "event_id": f"e{i}", "ts": BASE + i * 60_000,
                   "type": "page_view", "channel": "web"} for i in range(500)]
        shard.on_batch([ShardInput(batch_of(events, j), None)])
    # the windows' map holds the journey map's arrays, not state
    held = [arrays_in(shard.state) | arrays_in(shard.windows, {id(shard.windows and shard.windows.map)})
            for shard in shards]
    assert all(a.base is None for part in held for a in part.values())  # no views counted twice
    assert metrics.value("journey_state_bytes") == sum(a.nbytes for part in held for a in part.values())
    assert metrics.value("journey_state_bytes") > 0


def test_labels_known_in_advance_start_at_zero(settings: Settings) -> None:
    metrics = EngineMetrics()
    records = RecordBuilder(settings.journey, settings.topics)
    metrics.count_from_zero(["too_large", "invalid_json"], records.funnel_names, settings.topics.outputs)
    assert samples(metrics.registry, REJECTED.name) == {(("reason", "too_large"),): 0.0,
                                                        (("reason", "invalid_json"),): 0.0}
    moves = samples(metrics.registry, TRANSITIONS.name)
    n = len(records.funnel_names)  # from: none, stages, dormant; to: stages, dormant; never to itself
    assert len(moves) == n * (n - 1) - (n - 1) and set(moves.values()) == {0.0}
    assert (("from_stage", "none"), ("to_stage", "awareness")) in moves
    assert not any(dict(labels)["to_stage"] == "none" for labels in moves)


def test_the_readme_lists_every_metric() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    monitoring = readme[readme.index("## Monitoring"):readme.index("## Benchmark")]
    assert [d.name for d in ENGINE_METRICS if f"`{d.name}`" not in monitoring] == []


def test_messages_handled_are_read_from_their_counters_without_taking_the_census() -> None:
    metrics = EngineMetrics()
    metrics.events.counts([("t", "a", "web"), ("t", "b", "web")])[:] = [3, 4]
    metrics.rejected.labels("invalid_json").inc(2)
    metrics.rejected.labels("too_large").inc()
    metrics.duplicates.inc(5)
    metrics.late.inc(100)  # late events are scored: already among the events

    def census() -> np.ndarray:
        msg = "the census is a pass over every customer: not for a progress line"
        raise AssertionError(msg)

    metrics.census.add(["a"], census)
    assert metrics.handled() == 3 + 4 + 2 + 1 + 5
