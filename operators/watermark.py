"""Event-time progress of the input partitions (PRODUCT §5): watermark and alignment.

The source of each process keeps one ``Aligner`` for the partitions it reads. A
partition's *position* is the event time it has reached: the largest event time it
handed to the flow, or the time of the next event it holds back, whichever is later.
The watermark is the smallest position over the active partitions minus
``allowed_lateness``; a partition stops holding it back when it is idle (nothing
read for ``idle_timeout`` and nothing held back) or finished. While every partition
is idle the watermark advances with the wall clock.

Alignment: a partition may only hand over events up to ``allowed_lateness / 2`` past
the slowest other active partition, so a replay at full speed sees the same
watermark, event for event, as a live run that read the same data as it happened.
The slowest partition is never held back, so reading always progresses.

Shards hear the watermark through ``Report``s that every partition sends with its
batches (and on its own when it moved): an active partition reports its own position
minus ``allowed_lateness``, an idle one its process's watermark. A shard takes the
minimum over every input partition of its latest report. Because a partition's
report travels in the same stream as its events, a shard never closes a window that
an event still on its way was on time for, whatever the other workers report.
"""

from dataclasses import dataclass
from typing import NamedTuple

from operators.events import Clock

NO_TIME = -(2**63)
"""No event time yet: holds every watermark and alignment limit back."""
END = 2**63 - 1
"""Past every event time: what a finished input contributes."""


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

    @property
    def position(self) -> int:
        return max(self.emitted, self.head)


class Aligner:
    """Watermark and read limits for the input partitions one process reads."""

    def __init__(self, lateness_ms: int, idle_timeout_ms: int, clock: Clock) -> None:
        self.lateness_ms = lateness_ms
        self.ahead_ms = lateness_ms // 2
        self.idle_timeout_ms = idle_timeout_ms
        self.clock = clock
        self.parts: dict[str, _Progress] = {}
        self._watermark = NO_TIME
        self._idle_from: tuple[int, int] | None = None  # (wall clock, watermark) when all went idle

    def register(self, part: str) -> None:
        """A partition starts reading (or resumes after a restart)."""
        self.parts[part] = _Progress(last_read=self.clock())

    def read(self, part: str, head: int) -> None:
        """Messages were read; ``head`` is the event time of the first one held back."""
        p = self.parts[part]
        p.last_read = self.clock()
        p.head = head

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

    def others_floor(self, part: str, now: int) -> int:
        """Smallest position over the other active partitions (END when there are none)."""
        floor = END
        for name, p in self.parts.items():
            if name != part and not self.idle(name, now):
                floor = min(floor, p.position)
        return floor

    def limit(self, part: str, now: int) -> int:
        """The latest event time ``part`` may hand over now."""
        floor = self.others_floor(part, now)
        return floor if floor in (END, NO_TIME) else floor + self.ahead_ms

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
