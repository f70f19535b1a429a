"""The public scoring driver: validate a batch, convert it to arrays once, call the kernel."""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from config.arrays import JourneyArrays
from operators.base import NO_STAGE, NO_TIME, EventBatch
from operators.score_kernels import _dormant_rows, _fnv1a64, _score_batch
from operators.state import ShardState

_EMPTY_I64: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)


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
    ts: npt.NDArray[np.int64]  # the event's time, or when the customer went dormant
    dormant: npt.NDArray[np.bool_]  # a move to dormant, found when the event arrived


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
    rows = state.rows_for(batch.customer_ids)
    accepted = np.zeros(m, dtype=np.bool_)
    stage_after = np.full(m, NO_STAGE, dtype=np.int16)
    tr_event = np.empty(2 * m, dtype=np.int64)  # each event: at most dormant, then a stage
    tr_from = np.empty(2 * m, dtype=np.int16)
    tr_to = np.empty(2 * m, dtype=np.int16)
    tr_version = np.empty(2 * m, dtype=np.int64)
    tr_ts = np.empty(2 * m, dtype=np.int64)
    tr_dormant = np.empty(2 * m, dtype=np.bool_)
    n_tr = _score_batch(
        state.T, state.S, state.E, state.Sn, state.Sd, state.counts, state.n, state.stage,
        state.dd_hash, state.dd_ts,
        rows, batch.ts, batch.type_idx, batch.chan_idx, batch.sentiment, hash_ids(batch.event_ids),
        batch.mark,
        arrays.type_weight, arrays.type_factor, arrays.type_req_slot, arrays.channel_mult,
        arrays.stage_threshold, arrays.stage_min_sentiment, arrays.stage_requires,
        arrays.half_life_ms, arrays.dedup_window_ms, dormant_after_ms,
        accepted, stage_after, tr_event, tr_from, tr_to, tr_version, tr_ts, tr_dormant,
    )
    return ScoreResult(
        rows=rows,
        accepted=accepted,
        stage_after=stage_after,
        changed_rows=np.unique(np.concatenate([rows[accepted], rows[tr_event[:n_tr][tr_dormant[:n_tr]]]])),
        transitions=Transitions(tr_event[:n_tr], tr_from[:n_tr], tr_to[:n_tr], tr_version[:n_tr],
                                tr_ts[:n_tr], tr_dormant[:n_tr]),
    )


def dormancy(state: ShardState, watermark: int, dormant_after_ms: int) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.int16], npt.NDArray[np.int64], int]:
    """Move customers whose ``T + dormant_after`` the watermark passed to ``dormant`` (PRODUCT §4).

    Returns their rows, their stages before, the event times they went dormant at, and
    the earliest time the watermark must pass for anyone else to go dormant.
    """
    if watermark == NO_TIME:
        return _EMPTY_I64, np.empty(0, np.int16), _EMPTY_I64, NO_TIME
    out = np.empty(state.size, dtype=np.int64)
    dormant = state.E.shape[1]  # the stage index after the last stage
    count, earliest = _dormant_rows(watermark, dormant_after_ms, state.T, state.n, state.stage,
                                    dormant, state.size, out)
    rows = out[:count]
    before = state.stage[rows].copy()
    state.stage[rows] = dormant
    return rows, before, state.T[rows] + dormant_after_ms, int(earliest)
