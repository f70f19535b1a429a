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

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from config.model import JourneyMap
from operators.base import EventBatch
from operators.columns import Pool, capacity, copied, grown, held, restored, room_for, rows
from operators.scoring import ScoreResult
from operators.state import ShardState
from operators.window_kernels import (
    EVENTS,
    N_COUNTS,
    N_SUMS,
    NO_SLOT,
    ChannelCells,
    CustomerKeys,
    CustomerWindows,
    MoveCells,
    SessionHeap,
    Sessions,
    WindowedBatch,
    WindowMap,
    WindowSlots,
    _add_by_cell,
    _add_events,
    _add_moves,
    _close_sessions,
    _close_windows,
    _heap_of,
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

    def plain(self) -> tuple[Any, ...]:
        """The entries as tuples of arrays: a snapshot that does not name these classes."""
        return (self.starts, *(tuple(group) for group in self[1:]))

    @staticmethod
    def from_plain(plain: tuple[Any, ...]) -> "WindowShares":
        """Shares from ``plain()`` output."""
        starts, channels, transitions, populations = plain
        return WindowShares(starts, ChannelEntries(*channels), Entries(*transitions), Entries(*populations))

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


class ClosedSessions(NamedTuple):
    """Sessions closed in one step, as columns."""

    rows: I64
    start: I64
    end: I64
    events: I64
    converted: npt.NDArray[np.bool_]
    stage: npt.NDArray[np.int16]
    channels: I64  # [session, channel] event counts


class ShardWindows:
    """The open sessions and windows of one shard, as bundles of columns (``window_kernels``)."""

    def __init__(self, journey: JourneyMap) -> None:
        arrays = journey.arrays
        self.channels = c = len(journey.channels) + 1
        # funnel indices: no stage yet, the stages, dormant
        self.map = WindowMap(arrays.type_roles, journey.metrics_window_ms, journey.session_gap_ms,
                             arrays.n_stages + 2)
        self.customers = rows(CustomerWindows, 0, channels=c)
        self.sessions = Pool(Sessions, channels=c)
        self.heap = rows(SessionHeap, 0)  # the open sessions by end, a row per session slot
        self.cells = Pool(ChannelCells, counts=N_COUNTS, sums=N_SUMS)
        self.moves = Pool(MoveCells)
        # open tumbling windows: a slot each, found by start through a hash table of slots
        # (a power of two, at most half full)
        self.slots = Pool(WindowSlots)
        self.h_slot = np.full(MIN_HASH, NO_SLOT, dtype=np.int64)
        self.keys = rows(CustomerKeys, 0)

    @property
    def width(self) -> int:
        """The metrics window, ms."""
        return self.map.width

    @property
    def nbytes(self) -> int:
        """Bytes the shard's sessions and windows hold, room reserved included."""
        return held(self.customers, self.sessions.cols, self.heap, self.cells.cols, self.moves.cols,
                    self.slots.cols, (self.h_slot,), self.keys)

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
        have = capacity(self.customers)
        if size > have:
            self.customers = grown(self.customers, room_for(size, have, 256))

    def _ensure_sessions(self, needed: int) -> None:
        """Free session slots for ``needed`` new sessions, and a heap row for every slot."""
        self.sessions.ensure(needed)
        if capacity(self.heap) < self.sessions.size:
            self.heap = grown(self.heap, self.sessions.size)

    def _ensure_keys(self, needed: int) -> None:
        keys = self.keys
        have = capacity(keys)
        if int(keys.top[0]) + needed > have:
            self.keys = grown(keys, max(int(keys.top[0]) + needed, 2 * have, 1024))

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
            _rehash(self.h_slot, h_slot, slots.cols.start, self.width)
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
        self._ensure_sessions(m)
        self.cells.ensure(m)
        self.moves.ensure(moved)
        self._ensure_keys(m)
        _add_events(
            self.customers, self.sessions.cols, self.heap, self.slots.cols, self.h_slot, self.cells.cols,
            self.moves.cols, self.keys,
            WindowedBatch(result.rows, batch.ts, batch.type_idx, batch.chan_idx, batch.sentiment,
                          result.stage_after, windowed, batch.own_mark),
            tr, watermark, self.map,
        )

    def count_moves(self, from_stage: npt.NDArray[np.int16], to: npt.NDArray[np.int16], at: I64) -> None:
        """Count transitions no event made (to ``dormant``, or by a new map) in the windows of their times."""
        self._ensure_window_slots(np.unique(at - at % self.width).size)  # many customers, few windows
        self.moves.ensure(at.size)
        _add_moves(at, from_stage, to, self.map, self.slots.cols, self.h_slot, self.moves.cols)

    # -- closing ---------------------------------------------------------------------------

    def close_sessions(self, watermark: int) -> ClosedSessions | None:
        """Close and free the sessions no future event can join; None when none can close yet.

        The heap's top key is a lower bound of every open session's end: while it is not
        due, a live step (the watermark a few ms further) is spared the kernel call, whose
        loop would stop there at once. Past it, the result may still be empty (the session
        at the top was extended since it was keyed).
        """
        heap = self.heap
        if not heap.size[0] or heap.key[0] + self.map.gap > watermark:
            return None
        return ClosedSessions(*_close_sessions(watermark, self.map.gap, self.customers,
                                               self.sessions.cols, self.heap))

    def close_windows(self, watermark: int) -> WindowShares | None:
        """Hand on and free every window that ends at or before the watermark; None when none does.

        One numpy pass over the table of open windows (a few times as many buckets as
        windows, ``MIN_HASH`` at least) finds the first start: while that window does not
        end yet, a live step (the watermark a few ms further) is spared the kernel call,
        which would pick the same windows from the same table.
        """
        last_start = watermark - self.width
        table = self.h_slot
        open_now = table[table != NO_SLOT]
        if not open_now.size or int(self.slots.cols.start[open_now].min()) > last_start:
            return None
        (starts, ch_start, ch_chan, ch_counts, ch_sums, tr_start, tr_key, tr_count, pop_start,
         pop_stage, pop_change) = _close_windows(
            last_start, self.map, self.slots.cols, self.h_slot, self.cells.cols, self.moves.cols, self.keys)
        return WindowShares(starts, ChannelEntries(ch_start, ch_chan, ch_counts, ch_sums),
                            Entries(tr_start, tr_key, tr_count), Entries(pop_start, pop_stage, pop_change))

    # -- recovery --------------------------------------------------------------------------

    _POOLS = ("sessions", "cells", "moves", "slots")

    def snapshot(self) -> dict[str, Any]:
        """Copies of everything open (safe to pickle while the windows keep changing)."""
        snap: dict[str, Any] = {name: getattr(self, name).snapshot() for name in self._POOLS}
        snap.update(customers=copied(self.customers), keys=copied(self.keys), h_slot=self.h_slot.copy())
        return snap

    def restore(self, snap: dict[str, Any]) -> None:
        """Take over the state of ``snapshot()`` output (recovery resume)."""
        for name in self._POOLS:
            getattr(self, name).restore(snap[name])
        self.customers = restored(CustomerWindows, snap["customers"])
        self.heap = rows(SessionHeap, self.sessions.size)
        _heap_of(self.sessions.cols, self.heap)
        self.keys = restored(CustomerKeys, snap["keys"])
        self.h_slot = np.array(snap["h_slot"])
