"""A Numba kernel that writes many JSON records into one byte buffer, from a declared layout.

Window records come by the hundred thousand in a replay of sparse history, and building
a dict per record for ``orjson`` cost more than computing the windows. ``_render``
writes the same bytes ``orjson.dumps`` writes for the same dict (keys in order, no
spaces), record after record, and notes where each ends. What it writes is a
``RecordLayout``: per field its format and where its value is, made once from a
record kind's declaration (``records``). Everything textual arrives pre-rendered, as
pieces of text tables (a blob of pieces one separator byte apart, with offsets): the
literal ``{"name":`` pieces, names, customer ids, and floats in orjson's own text (one
call per batch), so escaping and float formatting stay orjson's.
"""

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from operators.columns import I64

INT, PIECE, OBJECT = range(3)
"""Field formats: an integer; a piece of a text table; an object of entries (``{key: value}``)."""

_MINUS, _ZERO, _COMMA, _COLON = 45, 48, 44, 58
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)


class RecordLayout(NamedTuple):
    """How a record kind is written, per field (text table 0 holds the literal pieces)."""

    format: I64  # INT, PIECE or OBJECT
    column: I64  # INT, PIECE: column of ``RecordValues.ints`` (the integer, the piece); OBJECT: entry set
    table: I64  # PIECE: the piece's text table; OBJECT: the keys' text table
    value_table: I64  # OBJECT: the values' text table, -1 when values are integers


class RecordValues(NamedTuple):
    """What one call writes: per record its integers and piece numbers, text tables, entries."""

    ints: I64  # [record, column]
    blobs: tuple[npt.NDArray[np.uint8], ...]  # text tables (read-only)
    offsets: tuple[I64, ...]  # piece ``p`` of table ``t``: blobs[t][offsets[t][p]:offsets[t][p + 1] - 1]
    first: tuple[I64, ...]  # per entry set: record ``i``'s entries are first[i]:first[i + 1]
    keys: tuple[I64, ...]  # the entry's key (a piece of the field's key table)
    values: tuple[I64, ...]  # its value: an integer, or a piece of the field's value table


@njit(cache=True, nogil=True, inline="always")
def _put_text(buf, pos, blob, off, i):  # pragma: no cover - compiled
    """Piece ``i`` of a text table."""
    a, b = off[i], off[i + 1] - 1
    for k in range(b - a):  # a loop: pieces are short, and a slice copy costs more
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
def _render(buf, ends, layout, v):  # pragma: no cover - compiled
    """Every record of ``v`` as ``layout`` says, one after another; ``ends[i]`` is where record i ends.

    Returns the bytes written.
    """
    lit, lit_off = v.blobs[0], v.offsets[0]
    fields = layout.format.shape[0]
    pos = 0
    for i in range(v.ints.shape[0]):
        for f in range(fields):
            pos = _put_text(buf, pos, lit, lit_off, f)
            fmt, col = layout.format[f], layout.column[f]
            if fmt == INT:
                pos = _put_int(buf, pos, v.ints[i, col])
            elif fmt == PIECE:
                t = layout.table[f]
                pos = _put_text(buf, pos, v.blobs[t], v.offsets[t], v.ints[i, col])
            else:
                first, keys, values = v.first[col], v.keys[col], v.values[col]
                kt, vt = layout.table[f], layout.value_table[f]
                for e in range(first[i], first[i + 1]):
                    if e > first[i]:
                        buf[pos] = _COMMA
                        pos += 1
                    pos = _put_text(buf, pos, v.blobs[kt], v.offsets[kt], keys[e])
                    buf[pos] = _COLON
                    pos += 1
                    if vt < 0:
                        pos = _put_int(buf, pos, values[e])
                    else:
                        pos = _put_text(buf, pos, v.blobs[vt], v.offsets[vt], values[e])
        pos = _put_text(buf, pos, lit, lit_off, fields)
        ends[i] = pos
    return pos
