"""Numba kernels for the event-time windows of PRODUCT §5; they see only arrays and scalars.

Sessions live in a pool of slots shared by the customers of a shard: each customer's
open sessions form a doubly linked list (``s_next``/``s_prev``) starting at
``first_sess[row]``; a closed session's slot goes back on the free stack, so memory
follows the number of *open* sessions, never the number ever seen. Open separate
sessions of one customer are always at least ``gap`` apart, which is why an event can
only ever bridge the sessions it is itself within ``gap`` of.
"""

import numpy as np
from numba import njit

from config.arrays import ROLE_CLICK, ROLE_CONVERSION, ROLE_IMPRESSION, ROLE_OUTBOUND, ROLE_RESPONSE
from operators.kernels import EMPTY_TS

NO_SLOT = -1

# columns of a window's per-channel counts (``w_counts[slot, channel, column]``)
EVENTS, CUSTOMERS, IMPRESSIONS, CLICKS, CONVERSIONS, SENTIMENT_N, RESPONSES = range(7)
N_COUNTS = 7
# columns of its per-channel sums (``w_sums[slot, channel, column]``)
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


@njit(cache=True, nogil=True)
def _window_batch(  # pragma: no cover - compiled
    # per-customer window state
    first_sess, last_out, responded, last_win,
    # the session pool
    s_row, s_start, s_end, s_events, s_conv, s_stage, s_chan, s_next, s_prev, free, n_free,
    # per-window, per-channel counts and sums (slot = open window)
    w_counts, w_sums,
    # distinct customers: (row * channels + channel, slot) pairs appended here
    ck_key, ck_slot, n_ck,
    # the events, in arrival order; slot is NO_SLOT for events that enter no window
    rows, ts, type_idx, chan_idx, sentiment, stage_after, slot, window_start,
    # the journey map
    type_roles, gap,
):
    """Add every windowed event to its session and channel window; return (n_free, n_ck)."""
    channels = last_out.shape[1]
    for i in range(rows.shape[0]):
        w = slot[i]
        if w == NO_SLOT:
            continue
        r = rows[i]
        t = ts[i]
        ch = chan_idx[i]
        roles = type_roles[type_idx[i]]
        # channel window
        w_counts[w, ch, EVENTS] += 1
        if roles & ROLE_IMPRESSION:
            w_counts[w, ch, IMPRESSIONS] += 1
        if roles & ROLE_CLICK:
            w_counts[w, ch, CLICKS] += 1
        if roles & ROLE_CONVERSION:
            w_counts[w, ch, CONVERSIONS] += 1
        if not np.isnan(sentiment[i]):
            w_sums[w, ch, SENTIMENT_SUM] += sentiment[i]
            w_counts[w, ch, SENTIMENT_N] += 1
        if roles & ROLE_OUTBOUND and (last_out[r, ch] == EMPTY_TS or t >= last_out[r, ch]):
            last_out[r, ch] = t
            responded[r, ch] = False
        if roles & ROLE_RESPONSE and last_out[r, ch] != EMPTY_TS and t >= last_out[r, ch] \
                and not responded[r, ch]:
            responded[r, ch] = True
            w_counts[w, ch, RESPONSES] += 1
            w_sums[w, ch, RESPONSE_TIME_SUM] += t - last_out[r, ch]
        if last_win[r, ch] != window_start[i]:
            last_win[r, ch] = window_start[i]
            ck_key[n_ck] = r * channels + ch
            ck_slot[n_ck] = w
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
                    for c in range(channels):
                        s_chan[target, c] += s_chan[s, c]
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
            for c in range(channels):
                s_chan[target, c] = 0
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
    return n_free, n_ck


@njit(cache=True, nogil=True)
def _window_slots(  # pragma: no cover - compiled
    times, width, open_starts, open_slots, n_open, free_slots, n_free, slots, first,
):
    """Write the table slot of each time's window into ``slots``, from index ``first`` on.

    Open windows are ``open_starts[:n_open]`` (ascending) with their slots; a window not
    open yet takes the top of the free stack ``free_slots[:n_free]``. Returns (n_open,
    n_free, done): ``done`` < ``times.size`` when the free slots ran out there (grow the
    tables and call again from ``done``).
    """
    last_start = -1
    last_slot = NO_SLOT
    for i in range(first, times.shape[0]):
        start = times[i] - times[i] % width
        if start == last_start:
            slots[i] = last_slot
            continue
        at = np.searchsorted(open_starts[:n_open], start)
        if at == n_open or open_starts[at] != start:
            if n_free == 0:
                return n_open, n_free, i
            n_free -= 1
            for j in range(n_open, at, -1):
                open_starts[j] = open_starts[j - 1]
                open_slots[j] = open_slots[j - 1]
            open_starts[at] = start
            open_slots[at] = free_slots[n_free]
            n_open += 1
        last_start = start
        last_slot = open_slots[at]
        slots[i] = last_slot
    return n_open, n_free, times.shape[0]


@njit(cache=True, nogil=True)
def _count_moves(slot, from_stage, to_stage, counted, w_trans, w_pop):  # pragma: no cover
    """Stage moves in their window slots: each moves the population; ``counted`` ones are transitions."""
    for i in range(slot.shape[0]):
        s, f, t = slot[i], from_stage[i] + 1, to_stage[i] + 1
        if counted[i]:
            w_trans[s, f, t] += 1
        w_pop[s, f] -= 1
        w_pop[s, t] += 1


@njit(cache=True, nogil=True)
def _close_sessions(  # pragma: no cover - compiled
    watermark, gap, first_sess, s_row, s_end, s_next, s_prev, free, n_free, closed, closed_rows,
):
    """Free every session no future event can join (``end + gap <= watermark``).

    Writes the closed slots and their customers' rows to ``closed``/``closed_rows`` (a
    slot's data stays readable until it is reused) and returns (count, n_free).
    """
    n_closed = 0
    for s in range(s_row.shape[0]):
        r = s_row[s]
        if r != NO_SLOT and s_end[s] + gap <= watermark:
            _unlink(s, r, first_sess, s_next, s_prev)
            s_row[s] = NO_SLOT
            free[n_free] = s
            n_free += 1
            closed[n_closed] = s
            closed_rows[n_closed] = r
            n_closed += 1
    return n_closed, n_free


@njit(cache=True, nogil=True)
def _close_windows(  # pragma: no cover - compiled
    closing, starts, w_counts, w_sums, w_trans, w_pop, ck_key, ck_slot, n_ck,
):
    """Hand on and zero the ``closing`` window slots (``starts`` their window starts).

    Counts each window's distinct customers per channel from the (customer, channel)
    keys noted while adding, keeps the other windows' keys, and returns what is not
    zero as entries: (n_ck, channel start/channel/counts/sums, transition
    start/key/count, population start/stage/change), a transition's key being
    ``from * funnel + to`` (funnel indices: stage + 1).
    """
    k = closing.shape[0]
    channels = w_counts.shape[1]
    funnel = w_pop.shape[1]
    pos = np.full(w_counts.shape[0], -1, np.int64)
    for j in range(k):
        pos[closing[j]] = j
    span = 1
    for i in range(n_ck):
        span = max(span, ck_key[i] + 1)
    picked = np.empty(n_ck, np.int64)
    m = 0
    kept = 0
    for i in range(n_ck):
        j = pos[ck_slot[i]]
        if j >= 0:
            picked[m] = j * span + ck_key[i]
            m += 1
        else:
            ck_key[kept] = ck_key[i]
            ck_slot[kept] = ck_slot[i]
            kept += 1
    picked = np.sort(picked[:m])
    for i in range(m):
        if i == 0 or picked[i] != picked[i - 1]:
            j = picked[i] // span
            w_counts[closing[j], (picked[i] % span) % channels, CUSTOMERS] += 1
    # room for every cell; the entries written are the first n_ch / n_tr / n_pop
    ch_start = np.empty(k * channels, np.int64)
    ch_chan = np.empty(k * channels, np.int64)
    ch_counts = np.empty((k * channels, N_COUNTS), np.int64)
    ch_sums = np.empty((k * channels, N_SUMS), np.float64)
    tr_start = np.empty(k * funnel * funnel, np.int64)
    tr_key = np.empty(k * funnel * funnel, np.int64)
    tr_count = np.empty(k * funnel * funnel, np.int64)
    pop_start = np.empty(k * funnel, np.int64)
    pop_stage = np.empty(k * funnel, np.int64)
    pop_change = np.empty(k * funnel, np.int64)
    n_ch = 0
    n_tr = 0
    n_pop = 0
    for j in range(k):
        s = closing[j]
        for c in range(channels):
            if w_counts[s, c, EVENTS] > 0:
                ch_start[n_ch] = starts[j]
                ch_chan[n_ch] = c
                ch_counts[n_ch] = w_counts[s, c]
                ch_sums[n_ch] = w_sums[s, c]
                n_ch += 1
        for a in range(funnel):
            if w_pop[s, a] != 0:
                pop_start[n_pop] = starts[j]
                pop_stage[n_pop] = a
                pop_change[n_pop] = w_pop[s, a]
                n_pop += 1
            for b in range(funnel):
                if w_trans[s, a, b] != 0:
                    tr_start[n_tr] = starts[j]
                    tr_key[n_tr] = a * funnel + b
                    tr_count[n_tr] = w_trans[s, a, b]
                    n_tr += 1
        w_counts[s] = 0
        w_sums[s] = 0.0
        w_trans[s] = 0
        w_pop[s] = 0
    return (kept, ch_start[:n_ch], ch_chan[:n_ch], ch_counts[:n_ch], ch_sums[:n_ch],
            tr_start[:n_tr], tr_key[:n_tr], tr_count[:n_tr],
            pop_start[:n_pop], pop_stage[:n_pop], pop_change[:n_pop])
