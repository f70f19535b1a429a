"""The scoring step on its own: outputs, metrics read from an injected registry, resume."""

import orjson

from config import Settings
from operators.metrics import EngineMetrics
from operators.records import RecordBuilder
from operators.shard import ShardInput, ShardScorer
from tests.operators.test_scoring import BASE, batch_of


def test_step_emits_coalesced_scores_transitions_and_counts(settings: Settings) -> None:
    j = settings.journey
    metrics = EngineMetrics()
    records = RecordBuilder(j, settings.topics)
    t = settings.topics
    step = ShardScorer(j, records, metrics, 1, None)
    events = [{"customer_id": "a", "event_id": str(i), "ts": BASE + i, "type": "add_to_cart"}
              for i in range(3)]
    (out,), _ = step.on_batch([ShardInput(batch_of(events, j), None),
                               ShardInput(batch_of(events[:1], j), None)])  # one re-delivery
    scores = [orjson.loads(v) for topic, _, v in out.records if topic == t.scores]
    transitions = [orjson.loads(v) for topic, _, v in out.records if topic == t.transitions]
    assert len(scores) == 1 and scores[0]["events"] == 3  # coalesced: one per customer
    assert [(t["from"], t["to"]) for t in transitions] == [(None, "awareness"),
                                                           ("awareness", "decision")]
    assert metrics.value("journey_events_total") == 3
    assert metrics.value("journey_events_duplicate_total") == 1
    assert metrics.value("journey_stage_transitions_total", from_stage="awareness",
                         to_stage="decision") == 1
    assert metrics.value("journey_customers_tracked") == 1

    resumed = ShardScorer(j, records, EngineMetrics(), 1, step.snapshot())
    (again,), _ = resumed.on_batch([ShardInput(batch_of(events, j), None)])  # re-deliveries
    assert [r for r in again.records if r[0] == t.scores] == []
