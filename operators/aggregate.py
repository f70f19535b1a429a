"""The metrics step: adds every shard's share of a tumbling window, emits it once all have closed it.

A window is complete when every shard's watermark has passed its end: shards close
windows in watermark order and send their shares before the watermark that closed
them, so nothing of a window can arrive after that. Populations are kept here as a
running sum of the windows' stage moves, so each funnel record carries the
populations as of its window's end.
"""

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np
from bytewax.operators import StatefulBatchLogic

from operators.records import OutRecord, RecordBuilder
from operators.watermark import NO_TIME
from operators.windows import WindowShares

AGGREGATE_KEY = "windows"
"""The one state key of the metrics step (the work is per window, a few records a minute)."""


class ShardProgress(NamedTuple):
    """What one shard tells the metrics step in one activation."""

    shard: str
    shares: WindowShares | None
    watermark: int | None


class WindowAggregator(StatefulBatchLogic[ShardProgress, list[OutRecord], dict[str, Any]]):
    """Totals per window across ``shards`` shards, as one table with a row per open window."""

    def __init__(self, records: RecordBuilder, width_ms: int, shards: int,
                 resume: dict[str, Any] | None) -> None:
        self.records = records
        self.width = width_ms
        self.shards = shards
        resume = resume or {}
        self.rows: dict[int, int] = dict(resume.get("rows", {}))  # window start -> table row
        self.table: WindowShares | None = resume.get("table")
        self.free_rows: list[int] = list(resume.get("free_rows", []))
        self.marks: dict[str, int] = dict(resume.get("marks", {}))
        self.population: np.ndarray | None = resume.get("population")

    def on_batch(self, values: list[ShardProgress]) -> tuple[Iterable[list[OutRecord]], bool]:
        """Add the shares, then emit every window all shards have closed, oldest first."""
        for v in values:
            if v.shares is not None:
                self._add(v.shares)
            if v.watermark is not None:
                self.marks[v.shard] = max(self.marks.get(v.shard, NO_TIME), v.watermark)
        ready = min(self.marks.values()) if len(self.marks) == self.shards else NO_TIME
        done = sorted(s for s in self.rows if s + self.width <= ready)
        if not done or self.table is None:
            return ([], StatefulBatchLogic.RETAIN)
        rows = np.array([self.rows.pop(s) for s in done], dtype=np.int64)
        closed = _each(self.table, lambda col: col[rows])
        for col in self.table:
            col[rows] = 0
        self.free_rows += rows.tolist()
        if self.population is None:
            self.population = np.zeros(closed.population_delta.shape[1], dtype=np.int64)
        populations = self.population + np.cumsum(closed.population_delta, axis=0)
        self.population = populations[-1].copy()
        return ([self.records.windows(closed, self.width, populations)], StatefulBatchLogic.RETAIN)

    def _add(self, shares: WindowShares) -> None:
        if self.table is None:
            self.table = _each(shares, lambda col: np.zeros((0, *col.shape[1:]), dtype=col.dtype))
        rows = np.array([self._row(s) for s in shares.starts.tolist()], dtype=np.int64)
        totals: list[Any] = list(self.table[1:])
        for total, part in zip(totals, shares[1:], strict=True):
            total[rows] += part  # each window appears once in one shard's shares

    def _row(self, start: int) -> int:
        row = self.rows.get(start)
        if row is None:
            assert self.table is not None
            if not self.free_rows:
                have = self.table.starts.shape[0]
                grow = max(64, have)
                self.table = _each(self.table, lambda col: np.concatenate(
                    [col, np.zeros((grow, *col.shape[1:]), dtype=col.dtype)]))
                self.free_rows = list(range(have + grow - 1, have - 1, -1))
            row = self.rows[start] = self.free_rows.pop()
            self.table.starts[row] = start
        return row

    def snapshot(self) -> dict[str, Any]:
        """Open windows' totals, shard watermarks and populations."""
        return {"rows": dict(self.rows), "marks": dict(self.marks), "free_rows": list(self.free_rows),
                "table": None if self.table is None else _each(self.table, np.copy),
                "population": None if self.population is None else self.population.copy()}


def _each(table: WindowShares, f: Callable[[Any], Any]) -> WindowShares:
    """``f`` applied to every column."""
    columns: list[Any] = [f(col) for col in table]
    return WindowShares(*columns)
