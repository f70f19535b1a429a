"""The public scoring driver: validate a batch, convert it to arrays once, call the kernel."""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from config.arrays import JourneyArrays
from operators.events import EventBatch
from operators.kernels import _fnv1a64, _score_batch
from operators.state import ShardState


def hash_ids(ids: list[str]) -> npt.NDArray[np.uint64]:
    """Stable 64-bit hashes of strings (event ids), computed in one kernel call."""
    encoded = [s.encode("utf-8", "surrogatepass") for s in ids]
    ends = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return _fnv1a64(buf, ends)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Transitions:
    """Stage changes of one batch, in the order they happened."""

    event: npt.NDArray[np.int64]  # index into the batch
    from_stage: npt.NDArray[np.int16]
    to_stage: npt.NDArray[np.int16]
    version: npt.NDArray[np.int64]


@dataclass(frozen=True)
class ScoreResult:
    """What a batch did to a shard."""

    accepted: npt.NDArray[np.bool_]
    changed_rows: npt.NDArray[np.int64]  # each changed customer once
    transitions: Transitions

    @property
    def duplicates(self) -> int:
        """Events dropped as already seen."""
        return int(self.accepted.size - np.count_nonzero(self.accepted))


def score_batch(state: ShardState, batch: EventBatch, arrays: JourneyArrays) -> ScoreResult:
    """Apply ``batch`` (arrival order) to ``state`` per PRODUCT §4."""
    m = len(batch)
    if not (batch.ts.shape == batch.type_idx.shape == batch.chan_idx.shape
            == batch.sentiment.shape == (m,)) or len(batch.event_ids) != m:
        msg = "score_batch: every column of the batch must have one entry per event"
        raise ValueError(msg)
    rows = state.rows_for(batch.customer_ids)
    accepted = np.zeros(m, dtype=np.bool_)
    tr_event = np.empty(m, dtype=np.int64)
    tr_from = np.empty(m, dtype=np.int16)
    tr_to = np.empty(m, dtype=np.int16)
    tr_version = np.empty(m, dtype=np.int64)
    n_tr = _score_batch(
        state.T, state.S, state.E, state.Sn, state.Sd, state.counts, state.n, state.stage,
        state.dd_hash, state.dd_ts,
        rows, batch.ts, batch.type_idx, batch.chan_idx, batch.sentiment, hash_ids(batch.event_ids),
        arrays.type_weight, arrays.type_factor, arrays.type_req_slot, arrays.channel_mult,
        arrays.stage_threshold, arrays.stage_min_sentiment, arrays.stage_requires,
        arrays.half_life_ms, arrays.dedup_window_ms,
        accepted, tr_event, tr_from, tr_to, tr_version,
    )
    return ScoreResult(
        accepted=accepted,
        changed_rows=np.unique(rows[accepted]),
        transitions=Transitions(tr_event[:n_tr], tr_from[:n_tr], tr_to[:n_tr], tr_version[:n_tr]),
    )


def warm_up(arrays: JourneyArrays) -> None:
    """Compile the kernels now, so the first real event never waits for Numba."""
    batch = EventBatch(
        ["warm-up"], ["warm-up"], np.array([1_000_000_000_000], dtype=np.int64),
        np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.int32), np.array([0.5]),
    )
    score_batch(ShardState(arrays), batch, arrays)
