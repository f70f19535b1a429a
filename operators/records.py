"""Output records (topic, key, JSON value), built from state rows in one pass per batch.

Records carry no wall-clock time: a replay after a crash produces identical messages.
"""

import base64
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson
from confluent_kafka import Message

from config.model import DORMANT, OTHER_CHANNEL, JourneyMap, Topics
from operators.state import ShardState

if TYPE_CHECKING:
    from operators.events import EventBatch
    from operators.windows import ClosedSessions, WindowShares

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


def late_record(topic: str, customer_id: str, msg: Message, late_by_ms: int) -> OutRecord:
    """The late-event record of PRODUCT §5: the event as sent and how late it was.

    Keyed by customer id like every output that has one (the message key may be anything).
    """
    return (topic, customer_id.encode(), orjson.dumps({
        "event": orjson.loads(msg.value() or b"null"),
        "late_by_ms": late_by_ms,
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
    }))


def _nulls(values: npt.NDArray[np.float64]) -> list[float | None]:
    """NaN (nothing to average) as null."""
    return [None if v != v else v for v in values.tolist()]


class RecordBuilder:
    """Renders scores and transitions of one journey map."""

    def __init__(self, journey: JourneyMap, topics: Topics) -> None:
        # index + 1 -> name, so that NO_STAGE (-1) renders as None without a branch
        self.names_by_index: tuple[str | None, ...] = (None, *journey.stage_names, DORMANT)
        self.evidence_names = journey.stage_names
        self.channel_names = (OTHER_CHANNEL, *journey.channels)
        self.channel_keys = tuple(f"channel:{name}".encode() for name in self.channel_names)
        self.type_names = tuple(journey.touchpoints)
        self.saturation = journey.saturation
        self.topics = topics

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
        topic = self.topics.scores
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
        names, topic, dumps = self.names_by_index, self.topics.transitions, orjson.dumps
        return [(topic, cid.encode(), dumps({
            "customer_id": cid, "from": names[f], "to": names[t], "ts": when, "event_id": eid,
            "version": version,
        })) for cid, f, t, when, eid, version in zip(
            customer_ids, (from_stage + 1).tolist(), (to_stage + 1).tolist(), ts, event_ids, versions,
            strict=True)]

    def sessions(self, ids: Sequence[str], closed: "ClosedSessions") -> list[OutRecord]:
        """One record per closed session (PRODUCT §5)."""
        names, channels, topic, dumps = self.names_by_index, self.channel_names, self.topics.sessions, \
            orjson.dumps
        per_session: list[dict[str, int]] = [{} for _ in range(closed.rows.shape[0])]
        which, channel = np.nonzero(closed.channels)
        for i, c, k in zip(which.tolist(), channel.tolist(), closed.channels[which, channel].tolist(),
                           strict=True):
            per_session[i][channels[c]] = k
        return [(topic, ids[r].encode(), dumps({
            "customer_id": ids[r], "session_start": start, "session_end": end,
            "duration_ms": end - start, "events": events, "channels": seen,
            "converted": conv, "stage_end": names[stage],
        })) for r, start, end, events, conv, stage, seen in zip(
            closed.rows.tolist(), closed.start.tolist(), closed.end.tolist(),
            closed.events.tolist(), closed.converted.tolist(), (closed.stage + 1).tolist(),
            per_session, strict=True)]

    def windows(self, w: "WindowShares", width_ms: int, populations: npt.NDArray[np.int64]
                ) -> list[OutRecord]:
        """The channel records (channels with events) and the funnel record of closed windows.

        ``populations`` holds each window's stage populations as of its end.
        """
        topic, dumps = self.topics.metrics, orjson.dumps
        win, ch = np.nonzero(w.events)
        impressions, clicks = w.impressions[win, ch], w.clicks[win, ch]
        sent_n, responses = w.sentiment_n[win, ch], w.responses[win, ch]
        with np.errstate(divide="ignore", invalid="ignore"):
            ctr = _nulls(np.where(impressions > 0, clicks / impressions, np.nan))
            sentiment = _nulls(np.where(sent_n > 0, w.sentiment_sum[win, ch] / sent_n, np.nan))
            response = _nulls(np.where(responses > 0, w.response_time_sum[win, ch] / responses,
                                       np.nan))
        starts = w.starts.tolist()
        ends = (w.starts + width_ms).tolist()
        channels, keys = self.channel_names, self.channel_keys
        out: list[OutRecord] = [
            (topic, keys[c], dumps({
                "kind": "channel", "window_start": starts[j], "window_end": ends[j],
                "channel": channels[c], "events": events, "customers": customers,
                "impressions": impr, "clicks": clk, "ctr": rate, "conversions": conv,
                "sentiment_mean": mean_sentiment, "responses": resp,
                "response_time_mean_ms": mean_response}))
            for j, c, events, customers, impr, clk, rate, conv, mean_sentiment, resp, mean_response
            in zip(win.tolist(), ch.tolist(), w.events[win, ch].tolist(),
                   w.customers[win, ch].tolist(), impressions.tolist(), clicks.tolist(), ctr,
                   w.conversions[win, ch].tolist(), sentiment, responses.tolist(), response,
                   strict=True)]
        names = ["none", *self.names_by_index[1:]]
        moves: list[dict[str, int]] = [{} for _ in starts]
        jj, ff, tt = np.nonzero(w.transitions)
        for j, f, t, n in zip(jj.tolist(), ff.tolist(), tt.tolist(),
                              w.transitions[jj, ff, tt].tolist(), strict=True):
            moves[j][f"{names[f]}>{names[t]}"] = n
        stages = names[1:]
        out += [(topic, b"funnel", dumps({
            "kind": "funnel", "window_start": start, "window_end": end, "transitions": moved,
            "populations": dict(zip(stages, pops[1:], strict=True)),
        })) for start, end, moved, pops in zip(starts, ends, moves, populations.tolist(), strict=True)]
        return out

    def late_at_shard(self, batch: "EventBatch", idx: Sequence[int], watermark: int) -> list[OutRecord]:
        """Late records for events found late only where they were scored (no raw message there).

        Rare: a shard can hear a watermark from another worker before an event that was on
        time where it was read. The event is rebuilt from its columns; the source position
        is unknown (null).
        """
        topic, dumps = self.topics.late, orjson.dumps
        out: list[OutRecord] = []
        for i in idx:
            cid, ts, sent = batch.customer_ids[i], int(batch.ts[i]), float(batch.sentiment[i])
            event = {"event_id": batch.event_ids[i], "customer_id": cid, "ts": ts,
                     "type": self.type_names[batch.type_idx[i]],
                     "channel": self.channel_names[batch.chan_idx[i]],
                     "sentiment": None if sent != sent else sent}
            out.append((topic, cid.encode(), dumps({"event": event, "late_by_ms": watermark - ts,
                                                    "topic": None, "partition": None,
                                                    "offset": None})))
        return out
