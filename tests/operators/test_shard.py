"""The scoring step on its own: outputs, metrics read from an injected registry, resume."""

import subprocess
import sys
from dataclasses import replace

import orjson
import pytest

from config.errors import ConfigError
from config.model import Settings
from operators.base import each_record
from operators.metrics import EngineMetrics
from operators.records import RecordBuilder
from operators.routing import ShardInput
from operators.shard import ShardScorer
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
    scores = [orjson.loads(v) for topic, _, v in each_record(out.records) if topic == t.scores]
    transitions = [orjson.loads(v) for topic, _, v in each_record(out.records) if topic == t.transitions]
    assert len(scores) == 1 and scores[0]["events"] == 3  # coalesced: one per customer
    assert [(t["from"], t["to"]) for t in transitions] == [(None, "awareness"),
                                                           ("awareness", "decision")]
    assert metrics.total("journey_events_total") == 3
    assert metrics.value("journey_events_duplicate_total") == 1
    assert metrics.value("journey_stage_transitions_total", from_stage="awareness",
                         to_stage="decision") == 1
    assert metrics.value("journey_customers_tracked") == 1

    resumed = ShardScorer(j, records, EngineMetrics(), 1, step.snapshot())
    (again,), _ = resumed.on_batch([ShardInput(batch_of(events, j), None)])  # re-deliveries
    assert [r for r in each_record(again.records) if r[0] == t.scores] == []


COMPILED_AFTER_WARM_UP = """
import random, sys
from dataclasses import replace
from numba.core.registry import CPUDispatcher
from config.model import DEFAULT_PATH, load_settings
from operators import json_kernels, score_kernels, window_kernels
from operators.shard import warm_up
from tests.operators.test_windows import BASE, CHANNELS, MINUTE, TYPES, event, run

def signatures():
    return {(m.__name__, name, str(sig)) for m in (json_kernels, score_kernels, window_kernels)
            for name, f in vars(m).items() if isinstance(f, CPUDispatcher) for sig in f.signatures}

settings = load_settings(DEFAULT_PATH)
warm_up(settings.journey, settings.topics)
before = signatures()
rng = random.Random(7)
events, ts = [], BASE
for i in range(2_000):  # days of sparse history, late events, customers going dormant
    ts += rng.choice([1_000, MINUTE, 7 * MINUTE, 40 * MINUTE])
    late = rng.random() < 0.05
    e = event(i, f"c{rng.randrange(300)}", ts - (3_600_000 if late else 0), rng.choice(TYPES),
              rng.choice(CHANNELS), sentiment=rng.choice([-1.0, 0.5]))
    events.append(e)
short = replace(settings, journey=replace(settings.journey, dormant_after_ms=6 * 3_600_000))
engine = run(events, list(range(0, 2_000, 50)), short)
assert engine.topic("sessions") and engine.topic("metrics") and engine.topic("late")
assert any(t["to"] == "dormant" for t in engine.topic("transitions"))
print(sorted(signatures() - before))
"""


def test_warm_up_compiles_what_a_run_uses() -> None:
    """After warm-up, days of windows, late events and dormancy compile nothing more.

    In a fresh process: compiled signatures are per process, and other tests compile more.
    """
    done = subprocess.run([sys.executable, "-c", COMPILED_AFTER_WARM_UP], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_a_snapshot_resumes_only_under_its_layout(settings: Settings) -> None:
    j = settings.journey
    records = RecordBuilder(j, settings.topics)
    step = ShardScorer(j, records, EngineMetrics(), 1, None)
    step.on_batch([ShardInput(batch_of([{"customer_id": "a", "event_id": "1", "ts": BASE,
                                         "type": "purchase"}], j), None)])
    snap = step.snapshot()
    wider = replace(j, channels={**j.channels, "tv": 1.3})
    with pytest.raises(ConfigError, match=r"\[channels\]: added 'tv'"):
        ShardScorer(wider, RecordBuilder(wider, settings.topics), EngineMetrics(), 1, snap)
    heavier = replace(j, half_life_ms=j.half_life_ms // 2,
                      channels={name: 2 * m for name, m in j.channels.items()})
    resumed = ShardScorer(heavier, RecordBuilder(heavier, settings.topics), EngineMetrics(), 1, snap)
    assert resumed.state.ids == ["a"]
