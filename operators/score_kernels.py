"""Numba kernels: whole batches against struct-of-arrays state, passed as named bundles.

The semantics are PRODUCT §4. Every sum is valued at the customer's reference time
``T`` (the largest accepted event time), which makes the final state independent of
arrival order: an event at or after ``T`` decays the sums to its time and is added
whole; an older event is added decayed to ``T``.

Kernels see only arrays and scalars, in the bundles declared here (``CustomerColumns``,
``IdOverflow``, ``IdSlots``, ``ScoreBatch``, ``Transitions``) and the map's ``JourneyArrays``.
"""

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from operators.base import END, NO_STAGE, NO_TIME
from operators.columns import F64, I64, column

I16 = npt.NDArray[np.int16]
I32 = npt.NDArray[np.int32]
U64 = npt.NDArray[np.uint64]
BOOL = npt.NDArray[np.bool_]


class CustomerColumns(NamedTuple):
    """A shard's customers, a row each; every sum valued at the row's ``T``."""

    T: I64 = column(np.int64)  # the largest accepted event time
    S: F64 = column(np.float64)  # engagement score
    E: F64 = column(np.float64, 0.0, "stages")  # evidence per stage
    Sn: F64 = column(np.float64)  # sentiment numerator
    Sd: F64 = column(np.float64)  # sentiment denominator
    counts: I64 = column(np.int64, 0, "required")  # lifetime counts of the types a stage requires
    n: I64 = column(np.int64)  # accepted events (the version)
    stage: I16 = column(np.int16, NO_STAGE)
    dd_hash: U64 = column(np.uint64, 0, "inline")  # the first remembered event ids (hashes) ...
    dd_ts: I64 = column(np.int64, NO_TIME, "inline")  # ... and their event times
    dd_more: I32 = column(np.int32, -1)  # the customer's row of ``IdOverflow`` (-1: none yet)


INLINE_IDS = 1
"""Event ids a customer's own row remembers; the rest of its ``dedup_slots`` are a row of ``IdOverflow``.

Most customers of a large population never hold two ids within ``dedup_window`` of
their ``T`` at once: their de-duplication costs one id, not ``dedup_slots`` of them.
"""


class IdOverflow(NamedTuple):
    """Remembered event ids past a customer's ``INLINE_IDS``: a row for each customer who needed one.

    A customer takes its row when every inline id is still within ``dedup_window`` of
    ``T`` and another must be remembered, and keeps it: an id stays remembered until
    its slot is taken, in whichever tier it sits. With the inline ids first, the slots
    are filled and reused exactly as in one row of ``dedup_slots``.
    """

    hash: U64 = column(np.uint64, 0, "more")
    ts: I64 = column(np.int64, NO_TIME, "more")
    free: I64 = column(np.int64)  # the stack of rows no customer holds (``operators.columns.Pool``)
    top: I64 = column(np.int64, per_row=False)


class IdSlots(NamedTuple):
    """The remembered event ids as the scoring loop hands them on: the columns, out of their bundles.

    Made once per batch from ``CustomerColumns`` and ``IdOverflow``, for the helpers that
    run per event (``_remembered``, ``_remember``): reading the two bundles in those
    calls, or inlining them at Numba's IR level (``inline="always"``), made the scoring
    kernel take 1.5 to 3 times as long, measured on 200,000 events.
    """

    hash: U64  # [row, inline slot]
    ts: I64
    more: I32  # [row]: its overflow row, or -1
    more_hash: U64  # [overflow row, slot]
    more_ts: I64
    free: I64  # the overflow rows no one holds, ``free[:top[0]]``
    top: I64


class ScoreBatch(NamedTuple):
    """A batch as the scoring kernel reads it, in arrival order."""

    rows: I64  # the customer's row
    ts: I64
    type_idx: npt.NDArray[np.int32]
    chan_idx: npt.NDArray[np.int32]
    sentiment: F64  # NaN: none
    eid_hash: U64
    mark: I64  # the watermark when the event was read


class Transitions(NamedTuple):
    """Stage changes, in the order they happened (the scoring kernel writes them)."""

    event: I64  # index into the batch
    from_stage: I16
    to_stage: I16
    version: I64
    ts: I64  # the event's time, or when the customer went dormant
    dormant: BOOL  # a move to dormant, found when the event arrived


@njit(cache=True, nogil=True, inline="always")
def _stage_of(c, r, m):  # pragma: no cover - compiled
    """Row ``r``'s stage under map ``m``: the last stage whose rule holds, else the first."""
    for k in range(m.stage_threshold.shape[0] - 1, 0, -1):
        if c.E[r, k] < m.stage_threshold[k]:
            continue
        ok = True
        for q in range(m.stage_requires.shape[1]):
            if c.counts[r, q] < m.stage_requires[k, q]:
                ok = False
                break
        if not ok:
            continue
        ms = m.stage_min_sentiment[k]
        if not np.isnan(ms) and not (c.Sd[r] > 0.0 and c.Sn[r] / c.Sd[r] >= ms):
            continue
        return k
    return 0


@njit(cache=True, nogil=True)
def _score_batch(c, more, b, m, dormant_after_ms, accepted, stage_after, out):  # pragma: no cover
    """Apply batch ``b`` to customers ``c`` (their ids past the inline ones in ``more``) under map ``m``.

    Event by event; ``more`` has a free row for every customer of the batch who may take one.
    Writes per event whether it was accepted and the stage after it, and every stage
    change to ``out`` (room for two per event); returns how many it wrote. Before an
    event is applied, its customer goes dormant if the watermark it was read under had
    passed ``T + dormant_after`` (PRODUCT §4), so dormancy does not depend on when a
    shard hears the watermark.
    """
    n_tr = 0
    n_stages = m.stage_threshold.shape[0]
    T, S, E, Sn, Sd, n, stage = c.T, c.S, c.E, c.Sn, c.Sd, c.n, c.stage
    ids = IdSlots(c.dd_hash, c.dd_ts, c.dd_more, more.hash, more.ts, more.free, more.top)
    for i in range(b.rows.shape[0]):
        r = b.rows[i]
        t = b.ts[i]
        h = b.eid_hash[i]
        if n[r] > 0 and stage[r] != n_stages and T[r] + dormant_after_ms < b.mark[i]:
            n_tr = _transition(out, n_tr, i, stage[r], n_stages, n[r], T[r] + dormant_after_ms, True)
            stage[r] = n_stages
        if n[r] > 0 and abs(T[r] - t) <= m.dedup_window_ms and _remembered(ids, r, h):
            accepted[i] = False
            continue
        accepted[i] = True
        tp = b.type_idx[i]
        w = m.type_weight[tp] * m.channel_mult[b.chan_idx[i]]
        s = b.sentiment[i]
        if n[r] == 0 or t >= T[r]:
            d = 2.0 ** (-(t - T[r]) / m.half_life_ms) if n[r] > 0 else 0.0
            S[r] = S[r] * d + w
            for k in range(n_stages):
                E[r, k] = E[r, k] * d + w * m.type_factor[tp, k]
            Sn[r] *= d
            Sd[r] *= d
            if not np.isnan(s):
                Sn[r] += s
                Sd[r] += 1.0
            T[r] = t
        else:
            d = 2.0 ** (-(T[r] - t) / m.half_life_ms)
            S[r] += w * d
            for k in range(n_stages):
                E[r, k] += w * m.type_factor[tp, k] * d
            if not np.isnan(s):
                Sn[r] += s * d
                Sd[r] += d
        q = m.type_req_slot[tp]
        if q >= 0:
            c.counts[r, q] += 1
        n[r] += 1
        _remember(ids, r, h, t, T[r] - m.dedup_window_ms)
        new = _stage_of(c, r, m)
        if new != stage[r]:
            n_tr = _transition(out, n_tr, i, stage[r], new, n[r], t, False)
            stage[r] = new
        stage_after[i] = new
    return n_tr


@njit(cache=True, nogil=True, inline="always")
def _transition(out, k, event, from_stage, to_stage, version, ts, dormant):  # pragma: no cover
    """Write stage change ``k``; returns ``k + 1``."""
    out.event[k] = event
    out.from_stage[k] = from_stage
    out.to_stage[k] = to_stage
    out.version[k] = version
    out.ts[k] = ts
    out.dormant[k] = dormant
    return k + 1


@njit(cache=True, nogil=True)
def _remembered(ids, r, h):  # pragma: no cover - compiled
    """Whether row ``r`` remembers event id hash ``h``, inline or in its overflow row."""
    hashes, times = ids.hash, ids.ts
    for j in range(hashes.shape[1]):
        if hashes[r, j] == h and times[r, j] != NO_TIME:
            return True
    q = ids.more[r]
    if q >= 0:
        hashes, times = ids.more_hash, ids.more_ts
        for j in range(hashes.shape[1]):
            if hashes[q, j] == h and times[q, j] != NO_TIME:
                return True
    return False


@njit(cache=True, nogil=True)
def _remember(ids, r, h, t, horizon):  # pragma: no cover - compiled
    """Remember event id hash ``h`` at ``t`` in row ``r``, unless no duplicate could still be caught.

    The slots are the inline ones, then the overflow row's (all empty while the customer
    has none). It takes the first slot of an id already older than ``horizon``
    (``T - dedup_window``), else the oldest.
    """
    if t < horizon:
        return
    hashes, times = ids.hash, ids.ts
    inline = times.shape[1]
    victim = 0
    oldest = times[r, 0]
    for j in range(inline):
        if times[r, j] < horizon:
            hashes[r, j] = h
            times[r, j] = t
            return
        if times[r, j] < oldest:
            victim = j
            oldest = times[r, j]
    more_hash, more_ts = ids.more_hash, ids.more_ts
    q = ids.more[r]
    if more_ts.shape[1] > 0 and q < 0:  # its overflow slots are all empty: the first one is taken
        top = ids.top[0] - 1
        q = ids.free[top]
        ids.top[0] = top
        ids.more[r] = q
        more_hash[q, 0] = h
        more_ts[q, 0] = t
        return
    if q >= 0:
        for j in range(more_ts.shape[1]):
            if more_ts[q, j] < horizon:
                more_hash[q, j] = h
                more_ts[q, j] = t
                return
            if more_ts[q, j] < oldest:
                victim = inline + j
                oldest = more_ts[q, j]
    if victim < inline:
        hashes[r, victim] = h
        times[r, victim] = t
    else:
        more_hash[q, victim - inline] = h
        more_ts[q, victim - inline] = t


@njit(cache=True, nogil=True)
def _dormant_rows(c, size, watermark, dormant_after, out_rows):  # pragma: no cover - compiled
    """Rows (of the first ``size``) whose ``T + dormant_after`` the watermark passed, not dormant yet.

    Returns their count and the smallest ``T + dormant_after`` of the others (the next
    time anyone can go dormant; END when no one can).
    """
    dormant = c.E.shape[1]  # the stage after the last
    count = 0
    earliest = END
    for r in range(size):
        if c.n[r] == 0 or c.stage[r] == dormant:
            continue
        due = c.T[r] + dormant_after
        if due < watermark:
            out_rows[count] = r
            count += 1
        elif due < earliest:
            earliest = due
    return count, earliest


@njit(cache=True, nogil=True)
def _restage(c, size, m, out_rows, out_before):  # pragma: no cover - compiled
    """Every customer's stage again under map ``m`` (of the first ``size`` rows); dormant ones stay.

    Sets the new stages; writes the rows that changed and their stages before to
    ``out_rows`` and ``out_before``, and returns how many.
    """
    dormant = c.E.shape[1]
    count = 0
    for r in range(size):
        before = c.stage[r]
        if c.n[r] == 0 or before == dormant:  # no event yet (no stage), or dormant
            continue
        now = _stage_of(c, r, m)
        if now != before:
            c.stage[r] = now
            out_rows[count] = r
            out_before[count] = before
            count += 1
    return count


@njit(cache=True, nogil=True, inline="always")
def _engagement(S, saturation):  # pragma: no cover - compiled
    """``100 * max(S, 0) / (max(S, 0) + saturation)`` (PRODUCT §4)."""
    pos = S if S > 0.0 else 0.0
    return 100.0 * pos / (pos + saturation)


@njit(cache=True, nogil=True)
def _stage_census(c, size, saturation, out):  # pragma: no cover - compiled
    """Customers, those with a sentiment, their sentiments' sum, engagements' sum, per stage.

    Added into ``out`` (4, stages + 1; dormant last). Without the interpreter lock, so a
    scrape that asks does not stop the workers.
    """
    for r in range(size):
        k = c.stage[r]
        if k < 0:
            continue
        out[0, k] += 1.0
        if c.Sd[r] > 0.0:
            out[1, k] += 1.0
            out[2, k] += c.Sn[r] / c.Sd[r]
        out[3, k] += _engagement(c.S[r], saturation)


@njit(cache=True, nogil=True)
def _score_values(c, rows, saturation, out):  # pragma: no cover - compiled
    """The values of a score record, per row: score, engagement, sentiment, evidence (PRODUCT §4).

    ``out[i]`` gets S, ``100 * max(S, 0) / (max(S, 0) + saturation)``, ``Sn / Sd`` (NaN
    when Sd is 0: no sentiment) and the evidence of every stage.
    """
    stages = c.E.shape[1]
    S, Sn, Sd, E = c.S, c.Sn, c.Sd, c.E
    for i in range(rows.shape[0]):
        r = rows[i]
        out[i, 0] = S[r]
        out[i, 1] = _engagement(S[r], saturation)
        out[i, 2] = Sn[r] / Sd[r] if Sd[r] > 0.0 else np.nan
        for k in range(stages):
            out[i, 3 + k] = E[r, k]
