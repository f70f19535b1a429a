"""Output records (topic, key, JSON value) the engine makes, declared once and written in blocks.

Every record kind's fields are declared below, once: name, format, the column its value
comes from and the text table its pieces come from. The literal pieces of the JSON
(``{"customer_id":``), the field order and the kernel's layout are all derived from
that declaration, and ``json_kernels._render`` writes a whole batch of records into one
buffer, byte for byte what ``orjson`` writes for the same dict. Records carry no
wall-clock time: a replay after a crash produces identical messages.
"""

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from config.model import DORMANT, OTHER_CHANNEL, JourneyMap, Topics
from operators.base import EventBatch, Output, OutRecord, RecordBlock
from operators.columns import I64
from operators.json_kernels import INT, OBJECT, PIECE, RecordLayout, RecordValues, _render
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
CONST = -1
"""A field whose value is the same JSON text in every record (folded into the literal pieces)."""


class Field(NamedTuple):
    """One JSON field of a record kind."""

    name: str
    format: int  # INT, PIECE, OBJECT (json_kernels) or CONST
    column: str = ""  # INT: the integer's column; PIECE: the piece number's; OBJECT: the entry set
    table: str = ""  # PIECE: the text table of the piece; OBJECT: of the keys; CONST: the JSON text
    value_table: str = ""  # OBJECT: the text table of the values ("": integers)


SCORE = (
    Field("customer_id", PIECE, "row", "customers"),
    Field("stage", PIECE, "stage", "stages"),
    Field("score", PIECE, "score", "floats"),
    Field("engagement", PIECE, "engagement", "floats"),
    Field("sentiment", PIECE, "sentiment", "floats"),
    Field("evidence", OBJECT, "evidence", "evidence", "floats"),
    Field("events", INT, "events"),
    Field("last_event_ts", INT, "last_event_ts"),
)
TRANSITION = (
    Field("customer_id", PIECE, "row", "customers"),
    Field("from", PIECE, "from", "stages"),
    Field("to", PIECE, "to", "stages"),
    Field("ts", INT, "ts"),
    Field("event_id", PIECE, "event", "event_ids"),
    Field("version", INT, "version"),
)
SESSION = (
    Field("customer_id", PIECE, "row", "customers"),
    Field("session_start", INT, "start"),
    Field("session_end", INT, "end"),
    Field("duration_ms", INT, "duration"),
    Field("events", INT, "events"),
    Field("channels", OBJECT, "channels", "channels"),
    Field("converted", PIECE, "converted", "booleans"),
    Field("stage_end", PIECE, "stage", "stages"),
)
CHANNEL_WINDOW = (
    Field("kind", CONST, table='"channel"'),
    Field("window_start", INT, "start"),
    Field("window_end", INT, "end"),
    Field("channel", PIECE, "channel", "channels"),
    Field("events", INT, "events"),
    Field("customers", INT, "customers"),
    Field("impressions", INT, "impressions"),
    Field("clicks", INT, "clicks"),
    Field("ctr", PIECE, "ctr", "floats"),
    Field("conversions", INT, "conversions"),
    Field("sentiment_mean", PIECE, "sentiment_mean", "floats"),
    Field("responses", INT, "responses"),
    Field("response_time_mean_ms", PIECE, "response_time_mean_ms", "floats"),
)
FUNNEL = (
    Field("kind", CONST, table='"funnel"'),
    Field("window_start", INT, "start"),
    Field("window_end", INT, "end"),
    Field("transitions", OBJECT, "transitions", "moves"),
    Field("populations", OBJECT, "populations", "populations"),
)


class Texts(NamedTuple):
    """A text table: pieces one separator byte apart in ``blob``, piece ``i`` from ``offsets[i]``."""

    blob: U8  # read-only, so every table has one type for the kernel
    offsets: I64
    longest: int


class Entries(NamedTuple):
    """An object field's entries: record ``i`` has entries ``first[i]:first[i + 1]``."""

    first: I64
    keys: I64
    values: I64


def _read_only(blob: U8) -> U8:
    view = blob.view()
    view.flags.writeable = False
    return view


def _pieces(texts: Sequence[bytes]) -> Texts:
    """Texts as one blob, a separator byte apart."""
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) + 1 for t in texts])
    return Texts(np.frombuffer(b",".join(texts), dtype=np.uint8), offsets,
                 max((len(t) for t in texts), default=0))


def _json_strings(texts: Sequence[str | None]) -> Texts:
    """Strings in JSON (None as null), laid out as ``_pieces`` does, from one ``orjson`` call.

    Without a backslash in the output and with no null, every quote is a string's first or
    last byte.
    """
    whole = orjson.dumps(texts)
    if b"\\" in whole or b"null" in whole or not texts:
        return _pieces([orjson.dumps(t) for t in texts])
    body = np.frombuffer(whole, dtype=np.uint8)[1:-1]
    quotes = np.flatnonzero(body == ord('"'))
    offsets = np.append(quotes[::2], body.size + 1)
    return Texts(body, offsets, int(np.diff(offsets).max()) - 1)


def _float_texts(values: npt.NDArray[np.float64]) -> Texts:
    """The text orjson writes for each value (NaN as null), laid out as ``_pieces`` does."""
    body = np.frombuffer(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY), dtype=np.uint8)[1:-1]
    offsets = np.concatenate(([0], np.flatnonzero(body == ord(",")) + 1, [body.size + 1]))
    return Texts(body, offsets, int(np.diff(offsets).max()) - 1)


def _names(names: Sequence[str | None]) -> Texts:
    """Names as JSON strings (None as null)."""
    return _pieces([orjson.dumps(name) for name in names])


def _dense(table: npt.NDArray[np.int64], skip_zeros: bool) -> Entries:
    """A [record, key] table as entries (every key, or only the keys whose value is not zero)."""
    n, k = table.shape
    if not skip_zeros:
        return Entries(np.arange(n + 1, dtype=np.int64) * k, np.tile(np.arange(k, dtype=np.int64), n),
                       np.ascontiguousarray(table, dtype=np.int64).ravel())
    flat = np.flatnonzero(table)
    record, key = np.divmod(flat, k)
    return Entries(np.searchsorted(record, np.arange(n + 1)).astype(np.int64), key,
                   table.ravel()[flat].astype(np.int64))


def _block(topic: str, keys: list[bytes], buf: U8, ends: I64) -> list[Output]:
    """The records a kernel wrote one after another into ``buf``, as a block (none if empty)."""
    bounds = ends.tolist()
    return [RecordBlock(topic, keys, buf[: bounds[-1]].tobytes(), bounds)] if bounds else []


class RecordKind:
    """A record kind's layout, derived once from its declared fields; renders batches of records."""

    def __init__(self, fields: Sequence[Field]) -> None:
        self.fields = tuple(fields)
        literals: list[str] = []
        text = "{"
        written: list[Field] = []
        for f in fields:
            text += ("" if text == "{" else ",") + orjson.dumps(f.name).decode() + ":"
            if f.format == CONST:
                text += f.table
                continue
            literals.append(text + ("{" if f.format == OBJECT else ""))
            text = "}" if f.format == OBJECT else ""
            written.append(f)
        literals.append(text + "}")
        self.literals = _pieces([t.encode() for t in literals])
        self.columns = tuple(dict.fromkeys(f.column for f in written if f.format != OBJECT))
        self.entry_sets = tuple(f.column for f in written if f.format == OBJECT)
        self.tables = ("", *dict.fromkeys(t for f in written for t in (f.table, f.value_table) if t))
        table = {name: i for i, name in enumerate(self.tables)}
        self.written = tuple(written)
        self.layout = RecordLayout(
            np.array([f.format for f in written], dtype=np.int64),
            np.array([self.entry_sets.index(f.column) if f.format == OBJECT else self.columns.index(f.column)
                      for f in written], dtype=np.int64),
            np.array([table.get(f.table, 0) for f in written], dtype=np.int64),
            np.array([table[f.value_table] if f.value_table else -1 for f in written], dtype=np.int64),
        )

    def render(self, topic: str, keys: list[bytes], columns: Mapping[str, npt.NDArray[Any]],
               tables: Mapping[str, Texts], entries: Mapping[str, Entries] | None = None) -> list[Output]:
        """One record per key, from its integer ``columns``, text ``tables`` and object ``entries``."""
        n = len(keys)
        if not n:
            return []
        entries = entries or {}
        texts = [self.literals, *(tables[t] for t in self.tables[1:])]
        size = n * (int(self.literals.offsets[-1]) + sum(
            _INT_WIDTH if f.format == INT else tables[f.table].longest
            for f in self.written if f.format != OBJECT))
        for f in self.written:
            if f.format == OBJECT:
                e = entries[f.column]
                value = tables[f.value_table].longest if f.value_table else _INT_WIDTH
                size += e.keys.size * (tables[f.table].longest + 2 + value)
        sets = [entries[name] for name in self.entry_sets] or [Entries(*([np.zeros(1, np.int64)] * 3))]
        values = RecordValues(
            np.stack([np.asarray(columns[c], dtype=np.int64) for c in self.columns], axis=1),
            tuple(_read_only(t.blob) for t in texts), tuple(t.offsets for t in texts),
            tuple(e.first for e in sets), tuple(e.keys for e in sets), tuple(e.values for e in sets))
        buf = np.empty(size, dtype=np.uint8)
        ends = np.empty(n, dtype=np.int64)
        _render(buf, ends, self.layout, values)
        return _block(topic, keys, buf, ends)


class CustomerTexts:
    """One shard's customer ids as message keys and as a text table (JSON strings, by row).

    Made once per customer, when a record first needs them: a replay of sparse history
    closes about one session per event, and rendering the id for each cost more than the
    rest of the record. Rows only ever get added, so the texts only ever get extended.
    """

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.blob = np.zeros(0, dtype=np.uint8)
        self.offsets = np.zeros(1, dtype=np.int64)  # piece ``row`` as in ``_pieces``
        self.longest = 0

    def cover(self, ids: Sequence[str]) -> Texts:
        """Texts for every id in ``ids`` (a shard's ids by row); the table of them all."""
        have = len(self.keys)
        if len(ids) != have:
            new = list(ids[have:])
            self.keys += [cid.encode() for cid in new]
            texts = _json_strings(new)
            at = int(self.offsets[-1])  # the new pieces start a separator byte after the last
            blob = texts.blob
            if at + blob.size > self.blob.size:
                grown = np.empty(max(at + blob.size, 2 * self.blob.size, 4096), dtype=np.uint8)
                grown[: self.blob.size] = self.blob
                self.blob = grown
            self.blob[at: at + blob.size] = blob
            self.offsets = np.concatenate((self.offsets, texts.offsets[1:] + at))
            self.longest = max(self.longest, texts.longest)
        return Texts(self.blob, self.offsets, self.longest)


_BOOLEANS = _pieces([b"false", b"true"])


class RecordBuilder:
    """Renders every record of one journey map: scores, transitions, sessions, windows, late events."""

    def __init__(self, journey: JourneyMap, topics: Topics) -> None:
        # index + 1 -> name, so that NO_STAGE (-1) renders as None without a branch
        self.names_by_index: tuple[str | None, ...] = (None, *journey.stage_names, DORMANT)
        self.channel_names = (OTHER_CHANNEL, *journey.channels)
        self.channel_keys = tuple(f"channel:{name}".encode() for name in self.channel_names)
        self.type_names = tuple(journey.touchpoints)
        # funnel index (stage + 1) -> name; a transition's key is from * funnel_size + to
        self.funnel_names = ("none", *self.names_by_index[1:])
        self.funnel_size = len(self.funnel_names)
        self.tables = {
            "stages": _names(self.names_by_index),  # by stage + 1: null, stages, dormant
            "evidence": _names(journey.stage_names),
            "channels": _names(self.channel_names),
            "moves": _names([f"{a}>{b}" for a in self.funnel_names for b in self.funnel_names]),
            "populations": _names(self.funnel_names[1:]),
            "booleans": _BOOLEANS,
        }
        self.kinds = {name: RecordKind(fields) for name, fields in (
            ("scores", SCORE), ("transitions", TRANSITION), ("sessions", SESSION),
            ("channels", CHANNEL_WINDOW), ("funnels", FUNNEL))}
        self.n_stages = len(journey.stage_names)
        self.saturation = journey.saturation
        self.topics = topics

    def stage_name(self, index: int) -> str | None:
        """Name of a stage index; -1 (no stage yet) is None."""
        return self.names_by_index[index + 1]

    def scores(self, customers: CustomerTexts, state: ShardState, rows: I64) -> list[Output]:
        """One score record per row, values derived as PRODUCT §4 says."""
        n, k = rows.size, self.n_stages
        if not n:
            return []
        S = state.S[rows]
        pos = np.maximum(S, 0.0)
        Sd = state.Sd[rows]
        floats = np.empty((n, 3 + k), dtype=np.float64)
        floats[:, 0] = S
        floats[:, 1] = 100.0 * pos / (pos + self.saturation)
        with np.errstate(divide="ignore", invalid="ignore"):
            floats[:, 2] = np.where(Sd > 0.0, state.Sn[rows] / Sd, np.nan)
        floats[:, 3:] = state.E[rows]
        piece = np.arange(n, dtype=np.int64) * (3 + k)
        table = customers.cover(state.ids)
        keys = customers.keys
        return self.kinds["scores"].render(
            self.topics.scores, [keys[r] for r in rows.tolist()],
            {"row": rows, "stage": state.stage[rows] + 1, "score": piece, "engagement": piece + 1,
             "sentiment": piece + 2, "events": state.n[rows], "last_event_ts": state.T[rows]},
            {**self.tables, "customers": table, "floats": _float_texts(floats.ravel())},
            {"evidence": Entries(np.arange(n + 1, dtype=np.int64) * k,
                                 np.tile(np.arange(k, dtype=np.int64), n),
                                 (piece[:, None] + 3 + np.arange(k)).ravel())},
        )

    def transitions(self, customers: CustomerTexts, ids: Sequence[str], rows: I64,
                    from_stage: npt.NDArray[np.int16], to_stage: npt.NDArray[np.int16], ts: I64,
                    event_ids: Sequence[str | None], versions: I64) -> list[Output]:
        """One record per stage change, in the order given (``rows`` of the shard's ``ids``)."""
        table = customers.cover(ids)
        keys = customers.keys
        return self.kinds["transitions"].render(
            self.topics.transitions, [keys[r] for r in rows.tolist()],
            {"row": rows, "from": from_stage + 1, "to": to_stage + 1, "ts": ts,
             "event": np.arange(rows.size), "version": versions},
            {**self.tables, "customers": table, "event_ids": _json_strings(event_ids)},
        )

    def sessions(self, customers: CustomerTexts, ids: Sequence[str], closed: ClosedSessions
                 ) -> list[Output]:
        """One record per closed session (PRODUCT §5); ``ids`` the shard's, ``customers`` their texts."""
        table = customers.cover(ids)
        keys = customers.keys
        return self.kinds["sessions"].render(
            self.topics.sessions, [keys[r] for r in closed.rows.tolist()],
            {"row": closed.rows, "start": closed.start, "end": closed.end,
             "duration": closed.end - closed.start, "events": closed.events,
             "converted": closed.converted, "stage": closed.stage.astype(np.int64) + 1},
            {**self.tables, "customers": table},
            {"channels": _dense(closed.channels, skip_zeros=True)},
        )

    def windows(self, w: WindowShares, width_ms: int, populations: I64) -> list[Output]:
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
        piece = 3 * np.arange(ch.start.size, dtype=np.int64)
        keys = self.channel_keys
        out = self.kinds["channels"].render(
            topic, [keys[c] for c in ch.channel.tolist()],
            {"start": ch.start, "end": ch.start + width_ms, "channel": ch.channel,
             "events": counts[EVENTS], "customers": counts[CUSTOMERS], "impressions": impressions,
             "clicks": clicks, "ctr": piece, "conversions": counts[CONVERSIONS],
             "sentiment_mean": piece + 1, "responses": responses, "response_time_mean_ms": piece + 2},
            {**self.tables, "floats": _float_texts(means.ravel())},
        ) if ch.start.size else []
        tr, starts = w.transitions, w.starts
        first = np.searchsorted(tr.start, np.append(starts, starts[-1] + 1)).astype(np.int64)
        return out + self.kinds["funnels"].render(
            topic, [b"funnel"] * starts.size, {"start": starts, "end": starts + width_ms}, self.tables,
            {"transitions": Entries(first, tr.key, tr.value),
             "populations": _dense(populations[:, 1:], skip_zeros=False)},
        )

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
