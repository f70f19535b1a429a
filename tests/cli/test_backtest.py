"""``journey backtest`` against the reference: the same map finds no difference, a lowered threshold
moves exactly the customers the reference moves, and nothing is written to any topic."""

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from config.model import DORMANT, Settings, load_settings
from journey.kafka_io import cluster_metadata
from journey.simulate import SimOptions, messages, produce
from tests.broker_fixtures import journey_cli, write_config
from tests.flows.test_end_to_end import reference_from
from tests.reference import stage_of

pytestmark = pytest.mark.slow


def reference_stages(settings: Settings, produced: list) -> dict[str, str]:
    ref = reference_from(settings, produced)
    return {cid: stage_of(settings.journey, c) for cid, c in ref.customers.items()}


def test_a_candidate_map_moves_the_customers_the_reference_moves(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    produced = messages(settings, SimOptions(customers=1_500, events=20_000, seed=31, duplicates=0.02,
                                             out_of_order=0.02, malformed=0.01))
    produce(settings, produced, progress=None)
    baseline = write_config(settings, tmp_path / "baseline.toml")
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(baseline.read_text().replace("[stages.consideration]\nthreshold = 3.0",
                                                      "[stages.consideration]\nthreshold = 2.0"))
    assert candidate.read_text() != baseline.read_text()
    report_file = tmp_path / "report.json"

    same = journey_cli("backtest", "--baseline", str(baseline), "--candidate", str(baseline),
                       "--json", str(report_file))
    assert same.returncode == 0, same.stderr[-3000:]
    report = orjson.loads(report_file.read_bytes())
    assert report["differing_customers"] == 0 and report["differences"] == []
    assert report["baseline"] == report["candidate"]
    assert "differing customers: 0" in same.stdout

    done = journey_cli("backtest", "--baseline", str(baseline), "--candidate", str(candidate),
                       "--json", str(report_file))
    assert done.returncode == 0, done.stderr[-3000:]
    report = orjson.loads(report_file.read_bytes())
    want_base = reference_stages(settings, produced)
    want_cand = reference_stages(load_settings(candidate), produced)
    stages = [*settings.journey.stage_names, DORMANT]
    for name, want in (("baseline", want_base), ("candidate", want_cand)):
        counts = Counter(want.values())
        assert report[name]["populations"] == {s: counts.get(s, 0) for s in stages}, name
        assert report[name]["customers"] == len(want)
    moved = Counter((want_base[c], want_cand[c]) for c in want_base if want_base[c] != want_cand[c])
    assert moved and report["differing_customers"] == sum(moved.values())
    assert {(d["baseline"], d["candidate"]): d["customers"] for d in report["differences"]} == dict(moved)
    for d in report["differences"]:
        assert d["examples"] and all(want_base[c] == d["baseline"] and want_cand[c] == d["candidate"]
                                     for c in d["examples"])
    assert f"differing customers: {sum(moved.values()):,}" in done.stdout

    # nothing written: no output topic made, no offsets in the production consumer group
    assert not set(settings.topics.outputs) & set(cluster_metadata(settings.kafka).topics)
    group = Consumer({"bootstrap.servers": settings.kafka.brokers, "group.id": "journey-stream"})
    committed = group.committed([TopicPartition(t, p) for t in settings.topics.inputs for p in range(4)],
                                timeout=10)
    group.close()
    assert all(tp.offset < 0 for tp in committed)
