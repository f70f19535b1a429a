"""Per-shard customer state as struct-of-arrays, so one kernel call updates a whole batch."""

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from config.arrays import JourneyArrays
from operators.base import NO_TIME
from operators.columns import I64, Pool, capacity, copied, grown, held, restored, room_for, rows
from operators.id_kernels import U8, IdIndex, _gather, _place_all, _rows_of
from operators.score_kernels import INLINE_IDS, CustomerColumns, IdOverflow


def utf8(ids: Sequence[str]) -> tuple[U8, I64]:
    """Ids as UTF-8 bytes one after another, and where each ends (lone surrogates kept as they came)."""
    joined = "".join(ids)
    if joined.isascii():  # a byte a character: the lengths are the strings'
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return np.frombuffer(joined.encode("ascii"), dtype=np.uint8), np.cumsum(lengths)
    encoded = [s.encode("utf-8", "surrogatepass") for s in ids]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), np.cumsum(lengths)


class CustomerIndex:
    """A shard's customer ids, a row each in order of arrival, kept as bytes (``IdIndex``).

    The table is kept at most three quarters full and doubles before it would be
    fuller: lookups probe few slots. Room is reserved before a batch as if all its ids
    were new, so a shard always has room for one more batch of customers than it holds.
    """

    def __init__(self) -> None:
        self.ix = IdIndex(np.zeros(16, dtype=np.int64), np.zeros(256, dtype=np.uint8),
                          np.full(32, -1, dtype=np.int32), np.zeros(1, dtype=np.int64))
        self.longest = 0  # bytes of the longest id

    def __len__(self) -> int:
        return int(self.ix.in_use[0])

    def __getitem__(self, customer_id: str) -> int:
        """The row of ``customer_id`` (``KeyError`` when it has none)."""
        row = int(self.rows_for([customer_id], add=False)[0])
        if row < 0:
            raise KeyError(customer_id)
        return row

    @property
    def used(self) -> int:
        """Bytes of ``text`` in use."""
        n = len(self)
        return int(self.ix.ends[n - 1]) if n else 0

    @property
    def nbytes(self) -> int:
        """Bytes the index holds, reserved room included."""
        return held(self.ix)

    def rows_for(self, ids: Sequence[str], *, add: bool = True) -> I64:
        """Row of each id; an unknown id takes the next row (or is -1 when not ``add``)."""
        buf, ends = utf8(ids)
        if add:
            self._reserve(len(ids), buf.size)
        out = np.empty(len(ids), dtype=np.int64)
        self.longest = max(self.longest, _rows_of(self.ix, buf, ends, add, out))
        return out

    def _reserve(self, n: int, size: int) -> None:
        """Room for ``n`` more ids of ``size`` bytes in all."""
        ix, count = self.ix, len(self)
        ends, text, table = ix.ends, ix.text, ix.table
        if count + n > ends.size:
            ends = _grown(ends, count + n)
        if self.used + size > text.size:
            text = _grown(text, self.used + size)
        if _slots_for(count + n, table.size) != table.size:
            table = np.full(_slots_for(count + n, table.size), -1, dtype=np.int32)
        self.ix = IdIndex(ends, text, table, ix.in_use)
        if table is not ix.table:
            _place_all(self.ix)

    def ids(self) -> list[str]:
        """Every id, by row, as a string."""
        ends = self.ix.ends[: len(self)].tolist()
        blob = self.ix.text[: ends[-1] if ends else 0].tobytes()
        bounds = [0, *ends]
        return [blob[a:b].decode("utf-8", "surrogatepass") for a, b in itertools.pairwise(bounds)]

    def keys(self, rows: I64) -> list[bytes]:
        """The ids of ``rows`` as bytes (message keys)."""
        out_ends = np.empty(rows.size, dtype=np.int64)
        out = np.empty(rows.size * self.longest, dtype=np.uint8)
        _gather(self.ix, rows, out, out_ends)
        blob = out[: out_ends[-1] if rows.size else 0].tobytes()
        bounds = [0, *out_ends.tolist()]
        return [blob[a:b] for a, b in itertools.pairwise(bounds)]

    def snapshot(self) -> dict[str, Any]:
        """Copies of the ids in use: where each ends, and their bytes."""
        n = len(self)
        return {"ends": self.ix.ends[:n].copy(), "text": self.ix.text[: self.used].copy()}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> "CustomerIndex":
        """The index ``snapshot()`` saved."""
        index = cls()
        ends, text = np.array(snap["ends"], dtype=np.int64), np.array(snap["text"], dtype=np.uint8)
        table = np.full(_slots_for(ends.size, index.ix.table.size), -1, dtype=np.int32)
        index.ix = IdIndex(ends, text, table, np.array([ends.size], dtype=np.int64))
        _place_all(index.ix)
        index.longest = int(np.diff(ends, prepend=0).max(initial=0))
        return index


def _slots_for(n: int, slots: int) -> int:
    """The table length for ``n`` ids: ``slots`` doubled until they are at most three quarters full."""
    while 4 * n > 3 * slots:
        slots *= 2
    return slots


def _grown(arr: npt.NDArray[Any], needed: int) -> npt.NDArray[Any]:
    new = np.empty(room_for(needed, arr.size), dtype=arr.dtype)
    new[: arr.size] = arr
    return new


class ShardState:
    """The customers of one shard: a row each, looked up by customer id (``index``).

    ``columns`` (a ``CustomerColumns`` bundle) grows an eighth at a time (``room_for``);
    ``size`` rows are in use. ``more`` holds the remembered event ids of the customers
    who need more than their row's (``IdOverflow``). A snapshot keeps only the rows in
    use (and the overflow pool as it is), so it costs about what the shard holds.
    Columns read as attributes too (``state.T``), for tests and tools; the engine reads
    them typed, from ``columns``.
    """

    def __init__(self, arrays: JourneyArrays, capacity: int = 256) -> None:
        self.index = CustomerIndex()
        self.size = 0
        inline = min(INLINE_IDS, arrays.dedup_slots)
        self.columns = rows(CustomerColumns, capacity, stages=arrays.n_stages,
                            required=arrays.n_req_slots, inline=inline)
        self.more = Pool(IdOverflow, room=room_for, more=arrays.dedup_slots - inline)

    def __getattr__(self, name: str) -> Any:
        """Column ``name`` (only reached for names that are not attributes of the state)."""
        if name in CustomerColumns._fields:
            return getattr(self.columns, name)
        raise AttributeError(name)

    @property
    def capacity(self) -> int:
        """Rows reserved."""
        return capacity(self.columns)

    def all_ids(self) -> list[str]:
        """Every customer id by row, decoded: for tests and tools (the engine reads ``index``)."""
        return self.index.ids()

    @property
    def nbytes(self) -> int:
        """Bytes the shard's customers hold, reserved room included: columns, index, remembered ids."""
        return held(self.columns, self.more.cols) + self.index.nbytes

    def rows_for(self, customer_ids: list[str]) -> npt.NDArray[np.int64]:
        """Row of each customer, adding rows for customers seen for the first time.

        ``size`` grows only once ``columns`` hold the new rows: a thread that reads
        ``size`` and then ``columns`` (a Prometheus scrape taking the stage census) never
        sees more rows in use than the arrays it reads have.
        """
        out = self.index.rows_for(customer_ids)
        size = len(self.index)
        if size > self.capacity:
            self.columns = grown(self.columns, room_for(size, self.capacity))
        self.size = size
        return out

    def snapshot(self) -> dict[str, Any]:
        """Copies of the rows in use: safe to pickle later while this state keeps changing."""
        return {"columns": copied(self.columns, self.size), "index": self.index.snapshot(),
                "more": self.more.snapshot()}

    @classmethod
    def from_snapshot(cls, arrays: JourneyArrays, snap: dict[str, Any]) -> "ShardState":
        """Rebuild a shard from ``snapshot()`` output (recovery resume), or from a format 1 one."""
        if "more" not in snap:  # written before event ids were remembered in two tiers
            snap = _from_format_1(snap)
        state = cls(arrays, capacity=0)
        state.index = CustomerIndex.from_snapshot(snap["index"])
        state.size = len(state.index)
        state.columns = restored(CustomerColumns, snap["columns"])
        state.more.restore(snap["more"])
        return state


def _from_format_1(snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of state format 1 as format 2 has it: the same customers, rows and remembered ids.

    Format 1 kept the ids as a list of strings and every remembered event id in the
    customer's row. The first ``INLINE_IDS`` slots stay in the row; a row that holds
    any id past them gets an overflow row for the rest, slot for slot, so the slots
    are filled and reused from here on as they would have been.
    """
    columns = dict(snap["columns"])
    hashes, times = columns["dd_hash"], columns["dd_ts"]
    inline = min(INLINE_IDS, hashes.shape[1])
    needs = np.flatnonzero((times[:, inline:] != NO_TIME).any(axis=1))
    more = np.full(len(times), -1, dtype=np.int32)
    more[needs] = np.arange(needs.size, dtype=np.int32)
    columns.update(dd_hash=hashes[:, :inline].copy(), dd_ts=times[:, :inline].copy(), dd_more=more)
    buf, ends = utf8(snap["ids"])
    return {"columns": columns, "index": {"ends": ends, "text": buf},
            "more": {"hash": hashes[needs, inline:], "ts": times[needs, inline:],
                     "free": np.zeros(needs.size, dtype=np.int64), "top": np.zeros(1, dtype=np.int64)}}
