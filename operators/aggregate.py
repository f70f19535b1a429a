"""The metrics step: adds every shard's share of a tumbling window, emits it once all have closed it.

A window is complete when every shard's watermark has passed its end: shards close
windows in watermark order and send their shares before the watermark that closed
them, so nothing of a window can arrive after that. Shares are entries of what is not
zero, kept as they come and summed once their window is complete, so the cost follows
the events, not the number of windows times shards. Populations are kept here as a
running sum of the windows' stage moves, so each funnel record carries the
populations as of its window's end.
"""

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
from bytewax.operators import StatefulBatchLogic

from operators.base import NO_TIME, Output
from operators.metrics import EngineMetrics
from operators.records import RecordBuilder
from operators.window_kernels import CLICKS, CONVERSIONS, EVENTS, IMPRESSIONS, RESPONSE_TIME_SUM, RESPONSES
from operators.windows import WindowShares

AGGREGATE_KEY = "windows"
"""The one state key of the metrics step (the work is per window, a few records a minute)."""


class ShardProgress(NamedTuple):
    """What one shard tells the metrics step in one activation."""

    shard: str
    shares: WindowShares | None
    watermark: int | None


class WindowAggregator(StatefulBatchLogic[ShardProgress, list[Output], dict[str, Any]]):
    """Shares of open windows from ``shards`` shards, kept as entries until all have closed them."""

    def __init__(self, records: RecordBuilder, width_ms: int, shards: int,
                 resume: dict[str, Any] | None, metrics: EngineMetrics) -> None:
        self.records = records
        self.metrics = metrics
        self.gauges: list[tuple[Any, ...]] | None = None  # per channel: events, conversions, CTR, response
        self.width = width_ms
        self.shards = shards
        resume = resume or {}
        pending = resume.get("pending")
        self.pending = None if pending is None else WindowShares.from_plain(pending)
        self.marks: dict[str, int] = dict(resume.get("marks", {}))
        self.population: np.ndarray | None = resume.get("population")

    def on_batch(self, values: list[ShardProgress]) -> tuple[Iterable[list[Output]], bool]:
        """Take the shares, then emit every window all shards have closed, oldest first."""
        parts = [] if self.pending is None else [self.pending]
        for v in values:
            if v.shares is not None:
                parts.append(v.shares)
            if v.watermark is not None:
                self.marks[v.shard] = max(self.marks.get(v.shard, NO_TIME), v.watermark)
        if not parts:
            return ([], StatefulBatchLogic.RETAIN)
        shares = WindowShares.concat(parts)
        if len(self.marks) < self.shards:  # a shard not heard from yet may still add to any window
            self.pending = shares
            return ([], StatefulBatchLogic.RETAIN)
        closed, self.pending = shares.split(min(self.marks.values()) - self.width + 1)
        if not closed.starts.size:
            return ([], StatefulBatchLogic.RETAIN)
        funnel = self.records.funnel_size
        totals = closed.totals(len(self.records.channel_names), funnel)
        if self.population is None:
            self.population = np.zeros(funnel, dtype=np.int64)
        change = np.zeros((totals.starts.size, funnel), dtype=np.int64)
        pop = totals.populations
        change[np.searchsorted(totals.starts, pop.start), pop.key] = pop.value
        populations = self.population + np.cumsum(change, axis=0)
        self.population = populations[-1].copy()
        self._show(totals)
        return ([self.records.windows(totals, self.width, populations)], StatefulBatchLogic.RETAIN)

    def _show(self, totals: WindowShares) -> None:
        """The channel gauges, from the windows closed in this batch.

        Events and conversions: the last of those windows (0 for a channel without events
        in it). CTR and response time: the channel's last window that had impressions
        (responses), since on a quiet channel most windows have none; NaN until it had
        any. Every channel's series exist from the first closed window on, so their count
        follows the map.
        """
        if self.gauges is None:  # labels() costs more than set(): once per channel
            m = self.metrics
            self.gauges = [tuple(g.labels(name) for g in (m.channel_events, m.channel_conversions,
                                                           m.channel_ctr, m.channel_response))
                           for name in self.records.channel_names]
            for _, _, ctr, response in self.gauges:
                ctr.set(math.nan)
                response.set(math.nan)
        ch = totals.channels
        last = ch.start == totals.starts[-1]
        counts = np.zeros((len(self.gauges), ch.counts.shape[1]), dtype=np.int64)
        counts[ch.channel[last]] = ch.counts[last]
        for (events, conversions, _, _), n, converted in zip(
                self.gauges, counts[:, EVENTS].tolist(), counts[:, CONVERSIONS].tolist(), strict=True):
            events.set(n)
            conversions.set(converted)
        response_s = ch.sums[:, RESPONSE_TIME_SUM] / 1000
        for k, num, den in ((2, ch.counts[:, CLICKS], ch.counts[:, IMPRESSIONS]),
                            (3, response_s, ch.counts[:, RESPONSES])):
            have = np.flatnonzero(den > 0)  # entries come window by window: the last one of a channel wins
            channels, first_from_end = np.unique(ch.channel[have][::-1], return_index=True)
            for c, i in zip(channels.tolist(), have[have.size - 1 - first_from_end].tolist(), strict=True):
                self.gauges[c][k].set(num[i] / den[i])

    def snapshot(self) -> dict[str, Any]:
        """Open windows' entries, shard watermarks and populations."""
        return {"pending": None if self.pending is None else self.pending.plain(),
                "marks": dict(self.marks),
                "population": None if self.population is None else self.population.copy()}
