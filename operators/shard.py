"""The scoring step: one Bytewax state per customer shard, holding numpy arrays."""

from collections import Counter
from collections.abc import Iterable

from bytewax.operators import StatefulBatchLogic

from config.model import JourneyMap
from operators.events import EventBatch
from operators.metrics import EngineMetrics
from operators.records import OutRecord, RecordBuilder
from operators.scoring import score_batch
from operators.state import ShardState

Snapshot = dict[str, object]


class ShardScorer(StatefulBatchLogic[EventBatch, list[OutRecord], Snapshot]):
    """Scores every sub-batch that reaches one shard in one kernel call.

    Emits coalesced scores (one per changed customer per batch) and every transition.
    """

    def __init__(self, journey: JourneyMap, records: RecordBuilder, metrics: EngineMetrics,
                 resume: Snapshot | None) -> None:
        self.arrays = journey.arrays
        self.records = records
        self.metrics = metrics
        self.state = (ShardState(self.arrays) if resume is None
                      else ShardState.from_snapshot(self.arrays, resume))
        metrics.tracked.inc(self.state.size)

    def on_batch(self, values: list[EventBatch]) -> tuple[Iterable[list[OutRecord]], bool]:
        """Score everything that reached this shard in this activation, in one kernel call."""
        batch = EventBatch.concat(values)
        size_before = self.state.size
        result = score_batch(self.state, batch, self.arrays)
        out = self.records.scores(self.state, result.changed_rows)
        tr = result.transitions
        events = tr.event.tolist()
        cids, eids = batch.customer_ids, batch.event_ids
        out += self.records.transitions([cids[i] for i in events], tr.from_stage, tr.to_stage,
                                        batch.ts[tr.event].tolist(), [eids[i] for i in events],
                                        tr.version.tolist())
        m = self.metrics
        m.events.inc(len(batch) - result.duplicates)
        m.duplicates.inc(result.duplicates)
        name = self.records.stage_name
        for (f, t), count in Counter(zip(tr.from_stage.tolist(), tr.to_stage.tolist(),
                                             strict=True)).items():
            m.transitions.labels(name(f) or "none", name(t) or "none").inc(count)
        m.tracked.inc(self.state.size - size_before)
        return ([out], StatefulBatchLogic.RETAIN)

    def snapshot(self) -> Snapshot:
        """Copies of the shard's arrays (Bytewax may pickle them after we change the state)."""
        return self.state.snapshot()
