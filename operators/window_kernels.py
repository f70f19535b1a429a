"""Numba kernels for the event-time windows of PRODUCT §5; they see arrays in named bundles.

Sessions live in a pool of slots shared by the customers of a shard: each customer's
open sessions form a doubly linked list (``Sessions.next``/``prev``) starting at
``CustomerWindows.first_sess[row]``; a closed session's slot goes back on the free
stack, so memory follows the number of *open* sessions, never the number ever seen.
Open separate sessions of one customer are always at least ``gap`` apart, which is why
an event can only ever bridge the sessions it is itself within ``gap`` of. Closing finds
the sessions the watermark passed through a min-heap of the open ones (``SessionHeap``),
so it costs what closes, not what is open: a live shard holds every customer active in
the last ``gap`` and closes a few of them at a time, many times a second.

Open tumbling windows hold cells from two more pools, in a singly linked list per
window: one per channel that had events in it (counts and sums) and one per stage move
(from, to) that happened in it. A sparse history (an event or two per window and
shard) costs a cell or two per window, not a table of every channel and move. Open
windows are found by their start through a hash table of window slots (``table``).
"""

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from config.arrays import ROLE_CLICK, ROLE_CONVERSION, ROLE_IMPRESSION, ROLE_OUTBOUND, ROLE_RESPONSE
from operators.base import NO_TIME
from operators.columns import F64, I64, column

NO_SLOT = -1

# columns of a channel cell's counts (``ChannelCells.counts[cell, column]``)
EVENTS, CUSTOMERS, IMPRESSIONS, CLICKS, CONVERSIONS, SENTIMENT_N, RESPONSES = range(7)
N_COUNTS = 7
# columns of its sums (``ChannelCells.sums[cell, column]``)
SENTIMENT_SUM, RESPONSE_TIME_SUM = range(2)
N_SUMS = 2

I16 = npt.NDArray[np.int16]
I32 = npt.NDArray[np.int32]
BOOL = npt.NDArray[np.bool_]


class CustomerWindows(NamedTuple):
    """Window state of a shard's customers, a row each (rows as in the scoring state)."""

    first_sess: I64 = column(np.int64, NO_SLOT)  # the customer's first open session
    last_out: I64 = column(np.int64, NO_TIME, "channels")  # latest outbound touchpoint per channel
    responded: BOOL = column(np.bool_, False, "channels")  # ... answered already
    last_win: I64 = column(np.int64, NO_TIME, "channels")  # the window last counted in per channel


class Sessions(NamedTuple):
    """The pool of open sessions (a ``columns.Pool``)."""

    row: I64 = column(np.int64, NO_SLOT)  # the customer's row; NO_SLOT: free
    start: I64 = column(np.int64)
    end: I64 = column(np.int64)
    events: I64 = column(np.int64)
    conv: BOOL = column(np.bool_, False)
    stage: I16 = column(np.int16)  # the customer's stage after the session's latest event
    chan: I64 = column(np.int64, 0, "channels")  # events per channel
    next: I64 = column(np.int64)
    prev: I64 = column(np.int64)
    free: I64 = column(np.int64)
    top: I64 = column(np.int64, per_row=False)


class SessionHeap(NamedTuple):
    """The open sessions as a min-heap: the one at the top is the first the watermark can close.

    An entry's ``key`` is at most its session's end. Events that extend a session leave
    its entry alone (most events do, and a heap move each would cost them all); closing
    raises the key of an entry it finds at the top that is not due yet. A row per session
    slot: ``slot``/``key`` by heap position, ``pos`` (where a session sits in the heap) by
    session slot, so a session a bridging event absorbs leaves the heap at once. Not kept
    in snapshots: ``_heap_of`` builds it from the sessions.
    """

    slot: I64 = column(np.int64, NO_SLOT)  # heap position -> session slot
    key: I64 = column(np.int64)  # heap position -> at most that session's end
    pos: I64 = column(np.int64, NO_SLOT)  # session slot -> heap position
    size: I64 = column(np.int64, per_row=False)  # entries in the heap


class WindowSlots(NamedTuple):
    """The pool of open tumbling windows: each one's start and the heads of its cell lists."""

    start: I64 = column(np.int64)
    first_cell: I64 = column(np.int64, NO_SLOT)
    first_move: I64 = column(np.int64, NO_SLOT)
    free: I64 = column(np.int64)
    top: I64 = column(np.int64, per_row=False)


class ChannelCells(NamedTuple):
    """The pool of (window, channel) cells: counts and sums of one channel in one window."""

    chan: I64 = column(np.int64)
    next: I64 = column(np.int64, NO_SLOT)
    counts: I64 = column(np.int64, 0, "counts")  # EVENTS, CUSTOMERS, ...
    sums: F64 = column(np.float64, 0.0, "sums")  # SENTIMENT_SUM, RESPONSE_TIME_SUM
    entry: I64 = column(np.int64, -1)  # while closing: the cell's entry in the output
    free: I64 = column(np.int64)
    top: I64 = column(np.int64, per_row=False)


class MoveCells(NamedTuple):
    """The pool of (window, from → to) cells: stage moves in one window."""

    key: I64 = column(np.int64)  # from * funnel + to (funnel index: stage + 1)
    next: I64 = column(np.int64, NO_SLOT)
    moved: I64 = column(np.int64)  # every move: changes the populations
    counted: I64 = column(np.int64)  # moves that are transitions of the window
    free: I64 = column(np.int64)
    top: I64 = column(np.int64, per_row=False)


class CustomerKeys(NamedTuple):
    """(row, cell) pairs noted when a customer enters a channel cell: distinct customers."""

    row: I64 = column(np.int64)
    cell: I64 = column(np.int64)
    top: I64 = column(np.int64, per_row=False)  # pairs in use


class WindowMap(NamedTuple):
    """What the window kernels need of the journey map."""

    type_roles: I32  # ROLE_* bits per touchpoint type
    width: int  # metrics window, ms
    gap: int  # session gap, ms
    funnel: int  # funnel indices: no stage yet, the stages, dormant


class WindowedBatch(NamedTuple):
    """A scored batch as the window kernel reads it, in arrival order."""

    rows: I64
    ts: I64
    type_idx: I32
    chan_idx: I32
    sentiment: F64
    stage_after: I16  # the customer's stage after the event
    windowed: BOOL  # accepted and on time: enters a session and a window
    own_mark: I64  # what the event's own partition allowed the watermark to be


@njit(cache=True, nogil=True, inline="always")
def _take(pool):  # pragma: no cover - compiled
    """A slot from the top of the pool's free stack (the caller made sure there is one)."""
    pool.top[0] -= 1
    return pool.free[pool.top[0]]


@njit(cache=True, nogil=True, inline="always")
def _give(pool, s):  # pragma: no cover - compiled
    """Slot ``s`` back on the pool's free stack."""
    pool.free[pool.top[0]] = s
    pool.top[0] += 1


@njit(cache=True, nogil=True)
def _unlink(s, r, cust, sess):  # pragma: no cover - compiled
    """Take session ``s`` out of customer ``r``'s list."""
    nxt, prv = sess.next[s], sess.prev[s]
    if prv == NO_SLOT:
        cust.first_sess[r] = nxt
    else:
        sess.next[prv] = nxt
    if nxt != NO_SLOT:
        sess.prev[nxt] = prv


@njit(cache=True, nogil=True, inline="always")
def _place(heap, i, s, k):  # pragma: no cover - compiled
    """Entry (session ``s``, ``k``) at heap position ``i``."""
    heap.slot[i] = s
    heap.key[i] = k
    heap.pos[s] = i


@njit(cache=True, nogil=True)
def _sift_up(heap, i):  # pragma: no cover - compiled
    """Move the entry at ``i`` up to where its parent's key is no larger."""
    s, k = heap.slot[i], heap.key[i]
    while i > 0:
        parent = (i - 1) >> 1
        if heap.key[parent] <= k:
            break
        _place(heap, i, heap.slot[parent], heap.key[parent])
        i = parent
    _place(heap, i, s, k)


@njit(cache=True, nogil=True)
def _sift_down(heap, i):  # pragma: no cover - compiled
    """Move the entry at ``i`` down to where its children's keys are no smaller."""
    n = heap.size[0]
    s, k = heap.slot[i], heap.key[i]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and heap.key[child + 1] < heap.key[child]:
            child += 1
        if heap.key[child] >= k:
            break
        _place(heap, i, heap.slot[child], heap.key[child])
        i = child
    _place(heap, i, s, k)


@njit(cache=True, nogil=True)
def _heap_push(heap, s, k):  # pragma: no cover - compiled
    """Session ``s`` into the heap with key ``k`` (the caller made room: a row per session slot)."""
    i = heap.size[0]
    heap.size[0] = i + 1
    _place(heap, i, s, k)
    _sift_up(heap, i)


@njit(cache=True, nogil=True)
def _heap_remove(heap, s):  # pragma: no cover - compiled
    """Session ``s`` out of the heap, the last entry moved into its place."""
    i = heap.pos[s]
    heap.pos[s] = NO_SLOT
    last = heap.size[0] - 1
    heap.size[0] = last
    if i == last:
        return
    _place(heap, i, heap.slot[last], heap.key[last])
    if i > 0 and heap.key[i] < heap.key[(i - 1) >> 1]:
        _sift_up(heap, i)
    else:
        _sift_down(heap, i)


@njit(cache=True, nogil=True)
def _heap_of(sess, heap):  # pragma: no cover - compiled
    """Fill the empty ``heap`` with every open session, keyed by its end (after a resume)."""
    for s in range(sess.row.shape[0]):
        if sess.row[s] != NO_SLOT:
            _heap_push(heap, s, sess.end[s])


_SPREAD = np.uint64(0x9E3779B97F4A7C15)  # odd: a table's worth of consecutive windows fills it


@njit(cache=True, nogil=True, inline="always")
def _home(start, width, mask):  # pragma: no cover - compiled
    """The bucket a window hashes to.

    Its number times an odd constant: consecutive windows land far apart, so probe runs
    stay short (a delete walks the rest of its run).
    """
    return np.int64((np.uint64(start // width) * _SPREAD) & np.uint64(mask))


@njit(cache=True, nogil=True, inline="always")
def _slot_of(start, width, slots, table):  # pragma: no cover - compiled
    """The slot of the window at ``start``, opened from the free stack when new.

    Open windows are found through ``table``, a hash table of slots (linear probing).
    The caller makes sure there is room.
    """
    mask = table.shape[0] - 1
    i = _home(start, width, mask)
    while table[i] != NO_SLOT:
        if slots.start[table[i]] == start:
            return table[i]
        i = (i + 1) & mask
    w = _take(slots)
    slots.start[w] = start
    table[i] = w
    return w


@njit(cache=True, nogil=True)
def _rehash(old, new, slot_start, width):  # pragma: no cover - compiled
    """Every slot of hash table ``old`` into the empty ``new`` (larger, or smaller after a burst)."""
    mask = new.shape[0] - 1
    for w in old:
        if w != NO_SLOT:
            i = _home(slot_start[w], width, mask)
            while new[i] != NO_SLOT:
                i = (i + 1) & mask
            new[i] = w


@njit(cache=True, nogil=True, inline="always")
def _unhash(w, width, slot_start, table):  # pragma: no cover - compiled
    """Take slot ``w`` out of the hash table, moving later entries of its run back into the hole."""
    mask = table.shape[0] - 1
    i = _home(slot_start[w], width, mask)
    while table[i] != w:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        e = table[j]
        if e == NO_SLOT:
            break
        home = _home(slot_start[e], width, mask)
        # the entry at j stays unless its home lies cyclically outside (i, j]
        if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
            table[i] = e
            i = j
    table[i] = NO_SLOT


@njit(cache=True, nogil=True, inline="always")
def _cell_of(first, w, key, keys, pool):  # pragma: no cover - compiled
    """The cell with ``key`` in window slot ``w``'s list, taken from the pool when it has none.

    ``first`` holds the lists' heads. Returns (cell, new); a new cell's counts are the caller's to clear.
    """
    c = first[w]
    while c != NO_SLOT and keys[c] != key:
        c = pool.next[c]
    if c != NO_SLOT:
        return c, False
    c = _take(pool)
    keys[c] = key
    pool.next[c] = first[w]
    first[w] = c
    return c, True


@njit(cache=True, nogil=True, inline="always")
def _tally_move(w, key, counted, slots, moves):  # pragma: no cover - compiled
    """One stage move into its cell of window slot ``w``.

    A cell's key is ``from * funnel + to`` (funnel index: stage + 1). Every move changes
    the populations; ``counted`` ones are also transitions.
    """
    m, new = _cell_of(slots.first_move, w, key, moves.key, moves)
    if new:
        moves.moved[m] = 0
        moves.counted[m] = 0
    moves.moved[m] += 1
    if counted:
        moves.counted[m] += 1


@njit(cache=True, nogil=True)
def _add_events(  # pragma: no cover - compiled
    cust, sess, heap, slots, table, cells, moves, keys, b, tr, watermark, wm,
):
    """Add batch ``b``'s windowed events to sessions and channel cells, and its moves ``tr`` to windows.

    A move caused by a windowed event is a transition in that event's window. A move to
    dormant found on arrival is a transition in the window of when it happened; a late
    event's move only changes populations, in the window of its ``own_mark``; both no
    earlier than the watermark's window. The caller has made room: free pool slots and
    window slots for every event and move.
    """
    channels = cust.last_out.shape[1]
    width, gap = wm.width, wm.gap
    slot = np.full(b.rows.shape[0], NO_SLOT, np.int64)
    for i in range(b.rows.shape[0]):
        if not b.windowed[i]:
            continue
        t = b.ts[i]
        start = t - t % width
        w = _slot_of(start, width, slots, table)
        slot[i] = w
        r = b.rows[i]
        ch = b.chan_idx[i]
        roles = wm.type_roles[b.type_idx[i]]
        # channel window: the window's cell for this channel
        c, new = _cell_of(slots.first_cell, w, ch, cells.chan, cells)
        counts, sums = cells.counts, cells.sums
        if new:
            counts[c] = 0
            sums[c] = 0.0
        counts[c, EVENTS] += 1
        if roles & ROLE_IMPRESSION:
            counts[c, IMPRESSIONS] += 1
        if roles & ROLE_CLICK:
            counts[c, CLICKS] += 1
        if roles & ROLE_CONVERSION:
            counts[c, CONVERSIONS] += 1
        if not np.isnan(b.sentiment[i]):
            sums[c, SENTIMENT_SUM] += b.sentiment[i]
            counts[c, SENTIMENT_N] += 1
        last_out = cust.last_out[r, ch]
        if roles & ROLE_OUTBOUND and (last_out == NO_TIME or t >= last_out):
            cust.last_out[r, ch] = last_out = t
            cust.responded[r, ch] = False
        if roles & ROLE_RESPONSE and last_out != NO_TIME and t >= last_out \
                and not cust.responded[r, ch]:
            cust.responded[r, ch] = True
            counts[c, RESPONSES] += 1
            sums[c, RESPONSE_TIME_SUM] += t - last_out
        if cust.last_win[r, ch] != start:
            cust.last_win[r, ch] = start
            keys.row[keys.top[0]] = r
            keys.cell[keys.top[0]] = c
            keys.top[0] += 1
        # session: extend the one the event falls in, bridge any others it also reaches
        target = NO_SLOT
        s = cust.first_sess[r]
        while s != NO_SLOT:
            nxt = sess.next[s]
            if sess.start[s] - gap < t < sess.end[s] + gap:
                if target == NO_SLOT:
                    target = s
                else:
                    sess.start[target] = min(sess.start[target], sess.start[s])
                    sess.end[target] = max(sess.end[target], sess.end[s])
                    sess.events[target] += sess.events[s]
                    sess.conv[target] = sess.conv[target] or sess.conv[s]
                    for k in range(channels):
                        sess.chan[target, k] += sess.chan[s, k]
                    _unlink(s, r, cust, sess)
                    _heap_remove(heap, s)
                    sess.row[s] = NO_SLOT
                    _give(sess, s)
            s = nxt
        if target == NO_SLOT:
            target = _take(sess)
            sess.row[target] = r
            sess.start[target] = t
            sess.end[target] = t
            sess.events[target] = 0
            sess.conv[target] = False
            for k in range(channels):
                sess.chan[target, k] = 0
            sess.prev[target] = NO_SLOT
            sess.next[target] = cust.first_sess[r]
            if cust.first_sess[r] != NO_SLOT:
                sess.prev[cust.first_sess[r]] = target
            cust.first_sess[r] = target
            _heap_push(heap, target, t)
        sess.start[target] = min(sess.start[target], t)
        sess.end[target] = max(sess.end[target], t)
        sess.events[target] += 1
        sess.chan[target, ch] += 1
        if roles & ROLE_CONVERSION:
            sess.conv[target] = True
        sess.stage[target] = b.stage_after[i]
    for j in range(tr.event.shape[0]):
        e = tr.event[j]
        w = NO_SLOT if tr.dormant[j] else slot[e]
        counted = True
        if w == NO_SLOT:
            counted = tr.dormant[j]
            when = max(tr.ts[j] if tr.dormant[j] else b.own_mark[e], watermark)
            w = _slot_of(when - when % width, width, slots, table)
        _tally_move(w, (tr.from_stage[j] + 1) * wm.funnel + tr.to_stage[j] + 1, counted, slots, moves)


@njit(cache=True, nogil=True)
def _add_moves(times, from_stage, to_stage, wm, slots, table, moves):  # pragma: no cover - compiled
    """Transitions (moves that count) in the windows of ``times``; room made by the caller."""
    width = wm.width
    for i in range(times.shape[0]):
        w = _slot_of(times[i] - times[i] % width, width, slots, table)
        _tally_move(w, (from_stage[i] + 1) * wm.funnel + to_stage[i] + 1, True, slots, moves)


@njit(cache=True, nogil=True)
def _add_by_cell(win, key, values, table):  # pragma: no cover - compiled
    """Add row ``i`` of ``values`` to ``table[win[i], key[i]]``."""
    for i in range(win.shape[0]):
        for c in range(values.shape[1]):
            table[win[i], key[i], c] += values[i, c]


@njit(cache=True, nogil=True)
def _close_sessions(watermark, gap, cust, sess, heap):  # pragma: no cover - compiled
    """Free every session no future event can join (``end + gap <= watermark``), in heap-key order.

    Only the top of the heap is looked at: an entry whose session was extended since it
    was keyed gets its end as key and sinks. Returns the closed sessions' columns:
    customer row, start, end, events, converted, stage, channel counts. The driver
    (``ShardWindows.close_sessions``) tests the loop's first condition before calling:
    change the two together.
    """
    closing = np.empty(16, np.int64)  # grows as needed: most steps close a few, if any
    n = 0
    while heap.size[0] > 0 and heap.key[0] + gap <= watermark:
        s = heap.slot[0]
        if sess.end[s] + gap <= watermark:
            if n == closing.shape[0]:
                more = np.empty(2 * n, np.int64)
                more[:n] = closing
                closing = more
            closing[n] = s
            n += 1
            _heap_remove(heap, s)
        else:
            heap.key[0] = sess.end[s]
            _sift_down(heap, 0)
    rows = np.empty(n, np.int64)
    start = np.empty(n, np.int64)
    end = np.empty(n, np.int64)
    events = np.empty(n, np.int64)
    conv = np.empty(n, np.bool_)
    stage = np.empty(n, np.int16)
    chan = np.empty((n, sess.chan.shape[1]), np.int64)
    for k in range(n):
        s = closing[k]
        r = sess.row[s]
        rows[k], start[k], end[k], events[k] = r, sess.start[s], sess.end[s], sess.events[s]
        conv[k], stage[k], chan[k] = sess.conv[s], sess.stage[s], sess.chan[s]
        _unlink(s, r, cust, sess)
        sess.row[s] = NO_SLOT
        _give(sess, s)
    return rows, start, end, events, conv, stage, chan


@njit(cache=True, nogil=True)
def _close_windows(last_start, wm, slots, table, cells, moves, keys):  # pragma: no cover - compiled
    """Hand on and free the open windows that start at or before ``last_start``, and their cells.

    Counts each channel cell's distinct customers from the (row, cell) pairs noted while
    adding and keeps the other cells' pairs. Returns the closed windows' starts
    (ascending) and their entries: channel start/channel/counts/sums, one per cell;
    transition start/key/count, one per move cell with counted moves; population
    start/stage/change, two per move cell (its from and its to; summed by the aggregator).
    The driver (``ShardWindows.close_windows``) calls only when a window of the table
    starts at or before ``last_start``: change the two together.
    """
    width, funnel = wm.width, wm.funnel
    closing = np.empty(slots.free.shape[0] - slots.top[0], np.int64)  # the open ones at most
    k = 0
    for w in table:
        if w != NO_SLOT and slots.start[w] <= last_start:
            closing[k] = w
            k += 1
    closing = closing[:k][np.argsort(slots.start[closing[:k]])]
    starts = slots.start[closing]
    for j in range(k):
        _unhash(closing[j], width, slots.start, table)
        _give(slots, closing[j])
    n_cells = 0  # sizes first: a replay closes a few cells at a time out of large pools
    n_moves = 0
    for j in range(k):
        c = slots.first_cell[closing[j]]
        while c != NO_SLOT:
            n_cells += 1
            c = cells.next[c]
        mv = slots.first_move[closing[j]]
        while mv != NO_SLOT:
            n_moves += 1
            mv = moves.next[mv]
    ch_start = np.empty(n_cells, np.int64)
    ch_chan = np.empty(n_cells, np.int64)
    ch_counts = np.empty((n_cells, N_COUNTS), np.int64)
    ch_sums = np.empty((n_cells, N_SUMS), np.float64)
    ch_cell = np.empty(n_cells, np.int64)
    n_ch = 0
    for j in range(k):
        c = slots.first_cell[closing[j]]
        slots.first_cell[closing[j]] = NO_SLOT
        while c != NO_SLOT:
            cells.entry[c] = n_ch
            ch_cell[n_ch] = c
            ch_start[n_ch] = starts[j]
            ch_chan[n_ch] = cells.chan[c]
            ch_counts[n_ch] = cells.counts[c]
            ch_sums[n_ch] = cells.sums[c]
            n_ch += 1
            c = cells.next[c]
    # distinct customers of the closed cells: the (row, cell) pairs noted in them; when no
    # channel cell closes (only windows of moves do), the pairs are not read at all: they
    # grow with the events of the windows still open
    n_ck = keys.top[0] if n_ch else 0
    span = 1
    for i in range(n_ck):
        span = max(span, keys.row[i] + 1)
    picked = np.empty(n_ck, np.int64)
    m = 0
    kept = 0
    for i in range(n_ck):
        e = cells.entry[keys.cell[i]]
        if e >= 0:
            picked[m] = e * span + keys.row[i]
            m += 1
        else:
            keys.row[kept] = keys.row[i]
            keys.cell[kept] = keys.cell[i]
            kept += 1
    if n_ch:
        keys.top[0] = kept
    picked = np.sort(picked[:m])
    for i in range(m):
        if i == 0 or picked[i] != picked[i - 1]:
            ch_counts[picked[i] // span, CUSTOMERS] += 1
    # the closed cells go back to the pool, their entry marks cleared for the next close
    for e in range(n_ch):
        c = ch_cell[e]
        cells.entry[c] = -1
        _give(cells, c)
    tr_start = np.empty(n_moves, np.int64)
    tr_key = np.empty(n_moves, np.int64)
    tr_count = np.empty(n_moves, np.int64)
    pop_start = np.empty(2 * n_moves, np.int64)
    pop_stage = np.empty(2 * n_moves, np.int64)
    pop_change = np.empty(2 * n_moves, np.int64)
    n_tr = 0
    n_pop = 0
    for j in range(k):
        mv = slots.first_move[closing[j]]
        slots.first_move[closing[j]] = NO_SLOT
        while mv != NO_SLOT:
            if moves.counted[mv] > 0:
                tr_start[n_tr] = starts[j]
                tr_key[n_tr] = moves.key[mv]
                tr_count[n_tr] = moves.counted[mv]
                n_tr += 1
            pop_start[n_pop] = starts[j]
            pop_stage[n_pop] = moves.key[mv] // funnel
            pop_change[n_pop] = -moves.moved[mv]
            pop_start[n_pop + 1] = starts[j]
            pop_stage[n_pop + 1] = moves.key[mv] % funnel
            pop_change[n_pop + 1] = moves.moved[mv]
            n_pop += 2
            nxt = moves.next[mv]
            _give(moves, mv)
            mv = nxt
    return (starts, ch_start[:n_ch], ch_chan[:n_ch], ch_counts[:n_ch], ch_sums[:n_ch],
            tr_start[:n_tr], tr_key[:n_tr], tr_count[:n_tr],
            pop_start[:n_pop], pop_stage[:n_pop], pop_change[:n_pop])
