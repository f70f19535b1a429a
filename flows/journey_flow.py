"""input → parse/validate → route by customer shard → score → outputs."""

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink
from confluent_kafka import Message

from config.model import Settings
from operators.events import Clock, EventParser, ParsedBatch, wall_clock_ms
from operators.metrics import EngineMetrics
from operators.records import OutRecord, RecordBuilder
from operators.routing import split_by_shard
from operators.shard import ShardScorer, Snapshot

DEFAULT_SHARDS = 32
"""Fixed for the life of a recovery store: shard keys name the saved state."""


def build_flow(
    settings: Settings,
    source: Source[list[Message]],
    sink: Sink[list[OutRecord]],
    *,
    metrics: EngineMetrics,
    shards: int = DEFAULT_SHARDS,
    clock: Clock = wall_clock_ms,
) -> Dataflow:
    """The journey dataflow over any source of raw-message batches and any sink of records."""
    journey, topics = settings.journey, settings.topics
    parser = EventParser(journey, topics.dlq, clock)
    records = RecordBuilder(journey, topics.scores, topics.transitions)

    def parse(raw: list[Message]) -> ParsedBatch:
        parsed = parser.parse(raw)
        for reason, count in parsed.reasons.items():
            metrics.rejected.labels(reason).inc(count)
        return parsed

    def scorer(resume: Snapshot | None) -> ShardScorer:
        return ShardScorer(journey, records, metrics, resume)

    flow = Dataflow("journey")
    raw = op.input("kafka_in", flow, source)
    parsed = op.map("parse", raw, parse)
    dead = op.filter_map("dead_letters", parsed, lambda p: p.dead_letters or None)
    routed = op.flat_map("route", parsed, lambda p: split_by_shard(p.events, shards))
    scored = op.key_rm("unkey", op.stateful_batch("score", routed, scorer))
    op.output("kafka_out", op.merge("outputs", dead, scored), sink)
    return flow
