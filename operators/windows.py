"""Sessions, channel windows and funnel counts of one shard (PRODUCT §5), and their closing.

State is numpy arrays beside the shard's customer state: per customer a little
(the head of its open-session list, last outbound time and whether it was answered
per channel, the last window it was counted in per channel), a pool of open sessions
and one row per open tumbling window. Closing frees what closed, so the state follows
what is open, not what was ever seen (Bytewax's own session windower keeps every key).

Closed tumbling windows are handed on as ``WindowShares``: this shard's share of each.
Customers belong to exactly one shard, so shares add up to the exact totals,
distinct customers included.
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
from operators.window_kernels import NO_SLOT, _close_sessions, _window_batch

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class WindowShares(NamedTuple):
    """One shard's shares of closed tumbling windows: a row each, a column per channel (0 = other)."""

    starts: I64  # [window]
    events: I64
    customers: I64
    impressions: I64
    clicks: I64
    conversions: I64
    sentiment_sum: F64
    sentiment_n: I64
    responses: I64
    response_time_sum: F64
    transitions: I64  # [window, stage + 1, stage + 1]: 0 is "no stage yet", the last dormant
    population_delta: I64  # [window, stage + 1]


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


_CHANNEL_SUMS = ("events", "impressions", "clicks", "conversions", "sentiment_n", "responses")
_CHANNEL_FLOATS = ("sentiment_sum", "response_time_sum")


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
        # open tumbling windows: start -> slot
        self.slots: dict[int, int] = {}
        self.free_slots: list[int] = []
        self.w: dict[str, Any] = {name: np.zeros((0, c), dtype=np.int64) for name in _CHANNEL_SUMS}
        self.w.update({name: np.zeros((0, c), dtype=np.float64) for name in _CHANNEL_FLOATS})
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
        return len(self.slots)

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

    def _slot(self, start: int) -> int:
        slot = self.slots.get(start)
        if slot is not None:
            return slot
        if not self.free_slots:
            have = self.w_pop.shape[0]
            cap = max(4, 2 * have)
            for name, arr in self.w.items():
                self.w[name] = _grown(arr, cap, 0)
            self.w_trans = _grown(self.w_trans, cap, 0)
            self.w_pop = _grown(self.w_pop, cap, 0)
            self.free_slots = list(range(cap - 1, have - 1, -1))
        slot = self.slots[start] = self.free_slots.pop()
        return slot

    # -- adding ----------------------------------------------------------------------------

    def add(self, state: ShardState, batch: EventBatch, result: ScoreResult,
            windowed: npt.NDArray[np.bool_], watermark: int) -> None:
        """Put the ``windowed`` events of a scored batch into their sessions and windows.

        Transitions are counted in the window of the event that caused them; those of
        events that enter no window (late) only move the population, in the window of
        the watermark when they were read (the same in a replay as live); so do moves to
        ``dormant`` found when a customer's next event arrives.
        """
        self._ensure_rows(state.size)
        starts = batch.ts - batch.ts % self.width
        slot = np.full(len(batch), NO_SLOT, dtype=np.int64)
        if windowed.any():
            uniq, inverse = np.unique(starts[windowed], return_inverse=True)
            slot[windowed] = np.array([self._slot(int(s)) for s in uniq.tolist()])[inverse]
            m = int(np.count_nonzero(windowed))
            self._ensure_free_sessions(m)
            self._ensure_keys(m)
            self.n_free, self.n_ck = _window_batch(
                self.first_sess, self.last_out, self.responded, self.last_win,
                self.s_row, self.s_start, self.s_end, self.s_events, self.s_conv, self.s_stage,
                self.s_chan, self.s_next, self.s_prev, self.free, self.n_free,
                self.w["events"], self.w["impressions"], self.w["clicks"], self.w["conversions"],
                self.w["sentiment_sum"], self.w["sentiment_n"], self.w["responses"],
                self.w["response_time_sum"],
                self.ck_key, self.ck_slot, self.n_ck,
                result.rows, batch.ts, batch.type_idx, batch.chan_idx, batch.sentiment,
                result.stage_after, slot, starts,
                self.type_roles, self.gap,
            )
        tr = result.transitions
        if tr.event.size:
            tr_slot = np.where(tr.dormant, NO_SLOT, slot[tr.event])
            elsewhere = tr_slot == NO_SLOT
            # moves of events in no window (late), and to dormant found on arrival: in the
            # window of the watermark they were read under (or the shard's, if later)
            tr_slot[elsewhere] = self._slots(np.maximum(batch.mark[tr.event[elsewhere]], watermark))
            self._count_moves(tr_slot, tr.from_stage, tr.to_stage, counted=~elsewhere | tr.dormant)

    def count_dormancy(self, from_stage: npt.NDArray[np.int16], at: I64) -> None:
        """Count transitions to ``dormant`` in the windows of the times they happened at."""
        to = np.full(at.size, self.funnel - 2, dtype=np.int16)  # dormant, as a stage index
        self._count_moves(self._slots(at), from_stage, to, counted=np.ones(at.size, dtype=np.bool_))

    def _slots(self, times: I64) -> I64:
        """The window slot of each time (opening windows as needed)."""
        return np.array([self._slot(int(s)) for s in (times - times % self.width).tolist()],
                        dtype=np.int64)

    def _count_moves(self, slot: I64, from_stage: npt.NDArray[np.int16],
                     to_stage: npt.NDArray[np.int16], counted: npt.NDArray[np.bool_]) -> None:
        """Stage moves in their windows: all move the population; ``counted`` ones are transitions."""
        f, t = from_stage.astype(np.int64) + 1, to_stage.astype(np.int64) + 1
        np.add.at(self.w_trans, (slot[counted], f[counted], t[counted]), 1)
        np.add.at(self.w_pop, (slot, f), -1)
        np.add.at(self.w_pop, (slot, t), 1)

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
        """Hand on and free every window that ends at or before the watermark, oldest first."""
        done = sorted(s for s in self.slots if s + self.width <= watermark)
        if not done:
            return None
        k, c = len(done), self.channels
        closing = np.array([self.slots.pop(s) for s in done], dtype=np.int64)
        # distinct customers: unique (window, row, channel) among the closing windows' keys
        position = np.full(self.w_pop.shape[0], -1, dtype=np.int64)
        position[closing] = np.arange(k)
        at = position[self.ck_slot[: self.n_ck]]
        mine = at >= 0
        keys = self.ck_key[: self.n_ck]
        span = int(keys.max()) + 1 if keys.size else 1
        unique = np.unique(at[mine] * span + keys[mine])
        customers = np.bincount((unique // span) * c + (unique % span) % c, minlength=k * c)
        shares = WindowShares(
            np.array(done, dtype=np.int64),
            customers=customers.reshape(k, c).astype(np.int64),
            transitions=self.w_trans[closing],
            population_delta=self.w_pop[closing],
            **{name: arr[closing] for name, arr in self.w.items()},
        )
        for arr in (*self.w.values(), self.w_trans, self.w_pop):
            arr[closing] = 0
        self.free_slots += closing.tolist()
        kept = int(np.count_nonzero(~mine))
        self.ck_key[:kept] = keys[~mine]
        self.ck_slot[:kept] = self.ck_slot[: self.n_ck][~mine]
        self.n_ck = kept
        return shares

    # -- recovery --------------------------------------------------------------------------

    _ARRAYS = ("first_sess", "last_out", "responded", "last_win", "s_row", "s_start", "s_end",
               "s_events", "s_conv", "s_stage", "s_chan", "s_next", "s_prev", "free", "w_trans",
               "w_pop", "ck_key", "ck_slot")

    def snapshot(self) -> dict[str, Any]:
        """Copies of everything open (safe to pickle while the windows keep changing)."""
        snap: dict[str, Any] = {name: getattr(self, name).copy() for name in self._ARRAYS}
        snap.update({f"w_{name}": arr.copy() for name, arr in self.w.items()})
        snap.update(n_free=self.n_free, n_ck=self.n_ck, slots=dict(self.slots),
                    free_slots=list(self.free_slots))
        return snap

    def restore(self, snap: dict[str, Any]) -> None:
        """Take over the state of ``snapshot()`` output (recovery resume)."""
        for name in self._ARRAYS:
            setattr(self, name, np.array(snap[name]))
        for name in self.w:
            self.w[name] = np.array(snap[f"w_{name}"])
        self.n_free, self.n_ck = int(snap["n_free"]), int(snap["n_ck"])
        self.slots, self.free_slots = dict(snap["slots"]), list(snap["free_slots"])


def _grown(arr: npt.NDArray[Any], cap: int, fill: object) -> npt.NDArray[Any]:
    new = np.full((cap, *arr.shape[1:]), fill, dtype=arr.dtype)
    new[: arr.shape[0]] = arr
    return new
