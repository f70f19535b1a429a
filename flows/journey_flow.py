"""read (parse, align, mark late) → route by customer shard → score and window → totals → outputs."""

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from bytewax import operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import FixedPartitionedSink

from config.model import JourneyMap, Settings
from operators.aggregate import AGGREGATE_KEY, ShardProgress, WindowAggregator
from operators.base import Output
from operators.events import REASONS
from operators.metrics import EngineMetrics
from operators.reading import SourceRead
from operators.records import RecordBuilder
from operators.routing import DEFAULT_SHARDS, MapChange, ShardInput, route, to_every_shard
from operators.shard import ShardOutput, ShardScorer, Snapshot, Switches

FLOW_ID = "journey"
SCORE_STEP = "score"
"""The step whose snapshots hold the shards (``FLOW_ID.SCORE_STEP`` in a recovery store)."""
INPUT_STEP = "kafka_in"
"""The input step: its snapshots hold each input partition's next offset."""
CONTROL_STEP = "control_in"
"""The input of maps applied live (the control topic)."""


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
    control: Source[MapChange] | None = None,
) -> Dataflow:
    """The journey dataflow over a source of ``partitions`` input partitions.

    ``sink`` lists one partition, its process's own: every record list is keyed to it,
    so output leaves from the process that made it.

    ``windows=False`` leaves out sessions and channel/funnel windows (scores, transitions,
    dormancy, dead letters and late events stay). ``recoverable=False`` (no recovery store)
    spares the shards copying their state at every epoch's end. ``control`` brings maps
    applied live: each goes to every shard.
    """
    flow = Dataflow(FLOW_ID)
    reads = op.input(INPUT_STEP, flow, source)
    routed = op.flat_map_batch("route", reads, lambda batch: route(batch, shards))
    if control is not None:
        changes = op.input(CONTROL_STEP, flow, control)
        routed = op.merge("events_and_maps", routed, op.flat_map(
            "to_every_shard", changes, lambda change: to_every_shard(change, shards)))
    outputs = [_rejected("dead_letters_and_late", reads, metrics),
               *_scored("", routed, settings.journey, settings, partitions, metrics, shards=shards,
                        windows=windows, recoverable=recoverable)]
    (own_part,) = sink.list_parts()
    merged = op.merge("outputs", *outputs)
    op.output("kafka_out", op.key_on("to_own_part", merged, lambda _: own_part), sink)
    return flow


def build_comparison_flow(
    settings: Settings,
    maps: Mapping[str, JourneyMap],
    source: Source[SourceRead],
    partitions: int,
    sink: FixedPartitionedSink[tuple[str, Sequence[Output]], Any],
    *,
    metrics: Mapping[str, EngineMetrics],
) -> Dataflow:
    """One read and parse of the input, scored and windowed under each of ``maps`` side by side.

    Every map's steps see the very same batches (so what differs between their outputs
    is the maps' doing, not the order things were read in); each record list reaches the
    sink tagged with its map's name. The maps must read alike (``JourneyMap.reading``):
    the parse is ``settings``'. Bounded, one worker, no recovery store.
    """
    flow = Dataflow(FLOW_ID)
    reads = op.input(INPUT_STEP, flow, source)
    routed = op.flat_map_batch("route", reads, lambda batch: route(batch, 1))
    tagged = []
    for name, journey in maps.items():
        outputs = [_rejected(f"{name}_dead_letters_and_late", reads, metrics[name]),
                   *_scored(f"{name}_", routed, journey, settings, partitions, metrics[name], shards=1,
                            windows=True, recoverable=False)]
        tagged.append(op.map(f"{name}_tagged", op.merge(f"{name}_outputs", *outputs), partial(_tag, name)))
    (own_part,) = sink.list_parts()
    merged = op.merge("outputs", *tagged)
    op.output("collect", op.key_on("to_own_part", merged, lambda _: own_part), sink)
    return flow


def _tag(name: str, records: list[Output]) -> tuple[str, Sequence[Output]]:
    return name, records


def _rejected(step: str, reads: Stream[SourceRead], metrics: EngineMetrics) -> Stream[list[Output]]:
    """Dead letters and events late when read, counted, as records."""
    def read_out(read: SourceRead) -> list[Output] | None:
        for reason, count in read.rejected.items():
            metrics.rejected.labels(reason).inc(count)
        metrics.late.inc(len(read.late))
        out: list[Output] = [*read.dead_letters, *read.late]
        return out or None

    return op.filter_map(step, reads, read_out)


def _scored(prefix: str, routed: Stream[tuple[str, ShardInput]], journey: JourneyMap, settings: Settings,
            partitions: int, metrics: EngineMetrics, *, shards: int, windows: bool,
            recoverable: bool) -> list[Stream[list[Output]]]:
    """The shards' records under ``journey`` and, with ``windows``, the channel and funnel windows'."""
    records = RecordBuilder(journey, settings.topics)
    metrics.count_from_zero(REASONS, records.funnel_names, settings.topics.outputs)
    switches = Switches(metrics)

    def scorer(resume: Snapshot | None) -> ShardScorer:
        return ShardScorer(journey, records, metrics, partitions, resume, windows=windows, shards=shards,
                           recoverable=recoverable, switches=switches)

    def progress(item: tuple[str, ShardOutput]) -> tuple[str, ShardProgress] | None:
        shard, out = item
        if out.shares is None and out.watermark is None:
            return None
        return AGGREGATE_KEY, ShardProgress(shard, out.shares, out.watermark)

    def aggregator(resume: dict[str, object] | None) -> WindowAggregator:
        return WindowAggregator(records, journey.metrics_window_ms, shards, resume, metrics)

    scored = op.stateful_batch(prefix + SCORE_STEP, routed, scorer)
    outputs = [op.map(prefix + "records", scored, lambda item: item[1].records)]
    if windows:
        totals = op.stateful_batch(prefix + "windows", op.filter_map(prefix + "progress", scored, progress),
                                   aggregator)
        outputs.append(op.key_rm(prefix + "window_records", totals))
    return outputs
