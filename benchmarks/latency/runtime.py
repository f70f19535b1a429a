"""The runtime floor: ``journey run``'s own source and sink in a Bytewax flow, no work between.

    python -m benchmarks.latency.runtime CONFIG

It reads as the engine does (one consumer per worker, parsing, alignment, the same
Bytewax rounds) and produces as the engine does (the same sink and producer), but
nothing is scored: every event read becomes one record ``{customer_id, last_event_ts}``
on the scores topic, which the benchmark matches like a score record. Between the
broker's floor (a bare consume → produce loop) and the engine, it says how much of the
engine's latency is the runtime's (Bytewax and our reading and writing) and how much
is the work per event. What a live ``journey run`` has besides (the control topic's
input, the stall watch's metadata requests once a second) is left out. SIGTERM or
SIGINT ends every partition at its next read, and the flow drains and exits.
"""

import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import orjson
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main

from config.model import load_settings
from journey.kafka_io import KafkaBatchSink, KafkaBatchSource, cluster_metadata, partition_counts
from journey.runner import settle_heap
from operators.base import Output
from operators.metrics import EngineMetrics
from operators.reading import Readers, SourceRead


def main() -> int:
    settings = load_settings(Path(sys.argv[1]))
    topic = settings.topics.scores
    metrics = EngineMetrics()
    partitions = partition_counts(cluster_metadata(settings.kafka), settings.topics.inputs)
    source = KafkaBatchSource(settings.kafka, partitions, Readers(settings.journey, settings.topics),
                              bounded=False, metrics=metrics)
    sink = KafkaBatchSink(settings.kafka, metrics=metrics)

    def records(read: SourceRead) -> Sequence[Output] | None:
        events = read.events
        return [(topic, customer.encode(), orjson.dumps({"customer_id": customer, "last_event_ts": ts}))
                for customer, ts in zip(events.customer_ids, events.ts.tolist(), strict=True)] or None

    flow = Dataflow("runtime_floor")
    reads = op.input("kafka_in", flow, source)
    (own_part,) = sink.list_parts()
    op.output("kafka_out", op.key_on("to_own_part", op.filter_map("records", reads, records),
                                     lambda _: own_part), sink)
    for sig in (signal.SIGTERM, signal.SIGINT):  # every partition ends at its next read: the flow drains
        signal.signal(sig, lambda *_: source.stopping.set())
    settle_heap()
    cli_main(flow, workers_per_process=1, epoch_interval=timedelta(seconds=10))
    return 0


if __name__ == "__main__":
    sys.exit(main())
