"""Per-shard customer state as struct-of-arrays, so one kernel call updates a whole batch."""

from typing import Any

import numpy as np
import numpy.typing as npt

from config.arrays import JourneyArrays
from operators.columns import Pool, capacity, copied, grown, restored, rows
from operators.score_kernels import INLINE_IDS, CustomerColumns, IdOverflow


class ShardState:
    """The customers of one shard: a row each, looked up by customer id.

    ``columns`` (a ``CustomerColumns`` bundle) grows by doubling; ``size`` rows are in
    use. ``more`` holds the remembered event ids of the customers who need more than
    their row's (``IdOverflow``). A snapshot keeps only the rows in use, so it costs what
    the shard holds, not what it reserved. Columns read as attributes too (``state.T``), for tests and tools;
    the engine reads them typed, from ``columns``.
    """

    _ARRAYS = CustomerColumns._fields

    def __init__(self, arrays: JourneyArrays, capacity: int = 256) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.size = 0
        inline = min(INLINE_IDS, arrays.dedup_slots)
        self.columns = rows(CustomerColumns, capacity, stages=arrays.n_stages,
                            required=arrays.n_req_slots, inline=inline)
        self.more = Pool(IdOverflow, more=arrays.dedup_slots - inline)

    def __getattr__(self, name: str) -> Any:
        """Column ``name`` (only reached for names that are not attributes of the state)."""
        if name in CustomerColumns._fields:
            return getattr(self.columns, name)
        raise AttributeError(name)

    @property
    def capacity(self) -> int:
        """Rows reserved."""
        return capacity(self.columns)

    def rows_for(self, customer_ids: list[str]) -> npt.NDArray[np.int64]:
        """Row of each customer, adding rows for customers seen for the first time.

        ``size`` grows only once ``columns`` hold the new rows: a thread that reads
        ``size`` and then ``columns`` (a Prometheus scrape taking the stage census) never
        sees more rows in use than the arrays it reads have.
        """
        index = self.index
        size = self.size
        out = np.empty(len(customer_ids), dtype=np.int64)
        for i, cid in enumerate(customer_ids):
            r = index.get(cid)
            if r is None:
                r = index[cid] = size
                self.ids.append(cid)
                size += 1
            out[i] = r
        if size > self.capacity:
            self.columns = grown(self.columns, max(size, 2 * self.capacity, 16))
        self.size = size
        return out

    def snapshot(self) -> dict[str, Any]:
        """Copies of the rows in use: safe to pickle later while this state keeps changing."""
        return {"columns": copied(self.columns, self.size), "ids": list(self.ids),
                "more": self.more.snapshot()}

    @classmethod
    def from_snapshot(cls, arrays: JourneyArrays, snap: dict[str, Any]) -> "ShardState":
        """Rebuild a shard from ``snapshot()`` output (recovery resume)."""
        state = cls(arrays, capacity=0)
        state.ids = list(snap["ids"])
        state.index = {cid: i for i, cid in enumerate(state.ids)}
        state.size = len(state.ids)
        state.columns = restored(CustomerColumns, snap["columns"])
        state.more.restore(snap["more"])
        return state
