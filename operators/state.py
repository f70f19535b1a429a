"""Per-shard customer state as struct-of-arrays, so one kernel call updates a whole batch."""

from typing import Any

import numpy as np
import numpy.typing as npt

from config.arrays import JourneyArrays
from operators.base import NO_STAGE, NO_TIME

_GROWTH = 2


class ShardState:
    """The customers of one shard: a row each, looked up by customer id.

    Arrays grow by doubling; ``size`` rows are in use. A snapshot keeps only the rows
    in use, so it costs what the shard holds, not what it reserved.
    """

    _ARRAYS = ("T", "S", "E", "Sn", "Sd", "counts", "n", "stage", "dd_hash", "dd_ts")

    def __init__(self, arrays: JourneyArrays, capacity: int = 256) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.size = 0
        self.T: npt.NDArray[np.int64] = np.zeros(capacity, dtype=np.int64)
        self.S: npt.NDArray[np.float64] = np.zeros(capacity, dtype=np.float64)
        self.E: npt.NDArray[np.float64] = np.zeros((capacity, arrays.n_stages), dtype=np.float64)
        self.Sn: npt.NDArray[np.float64] = np.zeros(capacity, dtype=np.float64)
        self.Sd: npt.NDArray[np.float64] = np.zeros(capacity, dtype=np.float64)
        self.counts: npt.NDArray[np.int64] = np.zeros((capacity, arrays.n_req_slots), dtype=np.int64)
        self.n: npt.NDArray[np.int64] = np.zeros(capacity, dtype=np.int64)
        self.stage: npt.NDArray[np.int16] = np.full(capacity, NO_STAGE, dtype=np.int16)
        self.dd_hash: npt.NDArray[np.uint64] = np.zeros((capacity, arrays.dedup_slots), dtype=np.uint64)
        self.dd_ts: npt.NDArray[np.int64] = np.full((capacity, arrays.dedup_slots), NO_TIME,
                                                    dtype=np.int64)

    @property
    def capacity(self) -> int:
        """Rows reserved."""
        return int(self.T.shape[0])

    def rows_for(self, customer_ids: list[str]) -> npt.NDArray[np.int64]:
        """Row of each customer, adding rows for customers seen for the first time."""
        index = self.index
        rows = np.empty(len(customer_ids), dtype=np.int64)
        for i, cid in enumerate(customer_ids):
            r = index.get(cid)
            if r is None:
                r = index[cid] = self.size
                self.ids.append(cid)
                self.size += 1
            rows[i] = r
        if self.size > self.capacity:
            self._grow(self.size)
        return rows

    def _grow(self, needed: int) -> None:
        new_cap = max(needed, self.capacity * _GROWTH, 16)
        for name in self._ARRAYS:
            old = getattr(self, name)
            fill = NO_TIME if name == "dd_ts" else (NO_STAGE if name == "stage" else 0)
            new = np.full((new_cap, *old.shape[1:]), fill, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def snapshot(self) -> dict[str, Any]:
        """Copies of the rows in use: safe to pickle later while this state keeps changing."""
        snap: dict[str, Any] = {name: getattr(self, name)[: self.size].copy() for name in self._ARRAYS}
        snap["ids"] = list(self.ids)
        return snap

    @classmethod
    def from_snapshot(cls, arrays: JourneyArrays, snap: dict[str, Any]) -> "ShardState":
        """Rebuild a shard from ``snapshot()`` output (recovery resume)."""
        state = cls(arrays, capacity=0)
        state.ids = list(snap["ids"])
        state.index = {cid: i for i, cid in enumerate(state.ids)}
        state.size = len(state.ids)
        for name in cls._ARRAYS:
            setattr(state, name, np.array(snap[name]))
        return state
