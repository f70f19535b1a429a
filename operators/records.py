"""Output records (topic, key, JSON value), built from state rows in one pass per batch.

Records carry no wall-clock time: a replay after a crash produces identical messages.
Sessions and windows, which come by the hundred thousand in a replay, are written by
the kernels of ``json_kernels``; the rest are dicts for ``orjson``.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import orjson

from config.model import DORMANT, OTHER_CHANNEL, JourneyMap, Topics
from operators.base import EventBatch, Output, OutRecord, RecordBlock
from operators.json_kernels import _channels, _funnels, _sessions
from operators.state import ShardState
from operators.window_kernels import (
    CLICKS,
    CONVERSIONS,
    CUSTOMERS,
    EVENTS,
    IMPRESSIONS,
    RESPONSE_TIME_SUM,
    RESPONSES,
    SENTIMENT_N,
    SENTIMENT_SUM,
)
from operators.windows import ClosedSessions, WindowShares

U8 = npt.NDArray[np.uint8]
_INT_WIDTH = 20  # the longest int64 in decimal, sign included


def _pieces(texts: Sequence[bytes]) -> tuple[U8, npt.NDArray[np.int64]]:
    """Texts as one blob, a separator byte apart, and where each starts (json_kernels)."""
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) + 1 for t in texts])
    return np.frombuffer(b",".join(texts), dtype=np.uint8), offsets


def _json_strings(texts: list[str]) -> tuple[U8, npt.NDArray[np.int64]]:
    """Strings in JSON, laid out as ``_pieces`` does, from one ``orjson`` call when none needs escaping.

    Without a backslash in the output every quote is a string's first or last byte.
    """
    whole = orjson.dumps(texts)
    if b"\\" in whole:
        return _pieces([orjson.dumps(t) for t in texts])
    body = np.frombuffer(whole, dtype=np.uint8)[1:-1]
    quotes = np.flatnonzero(body == ord('"'))
    return body, np.append(quotes[::2], body.size + 1)


def _float_texts(values: npt.NDArray[np.float64]) -> tuple[U8, npt.NDArray[np.int64]]:
    """The text orjson writes for each value (NaN as null), laid out as ``_pieces`` does."""
    body = np.frombuffer(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY), dtype=np.uint8)[1:-1]
    commas = np.flatnonzero(body == ord(","))
    return body, np.concatenate(([0], commas + 1, [body.size + 1]))


def _literals(*texts: str) -> tuple[U8, ...]:
    return tuple(np.frombuffer(t.encode(), dtype=np.uint8) for t in texts)


class _Texts:
    """Names as JSON strings, laid out for the kernels, and the longest one's length."""

    def __init__(self, names: Sequence[str | None]) -> None:
        texts = [orjson.dumps(name) for name in names]
        self.blob, self.offsets = _pieces(texts)
        self.longest = max(len(t) for t in texts)


def _block(topic: str, keys: list[bytes], buf: U8, ends: npt.NDArray[np.int64]) -> list[Output]:
    """The records a kernel wrote one after another into ``buf``, as a block (none if empty)."""
    bounds = ends.tolist()
    return [RecordBlock(topic, keys, buf[: bounds[-1]].tobytes(), bounds)] if bounds else []


class CustomerTexts:
    """One shard's customer ids as message keys and as JSON strings (laid out for the kernels).

    Made once per customer, when a record first needs them: a replay of sparse history
    closes about one session per event, and rendering the id for each cost more than the
    rest of the record. Rows only ever get added, so the texts only ever get extended.
    """

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.blob = np.zeros(0, dtype=np.uint8)
        self.offsets = np.zeros(1, dtype=np.int64)  # piece ``row`` as in ``_pieces``
        self.longest = 0

    def cover(self, ids: Sequence[str]) -> None:
        """Texts for every id in ``ids`` (a shard's ids by row)."""
        have = len(self.keys)
        if len(ids) == have:
            return
        new = list(ids[have:])
        self.keys += [cid.encode() for cid in new]
        blob, offsets = _json_strings(new)
        at = int(self.offsets[-1])  # the new pieces start a separator byte after the last
        if at + blob.size > self.blob.size:
            grown = np.empty(max(at + blob.size, 2 * self.blob.size, 4096), dtype=np.uint8)
            grown[: self.blob.size] = self.blob
            self.blob = grown
        self.blob[at: at + blob.size] = blob
        self.offsets = np.concatenate((self.offsets, offsets[1:] + at))
        self.longest = max(self.longest, int(np.diff(offsets).max()) - 1)


class RecordBuilder:
    """Renders every record of one journey map: scores, transitions, sessions, windows, late events."""

    def __init__(self, journey: JourneyMap, topics: Topics) -> None:
        # index + 1 -> name, so that NO_STAGE (-1) renders as None without a branch
        self.names_by_index: tuple[str | None, ...] = (None, *journey.stage_names, DORMANT)
        self.evidence_names = journey.stage_names
        self.channel_names = (OTHER_CHANNEL, *journey.channels)
        self.channel_keys = tuple(f"channel:{name}".encode() for name in self.channel_names)
        self.type_names = tuple(journey.touchpoints)
        # funnel index (stage + 1) -> name; a transition's key is from * funnel_size + to
        self.funnel_names = ("none", *self.names_by_index[1:])
        self.funnel_size = len(self.funnel_names)
        self.move_names = tuple(f"{a}>{b}" for a in self.funnel_names for b in self.funnel_names)
        self.channel_texts = _Texts(self.channel_names)
        self.stage_texts = _Texts(self.names_by_index)  # by stage + 1: null, stages, dormant
        self.population_texts = _Texts(self.funnel_names[1:])
        self.move_texts = _Texts(self.move_names)
        self.session_lit = _literals('{"customer_id":', ',"session_start":', ',"session_end":',
                                     ',"duration_ms":', ',"events":', ',"channels":{',
                                     '},"converted":true', '},"converted":false', ',"stage_end":')
        self.channel_lit = _literals('{"kind":"channel","window_start":', ',"window_end":',
                                     ',"channel":', ',"events":', ',"customers":', ',"impressions":',
                                     ',"clicks":', ',"ctr":', ',"conversions":', ',"sentiment_mean":',
                                     ',"responses":', ',"response_time_mean_ms":')
        self.funnel_lit = _literals('{"kind":"funnel","window_start":', ',"window_end":',
                                    ',"transitions":{', '},"populations":{', '}}')
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

    def sessions(self, customers: CustomerTexts, ids: Sequence[str], closed: ClosedSessions
                 ) -> list[Output]:
        """One record per closed session (PRODUCT §5); ``ids`` the shard's, ``customers`` their texts."""
        n = closed.rows.shape[0]
        if not n:
            return []
        customers.cover(ids)
        chans, stages = self.channel_texts, self.stage_texts
        per_record = (sum(t.size for t in self.session_lit) + 4 * _INT_WIDTH + stages.longest + 1
                      + customers.longest + closed.channels.shape[1] * (chans.longest + 2 + _INT_WIDTH))
        buf = np.empty(n * per_record, dtype=np.uint8)
        ends = np.empty(n, dtype=np.int64)
        _sessions(buf, ends, self.session_lit, customers.blob, customers.offsets, closed.rows,
                  closed.start, closed.end, closed.events, closed.converted,
                  closed.stage.astype(np.int64) + 1, closed.channels, chans.blob, chans.offsets,
                  stages.blob, stages.offsets)
        keys = customers.keys
        return _block(self.topics.sessions, [keys[r] for r in closed.rows.tolist()], buf, ends)

    def windows(self, w: WindowShares, width_ms: int, populations: npt.NDArray[np.int64]
                ) -> list[Output]:
        """The channel records and the funnel record of closed windows, from their totals.

        ``w`` is ``WindowShares.totals()``; ``populations`` holds each window's stage
        populations (by funnel index) as of its end.
        """
        topic = self.topics.metrics
        ch = w.channels
        counts = ch.counts.T
        impressions, clicks = counts[IMPRESSIONS], counts[CLICKS]
        sent_n, responses = counts[SENTIMENT_N], counts[RESPONSES]
        with np.errstate(divide="ignore", invalid="ignore"):
            means = np.stack([np.where(impressions > 0, clicks / impressions, np.nan),
                              np.where(sent_n > 0, ch.sums[:, SENTIMENT_SUM] / sent_n, np.nan),
                              np.where(responses > 0, ch.sums[:, RESPONSE_TIME_SUM] / responses, np.nan)],
                             axis=1)
        floats, float_offsets = _float_texts(means.ravel())
        n = ch.start.size
        chans = self.channel_texts
        buf = np.empty(n * (sum(t.size for t in self.channel_lit) + 8 * _INT_WIDTH + chans.longest + 1)
                       + floats.size, dtype=np.uint8)
        ends = np.empty(n, dtype=np.int64)
        _channels(buf, ends, self.channel_lit, ch.start, width_ms, ch.channel,
                  np.ascontiguousarray(ch.counts[:, [EVENTS, CUSTOMERS, IMPRESSIONS, CLICKS,
                                                     CONVERSIONS, RESPONSES]]),
                  floats, float_offsets, chans.blob, chans.offsets)
        keys = self.channel_keys
        out = _block(topic, [keys[c] for c in ch.channel.tolist()], buf, ends)
        tr, moves, stages = w.transitions, self.move_texts, self.population_texts
        k = w.starts.size
        pops = np.ascontiguousarray(populations[:, 1:])
        buf = np.empty(k * (sum(t.size for t in self.funnel_lit) + 2 * _INT_WIDTH
                            + pops.shape[1] * (stages.longest + 2 + _INT_WIDTH))
                       + tr.key.size * (moves.longest + 2 + _INT_WIDTH), dtype=np.uint8)
        ends = np.empty(k, dtype=np.int64)
        _funnels(buf, ends, self.funnel_lit, w.starts, width_ms,
                 np.searchsorted(tr.start, np.append(w.starts, w.starts[-1] + 1)), tr.key, tr.value,
                 moves.blob, moves.offsets, pops, stages.blob, stages.offsets)
        return out + _block(topic, [b"funnel"] * k, buf, ends)

    def late_at_shard(self, batch: EventBatch, idx: Sequence[int], watermark: int) -> list[OutRecord]:
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
