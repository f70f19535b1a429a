"""Sessions, channel windows and funnel counts of one shard (PRODUCT §5), and their closing.

State is numpy arrays beside the shard's customer state: per customer a little
(the head of its open-session list, last outbound time and whether it was answered
per channel, the last window it was counted in per channel), a pool of open sessions
and one row per open tumbling window. Closing frees what closed, so the state follows
what is open, not what was ever seen (Bytewax's own session windower keeps every key).

Closed tumbling windows are handed on as ``WindowShares``: this shard's share of each,
as entries of what is not zero. Customers belong to exactly one shard, so shares add
up to the exact totals, distinct customers included.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from config.model import JourneyMap
from operators.events import EventBatch
from operators.kernels import EMPTY_TS
from operators.scoring import ScoreResult
from operators.state import ShardState
from operators.window_kernels import (
    N_COUNTS,
    N_SUMS,
    NO_SLOT,
    _close_sessions,
    _close_windows,
    _count_moves,
    _window_batch,
    _window_slots,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class Entries(NamedTuple):
    """Counts of closed windows by (window start, key), one entry per count that is not zero."""

    start: I64
    key: I64
    value: I64


class ChannelEntries(NamedTuple):
    """Per-channel counts and sums of closed windows, one entry per (window, channel) with events."""

    start: I64
    channel: I64
    counts: I64  # [entry, column]: EVENTS, CUSTOMERS, ... (window_kernels)
    sums: F64  # [entry, column]: SENTIMENT_SUM, RESPONSE_TIME_SUM


class WindowShares(NamedTuple):
    """Closed tumbling windows as entries of what is not zero, so a sparse history stays cheap.

    From a shard, its share; summed by window and key over all shards (``totals``), the
    windows' figures: customers belong to one shard, so distinct customers add up too.
    """

    starts: I64  # the windows
    channels: ChannelEntries
    transitions: Entries  # key: from * funnel + to (funnel index: stage + 1)
    populations: Entries  # key: funnel index; value: change of that population

    @staticmethod
    def concat(parts: "list[WindowShares]") -> "WindowShares":
        """All entries of ``parts`` in one."""
        if len(parts) == 1:
            return parts[0]
        return WindowShares(np.concatenate([p.starts for p in parts]),
                            *(_joined([p[g] for p in parts]) for g in (1, 2, 3)))

    def split(self, end: int) -> "tuple[WindowShares, WindowShares]":
        """The windows that start before ``end``, and the others."""
        cut = self.starts < end
        groups = [(g, g.start < end) for g in self[1:]]
        return (WindowShares(self.starts[cut], *(_rows(g, mine) for g, mine in groups)),
                WindowShares(self.starts[~cut], *(_rows(g, ~mine) for g, mine in groups)))

    def totals(self) -> "WindowShares":
        """Entries summed per window and key, ordered by window then key; each window once."""
        ch, tr, pop = self.channels, self.transitions, self.populations
        return WindowShares(np.unique(self.starts),
                            ChannelEntries(*_summed(ch.start, ch.channel, ch.counts, ch.sums)),
                            Entries(*_summed(tr.start, tr.key, tr.value)),
                            Entries(*_summed(pop.start, pop.key, pop.value)))


def _joined(groups: list[Any]) -> Any:
    """Entries of one kind, concatenated column by column."""
    return type(groups[0])(*(np.concatenate(cols) for cols in zip(*groups, strict=True)))


def _rows(group: Any, which: npt.NDArray[np.bool_]) -> Any:
    """The ``which`` entries of one kind."""
    return type(group)(*(col[which] for col in group))


def _summed(start: I64, key: I64, *values: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], ...]:
    """``values`` summed over the entries of equal (start, key), ordered by (start, key)."""
    if start.size == 0:
        return (start, key, *values)
    order = np.lexsort((key, start))
    start, key = start[order], key[order]
    first = np.flatnonzero(np.concatenate(([True], (start[1:] != start[:-1]) | (key[1:] != key[:-1]))))
    return (start[first], key[first], *(np.add.reduceat(v[order], first, axis=0) for v in values))


@dataclass(frozen=True)
class ClosedSessions:
    """Sessions closed in one step, as columns."""

    rows: I64
    start: I64
    end: I64
    events: I64
    converted: npt.NDArray[np.bool_]
    stage: npt.NDArray[np.int16]
    channels: I64  # [session, channel] event counts


class ShardWindows:
    """The open sessions and windows of one shard."""

    def __init__(self, journey: JourneyMap) -> None:
        arrays = journey.arrays
        self.channels = len(journey.channels) + 1
        self.funnel = arrays.n_stages + 2  # no stage yet, the stages, dormant
        self.type_roles = arrays.type_roles
        self.gap = journey.session_gap_ms
        self.width = journey.metrics_window_ms
        c = self.channels
        # per customer
        self.first_sess = np.full(0, NO_SLOT, dtype=np.int64)
        self.last_out = np.full((0, c), EMPTY_TS, dtype=np.int64)
        self.responded = np.zeros((0, c), dtype=np.bool_)
        self.last_win = np.full((0, c), EMPTY_TS, dtype=np.int64)
        # session pool
        self.s_row = np.full(0, NO_SLOT, dtype=np.int64)
        self.s_start = np.zeros(0, dtype=np.int64)
        self.s_end = np.zeros(0, dtype=np.int64)
        self.s_events = np.zeros(0, dtype=np.int64)
        self.s_conv = np.zeros(0, dtype=np.bool_)
        self.s_stage = np.zeros(0, dtype=np.int16)
        self.s_chan = np.zeros((0, c), dtype=np.int64)
        self.s_next = np.zeros(0, dtype=np.int64)
        self.s_prev = np.zeros(0, dtype=np.int64)
        self.free = np.zeros(0, dtype=np.int64)
        self.n_free = 0
        # open tumbling windows: their starts in ascending order and their table slots (the
        # first n_open), and a stack of free slots (the first n_free_slots; the top is used next)
        self.open_starts = np.zeros(0, dtype=np.int64)
        self.open_slots = np.zeros(0, dtype=np.int64)
        self.n_open = 0
        self.free_slots = np.zeros(0, dtype=np.int64)
        self.n_free_slots = 0
        self.w_counts = np.zeros((0, c, N_COUNTS), dtype=np.int64)
        self.w_sums = np.zeros((0, c, N_SUMS), dtype=np.float64)
        self.w_trans = np.zeros((0, self.funnel, self.funnel), dtype=np.int64)
        self.w_pop = np.zeros((0, self.funnel), dtype=np.int64)
        # distinct customers per window and channel
        self.ck_key = np.zeros(0, dtype=np.int64)
        self.ck_slot = np.zeros(0, dtype=np.int64)
        self.n_ck = 0

    @property
    def open_sessions(self) -> int:
        """Sessions not closed yet."""
        return int(self.s_row.shape[0]) - self.n_free

    @property
    def session_slots(self) -> int:
        """Session slots reserved, open or free."""
        return int(self.s_row.shape[0])

    @property
    def open_windows(self) -> int:
        """Tumbling windows not closed yet."""
        return self.n_open

    # -- growth ---------------------------------------------------------------------------

    def _ensure_rows(self, size: int) -> None:
        have = self.first_sess.shape[0]
        if size <= have:
            return
        cap = max(size, 2 * have, 256)
        self.first_sess = _grown(self.first_sess, cap, NO_SLOT)
        self.last_out = _grown(self.last_out, cap, EMPTY_TS)
        self.responded = _grown(self.responded, cap, False)
        self.last_win = _grown(self.last_win, cap, EMPTY_TS)

    def _ensure_free_sessions(self, needed: int) -> None:
        if self.n_free >= needed:
            return
        have = self.s_row.shape[0]
        cap = max(have + needed - self.n_free, 2 * have, 256)
        for name, fill in (("s_row", NO_SLOT), ("s_start", 0), ("s_end", 0), ("s_events", 0),
                           ("s_conv", False), ("s_stage", 0), ("s_chan", 0), ("s_next", 0),
                           ("s_prev", 0)):
            setattr(self, name, _grown(getattr(self, name), cap, fill))
        free = np.empty(cap, dtype=np.int64)
        free[: self.n_free] = self.free[: self.n_free]
        added = np.arange(cap - 1, have - 1, -1, dtype=np.int64)  # low slots are used first
        free[self.n_free: self.n_free + added.size] = added
        self.free = free
        self.n_free += added.size

    def _ensure_keys(self, needed: int) -> None:
        if self.n_ck + needed <= self.ck_key.shape[0]:
            return
        cap = max(self.n_ck + needed, 2 * self.ck_key.shape[0], 1024)
        self.ck_key = _grown(self.ck_key, cap, 0)
        self.ck_slot = _grown(self.ck_slot, cap, 0)

    def _grow_window_tables(self) -> None:
        have = self.w_pop.shape[0]
        cap = max(2 * have, 4)
        self.w_counts = _grown(self.w_counts, cap, 0)
        self.w_sums = _grown(self.w_sums, cap, 0.0)
        self.w_trans = _grown(self.w_trans, cap, 0)
        self.w_pop = _grown(self.w_pop, cap, 0)
        self.open_starts = _grown(self.open_starts, cap, 0)
        self.open_slots = _grown(self.open_slots, cap, 0)
        # room for every slot; the new ones go under the free ones, low slots are used first
        free = np.empty(cap, dtype=np.int64)
        added = cap - have
        free[:added] = np.arange(cap - 1, have - 1, -1)
        free[added: added + self.n_free_slots] = self.free_slots[: self.n_free_slots]
        self.free_slots = free
        self.n_free_slots += added

    # -- adding ----------------------------------------------------------------------------

    def add(self, state: ShardState, batch: EventBatch, result: ScoreResult,
            windowed: npt.NDArray[np.bool_], watermark: int) -> None:
        """Put the ``windowed`` events of a scored batch into their sessions and windows.

        Transitions are counted in the window of the event that caused them. Those of
        events that enter no window (late) only move the population, in the window of
        what their own partition allowed the watermark to be when they were read; moves
        to ``dormant`` found when a customer's next event arrives, in the window of when
        they happened, as if the watermark had found them. Both are the same in a replay
        as live (the watermark itself, how far the other partitions had got, is not), and
        both windows are still open here: the shard's watermark is past them only when an
        idle partition let it run ahead, and then the move goes to the watermark's window.
        """
        self._ensure_rows(state.size)
        starts = batch.ts - batch.ts % self.width
        slot = np.full(len(batch), NO_SLOT, dtype=np.int64)
        if windowed.any():
            slot[windowed] = self._slots(batch.ts[windowed])
            m = int(np.count_nonzero(windowed))
            self._ensure_free_sessions(m)
            self._ensure_keys(m)
            self.n_free, self.n_ck = _window_batch(
                self.first_sess, self.last_out, self.responded, self.last_win,
                self.s_row, self.s_start, self.s_end, self.s_events, self.s_conv, self.s_stage,
                self.s_chan, self.s_next, self.s_prev, self.free, self.n_free,
                self.w_counts, self.w_sums,
                self.ck_key, self.ck_slot, self.n_ck,
                result.rows, batch.ts, batch.type_idx, batch.chan_idx, batch.sentiment,
                result.stage_after, slot, starts,
                self.type_roles, self.gap,
            )
        tr = result.transitions
        if tr.event.size:
            tr_slot = np.where(tr.dormant, NO_SLOT, slot[tr.event])
            elsewhere = tr_slot == NO_SLOT
            when = np.where(tr.dormant, tr.ts, batch.own_mark[tr.event])[elsewhere]
            tr_slot[elsewhere] = self._slots(np.maximum(when, watermark))
            _count_moves(tr_slot, tr.from_stage, tr.to_stage, ~elsewhere | tr.dormant,
                         self.w_trans, self.w_pop)

    def count_dormancy(self, from_stage: npt.NDArray[np.int16], at: I64) -> None:
        """Count transitions to ``dormant`` in the windows of the times they happened at."""
        to = np.full(at.size, self.funnel - 2, dtype=np.int16)  # dormant, as a stage index
        _count_moves(self._slots(at), from_stage, to, np.ones(at.size, dtype=np.bool_),
                     self.w_trans, self.w_pop)

    def _slots(self, times: I64) -> I64:
        """The table slot of each time's window, opening windows as needed."""
        slots = np.empty(times.size, dtype=np.int64)
        done = 0
        while True:
            self.n_open, self.n_free_slots, done = _window_slots(
                times, self.width, self.open_starts, self.open_slots, self.n_open,
                self.free_slots, self.n_free_slots, slots, done)
            if done == times.size:
                return slots
            self._grow_window_tables()

    # -- closing ---------------------------------------------------------------------------

    def close_sessions(self, watermark: int) -> ClosedSessions:
        """Close and free the sessions no future event can join."""
        closed = np.empty(self.s_row.shape[0], dtype=np.int64)
        rows = np.empty(self.s_row.shape[0], dtype=np.int64)
        count, self.n_free = _close_sessions(watermark, self.gap, self.first_sess, self.s_row,
                                             self.s_end, self.s_next, self.s_prev, self.free,
                                             self.n_free, closed, rows)
        idx = closed[:count]
        return ClosedSessions(rows[:count], self.s_start[idx].copy(), self.s_end[idx].copy(),
                              self.s_events[idx].copy(), self.s_conv[idx].copy(),
                              self.s_stage[idx].copy(), self.s_chan[idx].copy())

    def close_windows(self, watermark: int) -> WindowShares | None:
        """Hand on and free every window that ends at or before the watermark."""
        n = self.n_open
        k = int(np.searchsorted(self.open_starts[:n], watermark - self.width, side="right"))
        if k == 0:
            return None
        starts, closing = self.open_starts[:k].copy(), self.open_slots[:k].copy()
        self.open_starts[: n - k] = self.open_starts[k:n]
        self.open_slots[: n - k] = self.open_slots[k:n]
        self.n_open = n - k
        (self.n_ck, ch_start, ch_chan, ch_counts, ch_sums, tr_start, tr_key, tr_count,
         pop_start, pop_stage, pop_change) = _close_windows(
            closing, starts, self.w_counts, self.w_sums, self.w_trans, self.w_pop,
            self.ck_key, self.ck_slot, self.n_ck)
        f = self.n_free_slots
        self.free_slots[f: f + k] = closing[::-1]
        self.n_free_slots = f + k
        return WindowShares(starts, ChannelEntries(ch_start, ch_chan, ch_counts, ch_sums),
                            Entries(tr_start, tr_key, tr_count), Entries(pop_start, pop_stage, pop_change))

    # -- recovery --------------------------------------------------------------------------

    _ARRAYS = ("first_sess", "last_out", "responded", "last_win", "s_row", "s_start", "s_end",
               "s_events", "s_conv", "s_stage", "s_chan", "s_next", "s_prev", "free", "w_counts",
               "w_sums", "w_trans", "w_pop", "ck_key", "ck_slot", "open_starts", "open_slots",
               "free_slots")

    def snapshot(self) -> dict[str, Any]:
        """Copies of everything open (safe to pickle while the windows keep changing)."""
        snap: dict[str, Any] = {name: getattr(self, name).copy() for name in self._ARRAYS}
        snap.update(n_free=self.n_free, n_ck=self.n_ck, n_open=self.n_open,
                    n_free_slots=self.n_free_slots)
        return snap

    def restore(self, snap: dict[str, Any]) -> None:
        """Take over the state of ``snapshot()`` output (recovery resume)."""
        for name in self._ARRAYS:
            setattr(self, name, np.array(snap[name]))
        self.n_free, self.n_ck = int(snap["n_free"]), int(snap["n_ck"])
        self.n_open, self.n_free_slots = int(snap["n_open"]), int(snap["n_free_slots"])


def _grown(arr: npt.NDArray[Any], cap: int, fill: object) -> npt.NDArray[Any]:
    new = np.full((cap, *arr.shape[1:]), fill, dtype=arr.dtype)
    new[: arr.shape[0]] = arr
    return new
