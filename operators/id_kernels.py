"""Numba kernels of ids: their FNV-1a hashes, and a shard's customer index (bytes, open addressing).

A million customers held as Python strings in a dict and a list cost about 130 bytes
each in objects alone; here an id costs its UTF-8 bytes, where it ends (8 bytes) and
its share of the table (under 11 bytes once a shard holds many more customers than a
batch brings). The driver (``operators.state.CustomerIndex``) reserves room before each
call, so a kernel never runs out of it. Event id hashes are kept in recovery stores:
FNV-1a must stay as it is.
"""

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from operators.columns import I64

I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)


class IdIndex(NamedTuple):
    """A shard's customer ids: row ``r``'s is ``text[ends[r - 1]:ends[r]]`` (from 0 for row 0)."""

    ends: I64  # per row, where its id ends in ``text``
    text: U8  # the ids' UTF-8 bytes, one after another
    table: I32  # open addressing, a power of two long: a row, or -1 for an empty slot
    in_use: I64  # one element: rows in use


@njit(cache=True, nogil=True, inline="always")
def _fnv1a(buf, start, end):  # pragma: no cover - compiled
    """FNV-1a of ``buf[start:end]``: stable across processes and restarts."""
    h = _FNV_OFFSET
    for j in range(start, end):
        h ^= np.uint64(buf[j])
        h *= _FNV_PRIME
    return h


@njit(cache=True, nogil=True)
def _fnv1a64(buf, ends):  # pragma: no cover - compiled
    """FNV-1a of each slice ``buf[ends[i-1]:ends[i]]``: stable across processes and restarts."""
    out = np.empty(ends.shape[0], dtype=np.uint64)
    start = 0
    for i in range(ends.shape[0]):
        out[i] = _fnv1a(buf, start, ends[i])
        start = ends[i]
    return out


@njit(cache=True, nogil=True, inline="always")
def _slot(h, mask):  # pragma: no cover - compiled
    """The table slot a hash starts at: FNV's low bits mixed with its high ones first (MurmurHash3's end)."""
    h ^= h >> _SHIFT
    h *= _MIX_1
    h ^= h >> _SHIFT
    h *= _MIX_2
    h ^= h >> _SHIFT
    return np.int64(h & np.uint64(mask))


@njit(cache=True, nogil=True, inline="always")
def _start(ix, r):  # pragma: no cover - compiled
    return ix.ends[r - 1] if r > 0 else 0


@njit(cache=True, nogil=True, inline="always")
def _is(ix, r, buf, start, end):  # pragma: no cover - compiled
    """Whether row ``r``'s id is ``buf[start:end]``."""
    at = _start(ix, r)
    if ix.ends[r] - at != end - start:
        return False
    for j in range(end - start):  # noqa: SIM110 - a loop Numba compiles; all() of a generator it does not
        if ix.text[at + j] != buf[start + j]:
            return False
    return True


@njit(cache=True, nogil=True)
def _rows_of(ix, buf, ends, add, out):  # pragma: no cover - compiled
    """The row of each id ``buf[ends[i - 1]:ends[i]]`` into ``out``; an unknown one is added (or -1).

    Added ids take the next rows in order; ``ix`` has room for all of them. Returns the
    length of the longest id added (0: none).
    """
    mask = ix.table.shape[0] - 1
    count = ix.in_use[0]
    longest = 0
    start = 0
    for i in range(ends.shape[0]):
        end = ends[i]
        s = _slot(_fnv1a(buf, start, end), mask)
        while True:
            r = ix.table[s]
            if r < 0:
                if add:
                    at = _start(ix, count)
                    ix.text[at: at + end - start] = buf[start:end]
                    ix.ends[count] = at + end - start
                    ix.table[s] = count
                    r = count
                    count += 1
                    longest = max(longest, end - start)
                break
            if _is(ix, r, buf, start, end):
                break
            s = (s + 1) & mask
        out[i] = r
        start = end
    ix.in_use[0] = count
    return longest


@njit(cache=True, nogil=True)
def _place_all(ix):  # pragma: no cover - compiled
    """Enter every row in use into ``ix.table`` (empty, and long enough): after growing or a resume."""
    mask = ix.table.shape[0] - 1
    for r in range(ix.in_use[0]):
        s = _slot(_fnv1a(ix.text, _start(ix, r), ix.ends[r]), mask)
        while ix.table[s] >= 0:
            s = (s + 1) & mask
        ix.table[s] = r


@njit(cache=True, nogil=True)
def _gather(ix, rows, out, out_ends):  # pragma: no cover - compiled
    """The ids of ``rows`` one after another into ``out`` (long enough), and where each ends."""
    at = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        start = _start(ix, r)
        n = ix.ends[r] - start
        out[at: at + n] = ix.text[start: start + n]
        at += n
        out_ends[i] = at
