"""Watermark, idleness and alignment of the partitions of one process, with the clock injected."""

import orjson
from confluent_kafka import Message

from config.model import Settings, Topics
from operators.base import END, NO_TIME
from operators.reading import Readers
from operators.watermark import Report, shard_watermark

T0 = 1_800_000_000_000
MIN = 60_000


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 86_400_000

    def __call__(self) -> int:
        return self.now


def msgs(part: int, *ts: int, first: int = 0) -> list[Message]:
    return [Message(topic="in", partition=part, offset=first + i, key=b"k", value=orjson.dumps(
        {"event_id": f"{part}-{first + i}", "customer_id": f"c{part}", "ts": t, "type": "page_view"}))
        for i, t in enumerate(ts)]


def test_watermark_is_the_slowest_active_partition_minus_lateness(settings: Settings) -> None:
    clock = Clock()
    readers = Readers(settings.journey, Topics(inputs=("in",)), clock)
    a, b = readers.reader("in#0", "in"), readers.reader("in#1", "in")
    lateness = settings.journey.allowed_lateness_ms
    a.add(msgs(0, T0 + 10 * MIN))
    b.add(msgs(1, T0 + 12 * MIN))
    a.take(), b.take()
    assert readers.aligner.watermark(clock()) == T0 + 10 * MIN - lateness
    # b delivers nothing for idle_timeout: it stops holding back... but it is ahead anyway;
    # a goes idle, b keeps reading: the watermark follows b alone
    clock.now += settings.journey.idle_timeout_ms
    b.add(msgs(1, T0 + 20 * MIN, first=1))
    b.take()
    assert readers.aligner.watermark(clock()) == T0 + 20 * MIN - lateness
    # everything idle: the watermark advances with the wall clock
    clock.now += settings.journey.idle_timeout_ms
    before = readers.aligner.watermark(clock())
    clock.now += 7_000
    assert readers.aligner.watermark(clock()) == before + 7_000
    readers.aligner.finish("in#0")
    readers.aligner.finish("in#1")
    assert readers.aligner.watermark(clock()) == END


def test_a_partition_waits_until_the_others_have_read_as_far(settings: Settings) -> None:
    clock = Clock()
    readers = Readers(settings.journey, Topics(inputs=("in",)), clock)
    fast, slow = readers.reader("in#0", "in"), readers.reader("in#1", "in")
    fast.add(msgs(0, T0, T0 + MIN, T0 + 3 * MIN, T0 + 10 * MIN))
    first = fast.take()  # the other partition has read nothing yet: a report, no events
    assert first is not None and not len(first.events) and first.report is not None
    slow.add(msgs(1, T0))
    got = fast.take()
    assert got is not None and got.events.ts.tolist() == [T0]  # the rest is beyond what slow read
    assert fast.pending and fast.pending_offset() == 1
    got = slow.take()  # the slowest is never held back
    assert got is not None and got.events.ts.tolist() == [T0]
    slow.add(msgs(1, T0 + 9 * MIN, first=1))
    got = fast.take()
    assert got is not None and got.events.ts.tolist() == [T0 + MIN, T0 + 3 * MIN]
    # slow has nothing more to read: after a short while, fast no longer waits for it
    readers.aligner.drained("in#1")
    held = fast.take()
    assert held is None or not len(held.events)
    clock.now += 1_000
    got = fast.take()
    assert got is not None and got.events.ts.tolist() == [T0 + 10 * MIN]
    assert not fast.pending


def test_hand_over_runs_at_most_half_the_dedup_window_ahead(settings: Settings) -> None:
    clock = Clock()
    clock.now += 2 * 86_400_000
    readers = Readers(settings.journey, Topics(inputs=("in",)), clock)
    ahead, behind = readers.reader("in#0", "in"), readers.reader("in#1", "in")
    half = settings.journey.dedup_window_ms // 2
    ahead.add(msgs(0, T0, T0 + half - MIN, T0 + half + MIN))
    behind.add(msgs(1, T0, T0 + 2 * half))  # read far, handed over nothing yet
    got = ahead.take()
    assert got is not None and got.events.ts.tolist() == [T0, T0 + half - MIN]
    behind.take()
    got = ahead.take()
    assert got is not None and got.events.ts.tolist() == [T0 + half + MIN]


def test_lateness_is_decided_by_read_time_positions(settings: Settings) -> None:
    """Late when older than what every partition had read by then, minus the lateness."""
    clock = Clock()
    readers = Readers(settings.journey, Topics(inputs=("in",)), clock)
    a, b = readers.reader("in#0", "in"), readers.reader("in#1", "in")
    lateness = settings.journey.allowed_lateness_ms
    a.add(msgs(0, T0, T0 + 30 * MIN, T0 + 20 * MIN, T0 + 40 * MIN, T0 + 20 * MIN))
    b.add(msgs(1, T0, T0 + 26 * MIN, T0 + 50 * MIN))
    got = a.take()
    assert got is not None
    # by the time a has read 30 min, b has read 26 min: the watermark is 21 min, so an
    # event at 20 min is late; at 0 min, b had read 0 min: nothing was late then
    assert got.events.late.tolist() == [False, False, True, False, True]
    assert orjson.loads(got.late[0][2])["late_by_ms"] == 26 * MIN - lateness - 20 * MIN
    # what a alone allowed: its own running maximum minus the lateness, whatever b had read
    own = [T0, T0 + 30 * MIN, T0 + 30 * MIN, T0 + 40 * MIN, T0 + 40 * MIN]
    assert got.events.own_mark.tolist() == [t - lateness for t in own]
    assert (got.events.own_mark >= got.events.mark).all()


def test_events_older_than_the_watermark_are_late_with_how_late(settings: Settings) -> None:
    clock = Clock()
    readers = Readers(settings.journey, Topics(inputs=("in",)), clock)
    r = readers.reader("in#0", "in")
    lateness = settings.journey.allowed_lateness_ms
    r.add(msgs(0, T0 + 60 * MIN, T0 + 58 * MIN, T0 + 30 * MIN))
    got = r.take()
    assert got is not None and got.events.late.tolist() == [False, False, True]
    (late,) = got.late
    record = orjson.loads(late[2])
    assert record["late_by_ms"] == 60 * MIN - lateness - 30 * MIN
    assert record["event"]["ts"] == T0 + 30 * MIN and record["offset"] == 2
    assert got.report == Report("in#0", T0 + 60 * MIN - lateness, idle=False)


def test_a_shard_waits_for_every_partition_and_ignores_idle_ones() -> None:
    reports = {"a": Report("a", 100, idle=False)}
    assert shard_watermark(reports, 2) == NO_TIME  # b not heard from yet
    reports["b"] = Report("b", 50, idle=False)
    assert shard_watermark(reports, 2) == 50
    reports["b"] = Report("b", 500, idle=True)
    assert shard_watermark(reports, 2) == 100
    reports["a"] = Report("a", 400, idle=True)
    assert shard_watermark(reports, 2) == 400  # all idle: the lowest idle watermark
    reports = {p: Report(p, END, idle=True, end_ts=1) for p in "ab"}
    assert shard_watermark(reports, 2) == END


def test_a_live_partition_hands_over_at_once_and_nobody_waits_for_a_quiet_one(settings: Settings) -> None:
    clock = Clock()
    readers = Readers(settings.journey, Topics(inputs=("in",)), clock)
    busy, quiet = readers.reader("in#0", "in"), readers.reader("in#1", "in")
    old, older = readers.reader("in#2", "in"), readers.reader("in#3", "in")
    now, lateness = clock.now, settings.journey.allowed_lateness_ms
    for reader in (busy, quiet, old, older):
        reader.behind_by(0)  # every consumer has caught up with its log
    old.add(msgs(2, T0, T0 + MIN))  # ...but these two read history: a day behind in event time
    older.add(msgs(3, T0))
    busy.add(msgs(0, now - 2 * MIN, now - 20 * MIN, now - MIN))
    got = busy.take()  # neither the quiet partition nor the history holds it back
    assert got is not None and got.events.ts.tolist() == [now - 2 * MIN, now - 20 * MIN, now - MIN]
    assert not got.events.late.any()  # the quiet partition holds the watermark back
    got = old.take()  # history at the head of its log replays, aligned with the other history
    assert got is not None and got.events.ts.tolist() == [T0]
    older.add(msgs(3, T0 + MIN, first=1))
    got = old.take()
    assert got is not None and got.events.ts.tolist() == [T0 + MIN]
    older.take()
    clock.now += settings.journey.idle_timeout_ms  # all but busy go idle
    busy.add(msgs(0, now - 20 * MIN, first=3))
    got = busy.take()  # late: older than the watermark when read (busy's own position - lateness)
    assert got is not None and got.events.late.tolist() == [True]
    assert orjson.loads(got.late[0][2])["late_by_ms"] == (now - MIN - lateness) - (now - 20 * MIN)


def test_a_partition_is_at_the_head_until_it_falls_two_reads_behind(settings: Settings) -> None:
    readers = Readers(settings.journey, Topics(inputs=("in",)), Clock())
    r = readers.reader("in#0", "in")
    at_head = []
    for lag in (50_000, 5_000, 1_000, 5_000, 20_000, 20_001, 1_001, 999):
        r.behind_by(lag)
        at_head.append(readers.aligner.is_at_head("in#0"))
    assert at_head == [False, False, True, True, True, False, False, True]
