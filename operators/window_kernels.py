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
    # per-window, per-channel sums (slot = open window)
    w_events, w_impr, w_clicks, w_conv, w_sent_sum, w_sent_n, w_resp, w_rt_sum,
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
        w_events[w, ch] += 1
        if roles & ROLE_IMPRESSION:
            w_impr[w, ch] += 1
        if roles & ROLE_CLICK:
            w_clicks[w, ch] += 1
        if roles & ROLE_CONVERSION:
            w_conv[w, ch] += 1
        if not np.isnan(sentiment[i]):
            w_sent_sum[w, ch] += sentiment[i]
            w_sent_n[w, ch] += 1
        if roles & ROLE_OUTBOUND and (last_out[r, ch] == EMPTY_TS or t >= last_out[r, ch]):
            last_out[r, ch] = t
            responded[r, ch] = False
        if roles & ROLE_RESPONSE and last_out[r, ch] != EMPTY_TS and t >= last_out[r, ch] \
                and not responded[r, ch]:
            responded[r, ch] = True
            w_resp[w, ch] += 1
            w_rt_sum[w, ch] += t - last_out[r, ch]
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
