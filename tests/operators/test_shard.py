"""The scoring step on its own: outputs, metrics read from an injected registry, resume."""

import orjson

from config import Settings
from operators.metrics import EngineMetrics
from operators.records import RecordBuilder
from operators.shard import ShardScorer
from tests.operators.test_scoring import BASE, batch_of


def test_step_emits_coalesced_scores_transitions_and_counts(settings: Settings) -> None:
    j = settings.journey
    metrics = EngineMetrics()
    step = ShardScorer(j, RecordBuilder(j, "scores", "transitions"), metrics, None)
    events = [{"customer_id": "a", "event_id": str(i), "ts": BASE + i, "type": "add_to_cart"}
              for i in range(3)]
    (out,), _ = step.on_batch([batch_of(events, j), batch_of(events[:1], j)])  # one re-delivery
    scores = [orjson.loads(v) for t, _, v in out if t == "scores"]
    transitions = [orjson.loads(v) for t, _, v in out if t == "transitions"]
    assert len(scores) == 1 and scores[0]["events"] == 3  # coalesced: one per customer
    assert [(t["from"], t["to"]) for t in transitions] == [(None, "awareness"),
                                                           ("awareness", "decision")]
    assert metrics.value("journey_events_total") == 3
    assert metrics.value("journey_events_duplicate_total") == 1
    assert metrics.value("journey_stage_transitions_total", from_stage="awareness",
                         to_stage="decision") == 1
    assert metrics.value("journey_customers_tracked") == 1

    resumed = ShardScorer(j, RecordBuilder(j, "scores", "transitions"), EngineMetrics(),
                          step.snapshot())
    (again,), _ = resumed.on_batch([batch_of(events, j)])  # all re-deliveries after resume
    assert [orjson.loads(v)["events"] for t, _, v in again if t == "scores"] == []
