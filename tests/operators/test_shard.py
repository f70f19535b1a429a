"""The scoring step on its own: outputs, metrics read from an injected registry, resume."""

import subprocess
import sys
from dataclasses import replace

import orjson
import pytest

from config.errors import ConfigError
from config.model import JourneyMap, Settings, parse_map
from operators.base import EMPTY_BATCH, each_record
from operators.metrics import EngineMetrics
from operators.records import RecordBuilder
from operators.routing import MapChange, ShardInput
from operators.shard import ShardScorer
from tests.operators.test_scoring import BASE, batch_of, reference_of
from tests.reference import records_match, score_record, stage_of


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
from operators.shard import KERNEL_MODULES, warm_up
from tests.operators.test_windows import BASE, CHANNELS, MINUTE, TYPES, event, run

def signatures():
    return {(m.__name__, name, str(sig)) for m in KERNEL_MODULES
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
    assert resumed.state.all_ids() == ["a"]


def lowered(j: JourneyMap, threshold: float, saturation: float | None = None) -> JourneyMap:
    """``j`` with the consideration threshold at ``threshold`` (and another saturation)."""
    stages = tuple(replace(s, threshold=threshold) if s.name == "consideration" else s for s in j.stages)
    return replace(j, stages=stages, saturation=j.saturation if saturation is None else saturation)


def records_of(out: list, topic: str) -> list[dict]:
    return [orjson.loads(v) for o in out for t, _, v in each_record(o.records) if t == topic]


def test_a_new_map_takes_over_at_the_epochs_end_and_every_customer_is_evaluated_once(
        settings: Settings) -> None:
    j, t = settings.journey, settings.topics
    types = list(j.touchpoints)
    events = [{"customer_id": f"c{i}", "event_id": f"e{i}-{k}", "ts": BASE + 1000 * k + i,
               "type": types[(i * 7 + k) % len(types)], "channel": "web"}
              for i in range(40) for k in range(i % 4 + 1)]
    metrics = EngineMetrics()
    step = ShardScorer(j, RecordBuilder(j, t), metrics, 1, None)
    step.on_batch([ShardInput(batch_of(events, j), None)])
    new = lowered(j, 1.0)
    assert new.version != j.version
    change = MapChange(new, "tester@here", "2026-11-28T00:00:00.000+00:00")

    (out,), _ = step.on_batch([ShardInput(EMPTY_BATCH, None, change)])
    assert out.records == [] and step.notify_at() is not None  # in force only once the epoch ends
    late_in_epoch = [{"customer_id": "c0", "event_id": "x", "ts": BASE, "type": types[0], "channel": "web"}]
    (out,), _ = step.on_batch([ShardInput(batch_of(late_in_epoch, j), None)])
    assert {r["map"] for r in records_of([out], t.scores)} == {j.version}

    snap = step.snapshot()  # the epoch's end
    assert snap is not None and snap["in_force"] == new.version
    assert parse_map("snapshot", snap["map"]).version == j.version  # stages not evaluated under it yet
    assert metrics.value("journey_map_updates_total", result="applied") == 1
    assert metrics.value("journey_build_info", version="", journey_map=new.version) == 1

    ref = reference_of([*events, *late_in_epoch], j)
    want = {cid: (stage_of(j, c), stage_of(new, c)) for cid, c in ref.customers.items()
            if stage_of(j, c) != stage_of(new, c)}
    assert want  # the lowered threshold moves someone
    outs, _ = step.on_notify()
    moves = records_of(list(outs), t.transitions)
    assert {m["customer_id"]: (m["from"], m["to"]) for m in moves} == want
    assert len(moves) == len(want)  # once each
    assert {(m["cause"], m["map"], m["event_id"]) for m in moves} == {("map", new.version, None)}
    assert all(m["ts"] == ref.customers[m["customer_id"]].T for m in moves)  # no watermark heard yet
    scores = records_of(list(outs), t.scores)
    assert {s["customer_id"] for s in scores} == set(want) and {s["map"] for s in scores} == {new.version}
    assert step.on_notify()[0] == [] and step.notify_at() is None  # evaluated once

    resumed = ShardScorer(new, RecordBuilder(new, t), EngineMetrics(), 1, snap)  # a crash mid-switch
    outs, _ = resumed.on_notify()
    assert {m["customer_id"]: (m["from"], m["to"]) for m in records_of(list(outs), t.transitions)} == want

    step.on_batch([ShardInput(EMPTY_BATCH, None, change)])  # the same map again
    step.snapshot()
    assert step.on_notify()[0] == [] and metrics.value("journey_map_updates_total", result="applied") == 1

    richer = lowered(new, 1.0, saturation=2 * j.saturation)  # engagement changes at once, for everyone
    step.on_batch([ShardInput(EMPTY_BATCH, None, change._replace(journey=richer))])
    step.snapshot()
    outs, _ = step.on_notify()
    scores = records_of(list(outs), t.scores)
    assert len(scores) == len(ref.customers) and {s["map"] for s in scores} == {richer.version}
    assert records_of(list(outs), t.transitions) == []
    assert metrics.value("journey_map_updates_total", result="applied") == 2
    step.on_batch([ShardInput(EMPTY_BATCH, None, change)])  # and back: said, counted, named again
    step.snapshot()
    step.on_notify()
    assert metrics.value("journey_map_updates_total", result="applied") == 3
    assert metrics.value("journey_build_info", version="", journey_map=new.version) == 1
    assert metrics.value("journey_build_info", version="", journey_map=richer.version) == 0
    for s in scores:
        c = ref.customers[s["customer_id"]]
        want_record = {**score_record(richer, s["customer_id"], c), "stage": stage_of(richer, c)}
        assert records_match(s, want_record) == []
