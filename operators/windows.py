"""Sessions, channel windows and funnel counts of one shard (PRODUCT §5), and their closing.

State is numpy arrays beside the shard's customer state: per customer a little
(the head of its open-session list, last outbound time and whether it was answered
per channel, the last window it was counted in per channel), a pool of open sessions,
and per open tumbling window the cells of the channels and stage moves it holds.
Closing frees what closed, so the state follows what is open, not what was ever seen
(Bytewax's own session windower keeps every key).

Closed tumbling windows are handed on as ``WindowShares``: this shard's share of each,
as entries of what is not zero. Customers belong to exactly one shard, so shares add
up to the exact totals, distinct customers included.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from config.model import JourneyMap
from operators.base import NO_TIME, EventBatch
from operators.scoring import ScoreResult
from operators.state import ShardState
from operators.window_kernels import (
    EVENTS,
    N_COUNTS,
    N_SUMS,
    NO_SLOT,
    _add_by_cell,
    _add_events,
    _add_moves,
    _close_sessions,
    _close_windows,
    _rehash,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

MIN_HASH = 64
"""Buckets of a shard's hash table of open windows at least (a power of two)."""


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

    def totals(self, channels: int, funnel: int) -> "WindowShares":
        """Entries summed per window and key, ordered by window then key; each window once.

        Sums go into a table of the windows present by every key (``channels`` channels,
        ``funnel`` funnel indices), which costs less than sorting the entries.
        """
        starts = np.unique(self.starts)
        ch, tr, pop = self.channels, self.transitions, self.populations
        counts = _table(starts, ch.start, ch.channel, ch.counts, channels)
        sums = _table(starts, ch.start, ch.channel, ch.sums, channels)
        moves = _table(starts, tr.start, tr.key, tr.value[:, None], funnel * funnel)[:, :, 0]
        change = _table(starts, pop.start, pop.key, pop.value[:, None], funnel)[:, :, 0]
        win, chan = _nonzero(counts[:, :, EVENTS])  # a channel with no events has no record
        tr_win, tr_key = _nonzero(moves)
        pop_win, pop_key = _nonzero(change)
        return WindowShares(starts, ChannelEntries(starts[win], chan, counts[win, chan], sums[win, chan]),
                            Entries(starts[tr_win], tr_key, moves[tr_win, tr_key]),
                            Entries(starts[pop_win], pop_key, change[pop_win, pop_key]))


def _nonzero(table: npt.NDArray[Any]) -> tuple[I64, I64]:
    """(row, column) of the cells that are not zero, row-major, as contiguous arrays.

    The rendering kernels are compiled (at warm-up) for contiguous arrays; the ones
    ``np.nonzero`` gives for a table are strided views.
    """
    rows, cols = np.divmod(np.flatnonzero(table), table.shape[1])
    return rows, cols


def _table(starts: I64, start: I64, key: I64, values: npt.NDArray[Any], keys: int) -> npt.NDArray[Any]:
    """``values`` (a row per entry) summed into [window of ``starts``, key, column]."""
    table = np.zeros((starts.size, keys, values.shape[1]), dtype=values.dtype)
    _add_by_cell(np.searchsorted(starts, start), key, values, table)
    return table


def _joined(groups: list[Any]) -> Any:
    """Entries of one kind, concatenated column by column."""
    return type(groups[0])(*(np.concatenate(cols) for cols in zip(*groups, strict=True)))


def _rows(group: Any, which: npt.NDArray[np.bool_]) -> Any:
    """The ``which`` entries of one kind."""
    return type(group)(*(col[which] for col in group))


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


class _Pool:
    """Records of equal shape in preallocated columns, reused through a stack of free slots.

    Memory follows the most records open at once, never the number ever made. Columns
    are read as attributes (``pool.start``) and handed to the kernels, which take slots
    from the top of ``free[:n_free]`` and push closed ones back.
    """

    def __init__(self, **columns: tuple[tuple[int, ...], Any, object]) -> None:
        self._spec = columns
        for name, (tail, dtype, fill) in columns.items():
            setattr(self, name, np.full((0, *tail), fill, dtype=dtype))
        self.free = np.zeros(0, dtype=np.int64)
        self.n_free = 0

    def __getattr__(self, name: str) -> Any:
        """Only reached for names that are not columns (the columns are set per instance)."""
        raise AttributeError(name)

    @property
    def size(self) -> int:
        """Slots reserved, in use or free."""
        return int(self.free.shape[0])

    @property
    def in_use(self) -> int:
        """Slots holding an open record."""
        return self.size - self.n_free

    def ensure(self, needed: int) -> None:
        """At least ``needed`` free slots (low slots are used first)."""
        if self.n_free >= needed:
            return
        have = self.size
        cap = max(have + needed - self.n_free, 2 * have, 256)
        for name, (_, _, fill) in self._spec.items():
            setattr(self, name, _grown(getattr(self, name), cap, fill))
        free = np.empty(cap, dtype=np.int64)
        free[: self.n_free] = self.free[: self.n_free]
        added = np.arange(cap - 1, have - 1, -1, dtype=np.int64)
        free[self.n_free: self.n_free + added.size] = added
        self.free = free
        self.n_free += added.size

    def snapshot(self) -> dict[str, Any]:
        """Copies of the columns and the free stack."""
        return {**{name: getattr(self, name).copy() for name in self._spec},
                "free": self.free.copy(), "n_free": self.n_free}

    def restore(self, snap: dict[str, Any]) -> None:
        """Take over the state of ``snapshot()`` output."""
        for name in self._spec:
            setattr(self, name, np.array(snap[name]))
        self.free, self.n_free = np.array(snap["free"]), int(snap["n_free"])


class ShardWindows:
    """The open sessions and windows of one shard."""

    def __init__(self, journey: JourneyMap) -> None:
        arrays = journey.arrays
        self.channels = c = len(journey.channels) + 1
        self.funnel = arrays.n_stages + 2  # no stage yet, the stages, dormant
        self.type_roles = arrays.type_roles
        self.gap = journey.session_gap_ms
        self.width = journey.metrics_window_ms
        # per customer
        self.first_sess = np.full(0, NO_SLOT, dtype=np.int64)
        self.last_out = np.full((0, c), NO_TIME, dtype=np.int64)
        self.responded = np.zeros((0, c), dtype=np.bool_)
        self.last_win = np.full((0, c), NO_TIME, dtype=np.int64)
        i64, row = np.int64, ()
        self.sessions = _Pool(row=(row, i64, NO_SLOT), start=(row, i64, 0), end=(row, i64, 0),
                              events=(row, i64, 0), conv=(row, np.bool_, False),
                              stage=(row, np.int16, 0), chan=((c,), i64, 0), next=(row, i64, 0),
                              prev=(row, i64, 0))
        self.cells = _Pool(chan=(row, i64, 0), next=(row, i64, NO_SLOT),
                           counts=((N_COUNTS,), i64, 0), sums=((N_SUMS,), np.float64, 0.0),
                           entry=(row, i64, -1))
        self.moves = _Pool(key=(row, i64, 0), next=(row, i64, NO_SLOT), moved=(row, i64, 0),
                           counted=(row, i64, 0))
        # open tumbling windows: a slot each (its start, the first of its channel cells and
        # of its move cells), found by start through a hash table of slots (a power of two,
        # at most half full)
        self.slots = _Pool(start=(row, i64, 0), first_cell=(row, i64, NO_SLOT),
                           first_move=(row, i64, NO_SLOT))
        self.h_slot = np.full(MIN_HASH, NO_SLOT, dtype=np.int64)
        # distinct customers per channel cell: (row, cell) noted when a customer enters one
        self.ck_row = np.zeros(0, dtype=np.int64)
        self.ck_cell = np.zeros(0, dtype=np.int64)
        self.n_ck = 0

    @property
    def open_sessions(self) -> int:
        """Sessions not closed yet."""
        return self.sessions.in_use

    @property
    def session_slots(self) -> int:
        """Session slots reserved, open or free."""
        return self.sessions.size

    @property
    def open_windows(self) -> int:
        """Tumbling windows not closed yet."""
        return self.slots.in_use

    # -- growth ---------------------------------------------------------------------------

    def _ensure_rows(self, size: int) -> None:
        have = self.first_sess.shape[0]
        if size <= have:
            return
        cap = max(size, 2 * have, 256)
        self.first_sess = _grown(self.first_sess, cap, NO_SLOT)
        self.last_out = _grown(self.last_out, cap, NO_TIME)
        self.responded = _grown(self.responded, cap, False)
        self.last_win = _grown(self.last_win, cap, NO_TIME)

    def _ensure_keys(self, needed: int) -> None:
        if self.n_ck + needed <= self.ck_row.shape[0]:
            return
        cap = max(self.n_ck + needed, 2 * self.ck_row.shape[0], 1024)
        self.ck_row = _grown(self.ck_row, cap, 0)
        self.ck_cell = _grown(self.ck_cell, cap, 0)

    def _ensure_window_slots(self, needed: int) -> None:
        """Room for ``needed`` windows more: free slots, and a hash table at most half full.

        The table also shrinks back after a burst of windows (closing scans all of it).
        """
        slots = self.slots
        size = MIN_HASH
        while size < 2 * (slots.in_use + needed):
            size *= 2
        if size > self.h_slot.shape[0] or 8 * size <= self.h_slot.shape[0]:
            h_slot = np.full(size, NO_SLOT, dtype=np.int64)
            _rehash(self.h_slot, h_slot, slots.start, self.width)
            self.h_slot = h_slot
        slots.ensure(needed)

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
        tr = result.transitions
        m, moved = int(np.count_nonzero(windowed)), tr.event.size
        if not m and not moved:
            return
        self._ensure_rows(state.size)
        self._ensure_window_slots(m + moved)
        sess, cells, moves = self.sessions, self.cells, self.moves
        sess.ensure(m)
        cells.ensure(m)
        moves.ensure(moved)
        self._ensure_keys(m)
        slots = self.slots
        (sess.n_free, slots.n_free, cells.n_free, moves.n_free, self.n_ck) = _add_events(
            self.first_sess, self.last_out, self.responded, self.last_win,
            sess.row, sess.start, sess.end, sess.events, sess.conv, sess.stage, sess.chan,
            sess.next, sess.prev, sess.free, sess.n_free,
            self.width, slots.start, self.h_slot, slots.free, slots.n_free, slots.first_cell,
            slots.first_move,
            cells.chan, cells.next, cells.counts, cells.sums, cells.free, cells.n_free,
            moves.key, moves.next, moves.moved, moves.counted, moves.free, moves.n_free,
            self.ck_row, self.ck_cell, self.n_ck,
            result.rows, batch.ts, batch.type_idx, batch.chan_idx, batch.sentiment,
            result.stage_after, windowed, batch.own_mark,
            tr.event, tr.from_stage, tr.to_stage, tr.ts, tr.dormant, watermark, self.funnel,
            self.type_roles, self.gap,
        )

    def count_dormancy(self, from_stage: npt.NDArray[np.int16], at: I64) -> None:
        """Count transitions to ``dormant`` in the windows of the times they happened at."""
        to = np.full(at.size, self.funnel - 2, dtype=np.int16)  # dormant, as a stage index
        self._ensure_window_slots(np.unique(at - at % self.width).size)  # many customers, few windows
        slots, moves = self.slots, self.moves
        moves.ensure(at.size)
        slots.n_free, moves.n_free = _add_moves(
            at, from_stage, to, self.funnel,
            self.width, slots.start, self.h_slot, slots.free, slots.n_free, slots.first_move,
            moves.key, moves.next, moves.moved, moves.counted, moves.free, moves.n_free)

    # -- closing ---------------------------------------------------------------------------

    def close_sessions(self, watermark: int) -> ClosedSessions:
        """Close and free the sessions no future event can join."""
        sess = self.sessions
        sess.n_free, *columns = _close_sessions(
            watermark, self.gap, self.first_sess, sess.row, sess.start, sess.end, sess.events,
            sess.conv, sess.stage, sess.chan, sess.next, sess.prev, sess.free, sess.n_free)
        return ClosedSessions(*columns)

    def close_windows(self, watermark: int) -> WindowShares | None:
        """Hand on and free every window that ends at or before the watermark."""
        slots, cells, moves = self.slots, self.cells, self.moves
        if not slots.in_use:
            return None
        (slots.n_free, cells.n_free, moves.n_free, self.n_ck, starts, ch_start, ch_chan, ch_counts,
         ch_sums, tr_start, tr_key, tr_count, pop_start, pop_stage, pop_change) = _close_windows(
            watermark - self.width, self.width, slots.start, self.h_slot, slots.free, slots.n_free,
            self.funnel,
            slots.first_cell, cells.chan, cells.next, cells.counts, cells.sums, cells.entry,
            cells.free, cells.n_free,
            slots.first_move, moves.key, moves.next, moves.moved, moves.counted, moves.free,
            moves.n_free, self.ck_row, self.ck_cell, self.n_ck)
        if not starts.size:
            return None
        return WindowShares(starts, ChannelEntries(ch_start, ch_chan, ch_counts, ch_sums),
                            Entries(tr_start, tr_key, tr_count), Entries(pop_start, pop_stage, pop_change))

    # -- recovery --------------------------------------------------------------------------

    _ARRAYS = ("first_sess", "last_out", "responded", "last_win", "ck_row", "ck_cell",
               "h_slot")
    _POOLS = ("sessions", "cells", "moves", "slots")

    def snapshot(self) -> dict[str, Any]:
        """Copies of everything open (safe to pickle while the windows keep changing)."""
        snap: dict[str, Any] = {name: getattr(self, name).copy() for name in self._ARRAYS}
        snap.update({name: getattr(self, name).snapshot() for name in self._POOLS})
        snap["n_ck"] = self.n_ck
        return snap

    def restore(self, snap: dict[str, Any]) -> None:
        """Take over the state of ``snapshot()`` output (recovery resume)."""
        for name in self._ARRAYS:
            setattr(self, name, np.array(snap[name]))
        for name in self._POOLS:
            getattr(self, name).restore(snap[name])
        self.n_ck = int(snap["n_ck"])


def _grown(arr: npt.NDArray[Any], cap: int, fill: object) -> npt.NDArray[Any]:
    new = np.full((cap, *arr.shape[1:]), fill, dtype=arr.dtype)
    new[: arr.shape[0]] = arr
    return new
