"""Numba kernels: whole batches against struct-of-arrays state; they see only arrays and scalars.

The semantics are PRODUCT §4. Every sum is valued at the customer's reference time
``T`` (the largest accepted event time), which makes the final state independent of
arrival order: an event at or after ``T`` decays the sums to its time and is added
whole; an older event is added decayed to ``T``.
"""

import numpy as np
from numba import njit

from operators.base import NO_TIME

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True, nogil=True)
def _fnv1a64(buf, ends):  # pragma: no cover - compiled
    """FNV-1a of each slice ``buf[ends[i-1]:ends[i]]``: stable across processes and restarts."""
    out = np.empty(ends.shape[0], dtype=np.uint64)
    start = 0
    for i in range(ends.shape[0]):
        h = _FNV_OFFSET
        for j in range(start, ends[i]):
            h ^= np.uint64(buf[j])
            h *= _FNV_PRIME
        out[i] = h
        start = ends[i]
    return out


@njit(cache=True, nogil=True, inline="always")
def _stage_of(r, E, Sn, Sd, counts, threshold, min_sentiment, requires):  # pragma: no cover
    """Scan the stages from last to second; the first whose rule holds, else the first."""
    for k in range(threshold.shape[0] - 1, 0, -1):
        if E[r, k] < threshold[k]:
            continue
        ok = True
        for q in range(requires.shape[1]):
            if counts[r, q] < requires[k, q]:
                ok = False
                break
        if not ok:
            continue
        ms = min_sentiment[k]
        if not np.isnan(ms) and not (Sd[r] > 0.0 and Sn[r] / Sd[r] >= ms):
            continue
        return k
    return 0


@njit(cache=True, nogil=True)
def _score_batch(  # pragma: no cover - compiled
    # per-customer state, one row per customer of the shard
    T, S, E, Sn, Sd, counts, n, stage, dd_hash, dd_ts,
    # the batch, in arrival order; mark is the watermark when each event was read
    rows, ts, type_idx, chan_idx, sentiment, eid_hash, mark,
    # the journey map
    type_weight, type_factor, type_req_slot, channel_mult,
    threshold, min_sentiment, requires, half_life_ms, dedup_window_ms, dormant_after_ms,
    # outputs: accepted[i] and the stage after it per event; transitions as (event index, from, to,
    # version, time); tr_dormant marks a move to dormant found on the event's arrival
    accepted, stage_after, tr_event, tr_from, tr_to, tr_version, tr_ts, tr_dormant,
):
    """Apply a batch event by event; return the number of transitions written.

    Before an event is applied, its customer goes dormant if the watermark it was read
    under had passed ``T + dormant_after`` (PRODUCT §4), so dormancy does not depend on
    when a shard hears the watermark.
    """
    n_tr = 0
    n_stages = threshold.shape[0]
    slots = dd_hash.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        t = ts[i]
        h = eid_hash[i]
        if n[r] > 0 and stage[r] != n_stages and T[r] + dormant_after_ms < mark[i]:
            tr_event[n_tr] = i
            tr_from[n_tr] = stage[r]
            tr_to[n_tr] = n_stages
            tr_version[n_tr] = n[r]
            tr_ts[n_tr] = T[r] + dormant_after_ms
            tr_dormant[n_tr] = True
            n_tr += 1
            stage[r] = n_stages
        if n[r] > 0 and abs(T[r] - t) <= dedup_window_ms:
            dup = False
            for j in range(slots):
                if dd_hash[r, j] == h and dd_ts[r, j] != NO_TIME:
                    dup = True
                    break
            if dup:
                accepted[i] = False
                continue
        accepted[i] = True
        tp = type_idx[i]
        w = type_weight[tp] * channel_mult[chan_idx[i]]
        s = sentiment[i]
        if n[r] == 0 or t >= T[r]:
            d = 2.0 ** (-(t - T[r]) / half_life_ms) if n[r] > 0 else 0.0
            S[r] = S[r] * d + w
            for k in range(n_stages):
                E[r, k] = E[r, k] * d + w * type_factor[tp, k]
            Sn[r] *= d
            Sd[r] *= d
            if not np.isnan(s):
                Sn[r] += s
                Sd[r] += 1.0
            T[r] = t
        else:
            d = 2.0 ** (-(T[r] - t) / half_life_ms)
            S[r] += w * d
            for k in range(n_stages):
                E[r, k] += w * type_factor[tp, k] * d
            if not np.isnan(s):
                Sn[r] += s * d
                Sd[r] += d
        q = type_req_slot[tp]
        if q >= 0:
            counts[r, q] += 1
        n[r] += 1
        # Remember the id unless it is already too old for any duplicate to be caught.
        horizon = T[r] - dedup_window_ms
        if t >= horizon:
            victim = 0
            for j in range(slots):
                if dd_ts[r, j] < horizon:
                    victim = j
                    break
                if dd_ts[r, j] < dd_ts[r, victim]:
                    victim = j
            dd_hash[r, victim] = h
            dd_ts[r, victim] = t
        new = _stage_of(r, E, Sn, Sd, counts, threshold, min_sentiment, requires)
        if new != stage[r]:
            tr_event[n_tr] = i
            tr_from[n_tr] = stage[r]
            tr_to[n_tr] = new
            tr_version[n_tr] = n[r]
            tr_ts[n_tr] = t
            tr_dormant[n_tr] = False
            n_tr += 1
            stage[r] = new
        stage_after[i] = new
    return n_tr


@njit(cache=True, nogil=True)
def _dormant_rows(watermark, dormant_after, T, n, stage, dormant, size, out_rows):  # pragma: no cover
    """Rows whose ``T + dormant_after`` the watermark passed and that are not dormant yet.

    Returns their count and the smallest ``T + dormant_after`` of the others (the next
    time anyone can go dormant; the largest int64 when no one can).
    """
    count = 0
    earliest = np.iinfo(np.int64).max
    for r in range(size):
        if n[r] == 0 or stage[r] == dormant:
            continue
        due = T[r] + dormant_after
        if due < watermark:
            out_rows[count] = r
            count += 1
        elif due < earliest:
            earliest = due
    return count, earliest
