"""Sessions, channel/funnel windows, late events and dormancy through the whole flow and broker."""

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import orjson
import pytest
from confluent_kafka import Producer

from config.model import DEFAULT_PATH, Settings, Topics, load_settings
from journey.kafka_io import ensure_topics
from journey.runner import RunOptions, run
from journey.simulate import SimMessage, SimOptions, messages, produce
from operators.base import wall_clock_ms
from operators.metrics import EngineMetrics
from tests.broker_fixtures import ROOT, read_json, read_topic, write_config
from tests.flows.test_end_to_end import assert_matches_reference, reference_from, run_flow, with_outputs
from tests.reference_windows import WindowsReference, comparable_metrics, comparable_sessions

pytestmark = pytest.mark.slow

HOUR = 3_600_000
DAY = 24 * HOUR


def windows_reference(settings: Settings, produced: list[SimMessage],
                      keep: Callable[[SimMessage], bool] = lambda m: True) -> WindowsReference:
    ref = WindowsReference(settings.journey)
    for m in produced:
        if m.kind != "malformed" and keep(m):
            ref.apply(orjson.loads(m.value))
    return ref


@pytest.fixture(scope="module")
def window_input(broker) -> tuple[Settings, list[SimMessage]]:
    """A day of journeys on one topic keyed by customer, 10% out of order within the bound."""
    base = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
    settings = replace(base, topics=Topics(inputs=("windows.events",)))
    produced = messages(settings, SimOptions(customers=2_000, events=20_000, seed=21,
                                             out_of_order=0.10, duplicates=0.02, span_ms=DAY))
    produce(settings, produced, progress=None, partitions=4)
    return settings, produced


@pytest.mark.parametrize("workers", [1, 2])
def test_sessions_and_metrics_match_reference(window_input, tmp_path: Path, workers: int) -> None:
    settings, produced = window_input
    settings = with_outputs(settings, f"windows-{workers}")
    run_flow(settings, tmp_path, "--workers", str(workers))
    ref = windows_reference(settings, produced)
    sessions = read_json(settings, settings.topics.sessions)
    metrics = read_json(settings, settings.topics.metrics)
    assert len(sessions) > 2_000 and any(s["events"] > 1 for s in sessions)
    assert comparable_sessions(sessions) == comparable_sessions(ref.sessions())
    channel = [m for m in metrics if m["kind"] == "channel"]
    assert any(m["responses"] for m in channel) and any(m["ctr"] is not None for m in channel)
    assert comparable_metrics(metrics) == comparable_metrics(ref.metrics())
    assert read_json(settings, settings.topics.late) == []


def test_late_events_are_written_scored_and_never_reopen_windows(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    # One partition: how late an event is then follows from the stream order alone, so the
    # simulator's labels are exact (with several, a partition may not have got as far).
    settings = make_settings(inputs=("events",))
    produced = messages(settings, SimOptions(customers=300, events=6_000, seed=8, late=0.03,
                                             span_ms=6 * HOUR))
    produce(settings, produced, progress=None, partitions=1)
    run_flow(settings, tmp_path)
    late_sent = [orjson.loads(m.value) for m in produced if m.late]
    late = read_json(settings, settings.topics.late)
    assert len(late_sent) > 50
    assert sorted(r["event"]["event_id"] for r in late) == sorted(e["event_id"] for e in late_sent)
    assert all(r["late_by_ms"] > 0 and r["topic"] == settings.topics.inputs[0] for r in late)
    for key, value, _ in read_topic(settings, settings.topics.late):  # keyed by customer id
        assert key.decode() == orjson.loads(value)["event"]["customer_id"]
    # the late events still count in the scores
    assert_matches_reference(settings, reference_from(settings, produced))
    # and in no window: sessions and channel windows are those of the on-time events alone,
    # each window emitted once
    ref = windows_reference(settings, produced, keep=lambda m: not m.late)
    sessions = read_json(settings, settings.topics.sessions)
    assert comparable_sessions(sessions) == comparable_sessions(ref.sessions())
    metrics = read_json(settings, settings.topics.metrics)
    keys = [(m["window_start"], m["kind"], m.get("channel")) for m in metrics]
    assert len(keys) == len(set(keys))
    channel = [m for m in comparable_metrics(metrics) if m["kind"] == "channel"]
    assert channel == [m for m in comparable_metrics(ref.metrics()) if m["kind"] == "channel"]


def _dormancy_messages(end: int) -> list[tuple[int, dict]]:
    """(partition, event): a steady customer on partition 0, the others on partition 1."""
    steady = [(0, {"event_id": f"f{d}", "customer_id": "steady", "ts": end - d * DAY,
                   "type": "page_view", "channel": "web"}) for d in range(60, -1, -1)]
    others = [("gone", 50), ("comes-back", 50), ("gone-too", 47), ("recent", 2), ("comes-back", 1)]
    rest = [(1, {"event_id": f"{cid}-{days}", "customer_id": cid, "ts": end - days * DAY,
                 "type": "product_view", "channel": "app"}) for cid, days in others]
    return steady + rest


def test_dormancy_and_coming_back(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(inputs=("events",))
    end = wall_clock_ms() - HOUR
    ensure_topics(settings.kafka, settings.topics.inputs, 2)
    producer = Producer({"bootstrap.servers": settings.kafka.brokers})
    for partition, event in _dormancy_messages(end):
        producer.produce(settings.topics.inputs[0], orjson.dumps(event), event["customer_id"],
                         partition=partition)
    assert producer.flush(30) == 0
    del producer
    run_flow(settings, tmp_path)
    scores = {}
    for rec in read_json(settings, settings.topics.scores):
        scores[rec["customer_id"]] = rec  # per key in order: the last is the newest
    assert {c for c, s in scores.items() if s["stage"] == "dormant"} == {"gone", "gone-too"}
    moves = {}
    for rec in read_json(settings, settings.topics.transitions):
        moves.setdefault(rec["customer_id"], []).append((rec["from"], rec["to"], rec["event_id"]))
    first, back = moves["comes-back"][0][1], scores["comes-back"]["stage"]
    assert moves["comes-back"] == [(None, first, "comes-back-50"), (first, "dormant", None),
                                   ("dormant", back, "comes-back-1")]
    gone = [t for t in read_json(settings, settings.topics.transitions)
            if t["customer_id"] == "gone" and t["to"] == "dormant"]
    assert [t["ts"] for t in gone] == [end - 50 * DAY + settings.journey.dormant_after_ms]


def stop(proc: subprocess.Popen, log: TextIO) -> None:
    """Ctrl-C, as an operator would; if it does not stop, fail with where every thread was."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
        proc.wait(timeout=30)
        log.seek(0)
        pytest.fail(f"the live run did not stop within 60 s of SIGINT:\n{log.read()[-8000:]}")


def test_replay_at_full_speed_classifies_like_a_live_run(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """Days of history over 8 partitions: replayed at full speed, and fed slowly while running."""
    replay = make_settings(inputs=("events",))
    live = make_settings(inputs=("events",))
    end = wall_clock_ms() - 2 * DAY
    opts = SimOptions(customers=2_000, events=40_000, seed=31, late=0.01, span_ms=3 * DAY, end_ms=end,
                      lateness_ms=30 * 60_000)  # late events: an hour behind the stream
    produced = messages(replay, opts)
    # one event a day after the history on every partition pushes every window closed
    # in the live run too; records of those last windows are left out of the comparison
    closing_ts = wall_clock_ms()
    for s in (replay, live):
        ensure_topics(s.kafka, s.topics.inputs, 8)

    def send(settings: Settings, rate: float | None) -> None:
        msgs = [m._replace(topic=settings.topics.inputs[0]) for m in produced]
        produce(settings, msgs, rate=rate, progress=None, partitions=8)
        producer = Producer({"bootstrap.servers": settings.kafka.brokers})
        for p in range(8):
            producer.produce(settings.topics.inputs[0], orjson.dumps(
                {"event_id": f"close-{p}", "customer_id": f"closer-{p}", "ts": closing_ts,
                 "type": "page_view"}), f"closer-{p}", partition=p)
        assert producer.flush(30) == 0
        del producer

    send(replay, None)
    run_flow(replay, tmp_path)
    config = write_config(live, tmp_path / "live.toml")
    log = (tmp_path / "live.log").open("w+")
    # a background job's children inherit SIGINT ignored; the live run gets Ctrl-C as from a shell
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-P", "-X", "faulthandler", "-m", "journey.cli", "run",
                                 "--config", str(config)], cwd=ROOT, stdout=log, stderr=log, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        send(live, rate=3_000)
        want_windows = {m["window_start"] for m in read_json(replay, replay.topics.metrics)
                        if m["kind"] == "funnel" and m["window_start"] < end + DAY}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            got = {m["window_start"] for m in read_json(live, live.topics.metrics)
                   if m["kind"] == "funnel"}
            if want_windows <= got:
                break
            time.sleep(2)
    finally:
        stop(proc, log)
    log.seek(0)
    assert proc.returncode in (0, -signal.SIGINT, 130), log.read()[-3000:]

    def before_closing(records: list[dict], key: str) -> list[dict]:
        return [r for r in records if r[key] < end + DAY]

    late_replay = read_json(replay, replay.topics.late)
    late_live = read_json(live, live.topics.late)
    # the same events are late (how late depends on how far the other partitions had got)
    late_ids = sorted(r["event"]["event_id"] for r in late_replay)
    assert late_ids == sorted(r["event"]["event_id"] for r in late_live)
    assert len(late_ids) > 200
    for key, topic in (("session_start", "sessions"), ("window_start", "metrics")):
        a = before_closing(read_json(replay, getattr(replay.topics, topic)), key)
        b = before_closing(read_json(live, getattr(live.topics, topic)), key)
        sort = comparable_sessions if topic == "sessions" else comparable_metrics
        assert a and sort(a) == sort(b), topic


def test_state_is_freed_when_windows_close(broker, make_settings: Callable[..., Settings]) -> None:
    """1M events over 200k customers: nothing of a session or window stays once closed."""
    settings = make_settings()
    produced = messages(settings, SimOptions(customers=200_000, events=1_000_000, seed=41))
    produce(settings, produced, progress=None)
    metrics = EngineMetrics()
    run(settings, RunOptions(until_end=True), metrics)
    assert metrics.total("journey_events_total") == len(produced)
    assert metrics.value("journey_open_sessions") == 0
    assert metrics.value("journey_open_windows") == 0
    closed = len(read_json(settings, settings.topics.sessions))
    slots = metrics.value("journey_session_slots")
    # Without freeing, every session ever opened holds a slot (slots >= closed). With it, a
    # shard's pool doubles up to its peak of concurrently open sessions, which depends on how
    # far reading runs ahead of the watermark (about closed / 8 here, varying run to run).
    assert closed > 200_000 and slots < closed / 2, (closed, slots)
