"""The public scoring driver: validate a batch, convert it to arrays once, call the kernel."""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from config.arrays import JourneyArrays
from operators.base import NO_STAGE, NO_TIME, EventBatch
from operators.id_kernels import _fnv1a64
from operators.score_kernels import (
    ScoreBatch,
    Transitions,
    _dormant_rows,
    _restage,
    _score_batch,
    _stage_census,
)
from operators.state import ShardState, utf8

_EMPTY_I64: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)


def hash_ids(ids: list[str]) -> npt.NDArray[np.uint64]:
    """Stable 64-bit hashes of strings (event ids), computed in one kernel call."""
    return _fnv1a64(*utf8(ids))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ScoreResult:
    """What a batch did to a shard."""

    rows: npt.NDArray[np.int64]  # shard row of each event
    accepted: npt.NDArray[np.bool_]
    stage_after: npt.NDArray[np.int16]  # the customer's stage after each accepted event
    changed_rows: npt.NDArray[np.int64]  # each changed customer once
    transitions: Transitions

    @property
    def duplicates(self) -> int:
        """Events dropped as already seen."""
        return int(self.accepted.size - np.count_nonzero(self.accepted))


def score_batch(state: ShardState, batch: EventBatch, arrays: JourneyArrays,
                dormant_after_ms: int) -> ScoreResult:
    """Apply ``batch`` (arrival order) to ``state`` per PRODUCT §4."""
    m = len(batch)
    if not (batch.ts.shape == batch.type_idx.shape == batch.chan_idx.shape == batch.sentiment.shape
            == batch.late.shape == batch.mark.shape == (m,)) or len(batch.event_ids) != m:
        msg = "score_batch: every column of the batch must have one entry per event"
        raise ValueError(msg)
    known = state.size
    rows = state.rows_for(batch.customer_ids)
    _reserve_overflow(state, rows, m - (state.size - known))
    accepted = np.zeros(m, dtype=np.bool_)
    stage_after = np.full(m, NO_STAGE, dtype=np.int16)
    room = 2 * m  # each event: at most dormant, then a stage
    moves = Transitions(np.empty(room, np.int64), np.empty(room, np.int16), np.empty(room, np.int16),
                        np.empty(room, np.int64), np.empty(room, np.int64), np.empty(room, np.bool_))
    n_tr = _score_batch(
        state.columns, state.more.cols,
        ScoreBatch(rows, batch.ts, batch.type_idx, batch.chan_idx, batch.sentiment,
                   hash_ids(batch.event_ids), batch.mark),
        arrays, dormant_after_ms, accepted, stage_after, moves,
    )
    tr = Transitions(moves.event[:n_tr], moves.from_stage[:n_tr], moves.to_stage[:n_tr],
                     moves.version[:n_tr], moves.ts[:n_tr], moves.dormant[:n_tr])
    return ScoreResult(
        rows=rows,
        accepted=accepted,
        stage_after=stage_after,
        changed_rows=np.unique(np.concatenate([rows[accepted], rows[tr.event[tr.dormant]]])),
        transitions=tr,
    )


def _reserve_overflow(state: ShardState, rows: npt.NDArray[np.int64], most: int) -> None:
    """A free overflow row for every customer of ``rows`` who may take one in this batch.

    A customer takes one at most, and not with its first event (that fills an inline
    slot): ``most`` (the events less the new customers) bounds them. Only when the pool
    has fewer free rows are the customers counted, so that it grows by what they need.
    """
    more = state.more
    if more.cols.hash.shape[1] == 0 or most <= more.n_free:
        return
    more.ensure(min(most, int(np.unique(rows[state.columns.dd_more[rows] < 0]).size)))


def dormancy(state: ShardState, watermark: int, dormant_after_ms: int) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.int16], npt.NDArray[np.int64], int]:
    """Move customers whose ``T + dormant_after`` the watermark passed to ``dormant`` (PRODUCT §4).

    Returns their rows, their stages before, the event times they went dormant at, and
    the earliest time the watermark must pass for anyone else to go dormant.
    """
    if watermark == NO_TIME:
        return _EMPTY_I64, np.empty(0, np.int16), _EMPTY_I64, NO_TIME
    out = np.empty(state.size, dtype=np.int64)
    count, earliest = _dormant_rows(state.columns, state.size, watermark, dormant_after_ms, out)
    rows = out[:count]
    c = state.columns
    before = c.stage[rows].copy()
    c.stage[rows] = c.E.shape[1]  # dormant: the stage index after the last
    return rows, before, c.T[rows] + dormant_after_ms, int(earliest)


def restage(state: ShardState, arrays: JourneyArrays) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int16]]:
    """Evaluate every customer's stage under ``arrays`` (a new map), as after an event (PRODUCT §4).

    Dormant customers stay dormant until their next event. Returns the rows whose stage
    changed and their stages before; the state holds the new ones.
    """
    rows = np.empty(state.size, dtype=np.int64)
    before = np.empty(state.size, dtype=np.int16)
    count = _restage(state.columns, state.size, arrays, rows, before)
    return rows[:count], before[:count]


def stage_census(state: ShardState, saturation: float) -> npt.NDArray[np.float64]:
    """Customers per stage (dormant last), with sentiment and engagement sums: a (4, stages + 1) array.

    Rows: customers, customers with a sentiment, the sum of their sentiments, the sum of
    engagements (``operators.metrics.StageCensus`` turns them into means).
    """
    # a scrape runs this while the shard's worker adds customers: the size first, so that
    # the columns read after it hold at least that many rows (``ShardState.rows_for``)
    size = state.size
    columns = state.columns
    out = np.zeros((4, columns.E.shape[1] + 1), dtype=np.float64)
    _stage_census(columns, size, saturation, out)
    return out
