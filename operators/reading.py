"""Reading one input partition in event-time step with the other partitions of its process.

A reader parses what the consumer fetched, then hands it over in prefixes: only as far
as the alignment limit allows (PRODUCT §5), marking events older than the watermark
as late and sending the partition's ``Report`` along. Parsing happens here, at read
time, because both alignment and lateness are decided by event time as it is read.
"""

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from confluent_kafka import Message

from config.model import JourneyMap, Topics
from operators.base import EMPTY_BATCH, NO_TIME, Clock, EventBatch, OutRecord, wall_clock_ms
from operators.events import EventParser, ParsedBatch
from operators.raw_records import late_record
from operators.watermark import Aligner, Report

LIVE_LAG = 1_000
"""A consumer at most this many messages behind the head of its partition's log has caught
up: reading current events there, the partition is live (``watermark``)."""
BEHIND_LAG = 20_000
"""A consumer that falls more than this far behind (two full reads) replays again,
aligned with the other partitions, until it has caught up."""
REPORT_EVERY_MS = 500
"""A partition re-broadcasts a watermark that moved at most this often (wall clock)..."""
REPORT_EVERY_EVENT_MS = 86_400_000
"""...or whenever it moved this far in event time, so that a replay at full speed still
closes windows and frees their state day by day. (Reports only decide *when* windows
close; what they hold, and who goes dormant before their next event, is decided by
the watermark each event was read under.)"""


@dataclass(frozen=True)
class SourceRead:
    """One hand-over from a partition to the flow."""

    events: EventBatch
    dead_letters: list[OutRecord]
    late: list[OutRecord]
    rejected: dict[str, int]  # dead letters by reason
    report: Report | None  # None: nothing new to tell every shard


class PartitionReader:
    """Parses, aligns and classifies the messages of one partition; knows no Kafka client."""

    def __init__(self, part: str, topic_idx: int, parser: EventParser, aligner: Aligner, late_topic: str,
                 report_every_ms: int = REPORT_EVERY_MS) -> None:
        self.part = part
        self.topic_idx = topic_idx
        self.parser = parser
        self.aligner = aligner
        self.late_topic = late_topic
        self.report_every_ms = report_every_ms
        self.messages: Sequence[Message] = []
        self.parsed: ParsedBatch | None = None
        self.cursor = 0  # next message to hand over
        self.event_cursor = 0
        self.dead_cursor = 0
        self.run: npt.NDArray[np.int64] = np.empty(0, np.int64)  # running max of fetched event times
        self.mark = NO_TIME  # the read-time watermark of the last event handed over
        self.last_report: Report | None = None
        self.last_report_at = NO_TIME
        aligner.register(part)

    @property
    def pending(self) -> bool:
        """Messages were read and not handed over yet."""
        return self.cursor < len(self.messages)

    @property
    def buffered(self) -> int:
        """How many messages wait here (the source reads more while this is small)."""
        return len(self.messages) - self.cursor

    def pending_offset(self) -> int | None:
        """Kafka offset of the first message not handed over, if any (what a snapshot keeps)."""
        return self.messages[self.cursor].offset() if self.pending else None

    def add(self, messages: Sequence[Message]) -> EventBatch:
        """Parse freshly read messages; they queue behind any still held back. Returns their events."""
        fresh = self.parser.parse(messages, self.topic_idx)
        events = fresh.events
        if self.parsed is not None and self.pending:
            fresh = _joined(self.parsed, self.cursor, self.event_cursor, self.dead_cursor, fresh,
                            len(self.messages) - self.cursor)
            messages = [*self.messages[self.cursor:], *messages]
        self.parsed, self.messages = fresh, messages
        self.cursor = self.event_cursor = self.dead_cursor = 0
        self.run = self.aligner.read(self.part, fresh.events.ts)
        return events

    def drained(self) -> None:
        """The consumer had nothing more: others stop waiting for this one's reading soon."""
        self.aligner.drained(self.part)

    def behind_by(self, lag: int) -> None:
        """The consumer is ``lag`` messages behind the head of the log.

        A source that reads a bounded range (a replay by definition) never says so, and its
        partitions stay aligned.
        """
        at_head = self.aligner.is_at_head(self.part)
        if (not at_head and lag <= LIVE_LAG) or (at_head and lag > BEHIND_LAG):
            self.aligner.at_head(self.part, not at_head)

    def _head(self) -> int:
        assert self.parsed is not None
        ts = self.parsed.events.ts
        return int(ts[self.event_cursor]) if self.event_cursor < ts.shape[0] else NO_TIME

    def take(self) -> SourceRead | None:
        """Hand over what alignment allows now; None when there is nothing new at all."""
        now = self.aligner.clock()
        if self.parsed is None or not self.pending:
            return self._only_report(now)
        parsed = self.parsed
        all_events = parsed.events
        e0 = self.event_cursor
        # the running maximum passes the limit exactly where the first event beyond it is
        e1 = max(e0, int(np.searchsorted(self.run, self.aligner.limit(self.part, now), side="right")))
        stop = int(parsed.event_index[e1]) if e1 < len(all_events) else len(self.messages)
        d0 = self.dead_cursor
        d1 = bisect.bisect_left(parsed.dead_index, stop, lo=d0)
        if e1 == e0 and d1 == d0:
            return self._only_report(now)
        events = all_events.slice(e0, e1)
        late = self._classify(events, self.run[e0:e1], now, parsed.event_index[e0:e1])
        self.cursor, self.event_cursor, self.dead_cursor = stop, e1, d1
        max_ts = int(events.ts.max()) if len(events) else NO_TIME
        self.aligner.emitted(self.part, max_ts, self._head())
        return SourceRead(events, parsed.dead_letters[d0:d1], late,
                          dict(Counter(parsed.dead_reasons[d0:d1])), self._report(now))

    def _classify(self, events: EventBatch, run: npt.NDArray[np.int64], now: int,
                  index: npt.NDArray[np.int64]) -> list[OutRecord]:
        """Mark events older than the read-time watermark; render their late records."""
        if not len(events):
            return []
        a = self.aligner
        if a.live(self.part, now):  # late: older than the watermark now
            mark = np.full(run.shape, max(self.mark, a.watermark(now)), dtype=np.int64)
        else:  # late: older than what every partition had read by then
            floor = np.minimum(run, a.read_time_floor(self.part, now, run))
            mark = np.where(floor == NO_TIME, NO_TIME, floor - a.lateness_ms)
            mark = np.maximum(np.maximum.accumulate(mark), self.mark)
        self.mark = int(mark[-1])
        events.mark[:] = mark
        events.own_mark[:] = run - a.lateness_ms
        late = events.ts < mark
        if not late.any():
            return []
        events.late[:] = late
        idx = np.flatnonzero(late)
        cids = events.customer_ids
        return [late_record(self.late_topic, cids[i], self.messages[int(index[i])],
                            int(mark[i] - events.ts[i])) for i in idx.tolist()]

    def finish(self) -> SourceRead:
        """The partition reached its end (bounded mode): the last word, sent to every shard."""
        self.aligner.finish(self.part)
        p = self.aligner.parts[self.part]
        report = Report(self.part, self.aligner.watermark(self.aligner.clock()), True, p.emitted)
        self.last_report = report
        return SourceRead(EMPTY_BATCH, [], [], {}, report)

    def _report(self, now: int) -> Report | None:
        """A new report when something changed: idleness at once, the watermark at a bounded rate."""
        a = self.aligner
        idle = a.idle(self.part, now)
        report = Report(self.part, a.watermark(now) if idle else a.contribution(self.part), idle)
        last = self.last_report
        if last is not None and (report[1:] == last[1:] or (
                report.idle == last.idle and now - self.last_report_at < self.report_every_ms
                and report.watermark - last.watermark < REPORT_EVERY_EVENT_MS)):
            return None
        self.last_report, self.last_report_at = report, now
        return report

    def _only_report(self, now: int) -> SourceRead | None:
        report = self._report(now)
        return None if report is None else SourceRead(EMPTY_BATCH, [], [], {}, report)


def _joined(old: ParsedBatch, cursor: int, event_cursor: int, dead_cursor: int, new: ParsedBatch,
            kept: int) -> ParsedBatch:
    """What is left of ``old`` from the cursors on, then ``new`` (whose messages follow ``kept``)."""
    return ParsedBatch(
        EventBatch.concat([old.events.slice(event_cursor, len(old.events)), new.events]),
        np.concatenate([old.event_index[event_cursor:] - cursor, new.event_index + kept]),
        old.dead_letters[dead_cursor:] + new.dead_letters,
        [i - cursor for i in old.dead_index[dead_cursor:]] + [i + kept for i in new.dead_index],
        old.dead_reasons[dead_cursor:] + new.dead_reasons,
    )


class Readers:
    """Makes the readers of one process's partitions; they share one ``Aligner``."""

    def __init__(self, journey: JourneyMap, topics: Topics, clock: Clock = wall_clock_ms) -> None:
        self.parser = EventParser(journey, topics.dlq, clock)
        self.aligner = Aligner(journey.allowed_lateness_ms, journey.idle_timeout_ms, clock,
                               slack_ms=journey.dedup_window_ms // 2)
        self.inputs = topics.inputs
        self.late_topic = topics.late

    def reader(self, part: str, topic: str) -> PartitionReader:
        """The reader of one partition ``part`` of the input topic ``topic``."""
        return PartitionReader(part, self.inputs.index(topic), self.parser, self.aligner, self.late_topic)

    def watermark(self) -> int:
        """The process's watermark now (``NO_TIME`` before there is one, ``END`` when all ended)."""
        return self.aligner.watermark(self.aligner.clock())
