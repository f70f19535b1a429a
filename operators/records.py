"""Output records (topic, key, JSON value), built from state rows in one pass per batch.

Records carry no wall-clock time: a replay after a crash produces identical messages.
"""

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from confluent_kafka import Message

from config.model import DORMANT, JourneyMap
from operators.state import ShardState

OutRecord = tuple[str, bytes | None, bytes]
"""(topic, key, value) as the sink produces it."""

RAW_LIMIT = 65_536


def _bytes_field(data: bytes | None, limit: int) -> dict[str, Any]:
    """Raw bytes as UTF-8 text when they are text, else base64; cut at ``limit`` bytes."""
    if data is None:
        return {"text": None, "encoding": None, "bytes": 0, "truncated": False}
    cut = data[:limit]
    try:
        data.decode("utf-8")
        text, encoding = cut.decode("utf-8", "ignore"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(cut).decode("ascii"), "base64"
    return {"text": text, "encoding": encoding, "bytes": len(data), "truncated": len(data) > limit}


def dead_letter(topic: str, msg: Message, reason: str, detail: str) -> OutRecord:
    """The dead-letter record of PRODUCT §2 for a rejected message."""
    value, msg_key = msg.value(), msg.key()
    raw = _bytes_field(value, RAW_LIMIT)
    key = _bytes_field(msg_key, RAW_LIMIT)
    record = {
        "reason": reason,
        "detail": detail,
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": key["text"],
        "key_encoding": key["encoding"],
        "raw": raw["text"],
        "raw_encoding": raw["encoding"],
        "raw_bytes": raw["bytes"],
        "raw_truncated": raw["truncated"],
        "raw_sha256": hashlib.sha256(value).hexdigest() if value is not None else None,
    }
    return (topic, msg_key, orjson.dumps(record))


class RecordBuilder:
    """Renders scores and transitions of one journey map."""

    def __init__(self, journey: JourneyMap, scores_topic: str, transitions_topic: str) -> None:
        # index + 1 -> name, so that NO_STAGE (-1) renders as None without a branch
        self.names_by_index: tuple[str | None, ...] = (None, *journey.stage_names, DORMANT)
        self.evidence_names = journey.stage_names
        self.saturation = journey.saturation
        self.scores_topic = scores_topic
        self.transitions_topic = transitions_topic

    def stage_name(self, index: int) -> str | None:
        """Name of a stage index; -1 (no stage yet) is None."""
        return self.names_by_index[index + 1]

    def scores(self, state: ShardState, rows: npt.NDArray[np.int64]) -> list[OutRecord]:
        """One score message per row, values derived as PRODUCT §4 says."""
        S = state.S[rows]
        pos = np.maximum(S, 0.0)
        engagement = (100.0 * pos / (pos + self.saturation)).tolist()
        Sd = state.Sd[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            sentiment = np.where(Sd > 0.0, state.Sn[rows] / Sd, np.nan).tolist()
        evidence = state.E[rows].tolist()
        names, stage_names = self.evidence_names, self.names_by_index
        ids = state.ids
        out = []
        dumps = orjson.dumps
        topic = self.scores_topic
        for i, (r, stage, score, n, t) in enumerate(zip(
                rows.tolist(), (state.stage[rows] + 1).tolist(), S.tolist(),
                state.n[rows].tolist(), state.T[rows].tolist(), strict=True)):
            cid = ids[r]
            sent = sentiment[i]
            out.append((topic, cid.encode(), dumps({
                "customer_id": cid,
                "stage": stage_names[stage],
                "score": score,
                "engagement": engagement[i],
                "sentiment": None if sent != sent else sent,
                "evidence": dict(zip(names, evidence[i], strict=True)),
                "events": n,
                "last_event_ts": t,
            })))
        return out

    def transitions(self, customer_ids: Sequence[str], from_stage: npt.NDArray[np.int16],
                    to_stage: npt.NDArray[np.int16], ts: Sequence[int],
                    event_ids: Sequence[str | None], versions: Sequence[int]) -> list[OutRecord]:
        """One record per stage change, in the order given."""
        names, topic, dumps = self.names_by_index, self.transitions_topic, orjson.dumps
        return [(topic, cid.encode(), dumps({
            "customer_id": cid, "from": names[f], "to": names[t], "ts": when, "event_id": eid,
            "version": version,
        })) for cid, f, t, when, eid, version in zip(
            customer_ids, (from_stage + 1).tolist(), (to_stage + 1).tolist(), ts, event_ids, versions,
            strict=True)]
