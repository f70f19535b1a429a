"""Sessions, channel and funnel windows of the shard and metrics steps against the reference.

The steps are driven directly (no Kafka): events are parsed from JSON, routed to
shards and followed by watermark reports as a partition would send them.
"""

import pickle
import random
from collections import Counter
from dataclasses import replace
from itertools import pairwise
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from config.model import DEFAULT_PATH, Settings, load_settings
from operators.aggregate import ShardProgress, WindowAggregator
from operators.base import END, each_record
from operators.events import EventParser
from operators.metrics import EngineMetrics
from operators.reading import SourceRead
from operators.records import RecordBuilder
from operators.routing import route
from operators.shard import ShardScorer
from operators.watermark import Report
from operators.window_kernels import _SPREAD
from operators.windows import MIN_HASH, ShardWindows
from tests.reference_windows import WindowsReference, comparable_metrics, comparable_sessions

BASE = 1_750_000_000_000
MINUTE = 60_000
SETTINGS = load_settings(DEFAULT_PATH)
TYPES = ["page_view", "ad_impression", "ad_click", "email_sent", "email_open", "email_click",
         "purchase", "survey_response", "push_sent", "add_to_cart", "product_view"]
CHANNELS = ["web", "email", "ads", "martian", None, "push"]


LAGGARD = "0000"


class Engine:
    """The shard and metrics steps, fed like one input partition feeds them."""

    def __init__(self, settings: Settings, shards: int = 3) -> None:
        self.settings = settings
        self.shards = shards
        j = settings.journey
        self.parser = EventParser(j, "dlq", clock=lambda: BASE + 400 * 86_400_000)
        self.records = RecordBuilder(j, settings.topics)
        self.metrics = EngineMetrics()
        self.steps = {f"{s:04d}": ShardScorer(j, self.records, self.metrics, 1, None)
                      for s in range(shards)}
        self.totals = WindowAggregator(self.records, j.metrics_window_ms, shards, None, self.metrics)
        self.out: list[tuple[str, bytes | None, bytes]] = []
        self.held: list[ShardProgress] = []
        self.offset = 0

    def feed(self, events: list[dict], report: Report | None) -> None:
        msgs = []
        for e in events:
            msgs.append(Message(topic="in", partition=0, offset=self.offset, key=None,
                                value=orjson.dumps(e)))
            self.offset += 1
        parsed = self.parser.parse(msgs)
        assert not parsed.dead_letters
        read = SourceRead(parsed.events, [], [], {}, report)
        by_shard: dict[str, list] = {}
        for key, item in route([read], self.shards):
            by_shard.setdefault(key, []).append(item)
        progress = []
        for key, items in by_shard.items():
            (result,), _ = self.steps[key].on_batch(items)
            self.out += each_record(result.records)
            if result.shares is not None or result.watermark is not None:
                progress.append(ShardProgress(key, result.shares, result.watermark))
        # the first shard's progress reaches the metrics step one feed late, as another
        # worker's can: windows wait there, part summed, until every shard has closed them
        late = [p for p in progress if p.shard == LAGGARD]
        self.aggregate(self.held + [p for p in progress if p.shard != LAGGARD])
        self.held = late

    def aggregate(self, progress: list[ShardProgress]) -> None:
        if progress:
            got, _ = self.totals.on_batch(progress)
            for records in got:
                self.out += each_record(records)

    def drain(self) -> None:
        """Deliver the progress held back."""
        self.aggregate(self.held)
        self.held = []

    def restart(self) -> None:
        """Resume every step from a pickled snapshot, as a restarted process does (fresh metrics)."""
        j = self.settings.journey
        self.metrics = EngineMetrics()
        self.steps = {key: ShardScorer(j, self.records, self.metrics, 1,
                                       pickle.loads(pickle.dumps(step.snapshot())))
                      for key, step in self.steps.items()}
        self.totals = WindowAggregator(self.records, j.metrics_window_ms, self.shards,
                                       pickle.loads(pickle.dumps(self.totals.snapshot())), self.metrics)

    def topic(self, name: str) -> list[dict]:
        topic = getattr(self.settings.topics, name)
        return [orjson.loads(v) for t, _, v in self.out if t == topic]


def run(events: list[dict], cuts: list[int], settings: Settings = SETTINGS,
        restarts: frozenset[int] = frozenset()) -> Engine:
    """Feed ``events`` in batches cut at ``cuts``; each batch reports max ts - lateness; then end.

    After the batches numbered in ``restarts`` every step resumes from its snapshot.
    """
    engine = Engine(settings)
    lateness = settings.journey.allowed_lateness_ms
    high = None
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(events)}), len(events)]
    for number, (a, b) in enumerate(pairwise(bounds)):
        batch = events[a:b]
        high = max([high or 0, *(e["ts"] for e in batch)])
        engine.feed(batch, Report("in#0", high - lateness, idle=False))
        if number in restarts:
            engine.restart()
    engine.feed([], Report("in#0", END, idle=True, end_ts=high))
    engine.drain()
    return engine


def reference(events: list[dict], settings: Settings = SETTINGS) -> WindowsReference:
    ref = WindowsReference(settings.journey)
    for e in events:
        ref.apply(e)
    return ref


def assert_windows_match(engine: Engine, ref: WindowsReference) -> None:
    assert comparable_sessions(engine.topic("sessions")) == comparable_sessions(ref.sessions())
    assert comparable_metrics(engine.topic("metrics")) == comparable_metrics(ref.metrics())
    assert engine.metrics.value("journey_open_sessions") == 0
    assert engine.metrics.value("journey_open_windows") == 0


def event(n: int, cid: str, ts: int, kind: str, channel: str | None = "web", **extra) -> dict:
    e = {"event_id": f"e{n}", "customer_id": cid, "ts": ts, "type": kind, **extra}
    if channel is not None:
        e["channel"] = channel
    return e


def test_known_sessions_windows_and_response_times() -> None:
    m = MINUTE
    events = [
        event(1, "a", BASE + 0, "email_sent", "email"),
        event(2, "a", BASE + 2 * m + 500, "email_open", "email"),  # response after 120.5 s
        event(3, "a", BASE + 3 * m, "email_click", "email"),  # second response: not counted
        event(4, "b", BASE + 10 * m, "ad_impression", "ads"),
        event(5, "b", BASE + 10 * m + 1, "ad_click", "ads"),
        event(7, "b", BASE + 10 * m + 3, "survey_response", "martian", sentiment=0.5),
        event(8, "b", BASE + 10 * m + 2, "ad_impression", "ads"),  # out of order, on time
        event(6, "a", BASE + 50 * m, "purchase", "web"),  # 47 min later: a new session
    ]
    engine = run(events, [3, 6])
    sessions = sorted(engine.topic("sessions"), key=lambda s: (s["customer_id"], s["session_start"]))
    assert [(s["customer_id"], s["events"], s["duration_ms"], s["converted"]) for s in sessions] == [
        ("a", 3, 3 * m, False), ("a", 1, 0, True), ("b", 4, 3, False)]
    assert sessions[2]["channels"] == {"ads": 3, "other": 1}
    channel = {(r["window_start"], r["channel"]): r for r in engine.topic("metrics")
               if r["kind"] == "channel"}
    email = channel[BASE - BASE % m + 2 * m, "email"]
    assert email["responses"] == 1 and email["response_time_mean_ms"] == 2 * m + 500
    ads = channel[BASE - BASE % m + 10 * m, "ads"]
    assert (ads["impressions"], ads["clicks"], ads["ctr"], ads["customers"]) == (2, 1, 0.5, 1)
    assert channel[BASE - BASE % m + 10 * m, "other"]["sentiment_mean"] == 0.5
    assert_windows_match(engine, reference(events))


def test_a_late_arriving_event_bridges_two_sessions() -> None:
    m = MINUTE
    events = [event(1, "a", BASE, "page_view"), event(2, "a", BASE + 50 * m, "page_view"),
              event(3, "a", BASE + 25 * m, "page_view")]  # within 30 min of both
    # with an hour of allowed lateness, event 3 is on time although read after event 2
    settings = replace(SETTINGS, journey=replace(SETTINGS.journey, allowed_lateness_ms=60 * m))
    engine = run(events, [1, 2, 3], settings)
    assert [(s["events"], s["duration_ms"]) for s in engine.topic("sessions")] == [(3, 50 * m)]
    assert_windows_match(engine, reference(events, settings))


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict], list[int]]:
    """Event streams with sessions, re-deliveries and out-of-order arrival within the bound."""
    n = draw(st.integers(1, 80))
    rng = random.Random(draw(st.integers(0, 2**32)))
    customers = [f"c{i}" for i in range(draw(st.integers(1, 6)))]
    ts = BASE
    events = []
    for i in range(n):
        ts += rng.choice([0, 1_000, 20_000, MINUTE, 5 * MINUTE, 29 * MINUTE, 31 * MINUTE, 2 * 3_600_000])
        e = event(i, rng.choice(customers), ts, rng.choice(TYPES), rng.choice(CHANNELS))
        if rng.random() < 0.2:
            e["sentiment"] = rng.choice([-1.0, -0.25, 0.0, 0.5, 1.0])
        events.append(e)
    bound = SETTINGS.journey.allowed_lateness_ms // 2
    for _ in range(n // 10 + 1):  # swap neighbours closer than half the lateness
        i = rng.randrange(n)
        j = min(n - 1, i + rng.randint(1, 3))
        if events[j]["ts"] - events[i]["ts"] < bound:
            events[i], events[j] = events[j], events[i]
    for _ in range(draw(st.integers(0, 5))):  # re-deliveries shortly after the original
        i = rng.randrange(n)
        events.insert(min(len(events), i + rng.randint(1, 3)), dict(events[i]))
    cuts = draw(st.lists(st.integers(0, len(events)), max_size=8))
    return events, cuts


@hyp_settings(max_examples=150, deadline=None)
@given(streams())
def test_random_streams_match_the_reference(stream: tuple[list[dict], list[int]]) -> None:
    events, cuts = stream
    assert_windows_match(run(events, cuts), reference(events))


@hyp_settings(max_examples=100, deadline=None)
@given(streams(), st.frozensets(st.integers(0, 8), max_size=3))
def test_resuming_from_snapshots_changes_nothing(stream: tuple[list[dict], list[int]],
                                                 restarts: frozenset[int]) -> None:
    """Open sessions, windows and window shares survive a snapshot and resume mid-stream."""
    events, cuts = stream
    assert_windows_match(run(events, cuts, restarts=restarts), reference(events))


@hyp_settings(max_examples=100, deadline=None)
@given(streams(), st.frozensets(st.integers(0, 8), max_size=3))
def test_sessions_close_as_soon_as_the_watermark_passes_them(stream: tuple[list[dict], list[int]],
                                                             restarts: frozenset[int]) -> None:
    """Closing looks only at the earliest open sessions (a heap, rebuilt on resume): after every
    batch, the sessions out are exactly the reference's whose end + gap the watermark passed."""
    events, cuts = stream
    j = SETTINGS.journey
    final = comparable_sessions(reference(events).sessions())
    engine = Engine(SETTINGS)
    high = 0
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(events)}), len(events)]
    for number, (a, b) in enumerate(pairwise(bounds)):
        high = max(high, *(e["ts"] for e in events[a:b]))
        watermark = high - j.allowed_lateness_ms
        engine.feed(events[a:b], Report("in#0", watermark, idle=False))
        assert comparable_sessions(engine.topic("sessions")) == [
            s for s in final if s["session_end"] + j.session_gap_ms <= watermark]
        if number in restarts:
            engine.restart()


# windows (after BASE's) that collide in the shard's hash table of open windows (64 buckets
# at first), in the last buckets, so that probe runs wrap around the table's end
LAST_BUCKETS = [k for k in range(1_000)
                if (BASE // MINUTE + k) * int(_SPREAD) % 2**64 % 64 >= 62][:4]
COLLIDING = st.builds(lambda a, b: LAST_BUCKETS[a] + 64 * b, st.integers(0, 3), st.integers(0, 40))


def to_dormant(at: np.ndarray) -> np.ndarray:
    """Moves to dormant (the stage index after the last), one per time."""
    return np.full(at.size, len(SETTINGS.journey.stages), dtype=np.int16)


@hyp_settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("open"), st.lists(COLLIDING, max_size=50)),
                          st.tuples(st.just("close"), st.integers(0, 64 * 41))), max_size=40))
def test_open_windows_are_found_and_closed_exactly(ops: list[tuple[str, Any]]) -> None:
    """Windows found through the shard's hash table, against a dict: colliding window
    numbers, growth, windows found again after others closed out of their probe run."""
    windows = ShardWindows(SETTINGS.journey)
    width = windows.width
    moves: Counter[int] = Counter()  # window start -> transitions counted in it
    for op, arg in ops:
        if op == "open":
            at = np.array([BASE + k * width + k % 7 for k in arg], dtype=np.int64)
            windows.count_moves(np.zeros(at.size, dtype=np.int16), to_dormant(at), at)
            moves.update(int(t - t % width) for t in at.tolist())
        else:
            watermark = BASE + arg * width
            shares = windows.close_windows(watermark)
            closing = sorted(s for s in moves if s + width <= watermark)
            got = ([] if shares is None else
                   list(zip(shares.transitions.start.tolist(), shares.transitions.value.tolist(),
                            strict=True)))
            assert got == [(s, moves.pop(s)) for s in closing]
            assert shares is None or shares.starts.tolist() == closing
        assert windows.open_windows == len(moves)


def test_a_window_closes_in_the_step_its_end_is_reached() -> None:
    """Not a millisecond before its end, and in the very step the watermark reaches it (a
    step skips the closing kernel only while no open window has ended)."""
    windows = ShardWindows(SETTINGS.journey)
    width = windows.width
    at = np.array([BASE + 3 * width + 5, BASE + 9 * width], dtype=np.int64)
    windows.count_moves(np.zeros(at.size, dtype=np.int16), to_dormant(at), at)
    first, second = (int(t - t % width) for t in at.tolist())
    assert windows.close_windows(first + width - 1) is None
    shares = windows.close_windows(first + width)
    assert shares is not None and shares.starts.tolist() == [first]
    assert windows.close_windows(second + width - 1) is None
    shares = windows.close_windows(second + width)
    assert shares is not None and shares.starts.tolist() == [second]
    assert windows.open_windows == 0


def test_window_table_shrinks_after_a_burst() -> None:
    """Closing scans the hash table: after many windows closed, it does not stay large."""
    windows = ShardWindows(SETTINGS.journey)
    width = windows.width
    at = BASE + width * np.arange(5_000, dtype=np.int64)
    windows.count_moves(np.zeros(at.size, dtype=np.int16), to_dormant(at), at)
    assert windows.h_slot.size >= 10_000
    shares = windows.close_windows(BASE + 6_000 * width)
    assert shares is not None and shares.starts.size == 5_000 and windows.open_windows == 0
    again = np.array([BASE + 7_000 * width, BASE + 7_000 * width + 1, BASE + 7_001 * width])
    windows.count_moves(np.zeros(3, dtype=np.int16), to_dormant(again), again)
    assert windows.h_slot.size == MIN_HASH and windows.open_windows == 2
    shares = windows.close_windows(BASE + 8_000 * width)
    assert shares is not None
    starts = (again - again % width).tolist()
    assert list(zip(shares.transitions.start.tolist(), shares.transitions.value.tolist(),
                    strict=True)) == [(starts[0], 2), (starts[2], 1)]


@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 399), max_size=4))
@hyp_settings(max_examples=15, deadline=None)
def test_channel_gauges_show_what_the_window_records_say(seed: int, cuts: list[int]) -> None:
    """Events and conversions of the last window; CTR and response time of the last window with any."""
    rng = random.Random(seed)
    events = sorted((event(i, f"c{rng.randrange(15)}", BASE + rng.randrange(90 * MINUTE), rng.choice(TYPES),
                           rng.choice(CHANNELS)) for i in range(400)), key=lambda e: e["ts"])
    engine = run(events, cuts)
    records = engine.topic("metrics")
    last = max(r["window_start"] for r in records)
    channel = sorted((r for r in records if r["kind"] == "channel"), key=lambda r: r["window_start"])
    m = engine.metrics
    for name in engine.records.channel_names:
        mine = [r for r in channel if r["channel"] == name]
        now = [r for r in mine if r["window_start"] == last]
        assert m.value("journey_channel_events", channel=name) == (now[0]["events"] if now else 0)
        assert m.value("journey_channel_conversions", channel=name) == (now[0]["conversions"] if now else 0)
        for gauge, field, count, scale in (("journey_channel_ctr", "ctr", "impressions", 1),
                                           ("journey_channel_response_time_seconds", "response_time_mean_ms",
                                            "responses", 1000)):
            defined = [r[field] / scale for r in mine if r[count]]
            got = m.value(gauge, channel=name)
            if defined:
                assert got == pytest.approx(defined[-1], rel=1e-12), (name, gauge)
            else:
                assert np.isnan(got), (name, gauge)
