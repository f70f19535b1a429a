"""Types and sentinels every step shares: the bottom of ``operators``, importing nothing of ours.

Data flows config → parse → route → score → window → render → runtime, and imports
follow it one way. What more than one of those stages passes around lives here, each
under one name.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

NO_TIME = -(2**63)
"""No event time: no watermark yet, nothing read, an empty de-duplication slot."""
END = 2**63 - 1
"""Past every event time: what a finished input contributes to a watermark."""
NO_STAGE = -1
"""The stage before a customer's first event (the ``from`` of their entry transition)."""

Clock = Callable[[], int]
"""Wall-clock time in epoch milliseconds; injected so tests control 'now'."""


def wall_clock_ms() -> int:
    """The real wall clock in epoch milliseconds."""
    return int(datetime.now(UTC).timestamp() * 1000)


@dataclass(frozen=True)
class EventBatch:
    """Valid events as columns, in arrival order."""

    customer_ids: list[str]
    event_ids: list[str]
    ts: npt.NDArray[np.int64]
    type_idx: npt.NDArray[np.int32]
    chan_idx: npt.NDArray[np.int32]
    sentiment: npt.NDArray[np.float64]  # NaN where the event carries none
    late: npt.NDArray[np.bool_]  # older than the watermark when read: scored, but in no window
    mark: npt.NDArray[np.int64]  # the watermark when it was read (NO_TIME: none yet)
    # what its own partition alone allowed the watermark to be when it was read (its read
    # position minus the lateness): never below ``mark``, and the same in a replay as live
    own_mark: npt.NDArray[np.int64]
    topic_idx: npt.NDArray[np.int32]  # the input topic it was read from (index into ``[topics].inputs``)
    appended: npt.NDArray[np.int64]  # the Kafka timestamp of its message (end-to-end latency starts there)

    def __len__(self) -> int:
        return len(self.customer_ids)

    def take(self, idx: npt.NDArray[np.intp]) -> "EventBatch":
        """The events at ``idx``, in that order."""
        cids, eids = self.customer_ids, self.event_ids
        return EventBatch(
            [cids[i] for i in idx.tolist()],
            [eids[i] for i in idx.tolist()],
            self.ts[idx], self.type_idx[idx], self.chan_idx[idx], self.sentiment[idx], self.late[idx],
            self.mark[idx], self.own_mark[idx], self.topic_idx[idx], self.appended[idx],
        )

    def slice(self, start: int, stop: int) -> "EventBatch":
        """Events ``start`` to ``stop`` (views, no copies of the arrays)."""
        return EventBatch(
            self.customer_ids[start:stop], self.event_ids[start:stop], self.ts[start:stop],
            self.type_idx[start:stop], self.chan_idx[start:stop], self.sentiment[start:stop],
            self.late[start:stop], self.mark[start:stop], self.own_mark[start:stop],
            self.topic_idx[start:stop], self.appended[start:stop],
        )

    @staticmethod
    def concat(batches: Sequence["EventBatch"]) -> "EventBatch":
        """One batch holding ``batches`` one after the other."""
        if len(batches) == 1:
            return batches[0]
        return EventBatch(
            [c for b in batches for c in b.customer_ids],
            [e for b in batches for e in b.event_ids],
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.type_idx for b in batches]),
            np.concatenate([b.chan_idx for b in batches]),
            np.concatenate([b.sentiment for b in batches]),
            np.concatenate([b.late for b in batches]),
            np.concatenate([b.mark for b in batches]),
            np.concatenate([b.own_mark for b in batches]),
            np.concatenate([b.topic_idx for b in batches]),
            np.concatenate([b.appended for b in batches]),
        )


EMPTY_BATCH = EventBatch([], [], np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int32),
                         np.empty(0, np.float64), np.empty(0, np.bool_), np.empty(0, np.int64),
                         np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int64))

OutRecord = tuple[str, bytes | None, bytes]
"""(topic, key, value) as the sink produces it."""


class RecordBlock(NamedTuple):
    """Records of one topic that a kernel wrote one after another into ``data``.

    Record ``i`` is ``data[ends[i - 1]:ends[i]]`` (from 0 for the first), keyed ``keys[i]``.
    Sessions and window records come by the hundred thousand in a replay; handed on as
    one block, they are cut only where they are produced, and no tuple per record is
    made (or traced by the garbage collector) on the way.
    """

    topic: str
    keys: list[bytes]
    data: bytes
    ends: list[int]

    def records(self) -> list[OutRecord]:
        """The block's records one by one."""
        return [(self.topic, key, self.data[a:b])
                for key, a, b in zip(self.keys, [0, *self.ends[:-1]], self.ends, strict=True)]


class InputTimes(NamedTuple):
    """Not a record: the Kafka timestamps of the input events the records before it in a list answer.

    The sink observes end-to-end latency with them once those records are delivered.
    """

    appended: npt.NDArray[np.int64]


Output = OutRecord | RecordBlock | InputTimes
"""What the steps hand to the sink, in lists."""


def each_record(outputs: Iterable[Output]) -> list[OutRecord]:
    """Every record of ``outputs``, blocks taken apart (tests and tools read records this way)."""
    return [r for out in outputs if not isinstance(out, InputTimes)
            for r in (out.records() if isinstance(out, RecordBlock) else [out])]
