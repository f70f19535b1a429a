"""read (parse, align, mark late) → route by customer shard → score and window → totals → outputs."""

from collections.abc import Sequence
from typing import Any

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import FixedPartitionedSink

from config.model import Settings
from operators.aggregate import AGGREGATE_KEY, ShardProgress, WindowAggregator
from operators.base import Output
from operators.events import REASONS
from operators.metrics import EngineMetrics
from operators.reading import SourceRead
from operators.records import RecordBuilder
from operators.routing import DEFAULT_SHARDS, route
from operators.shard import ShardOutput, ShardScorer, Snapshot

FLOW_ID = "journey"
SCORE_STEP = "score"
"""The step whose snapshots hold the shards (``FLOW_ID.SCORE_STEP`` in a recovery store)."""
INPUT_STEP = "kafka_in"
"""The input step: its snapshots hold each input partition's next offset."""


def build_flow(
    settings: Settings,
    source: Source[SourceRead],
    partitions: int,
    sink: FixedPartitionedSink[Sequence[Output], Any],
    *,
    metrics: EngineMetrics,
    shards: int = DEFAULT_SHARDS,
    windows: bool = True,
    recoverable: bool = True,
) -> Dataflow:
    """The journey dataflow over a source of ``partitions`` input partitions.

    ``sink`` lists one partition, its process's own: every record list is keyed to it,
    so output leaves from the process that made it.

    ``windows=False`` leaves out sessions and channel/funnel windows (scores, transitions,
    dormancy, dead letters and late events stay). ``recoverable=False`` (no recovery store)
    spares the shards copying their state at every epoch's end.
    """
    journey = settings.journey
    records = RecordBuilder(journey, settings.topics)
    metrics.count_from_zero(REASONS, records.funnel_names, settings.topics.outputs)

    def read_out(read: SourceRead) -> list[Output] | None:
        for reason, count in read.rejected.items():
            metrics.rejected.labels(reason).inc(count)
        metrics.late.inc(len(read.late))
        out: list[Output] = [*read.dead_letters, *read.late]
        return out or None

    def scorer(resume: Snapshot | None) -> ShardScorer:
        return ShardScorer(journey, records, metrics, partitions, resume, windows=windows, shards=shards,
                           recoverable=recoverable)

    def progress(item: tuple[str, ShardOutput]) -> tuple[str, ShardProgress] | None:
        shard, out = item
        if out.shares is None and out.watermark is None:
            return None
        return AGGREGATE_KEY, ShardProgress(shard, out.shares, out.watermark)

    def aggregator(resume: dict[str, object] | None) -> WindowAggregator:
        return WindowAggregator(records, journey.metrics_window_ms, shards, resume, metrics)

    flow = Dataflow(FLOW_ID)
    reads = op.input(INPUT_STEP, flow, source)
    rejected = op.filter_map("dead_letters_and_late", reads, read_out)
    routed = op.flat_map("route", reads, lambda read: route(read, shards))
    scored = op.stateful_batch(SCORE_STEP, routed, scorer)
    outputs = [rejected, op.map("records", scored, lambda item: item[1].records)]
    if windows:
        totals = op.stateful_batch("windows", op.filter_map("progress", scored, progress), aggregator)
        outputs.append(op.key_rm("window_records", totals))
    (own_part,) = sink.list_parts()
    merged = op.merge("outputs", *outputs)
    op.output("kafka_out", op.key_on("to_own_part", merged, lambda _: own_part), sink)
    return flow
