"""The scoring step: one Bytewax state per customer shard, holding numpy arrays.

Each activation scores every event that reached the shard in one kernel call, puts
the on-time ones into sessions and windows, then applies the partitions' watermark
reports: dormancy, closed sessions and closed windows follow from the new watermark.

A map applied live reaches every shard in the same epoch and takes over when that
epoch ends (Bytewax snapshots every shard it woke then, before any of them sees the
next epoch): each shard re-evaluates its customers at its first activation after.
"""

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from bytewax.operators import StatefulBatchLogic
from numba.core.registry import CPUDispatcher

from config.errors import ConfigError
from config.model import JourneyMap, Topics, layout_changes, map_document, parse_map
from operators import id_kernels, json_kernels, score_kernels, window_kernels
from operators.aggregate import ShardProgress, WindowAggregator
from operators.base import EMPTY_BATCH, END, NO_TIME, EventBatch, InputTimes, Output
from operators.columns import specs
from operators.events import MIN_TS_MS
from operators.metrics import EngineMetrics
from operators.records import DORMANT_CAUSE, EVENT_CAUSE, MAP_CAUSE, RecordBuilder
from operators.routing import DEFAULT_SHARDS, MapChange, ShardInput
from operators.score_kernels import CustomerColumns, IdOverflow
from operators.scoring import dormancy, restage, score_batch, stage_census
from operators.state import ShardState
from operators.watermark import Report, shard_watermark, stream_end
from operators.window_kernels import (
    ChannelCells,
    CustomerKeys,
    CustomerWindows,
    MoveCells,
    Sessions,
    WindowSlots,
)
from operators.windows import ShardWindows, WindowShares

log = logging.getLogger(__name__)
Snapshot = dict[str, Any]
KERNEL_MODULES = (id_kernels, score_kernels, window_kernels, json_kernels)
"""Every module of Numba kernels (``warm_up`` compiles them all)."""
STATE_FORMAT = 2
"""Version of how a shard's snapshot is put together around its columns (bump when that changes)."""


def _schema() -> str:
    """``STATE_FORMAT`` and a hash of every column of the state's bundles (name, dtype, shape).

    A column added to or changed in any bundle changes the schema by itself, so a store
    written before cannot be resumed into arrays of another shape.
    """
    columns = [f"{kind.__name__}.{name}:{np.dtype(spec.dtype).str}:{spec.tail}:{spec.per_row}"
               for kind in (CustomerColumns, IdOverflow, CustomerWindows, Sessions, WindowSlots, ChannelCells,
                            MoveCells, CustomerKeys)
               for name, spec in specs(kind).items()]
    return f"{STATE_FORMAT}.{hashlib.sha256('|'.join(columns).encode()).hexdigest()[:8]}"


STATE_SCHEMA = _schema()
"""What a shard's snapshot holds; a store of another schema is not resumed, unless it is upgradable."""
UPGRADABLE_SCHEMAS = frozenset({"1.b23fe296"})
"""Schemas of stores a run resumes and rewrites in ``STATE_SCHEMA`` (``ShardState.from_snapshot``).

``1.b23fe296``: customer ids as strings, every remembered event id in the customer's row.
"""


def resumable_layout(saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` as a run compares it with its own layout: an upgradable schema counts as the current one."""
    if saved.get("schema") in UPGRADABLE_SCHEMAS:
        return {**saved, "schema": STATE_SCHEMA}
    return saved


_NO_ROWS: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
_PENDING_POLL = timedelta(milliseconds=200)
"""How often a shard holding a new map looks whether its epoch ended (Bytewax asks ``notify_at``
only after an activation, not after a snapshot)."""


class Switches:
    """What the shards of one process say when a map takes over: one log line and count per switch."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self.metrics = metrics
        self.in_force: str | None = None  # the map the process's shards last took over
        self.resumed_from: set[str] = set()
        self.lock = threading.Lock()

    def took_over(self, was: JourneyMap, change: MapChange) -> None:
        """A shard took ``change``'s map at the end of an epoch (the first shard of the process says so)."""
        version = change.journey.version
        with self.lock:
            if version == self.in_force:
                return
            self.in_force = version
        log.info("journey map %s (applied by %s at %s) takes over from %s at this epoch's end: every "
                 "customer's stage is evaluated under it once", version, change.applied_by,
                 change.applied_at, was.version)
        self.metrics.map_applied(version)

    def resumed(self, saved: JourneyMap, journey: JourneyMap) -> None:
        """A shard resumed state evaluated under another map than the run's (said once per process)."""
        with self.lock:
            if saved.version in self.resumed_from:
                return
            self.resumed_from.add(saved.version)
        log.info("the recovery store's stages were evaluated under journey map %s: every customer's "
                 "stage is evaluated again under %s", saved.version, journey.version)


class ShardOutput(NamedTuple):
    """Records for the sink, and this shard's shares of closed windows for the aggregator."""

    records: list[Output]
    shares: WindowShares | None
    watermark: int | None  # set when the shard's watermark entered a new metrics window


class ShardScorer(StatefulBatchLogic[ShardInput, ShardOutput, Snapshot | None]):
    """Scores, windows and closes for one shard. ``partitions`` is the number of input partitions."""

    def __init__(self, journey: JourneyMap, records: RecordBuilder, metrics: EngineMetrics,
                 partitions: int, resume: Snapshot | None, *, windows: bool = True,
                 shards: int = DEFAULT_SHARDS, recoverable: bool = True,
                 switches: Switches | None = None) -> None:
        self.journey = journey  # the map in force
        self.arrays = journey.arrays
        self.records = records
        self.metrics = metrics
        self.partitions = partitions
        self.width = journey.metrics_window_ms
        self.dormant_after = journey.dormant_after_ms
        self.windows = ShardWindows(journey) if windows else None
        self.reports: dict[str, Report] = {}
        self.watermark = NO_TIME
        self.next_dormant = NO_TIME  # no customer can go dormant before the watermark passes this
        self.layout = state_layout(journey, shards)
        self.recoverable = recoverable
        self.switches = switches or Switches(metrics)
        self.pending: MapChange | None = None  # a new map, in force once this epoch ends
        # the map the customers' stages were evaluated under, when it is not ``journey``: they
        # are evaluated again at the next activation
        self.evaluated_under: JourneyMap | None = None
        # the watermark the saved state had heard: a move by a new map is never placed before it
        self.saved_watermark = NO_TIME
        if resume is None:
            self.state = ShardState(self.arrays)
        else:
            changes = layout_changes(resumable_layout(resume.get("layout", {"schema": 0})), self.layout)
            if changes:
                msg = f"saved state of another layout: {'; '.join(changes)}"
                raise ConfigError(msg)
            self.state = ShardState.from_snapshot(self.arrays, resume["state"])
            if self.windows is not None and "windows" in resume:
                self.windows.restore(resume["windows"])
            # stores written before maps were saved: their stages count as evaluated under this map
            saved = parse_map("the recovery store's journey map", resume.get("map", map_document(journey)))
            if saved.version != journey.version:  # a map applied or changed since: evaluate again
                self.evaluated_under = saved
                self.switches.resumed(saved, journey)
            if resume.get("watermark", END) != END:  # not a bounded run's, past all input
                self.saved_watermark = resume["watermark"]
        metrics.tracked.inc(self.state.size)
        self.transition_counters: dict[tuple[int, int], Any] = {}  # (from, to) -> its counter
        r = records
        self.event_counts = metrics.events.counts(
            [(t, k, c) for t in r.topics.inputs for k in r.type_names for c in r.channel_names])
        metrics.census.add(records.funnel_names[1:], self.census)
        metrics.state_bytes.add(lambda: self.nbytes)
        self.open_counted = (0, 0, 0)  # this shard's part of the open-state gauges
        self._count_open()

    def _count_open(self) -> None:
        """Move the gauges by what this shard's open sessions, slots and windows changed by."""
        w = self.windows
        if w is None:
            return
        now = (w.open_sessions, w.session_slots, w.open_windows)
        if now != self.open_counted:
            m = self.metrics
            for gauge, new, old in zip((m.open_sessions, m.session_slots, m.open_windows), now,
                                       self.open_counted, strict=True):
                if new != old:
                    gauge.inc(new - old)
            self.open_counted = now

    def on_batch(self, values: list[ShardInput]) -> tuple[Iterable[ShardOutput], bool]:
        """Score and window every event in one kernel call, then close what the watermark passed.

        Closing after the events changes no content: an on-time event never falls in a
        window or session the watermark closed, and a customer's move to dormant before
        an event is found from the watermark that event was read under.
        """
        started = time.perf_counter()
        out: list[Output] = []
        changed = [self._evaluate_again(out)]
        batches = [v.events for v in values if len(v.events)]
        changed.append(self._score(batches, out))
        for v in values:
            if v.report is not None:
                self.reports[v.report.partition] = v.report
            if v.change is not None:
                self.pending = v.change
        before = self.watermark
        heard = max(before, shard_watermark(self.reports, self.partitions))
        shares = None
        mark = None
        if heard > before:
            self.watermark = heard
            changed.append(self._dormancy(stream_end(self.reports) if heard == END else heard, out))
            if self.windows is not None:
                closed = self.windows.close_sessions(heard)
                if closed is not None:
                    out += self.records.sessions(self.state.index, closed)
                shares = self.windows.close_windows(heard)
            if heard == END or before == NO_TIME or heard // self.width != before // self.width:
                mark = heard
        rows = np.unique(np.concatenate(changed))
        if rows.size:
            out[:0] = self.records.scores(self.state, rows)
        if batches:  # their scores are in ``out`` now: latency counts until they are delivered
            out.append(InputTimes(np.concatenate([b.appended for b in batches])))
        self._count_open()
        if out:  # an activation that only heard a watermark and closed nothing is no batch
            m = self.metrics
            m.batch_seconds.observe(time.perf_counter() - started)
            m.batch_events.observe(sum(len(b) for b in batches))
        return ([ShardOutput(out, shares, mark)], StatefulBatchLogic.RETAIN)

    def _score(self, batches: list[EventBatch], out: list[Output]) -> npt.NDArray[np.int64]:
        """Score ``batches`` in one call; append transitions and late records; the changed rows."""
        if not batches:
            return _NO_ROWS
        batch = EventBatch.concat(batches)
        self.next_dormant = min(self.next_dormant, int(batch.ts.min()) + self.dormant_after)
        m = self.metrics
        size_before = self.state.size
        result = score_batch(self.state, batch, self.arrays, self.dormant_after)
        late = batch.late & result.accepted
        late_here = np.flatnonzero(~batch.late & result.accepted & (batch.ts < self.watermark))
        if late_here.size:
            out += self.records.late_at_shard(batch, late_here.tolist(), self.watermark)
            late[late_here] = True
            m.late.inc(late_here.size)
        if self.windows is not None:
            self.windows.add(self.state, batch, result, result.accepted & ~late, self.watermark)
        tr = result.transitions
        eids = batch.event_ids
        out += self.records.transitions(
            self.state.index, result.rows[tr.event], tr.from_stage, tr.to_stage,
            tr.ts, [None if d else eids[i] for i, d in zip(tr.event.tolist(), tr.dormant.tolist(),
                                                           strict=True)],
            tr.version, np.where(tr.dormant, DORMANT_CAUSE, EVENT_CAUSE))
        self._count_events(batch, result.accepted)
        m.duplicates.inc(result.duplicates)
        self._count_transitions(tr.from_stage.tolist(), tr.to_stage.tolist())
        m.tracked.inc(self.state.size - size_before)
        return result.changed_rows

    def _dormancy(self, watermark: int, out: list[Output]) -> npt.NDArray[np.int64]:
        """Customers the watermark left ``dormant_after`` behind: transitions, changed rows."""
        if watermark <= self.next_dormant:
            return _NO_ROWS
        rows, before, at, self.next_dormant = dormancy(self.state, watermark, self.dormant_after)
        if rows.size:
            out += self.records.transitions(self.state.index, rows, before,
                                            self.state.columns.stage[rows], at, [None] * rows.size,
                                            self.state.columns.n[rows], np.full(rows.size, DORMANT_CAUSE))
            self._count_transitions(before.tolist(), self.state.columns.stage[rows].tolist())
            if self.windows is not None:
                self.windows.count_moves(before, self.state.columns.stage[rows], at)
        return rows

    def _evaluate_again(self, out: list[Output]) -> npt.NDArray[np.int64]:
        """After a new map took over: every customer's stage under it (transitions caused by the map).

        The changed rows: those whose stage moved or, when saturation changed, everyone
        (their engagement changed at once). A move happens at the shard's watermark (after a
        resume, the one its saved state had heard), or at the customer's last event if that
        is later, and counts in that time's windows: one this shard has not closed yet.
        """
        was = self.evaluated_under
        if was is None:
            return _NO_ROWS
        self.evaluated_under = None
        rows, before = restage(self.state, self.arrays)
        c = self.state.columns
        if rows.size:
            at = np.maximum(c.T[rows], max(self.watermark, self.saved_watermark))
            out += self.records.transitions(self.state.index, rows, before,
                                            c.stage[rows], at, [None] * rows.size, c.n[rows],
                                            np.full(rows.size, MAP_CAUSE))
            self._count_transitions(before.tolist(), c.stage[rows].tolist())
            if self.windows is not None:
                self.windows.count_moves(before, c.stage[rows], at)
        log.debug("%d customers evaluated under map %s: %d changed stage", self.state.size,
                  self.journey.version, rows.size)
        if was.saturation != self.journey.saturation:
            return np.arange(self.state.size, dtype=np.int64)
        return rows

    def _take_over(self) -> None:
        """The end of the epoch a new map came in: it is in force from here on."""
        change, self.pending = self.pending, None
        if change is None or change.journey.version == self.journey.version:
            return  # the same map again: nothing changes
        if self.evaluated_under is None:
            self.evaluated_under = self.journey
        self.switches.took_over(self.journey, change)
        self.journey = change.journey
        self.arrays = change.journey.arrays
        self.records = RecordBuilder(change.journey, self.records.topics)

    def on_notify(self) -> tuple[Iterable[ShardOutput], bool]:
        """Woken while a new map waits for its epoch's end: once it took over, evaluate again."""
        out: list[Output] = []
        rows = self._evaluate_again(out)
        if rows.size:
            out[:0] = self.records.scores(self.state, rows)
        return ([ShardOutput(out, None, None)] if out else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """Soon, while a new map waits for the epoch's end or the customers wait to be evaluated under it."""
        if self.pending is None and self.evaluated_under is None:
            return None
        return datetime.now(UTC) + _PENDING_POLL

    def _count_events(self, batch: EventBatch, accepted: npt.NDArray[np.bool_]) -> None:
        """``journey_events_total`` by topic, type and channel: one ``bincount`` a batch."""
        counts = self.event_counts
        types, channels = len(self.records.type_names), len(self.records.channel_names)
        topic, kind, channel = batch.topic_idx[accepted], batch.type_idx[accepted], batch.chan_idx[accepted]
        counts += np.bincount((topic * types + kind) * channels + channel, minlength=counts.size)

    @property
    def nbytes(self) -> int:
        """Bytes the shard's state holds (``journey_state_bytes``): customers, sessions and windows."""
        return self.state.nbytes + (0 if self.windows is None else self.windows.nbytes)

    def census(self) -> npt.NDArray[np.float64]:
        """Customers of the shard per stage, with sentiment and engagement sums (``StageCensus``)."""
        return stage_census(self.state, self.records.saturation)

    def _count_transitions(self, from_stage: list[int], to_stage: list[int]) -> None:
        if not from_stage:
            return
        names, children = self.records.funnel_names, self.transition_counters  # by stage index + 1
        for move, count in Counter(zip(from_stage, to_stage, strict=True)).items():
            child = children.get(move)
            if child is None:  # labels() costs more than the increment: once per move
                child = children[move] = self.metrics.transitions.labels(names[move[0] + 1],
                                                                         names[move[1] + 1])
            child.inc(count)

    def snapshot(self) -> Snapshot | None:
        """Copies of the shard's arrays (Bytewax may pickle them after we change the state).

        Bytewax asks at the end of every epoch, recovery store or not: a new map that came
        in takes over here. Without a store nothing keeps the copy, and copying every shard
        stalled a live run for as long as the copy took, every epoch. Then there is none.

        The saved map is the one the customers' stages were evaluated under: a store
        written between a map's take-over and the evaluation resumes into evaluating.
        ``in_force`` names the map that took over: in the store, every shard's changes at the
        same epoch (the record of when a map went live).
        """
        self._take_over()
        if not self.recoverable:
            return None
        snap: Snapshot = {"layout": self.layout, "state": self.state.snapshot(),
                          "map": map_document(self.evaluated_under or self.journey),
                          "in_force": self.journey.version, "watermark": self.watermark}
        if self.windows is not None:
            snap["windows"] = self.windows.snapshot()
        return snap


def state_layout(journey: JourneyMap, shards: int) -> dict[str, object]:
    """What a shard's snapshot must match to be resumed (``JourneyMap.layout``, shards, schema)."""
    return {"schema": STATE_SCHEMA, "shards": shards, **journey.layout}


def warm_up(journey: JourneyMap, topics: Topics) -> int:
    """Compile every kernel now (scoring, windows, closing, dormancy, rendering, a resume), so no event waits.

    Numba keeps what it compiles in its cache (``__pycache__`` beside the kernels, or
    ``NUMBA_CACHE_DIR``): once cached, this loads in a fraction of a second. Returns how
    many kernel signatures had to be compiled because nothing was cached for them.
    """
    compiled_before = _compiled()
    records = RecordBuilder(journey, topics)
    step = ShardScorer(journey, records, EngineMetrics(), 1, None)
    n = 100  # events a minute apart: enough open windows to grow their hash table
    ts = MIN_TS_MS + 60_000 * np.arange(n, dtype=np.int64)
    batch = EventBatch(["warm-up"] * n, [f"warm-up-{i}" for i in range(n)], ts,
                       np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int32), np.full(n, 0.5),
                       np.zeros(n, dtype=np.bool_), np.full(n, NO_TIME, dtype=np.int64),
                       np.full(n, NO_TIME, dtype=np.int64), np.zeros(n, dtype=np.int32),
                       np.zeros(n, dtype=np.int64))
    step.on_batch([ShardInput(batch, Report("warm-up", MIN_TS_MS, idle=False))])
    step = ShardScorer(journey, records, EngineMetrics(), 1, step.snapshot())  # what a resume runs
    (out,), _ = step.on_batch([ShardInput(EMPTY_BATCH, Report("warm-up", END, idle=True, end_ts=END))])
    step.census()
    WindowAggregator(records, journey.metrics_window_ms, 1, None, EngineMetrics()).on_batch(
        [ShardProgress("warm-up", out.shares, out.watermark)])
    return _compiled() - compiled_before


def _compiled() -> int:
    """Kernel signatures this process compiled instead of loading them from Numba's cache."""
    return sum(sum(kernel.stats.cache_misses.values())
               for module in KERNEL_MODULES
               for kernel in vars(module).values() if isinstance(kernel, CPUDispatcher))
