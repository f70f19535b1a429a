"""Simulated journeys → ``journey run --until-end`` → score topics, checked against the reference."""

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from config.model import DEFAULT_PATH, OUTPUT_ROLES, Settings, Topics, load_settings
from journey.broker import free_port
from journey.simulate import SimMessage, SimOptions, messages, produce
from tests.broker_fixtures import ROOT, journey_cli, read_json, read_topic, write_config
from tests.reference import Reference, records_match

pytestmark = pytest.mark.slow


def reference_from(settings: Settings, produced: list[SimMessage]) -> Reference:
    """The reference fed with every well-formed message, in the order it was produced."""
    ref = Reference(settings.journey)
    for m in produced:
        if m.kind != "malformed":
            ref.apply(orjson.loads(m.value))
    return ref


def final_scores(settings: Settings) -> dict[str, dict]:
    """The newest score message of each customer (highest version)."""
    latest: dict[str, dict] = {}
    for rec in read_json(settings, settings.topics.scores):
        cid = rec["customer_id"]
        if cid not in latest or rec["events"] >= latest[cid]["events"]:
            latest[cid] = rec
    return latest


def run_flow(settings: Settings, tmp_path: Path, *extra: str) -> None:
    config = write_config(settings, tmp_path / f"{settings.topics.scores}.toml")
    done = journey_cli("run", "--config", str(config), "--until-end", *extra)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_matches_reference(settings: Settings, ref: Reference) -> dict[str, dict]:
    scores = final_scores(settings)
    assert set(scores) == set(ref.customers)
    problems = {cid: p for cid in ref.customers
                if (p := records_match(scores[cid], ref.score_record(cid), 10.0))}
    assert not problems, list(problems.items())[:5]
    return scores


@pytest.fixture(scope="module")
def faulty_input(broker) -> tuple[Settings, list[SimMessage]]:
    """2,000+ customers over 30 days with re-deliveries, out-of-order and malformed messages.

    The history spans many dedup windows and a customer's events are spread over two
    topics: de-duplication is exact only because the source keeps partitions aligned
    in event time (PRODUCT §4).
    """
    base = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
    settings = replace(base, topics=Topics(inputs=("faulty.clickstream", "faulty.touchpoints")))
    opts = SimOptions(customers=2_500, events=30_000, seed=11, duplicates=0.05,
                      out_of_order=0.05, malformed=0.01, span_ms=30 * base.journey.dedup_window_ms)
    produced = messages(settings, opts)
    produce(settings, produced, progress=None)
    return settings, produced


def with_outputs(settings: Settings, tag: str) -> Settings:
    t = settings.topics
    return replace(settings, topics=replace(t, **{
        name: f"{tag}.{getattr(t, name)}"
        for name in OUTPUT_ROLES}))


@pytest.mark.parametrize("mode", ["1-worker", "2-workers", "2-processes"])
def test_scores_match_reference(faulty_input, tmp_path: Path, mode: str) -> None:
    settings, produced = faulty_input
    settings = with_outputs(settings, f"e2e-{mode}")
    ref = reference_from(settings, produced)
    assert len(ref.customers) >= 2_000 and ref.duplicates > 0
    if mode == "1-worker":
        run_flow(settings, tmp_path)
    elif mode == "2-workers":
        run_flow(settings, tmp_path, "--workers", "2")
    else:
        config = write_config(settings, tmp_path / "cluster.toml")
        first = free_port(count=4)  # two for the cluster, and process i's metrics on the third plus i
        addresses = f"127.0.0.1:{first};127.0.0.1:{first + 1}"
        metrics_port = first + 2
        logs = [tmp_path / f"process-{i}.log" for i in range(2)]
        procs = []
        for i, log in enumerate(logs):
            with log.open("w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-P", "-m", "journey.cli", "run", "--config", str(config), "--until-end",
                     "--process-id", str(i), "--addresses", addresses, "--metrics-port", str(metrics_port)],
                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline:
                codes = [p.poll() for p in procs]
                if None not in codes or any(c not in (None, 0) for c in codes):
                    break  # all done, or one failed: its peer would wait for it to the deadline
                time.sleep(0.2)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        failed = [(i, p.returncode, log.read_text()[-3000:])
                  for i, (p, log) in enumerate(zip(procs, logs, strict=True)) if p.returncode != 0]
        assert not failed, ("timed out after 300 s" if time.monotonic() >= deadline else "failed", failed)
        for i, log in enumerate(logs):
            assert f"metrics at http://127.0.0.1:{metrics_port + i}/metrics" in log.read_text()
    scores = assert_matches_reference(settings, ref)
    dead = read_json(settings, settings.topics.dlq)
    assert len(dead) == sum(1 for m in produced if m.kind == "malformed")
    assert all(d["reason"] and d["detail"] and d["topic"] in settings.topics.inputs for d in dead)
    # Scores are keyed by customer id; at most one message per customer per flush.
    for key, value, _ in read_topic(settings, settings.topics.scores)[:500]:
        assert key.decode() == orjson.loads(value)["customer_id"]
    assert sum(s["events"] for s in scores.values()) == sum(
        c.n for c in ref.customers.values())


def test_in_order_transitions_match_reference(make_settings: Callable[..., Settings],
                                              tmp_path: Path) -> None:
    # One input topic keyed by customer: each customer's events arrive in production order.
    settings = make_settings(inputs=("events",))
    produced = messages(settings, SimOptions(customers=300, events=6_000, seed=5))
    produce(settings, produced, progress=None)
    run_flow(settings, tmp_path)
    ref = reference_from(settings, produced)
    assert_matches_reference(settings, ref)
    got = {}
    for rec in read_json(settings, settings.topics.transitions):
        got.setdefault(rec["customer_id"], []).append(
            (rec["from"], rec["to"], rec["ts"], rec["event_id"], rec["version"]))
    want = {}
    for t in ref.transitions:
        want.setdefault(t.customer_id, []).append(
            (t.from_stage, t.to_stage, t.ts, t.event_id, t.version))
    assert got == want
    assert sum(len(v) for v in want.values()) > len(want)  # customers did move through stages


def test_a_map_with_negative_evidence_factors_checks_and_runs(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(inputs=("events",))
    config = write_config(settings, tmp_path / "negative.toml")
    against = "stages = { retention = -1.0, advocacy = -2.0 }"
    config.write_text(config.read_text()
                      .replace("{ retention = 1.0 }", "{ retention = 1.0, advocacy = -0.5 }")
                      .replace("weight = -3.0", f"weight = -3.0\n{against}"))
    checked = journey_cli("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    negative = load_settings(config)
    assert negative.journey.touchpoints["complaint"].stages == {"retention": -1.0, "advocacy": -2.0}
    produced = messages(negative, SimOptions(customers=400, events=8_000, seed=13))
    produce(negative, produced, progress=None)
    done = journey_cli("run", "--config", str(config), "--until-end")
    assert done.returncode == 0, done.stderr[-3000:]
    scores = assert_matches_reference(negative, reference_from(negative, produced))
    assert sum(1 for s in scores.values() if s["evidence"]["advocacy"] < 0) > 5
