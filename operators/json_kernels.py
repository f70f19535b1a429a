"""A Numba kernel that writes many JSON records into one byte buffer, from a declared layout.

Records come by the hundred thousand in a replay, and building a dict per record for
``orjson`` cost more than computing them. ``_render`` writes the same bytes
``orjson.dumps`` writes for the same dict (keys in order, no spaces), record after
record, and notes where each ends. What it writes is a ``RecordLayout``: per field its
format and where its value is, made once from a record kind's declaration
(``records``). Text arrives pre-rendered as pieces of two text tables (a blob of
pieces one separator byte apart, with offsets): the layout's static table holds the
literal ``{"name":`` pieces and the names a kind uses; the call brings its own texts
(floats in orjson's own text, event ids). Float formatting and those escapes stay
orjson's. The customer ids come as a shard keeps them (``id_kernels.IdIndex``: UTF-8
bytes one after another) and are escaped here as orjson escapes a string.
"""

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from operators.columns import I64

U8 = npt.NDArray[np.uint8]

INT, PIECE, OBJECT, ENTRIES = range(4)
"""Field formats: an integer; a piece of text; an object of one value per key (a block of
columns); an object of entries (``RecordValues.first/keys/values``)."""
STATIC_TEXT, CUSTOMER_TEXT, CALL_TEXT = range(3)
"""Where a piece comes from: a text table, the customer ids, or the call's text table."""
NUMBER = -1
"""An object's values are the integers themselves, not pieces of text."""

_MINUS, _ZERO, _COMMA, _COLON, _QUOTE, _BACKSLASH = 45, 48, 44, 58, 34, 92
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)
_SHORT = {"\b": "b", "\t": "t", "\n": "n", "\f": "f", "\r": "r"}
_SHORT_ESCAPES = np.array([ord(_SHORT.get(chr(c), "\0")) for c in range(32)], dtype=np.uint8)
"""The letter of each control character's short escape (``\\n``), or 0 where it has none."""
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
ESCAPED_BYTES = 6
"""The most bytes one byte of a string takes in JSON (``\\u001f``), quotes aside."""


class RecordLayout(NamedTuple):
    """How a record kind is written, per field, and its static text table.

    Static piece ``f`` is the literal before field ``f`` (piece ``fields``: the closing
    one); the names the fields use follow.
    """

    format: I64  # INT, PIECE, OBJECT or ENTRIES
    column: I64  # the field's (first) column of ``RecordValues.ints``
    width: I64  # OBJECT: its columns, one per key
    source: I64  # PIECE: the piece's text table; OBJECT, ENTRIES: the values' (or NUMBER)
    base: I64  # static piece number of a STATIC_TEXT piece 0, or of an object's key 0
    skip_zeros: I64  # OBJECT: leave out keys whose value is 0
    static_blob: U8
    static_offsets: I64


class RecordValues(NamedTuple):
    """What one call writes: integers and piece numbers, the entries of ENTRIES, the call's texts."""

    ints: I64  # [record, column]
    first: I64  # record ``i``'s entries are ``first[i]:first[i + 1]``
    keys: I64  # the entry's key (static piece number - base)
    values: I64  # its value: an integer, or a piece number
    customer_text: U8  # the shard's customer ids (CUSTOMER_TEXT), as ``IdIndex`` holds them
    customer_ends: I64
    text_blob: U8  # what the call brings (CALL_TEXT): floats, event ids
    text_offsets: I64


@njit(cache=True, nogil=True)
def _array_items(body, offsets):  # pragma: no cover - compiled
    """Where each item of a flat JSON array starts in ``body`` (the array without its brackets).

    Items are numbers, strings or nulls as orjson writes them: a comma outside a string
    ends one. ``offsets`` gets a start per item and, last, ``len(body) + 1``, as a text
    table's offsets do; returns the number of items.
    """
    k = 0
    offsets[0] = 0
    in_string = False
    i = 0
    while i < body.shape[0]:
        c = body[i]
        if in_string:
            if c == _BACKSLASH:
                i += 1
            elif c == _QUOTE:
                in_string = False
        elif c == _QUOTE:
            in_string = True
        elif c == _COMMA:
            k += 1
            offsets[k] = i + 1
        i += 1
    offsets[k + 1] = body.shape[0] + 1
    return k + 1


@njit(cache=True, nogil=True, inline="always")
def _put_text(buf, pos, blob, off, i):  # pragma: no cover - compiled
    """Piece ``i`` of a text table."""
    a, b = off[i], off[i + 1] - 1
    for k in range(b - a):  # a loop: pieces are short, and a slice copy costs more
        buf[pos + k] = blob[a + k]
    return pos + b - a


@njit(cache=True, nogil=True, inline="always")
def _put_string(buf, pos, text, ends, i):  # pragma: no cover - compiled
    r"""String ``i`` of ``text`` (UTF-8, ending at ``ends[i]``) in JSON, escaped as orjson escapes.

    Quotes and backslashes are escaped, control characters get their short escape or
    ``\u00XX``; every other byte (DEL and all of UTF-8's multi-byte characters) is copied.
    Customer ids are valid UTF-8: the parser refuses a lone surrogate.
    """
    buf[pos] = _QUOTE
    pos += 1
    for k in range(ends[i - 1] if i > 0 else 0, ends[i]):
        c = text[k]
        if c in (_QUOTE, _BACKSLASH):
            buf[pos] = _BACKSLASH
            buf[pos + 1] = c
            pos += 2
        elif c < 32 and _SHORT_ESCAPES[c]:
            buf[pos] = _BACKSLASH
            buf[pos + 1] = _SHORT_ESCAPES[c]
            pos += 2
        elif c < 32:
            buf[pos] = _BACKSLASH
            buf[pos + 1] = 117  # u
            buf[pos + 2] = _ZERO
            buf[pos + 3] = _ZERO
            buf[pos + 4] = _HEX[c >> 4]
            buf[pos + 5] = _HEX[c & 15]
            pos += ESCAPED_BYTES
        else:
            buf[pos] = c
            pos += 1
    buf[pos] = _QUOTE
    return pos + 1


@njit(cache=True, nogil=True, inline="always")
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


@njit(cache=True, nogil=True, inline="always")
def _put_entry(buf, pos, first, key, value, source, s_blob, s_off, v_blob, v_off):  # pragma: no cover
    """``"key":value`` of an object (a static key; an integer value or a piece of ``v_blob``)."""
    if not first:
        buf[pos] = _COMMA
        pos += 1
    pos = _put_text(buf, pos, s_blob, s_off, key)
    buf[pos] = _COLON
    pos += 1
    if source == NUMBER:
        return _put_int(buf, pos, value)
    return _put_text(buf, pos, v_blob, v_off, value)


@njit(cache=True, nogil=True)
def _render(buf, ends, layout, v):  # pragma: no cover - compiled
    """Every record of ``v`` as ``layout`` says, one after another; ``ends[i]`` is where record i ends.

    Returns the bytes written. Arrays are taken out of their bundles once, before the
    loops (inside them, each use would count a reference).
    """
    fmts, cols, widths = layout.format, layout.column, layout.width
    sources, bases, skips = layout.source, layout.base, layout.skip_zeros
    ints, first, keys, values = v.ints, v.first, v.keys, v.values
    s_blob, s_off = layout.static_blob, layout.static_offsets
    c_text, c_ends = v.customer_text, v.customer_ends
    t_blob, t_off = v.text_blob, v.text_offsets
    fields = fmts.shape[0]
    pos = 0
    for i in range(ints.shape[0]):
        for f in range(fields):
            pos = _put_text(buf, pos, s_blob, s_off, f)
            fmt, col, source = fmts[f], cols[f], sources[f]
            if fmt == INT:
                pos = _put_int(buf, pos, ints[i, col])
            elif fmt == PIECE:
                if source == STATIC_TEXT:
                    pos = _put_text(buf, pos, s_blob, s_off, ints[i, col] + bases[f])
                elif source == CUSTOMER_TEXT:
                    pos = _put_string(buf, pos, c_text, c_ends, ints[i, col])
                else:
                    pos = _put_text(buf, pos, t_blob, t_off, ints[i, col])
            elif fmt == OBJECT:
                skip, base, none_yet = skips[f], bases[f], True
                for k in range(widths[f]):
                    value = ints[i, col + k]
                    if skip and value == 0:
                        continue
                    pos = _put_entry(buf, pos, none_yet, base + k, value, source, s_blob, s_off,
                                     t_blob, t_off)
                    none_yet = False
            else:
                base = bases[f]
                for e in range(first[i], first[i + 1]):
                    pos = _put_entry(buf, pos, e == first[i], base + keys[e], values[e], source,
                                     s_blob, s_off, t_blob, t_off)
        pos = _put_text(buf, pos, s_blob, s_off, fields)
        ends[i] = pos
    return pos
