"""Numba kernels for the event-time windows of PRODUCT §5; they see only arrays and scalars.

Sessions live in a pool of slots shared by the customers of a shard: each customer's
open sessions form a doubly linked list (``s_next``/``s_prev``) starting at
``first_sess[row]``; a closed session's slot goes back on the free stack, so memory
follows the number of *open* sessions, never the number ever seen. Open separate
sessions of one customer are always at least ``gap`` apart, which is why an event can
only ever bridge the sessions it is itself within ``gap`` of.

Open tumbling windows hold cells from two more pools, in a singly linked list per
window: one per channel that had events in it (counts and sums) and one per stage move
(from, to) that happened in it. A sparse history (an event or two per window and
shard) costs a cell or two per window, not a table of every channel and move.
"""

import numpy as np
from numba import njit

from config.arrays import ROLE_CLICK, ROLE_CONVERSION, ROLE_IMPRESSION, ROLE_OUTBOUND, ROLE_RESPONSE
from operators.base import NO_TIME

NO_SLOT = -1

# columns of a channel cell's counts (``c_counts[cell, column]``)
EVENTS, CUSTOMERS, IMPRESSIONS, CLICKS, CONVERSIONS, SENTIMENT_N, RESPONSES = range(7)
N_COUNTS = 7
# columns of its sums (``c_sums[cell, column]``)
SENTIMENT_SUM, RESPONSE_TIME_SUM = range(2)
N_SUMS = 2


@njit(cache=True, nogil=True)
def _unlink(s, r, first_sess, s_next, s_prev):  # pragma: no cover - compiled
    nxt, prv = s_next[s], s_prev[s]
    if prv == NO_SLOT:
        first_sess[r] = nxt
    else:
        s_next[prv] = nxt
    if nxt != NO_SLOT:
        s_prev[nxt] = prv


_SPREAD = np.uint64(0x9E3779B97F4A7C15)  # odd: a table's worth of consecutive windows fills it


@njit(cache=True, nogil=True, inline="always")
def _home(start, width, mask):  # pragma: no cover - compiled
    """The bucket a window hashes to.

    Its number times an odd constant: consecutive windows land far apart, so probe runs
    stay short (a delete walks the rest of its run).
    """
    return np.int64((np.uint64(start // width) * _SPREAD) & np.uint64(mask))


@njit(cache=True, nogil=True, inline="always")
def _slot_of(start, width, slot_start, h_slot, free_slots, n_free_slots):  # pragma: no cover
    """The slot of the window at ``start``, opened from the top of the free stack when new.

    Open windows are found through ``h_slot``, a hash table of slots (linear probing).
    Returns (slot, n_free_slots); the caller makes sure there is room.
    """
    mask = h_slot.shape[0] - 1
    i = _home(start, width, mask)
    while h_slot[i] != NO_SLOT:
        if slot_start[h_slot[i]] == start:
            return h_slot[i], n_free_slots
        i = (i + 1) & mask
    n_free_slots -= 1
    w = free_slots[n_free_slots]
    slot_start[w] = start
    h_slot[i] = w
    return w, n_free_slots


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
def _unhash(w, width, slot_start, h_slot):  # pragma: no cover - compiled
    """Take slot ``w`` out of the hash table, moving later entries of its run back into the hole."""
    mask = h_slot.shape[0] - 1
    i = _home(slot_start[w], width, mask)
    while h_slot[i] != w:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        e = h_slot[j]
        if e == NO_SLOT:
            break
        home = _home(slot_start[e], width, mask)
        # the entry at j stays unless its home lies cyclically outside (i, j]
        if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
            h_slot[i] = e
            i = j
    h_slot[i] = NO_SLOT


@njit(cache=True, nogil=True, inline="always")
def _cell_of(w, key, first, keys, nxt, free, n_free):  # pragma: no cover - compiled
    """The cell with ``key`` in window slot ``w``'s list, taken from the pool when it has none.

    Returns (cell, new, n_free); a new cell's counts are the caller's to clear.
    """
    c = first[w]
    while c != NO_SLOT and keys[c] != key:
        c = nxt[c]
    if c != NO_SLOT:
        return c, False, n_free
    n_free -= 1
    c = free[n_free]
    keys[c] = key
    nxt[c] = first[w]
    first[w] = c
    return c, True, n_free


@njit(cache=True, nogil=True, inline="always")
def _tally_move(  # pragma: no cover - compiled
    w, key, counted, first_move, m_key, m_next, m_moved, m_counted, m_free, n_m_free,
):
    """One stage move into its cell of window slot ``w``; returns n_m_free.

    A cell's key is ``from * funnel + to`` (funnel index: stage + 1). Every move changes
    the populations; ``counted`` ones are also transitions.
    """
    m, new, n_m_free = _cell_of(w, key, first_move, m_key, m_next, m_free, n_m_free)
    if new:
        m_moved[m] = 0
        m_counted[m] = 0
    m_moved[m] += 1
    if counted:
        m_counted[m] += 1
    return n_m_free


@njit(cache=True, nogil=True)
def _add_events(  # pragma: no cover - compiled
    # per-customer window state
    first_sess, last_out, responded, last_win,
    # the session pool
    s_row, s_start, s_end, s_events, s_conv, s_stage, s_chan, s_next, s_prev, free, n_free,
    # open windows: each slot's start, the hash table of slots, free slots, each slot's cells
    width, slot_start, h_slot, free_slots, n_free_slots, first_cell, first_move,
    # the channel cell pool and the move cell pool
    c_chan, c_next, c_counts, c_sums, c_free, n_c_free,
    m_key, m_next, m_moved, m_counted, m_free, n_m_free,
    # distinct customers: (row, cell) pairs appended here
    ck_row, ck_cell, n_ck,
    # the events, in arrival order, and the ``windowed`` ones among them
    rows, ts, type_idx, chan_idx, sentiment, stage_after, windowed, own_mark,
    # the stage moves they caused
    tr_event, tr_from, tr_to, tr_ts, tr_dormant, watermark, funnel,
    # the journey map
    type_roles, gap,
):
    """Add the windowed events to their sessions and channel cells, and every move to a window.

    A move caused by a windowed event is a transition in that event's window. A move to
    dormant found on arrival is a transition in the window of when it happened; a late
    event's move only changes populations, in the window of its ``own_mark``; both no
    earlier than the watermark's window. The caller has made room: free pool slots and
    window slots for every event and move. Returns (n_free, n_free_slots, n_c_free,
    n_m_free, n_ck).
    """
    channels = last_out.shape[1]
    slot = np.full(rows.shape[0], NO_SLOT, np.int64)
    for i in range(rows.shape[0]):
        if not windowed[i]:
            continue
        start = ts[i] - ts[i] % width
        w, n_free_slots = _slot_of(start, width, slot_start, h_slot, free_slots, n_free_slots)
        slot[i] = w
        r = rows[i]
        t = ts[i]
        ch = chan_idx[i]
        roles = type_roles[type_idx[i]]
        # channel window: the window's cell for this channel
        c, new, n_c_free = _cell_of(w, ch, first_cell, c_chan, c_next, c_free, n_c_free)
        if new:
            c_counts[c] = 0
            c_sums[c] = 0.0
        c_counts[c, EVENTS] += 1
        if roles & ROLE_IMPRESSION:
            c_counts[c, IMPRESSIONS] += 1
        if roles & ROLE_CLICK:
            c_counts[c, CLICKS] += 1
        if roles & ROLE_CONVERSION:
            c_counts[c, CONVERSIONS] += 1
        if not np.isnan(sentiment[i]):
            c_sums[c, SENTIMENT_SUM] += sentiment[i]
            c_counts[c, SENTIMENT_N] += 1
        if roles & ROLE_OUTBOUND and (last_out[r, ch] == NO_TIME or t >= last_out[r, ch]):
            last_out[r, ch] = t
            responded[r, ch] = False
        if roles & ROLE_RESPONSE and last_out[r, ch] != NO_TIME and t >= last_out[r, ch] \
                and not responded[r, ch]:
            responded[r, ch] = True
            c_counts[c, RESPONSES] += 1
            c_sums[c, RESPONSE_TIME_SUM] += t - last_out[r, ch]
        if last_win[r, ch] != start:
            last_win[r, ch] = start
            ck_row[n_ck] = r
            ck_cell[n_ck] = c
            n_ck += 1
        # session: extend the one the event falls in, bridge any others it also reaches
        target = NO_SLOT
        s = first_sess[r]
        while s != NO_SLOT:
            nxt = s_next[s]
            if s_start[s] - gap < t < s_end[s] + gap:
                if target == NO_SLOT:
                    target = s
                else:
                    s_start[target] = min(s_start[target], s_start[s])
                    s_end[target] = max(s_end[target], s_end[s])
                    s_events[target] += s_events[s]
                    s_conv[target] = s_conv[target] or s_conv[s]
                    for k in range(channels):
                        s_chan[target, k] += s_chan[s, k]
                    _unlink(s, r, first_sess, s_next, s_prev)
                    s_row[s] = NO_SLOT
                    free[n_free] = s
                    n_free += 1
            s = nxt
        if target == NO_SLOT:
            n_free -= 1
            target = free[n_free]
            s_row[target] = r
            s_start[target] = t
            s_end[target] = t
            s_events[target] = 0
            s_conv[target] = False
            for k in range(channels):
                s_chan[target, k] = 0
            s_prev[target] = NO_SLOT
            s_next[target] = first_sess[r]
            if first_sess[r] != NO_SLOT:
                s_prev[first_sess[r]] = target
            first_sess[r] = target
        s_start[target] = min(s_start[target], t)
        s_end[target] = max(s_end[target], t)
        s_events[target] += 1
        s_chan[target, ch] += 1
        if roles & ROLE_CONVERSION:
            s_conv[target] = True
        s_stage[target] = stage_after[i]
    for j in range(tr_event.shape[0]):
        e = tr_event[j]
        w = NO_SLOT if tr_dormant[j] else slot[e]
        counted = True
        if w == NO_SLOT:
            counted = tr_dormant[j]
            when = max(tr_ts[j] if tr_dormant[j] else own_mark[e], watermark)
            w, n_free_slots = _slot_of(when - when % width, width, slot_start, h_slot, free_slots,
                                       n_free_slots)
        n_m_free = _tally_move(w, (tr_from[j] + 1) * funnel + tr_to[j] + 1, counted, first_move,
                               m_key, m_next, m_moved, m_counted, m_free, n_m_free)
    return n_free, n_free_slots, n_c_free, n_m_free, n_ck


@njit(cache=True, nogil=True)
def _add_moves(  # pragma: no cover - compiled
    times, from_stage, to_stage, funnel,
    width, slot_start, h_slot, free_slots, n_free_slots, first_move,
    m_key, m_next, m_moved, m_counted, m_free, n_m_free,
):
    """Transitions (moves that count) in the windows of ``times``; room made by the caller.

    Returns (n_free_slots, n_m_free).
    """
    for i in range(times.shape[0]):
        w, n_free_slots = _slot_of(times[i] - times[i] % width, width, slot_start, h_slot,
                                   free_slots, n_free_slots)
        n_m_free = _tally_move(w, (from_stage[i] + 1) * funnel + to_stage[i] + 1, True,
                               first_move, m_key, m_next, m_moved, m_counted, m_free, n_m_free)
    return n_free_slots, n_m_free


@njit(cache=True, nogil=True)
def _add_by_cell(win, key, values, table):  # pragma: no cover - compiled
    """Add row ``i`` of ``values`` to ``table[win[i], key[i]]``."""
    for i in range(win.shape[0]):
        for c in range(values.shape[1]):
            table[win[i], key[i], c] += values[i, c]


@njit(cache=True, nogil=True)
def _close_sessions(  # pragma: no cover - compiled
    watermark, gap, first_sess, s_row, s_start, s_end, s_events, s_conv, s_stage, s_chan, s_next,
    s_prev, free, n_free,
):
    """Free every session no future event can join (``end + gap <= watermark``).

    Returns n_free and the closed sessions' columns: customer row, start, end, events,
    converted, stage, channel counts.
    """
    n = 0
    for s in range(s_row.shape[0]):
        if s_row[s] != NO_SLOT and s_end[s] + gap <= watermark:
            n += 1
    rows = np.empty(n, np.int64)
    start = np.empty(n, np.int64)
    end = np.empty(n, np.int64)
    events = np.empty(n, np.int64)
    conv = np.empty(n, np.bool_)
    stage = np.empty(n, np.int16)
    chan = np.empty((n, s_chan.shape[1]), np.int64)
    k = 0
    for s in range(s_row.shape[0]):
        r = s_row[s]
        if r != NO_SLOT and s_end[s] + gap <= watermark:
            rows[k], start[k], end[k], events[k] = r, s_start[s], s_end[s], s_events[s]
            conv[k], stage[k], chan[k] = s_conv[s], s_stage[s], s_chan[s]
            k += 1
            _unlink(s, r, first_sess, s_next, s_prev)
            s_row[s] = NO_SLOT
            free[n_free] = s
            n_free += 1
    return n_free, rows, start, end, events, conv, stage, chan


@njit(cache=True, nogil=True)
def _close_windows(  # pragma: no cover - compiled
    last_start, width, slot_start, h_slot, free_slots, n_free_slots, funnel,
    first_cell, c_chan, c_next, c_counts, c_sums, c_entry, c_free, n_c_free,
    first_move, m_key, m_next, m_moved, m_counted, m_free, n_m_free,
    ck_row, ck_cell, n_ck,
):
    """Hand on and free the open windows that start at or before ``last_start``, and their cells.

    Counts each channel cell's distinct customers from the (row, cell) pairs noted while
    adding and keeps the other cells' pairs. Returns (n_free_slots, n_c_free, n_m_free,
    n_ck), the closed windows' starts (ascending) and their entries: channel
    start/channel/counts/sums, one per cell; transition start/key/count, one per move
    cell with counted moves; population start/stage/change, two per move cell (its from
    and its to; summed by the aggregator).
    """
    closing = np.empty(free_slots.shape[0] - n_free_slots, np.int64)  # the open ones at most
    k = 0
    for w in h_slot:
        if w != NO_SLOT and slot_start[w] <= last_start:
            closing[k] = w
            k += 1
    closing = closing[:k][np.argsort(slot_start[closing[:k]])]
    starts = slot_start[closing]
    for j in range(k):
        _unhash(closing[j], width, slot_start, h_slot)
        free_slots[n_free_slots] = closing[j]
        n_free_slots += 1
    n_cells = 0  # sizes first: a replay closes a few cells at a time out of large pools
    n_moves = 0
    for j in range(k):
        c = first_cell[closing[j]]
        while c != NO_SLOT:
            n_cells += 1
            c = c_next[c]
        mv = first_move[closing[j]]
        while mv != NO_SLOT:
            n_moves += 1
            mv = m_next[mv]
    ch_start = np.empty(n_cells, np.int64)
    ch_chan = np.empty(n_cells, np.int64)
    ch_counts = np.empty((n_cells, N_COUNTS), np.int64)
    ch_sums = np.empty((n_cells, N_SUMS), np.float64)
    ch_cell = np.empty(n_cells, np.int64)
    n_ch = 0
    for j in range(k):
        c = first_cell[closing[j]]
        first_cell[closing[j]] = NO_SLOT
        while c != NO_SLOT:
            c_entry[c] = n_ch
            ch_cell[n_ch] = c
            ch_start[n_ch] = starts[j]
            ch_chan[n_ch] = c_chan[c]
            ch_counts[n_ch] = c_counts[c]
            ch_sums[n_ch] = c_sums[c]
            n_ch += 1
            c = c_next[c]
    span = 1
    for i in range(n_ck):
        span = max(span, ck_row[i] + 1)
    picked = np.empty(n_ck, np.int64)
    m = 0
    kept = 0
    for i in range(n_ck):
        e = c_entry[ck_cell[i]]
        if e >= 0:
            picked[m] = e * span + ck_row[i]
            m += 1
        else:
            ck_row[kept] = ck_row[i]
            ck_cell[kept] = ck_cell[i]
            kept += 1
    picked = np.sort(picked[:m])
    for i in range(m):
        if i == 0 or picked[i] != picked[i - 1]:
            ch_counts[picked[i] // span, CUSTOMERS] += 1
    # the closed cells go back to the pool, their entry marks cleared for the next close
    for e in range(n_ch):
        c = ch_cell[e]
        c_entry[c] = -1
        c_free[n_c_free] = c
        n_c_free += 1
    tr_start = np.empty(n_moves, np.int64)
    tr_key = np.empty(n_moves, np.int64)
    tr_count = np.empty(n_moves, np.int64)
    pop_start = np.empty(2 * n_moves, np.int64)
    pop_stage = np.empty(2 * n_moves, np.int64)
    pop_change = np.empty(2 * n_moves, np.int64)
    n_tr = 0
    n_pop = 0
    for j in range(k):
        mv = first_move[closing[j]]
        first_move[closing[j]] = NO_SLOT
        while mv != NO_SLOT:
            if m_counted[mv] > 0:
                tr_start[n_tr] = starts[j]
                tr_key[n_tr] = m_key[mv]
                tr_count[n_tr] = m_counted[mv]
                n_tr += 1
            pop_start[n_pop] = starts[j]
            pop_stage[n_pop] = m_key[mv] // funnel
            pop_change[n_pop] = -m_moved[mv]
            pop_start[n_pop + 1] = starts[j]
            pop_stage[n_pop + 1] = m_key[mv] % funnel
            pop_change[n_pop + 1] = m_moved[mv]
            n_pop += 2
            m_free[n_m_free] = mv
            n_m_free += 1
            mv = m_next[mv]
    return (n_free_slots, n_c_free, n_m_free, kept, starts, ch_start[:n_ch],
            ch_chan[:n_ch], ch_counts[:n_ch],
            ch_sums[:n_ch], tr_start[:n_tr], tr_key[:n_tr], tr_count[:n_tr],
            pop_start[:n_pop], pop_stage[:n_pop], pop_change[:n_pop])
