"""Numba kernels that write many JSON records into one byte buffer; they see only arrays and scalars.

Window records come by the hundred thousand in a replay of sparse history, and building
a dict per record for ``orjson`` cost more than computing the windows. These kernels
write the same bytes ``orjson.dumps`` writes for the same dict (keys in order, no
spaces), record after record, and note where each ends. Everything textual arrives
pre-rendered: keys and punctuation as literal pieces; names, customer ids and floats as
pieces of a blob (one separator byte apart) with offsets, the floats in orjson's own
text (one call per batch), so escaping and float formatting stay orjson's.
"""

import numpy as np
from numba import njit

_MINUS, _ZERO, _COMMA, _COLON, _CLOSE = 45, 48, 44, 58, 125
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)


@njit(cache=True, nogil=True, inline="always")
def _put(buf, pos, src):  # pragma: no cover - compiled
    for k in range(src.shape[0]):  # a loop: pieces are short, and a slice copy costs more
        buf[pos + k] = src[k]
    return pos + src.shape[0]


@njit(cache=True, nogil=True, inline="always")
def _put_text(buf, pos, blob, off, i):  # pragma: no cover - compiled
    """Piece ``i`` of a blob of pieces one separator byte apart, piece ``i`` starting at ``off[i]``."""
    a, b = off[i], off[i + 1] - 1
    for k in range(b - a):
        buf[pos + k] = blob[a + k]
    return pos + b - a


@njit(cache=True, nogil=True)
def _put_int(buf, pos, v):  # pragma: no cover - compiled
    if v < 0:
        buf[pos] = _MINUS
        pos += 1
        u = np.uint64(-(v + 1)) + np.uint64(1)
    else:
        u = np.uint64(v)
    n = 1
    while n < 20 and u >= _POW10[n]:  # the number of digits, by comparisons
        n += 1
    end = pos + n
    while True:
        end -= 1
        buf[end] = _ZERO + np.uint8(u % np.uint64(10))
        u //= np.uint64(10)
        if u == 0:
            break
    return pos + n


@njit(cache=True, nogil=True)
def _sessions(  # pragma: no cover - compiled
    buf, ends, lit, ids, id_off, rows, start, stop, events, converted, stage, chans, chan_names,
    chan_off, stage_names, stage_off,
):
    """Session records of PRODUCT §5; ``ids`` holds the customers' JSON strings by row.

    ``lit``: {"customer_id": / ,"session_start": / ,"session_end": / ,"duration_ms": /
    ,"events": / ,"channels":{ / },"converted":true / },"converted":false / ,"stage_end":
    ``stage_names`` piece 0 is null (no stage yet).
    """
    pos = 0
    for i in range(start.shape[0]):
        pos = _put(buf, pos, lit[0])
        pos = _put_text(buf, pos, ids, id_off, rows[i])
        pos = _put(buf, pos, lit[1])
        pos = _put_int(buf, pos, start[i])
        pos = _put(buf, pos, lit[2])
        pos = _put_int(buf, pos, stop[i])
        pos = _put(buf, pos, lit[3])
        pos = _put_int(buf, pos, stop[i] - start[i])
        pos = _put(buf, pos, lit[4])
        pos = _put_int(buf, pos, events[i])
        pos = _put(buf, pos, lit[5])
        first = True
        for c in range(chans.shape[1]):
            if chans[i, c] != 0:
                if not first:
                    buf[pos] = _COMMA
                    pos += 1
                first = False
                pos = _put_text(buf, pos, chan_names, chan_off, c)
                buf[pos] = _COLON
                pos = _put_int(buf, pos + 1, chans[i, c])
        pos = _put(buf, pos, lit[6] if converted[i] else lit[7])
        pos = _put(buf, pos, lit[8])
        pos = _put_text(buf, pos, stage_names, stage_off, stage[i])
        buf[pos] = _CLOSE
        pos += 1
        ends[i] = pos
    return pos


@njit(cache=True, nogil=True)
def _channels(  # pragma: no cover - compiled
    buf, ends, lit, start, width, channel, counts, floats, float_off, chan_names, chan_off,
):
    """Channel records of PRODUCT §5.

    ``counts`` columns: events, customers, impressions, clicks, conversions, responses;
    ``floats`` holds three texts per record (ctr, sentiment mean, response time mean).
    ``lit``: {"kind":"channel","window_start": / ,"window_end": / ,"channel": / ,"events": /
    ,"customers": / ,"impressions": / ,"clicks": / ,"ctr": / ,"conversions": /
    ,"sentiment_mean": / ,"responses": / ,"response_time_mean_ms":
    """
    pos = 0
    for i in range(start.shape[0]):
        pos = _put(buf, pos, lit[0])
        pos = _put_int(buf, pos, start[i])
        pos = _put(buf, pos, lit[1])
        pos = _put_int(buf, pos, start[i] + width)
        pos = _put(buf, pos, lit[2])
        pos = _put_text(buf, pos, chan_names, chan_off, channel[i])
        for j in range(4):
            pos = _put(buf, pos, lit[3 + j])
            pos = _put_int(buf, pos, counts[i, j])
        pos = _put(buf, pos, lit[7])
        pos = _put_text(buf, pos, floats, float_off, 3 * i)
        pos = _put(buf, pos, lit[8])
        pos = _put_int(buf, pos, counts[i, 4])
        pos = _put(buf, pos, lit[9])
        pos = _put_text(buf, pos, floats, float_off, 3 * i + 1)
        pos = _put(buf, pos, lit[10])
        pos = _put_int(buf, pos, counts[i, 5])
        pos = _put(buf, pos, lit[11])
        pos = _put_text(buf, pos, floats, float_off, 3 * i + 2)
        buf[pos] = _CLOSE
        pos += 1
        ends[i] = pos
    return pos


@njit(cache=True, nogil=True)
def _funnels(  # pragma: no cover - compiled
    buf, ends, lit, starts, width, tr_first, tr_key, tr_value, move_names, move_off, populations,
    stage_names, stage_off,
):
    """Funnel records of PRODUCT §5.

    Window ``j``'s transitions are entries ``tr_first[j]:tr_first[j + 1]``;
    ``populations[j, s]`` is stage ``s``'s (``stage_names`` piece ``s``).

    ``lit``: {"kind":"funnel","window_start": / ,"window_end": / ,"transitions":{ /
    },"populations":{ / }}
    """
    pos = 0
    for j in range(starts.shape[0]):
        pos = _put(buf, pos, lit[0])
        pos = _put_int(buf, pos, starts[j])
        pos = _put(buf, pos, lit[1])
        pos = _put_int(buf, pos, starts[j] + width)
        pos = _put(buf, pos, lit[2])
        for e in range(tr_first[j], tr_first[j + 1]):
            if e > tr_first[j]:
                buf[pos] = _COMMA
                pos += 1
            pos = _put_text(buf, pos, move_names, move_off, tr_key[e])
            buf[pos] = _COLON
            pos = _put_int(buf, pos + 1, tr_value[e])
        pos = _put(buf, pos, lit[3])
        for s in range(populations.shape[1]):
            if s:
                buf[pos] = _COMMA
                pos += 1
            pos = _put_text(buf, pos, stage_names, stage_off, s)
            buf[pos] = _COLON
            pos = _put_int(buf, pos + 1, populations[j, s])
        pos = _put(buf, pos, lit[4])
        ends[j] = pos
    return pos
