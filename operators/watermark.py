"""Event-time progress of the input partitions (PRODUCT §5): watermark and alignment.

The source of each process keeps one ``Aligner`` for the partitions it reads. A
partition's *position* is the event time it has reached: the largest event time it
handed to the flow, or the time of the next event it holds back, whichever is later.
The watermark is the smallest position over the active partitions minus
``allowed_lateness``; a partition stops holding it back when it is idle (nothing
read for ``idle_timeout`` and nothing held back) or finished. While every partition
is idle the watermark advances with the wall clock.

Lateness is decided as a live run reading every partition in step would decide it:
an event is late when its time is below the smallest *read-time position* of the
active partitions minus ``allowed_lateness``, where a partition's read-time position
at event time ``t`` is the largest event time it holds among messages read up to
``t`` (its running maximum). For that, a partition waits until every other active
one has *read* as far as what it is about to hand over (or has nothing more to
read: live); handing over may run ahead of the others' hand-overs by at most half
the ``dedup_window``, which bounds how far one customer's reference time can run
ahead of events still on their way (exact de-duplication, PRODUCT §4). This is
stricter than pausing a partition ``allowed_lateness / 2`` ahead of the slowest:
reading and hand-over still work in whole batches, so a replay of sparse history
is not cut into tiny slices, and it classifies events exactly as a live run that
read every partition in step.

That waiting is for replays. A partition is *live* when its consumer has caught up
with the head of its log (its source says so, from the consumer's lag) and what it
reads is current: its latest event time is within ``allowed_lateness`` of the wall
clock, or it has read nothing yet (a quiet topic). A live partition hands everything
over as soon as it is read, so scores and transitions never wait for another
partition, and no other partition waits for its reading (what it has read is all
there is). Its events are late when older than the process's watermark at the moment
they are read; sessions and windows still close only as the watermark passes them.
Reading behind the head, or reading history at the head (days-old events fed as fast
as they come), is a replay and stays aligned, so it classifies events exactly.

Shards hear the watermark through ``Report``s that every partition sends with its
batches (and on its own when it moved): an active partition reports its own position
minus ``allowed_lateness``, an idle one its process's watermark. A shard takes the
minimum over every input partition of its latest report. Because a partition's
report travels in the same stream as its events, a shard never closes a window that
an event still on its way was on time for, whatever the other workers report.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from operators.base import END, NO_TIME, Clock

CAUGHT_UP_MS = 1_000
"""A partition whose consumer had nothing for this long no longer makes the others wait for
its reading (its read-time position is then final as far as anyone can know). Well above
the consumer's fetch wait, so that a partition between two fetches is not taken for one
that has nothing more."""


class Report(NamedTuple):
    """What one partition says about event-time progress."""

    partition: str
    watermark: int  # active: its position - allowed_lateness; idle: its process's watermark
    idle: bool  # the partition is idle: it must not hold any watermark back
    end_ts: int | None = None  # set once the partition is finished: its largest event time


def shard_watermark(reports: dict[str, Report], partitions: int) -> int:
    """The watermark a shard may use, from the latest report of each of ``partitions``.

    Until every partition has reported, it is NO_TIME. Idle partitions do not hold it
    back unless all are idle; when all are finished it is END.
    """
    if len(reports) < partitions:
        return NO_TIME
    busy = [r.watermark for r in reports.values() if r.end_ts is None and not r.idle]
    if busy:
        return min(busy)
    idle = [r.watermark for r in reports.values() if r.end_ts is None]
    return min(idle) if idle else END


def stream_end(reports: dict[str, Report]) -> int:
    """The largest event time of a finished bounded input (NO_TIME when it held no events)."""
    return max((r.end_ts for r in reports.values() if r.end_ts is not None), default=NO_TIME)


@dataclass
class _Progress:
    emitted: int = NO_TIME  # largest event time handed to the flow
    head: int = NO_TIME  # event time of the next event held back (NO_TIME: none held)
    last_read: int = 0  # wall clock of the last message read, or of registration
    done: bool = False
    drained_since: int | None = None  # wall clock since the consumer had nothing more
    at_head: bool = False  # its consumer has caught up with the head of its log
    base: int = NO_TIME  # ``emitted`` when the current fetch arrived
    run: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    """Running maximum of event time over the current fetch (starting from ``base``)."""

    @property
    def position(self) -> int:
        return max(self.emitted, self.head)

    @property
    def fetched(self) -> int:
        """Largest event time read so far, handed over or not."""
        return int(self.run[-1]) if self.run.size else self.emitted

    def position_at(self, t: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Largest event time among the messages read up to event time ``t`` (per element)."""
        if not self.run.size:
            return np.full(t.shape, self.emitted, dtype=np.int64)
        idx = np.searchsorted(self.run, t, side="right")
        return np.where(idx > 0, self.run[np.maximum(idx - 1, 0)], self.base)


class Aligner:
    """Watermark and read limits for the input partitions one process reads."""

    def __init__(self, lateness_ms: int, idle_timeout_ms: int, clock: Clock, slack_ms: int) -> None:
        self.lateness_ms = lateness_ms
        self.slack_ms = max(slack_ms, lateness_ms // 2)
        self.idle_timeout_ms = idle_timeout_ms
        self.clock = clock
        self.parts: dict[str, _Progress] = {}
        self._watermark = NO_TIME
        self._idle_from: tuple[int, int] | None = None  # (wall clock, watermark) when all went idle

    def register(self, part: str) -> None:
        """A partition starts reading (or resumes after a restart)."""
        self.parts[part] = _Progress(last_read=self.clock())

    def read(self, part: str, ts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Messages with event times ``ts`` were read (all held back so far); their running maximum."""
        p = self.parts[part]
        p.last_read = self.clock()
        p.drained_since = None
        p.base = p.emitted
        p.run = np.maximum.accumulate(np.maximum(ts, p.emitted)) if ts.size else ts
        p.head = int(ts[0]) if ts.size else NO_TIME
        return p.run

    def emitted(self, part: str, max_ts: int, head: int) -> None:
        """Events up to ``max_ts`` were handed over; ``head`` is the next held back (or NO_TIME)."""
        p = self.parts[part]
        p.emitted = max(p.emitted, max_ts)
        p.head = head

    def finish(self, part: str) -> None:
        """The partition reached its end (bounded mode)."""
        self.parts[part].done = True

    def idle(self, part: str, now: int) -> bool:
        """Whether ``part`` no longer holds the watermark or the others back."""
        p = self.parts[part]
        return p.done or (p.head == NO_TIME and now - p.last_read >= self.idle_timeout_ms)

    def _others(self, part: str, now: int) -> list[tuple[str, _Progress]]:
        return [(name, p) for name, p in self.parts.items() if name != part and not self.idle(name, now)]

    def limit(self, part: str, now: int) -> int:
        """The latest event time ``part`` may hand over now.

        Every other active partition must have read up to it, unless that one is live
        or has had nothing more to read for ``CAUGHT_UP_MS`` (what it has read is all
        there is), and handed over to within ``slack_ms``; the slowest is never held
        back, and a live partition hands over everything.
        """
        if self.live(part, now):
            return END
        limit = END
        for name, q in self._others(part, now):
            if self.live(name, now):
                continue
            if q.position == NO_TIME:
                return NO_TIME
            limit = min(limit, q.position + self.slack_ms)
            if q.drained_since is None or now - q.drained_since < CAUGHT_UP_MS:
                limit = min(limit, q.fetched)
        return limit

    def at_head(self, part: str, at_head: bool) -> None:
        """The partition's consumer caught up with the head of its log (True), or fell behind."""
        self.parts[part].at_head = at_head

    def is_at_head(self, part: str) -> bool:
        """Whether the partition's consumer is at the head of its log."""
        return self.parts[part].at_head

    def live(self, part: str, now: int) -> bool:
        """At the head of its log, reading current events (or none yet): it waits for nobody."""
        p = self.parts[part]
        return p.at_head and (p.fetched == NO_TIME or now - p.fetched <= self.lateness_ms)

    def drained(self, part: str) -> None:
        """The partition's consumer had nothing more to give."""
        p = self.parts[part]
        if p.drained_since is None:
            p.drained_since = self.clock()

    def read_time_floor(self, part: str, now: int, t: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Per event time in ``t``: the smallest read-time position of the other active partitions."""
        floor = np.full(t.shape, END, dtype=np.int64)
        for _, q in self._others(part, now):
            np.minimum(floor, q.position_at(t), out=floor)
        return floor

    def contribution(self, part: str) -> int:
        """What ``part`` alone allows the watermark to be: its position minus the lateness."""
        position = self.parts[part].position
        return NO_TIME if position == NO_TIME else position - self.lateness_ms

    def watermark(self, now: int) -> int:
        """The process watermark (never moves back)."""
        active = [p.position for name, p in self.parts.items() if not self.idle(name, now)]
        if active:
            self._idle_from = None
            low = min(active)
            if low != NO_TIME:
                self._watermark = max(self._watermark, low - self.lateness_ms)
        elif self.parts and all(p.done for p in self.parts.values()):
            self._watermark = END
        elif self._watermark != NO_TIME:
            if self._idle_from is None:
                self._idle_from = (now, self._watermark)
            since, base = self._idle_from
            self._watermark = max(self._watermark, base + (now - since))
        return self._watermark
