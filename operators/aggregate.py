"""The metrics step: adds every shard's share of a tumbling window, emits it once all have closed it.

A window is complete when every shard's watermark has passed its end: shards close
windows in watermark order and send their shares before the watermark that closed
them, so nothing of a window can arrive after that. Populations are kept here as a
running sum of the windows' stage moves, so each funnel record carries the
populations as of its window's end.
"""

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
from bytewax.operators import StatefulBatchLogic

from operators.records import OutRecord, RecordBuilder
from operators.watermark import NO_TIME
from operators.windows import WindowPartial

AGGREGATE_KEY = "windows"
"""The one state key of the metrics step (the work is per window, a few records a minute)."""


class ShardProgress(NamedTuple):
    """What one shard tells the metrics step in one activation."""

    shard: str
    partials: list[WindowPartial]
    watermark: int | None


class WindowAggregator(StatefulBatchLogic[ShardProgress, list[OutRecord], dict[str, Any]]):
    """Totals per window across ``shards`` shards."""

    def __init__(self, records: RecordBuilder, width_ms: int, shards: int,
                 resume: dict[str, Any] | None) -> None:
        self.records = records
        self.width = width_ms
        self.shards = shards
        resume = resume or {}
        self.pending: dict[int, WindowPartial] = dict(resume.get("pending", {}))
        self.marks: dict[str, int] = dict(resume.get("marks", {}))
        self.population: np.ndarray = np.array(resume.get("population", np.zeros(0, np.int64)))

    def on_batch(self, values: list[ShardProgress]) -> tuple[Iterable[list[OutRecord]], bool]:
        """Add the shares, then emit every window all shards have closed, oldest first."""
        for v in values:
            for p in v.partials:
                have = self.pending.get(p.window_start)
                self.pending[p.window_start] = p if have is None else _add(have, p)
            if v.watermark is not None:
                self.marks[v.shard] = max(self.marks.get(v.shard, NO_TIME), v.watermark)
        ready = min(self.marks.values()) if len(self.marks) == self.shards else NO_TIME
        out: list[OutRecord] = []
        for start in sorted(s for s in self.pending if s + self.width <= ready):
            window = self.pending.pop(start)
            if not self.population.size:
                self.population = np.zeros_like(window.population_delta)
            self.population += window.population_delta
            out += self.records.window(window, self.width, self.population)
        return ([out] if out else [], StatefulBatchLogic.RETAIN)

    def snapshot(self) -> dict[str, Any]:
        """Open windows, shard watermarks and populations."""
        return {"pending": dict(self.pending), "marks": dict(self.marks),
                "population": self.population.copy()}


def _add(a: WindowPartial, b: WindowPartial) -> WindowPartial:
    sums: list[Any] = [x + y for x, y in zip(a[1:], b[1:], strict=True)]
    return WindowPartial(a.window_start, *sums)
