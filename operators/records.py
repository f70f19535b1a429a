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

from config.model import BEFORE_ENTRY, DORMANT, OTHER_CHANNEL, JourneyMap, Topics
from operators.base import EventBatch, Output, OutRecord, RecordBlock
from operators.columns import I64
from operators.json_kernels import (
    CALL_TEXT,
    CUSTOMER_TEXT,
    ENTRIES,
    ESCAPED_BYTES,
    INT,
    NUMBER,
    OBJECT,
    PIECE,
    STATIC_TEXT,
    RecordLayout,
    RecordValues,
    _array_items,
    _render,
)
from operators.score_kernels import _score_values
from operators.state import CustomerIndex, ShardState
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
CUSTOMER_IDS = "customers"
"""Where a field's text is the customer id of the record's row, from the shard's ``CustomerIndex``."""
CAUSES = ("event", "dormant", "map")
"""What a transition record says moved the customer: an event, inactivity, or a new map applied live."""
EVENT_CAUSE, DORMANT_CAUSE, MAP_CAUSE = range(len(CAUSES))


class Field(NamedTuple):
    """One JSON field of a record kind."""

    name: str
    format: int  # INT, PIECE, OBJECT, ENTRIES (json_kernels) or CONST
    column: str = ""  # the column of the value (the piece number; OBJECT: a block of one per key)
    table: str = ""  # PIECE: the text table of the piece; OBJECT, ENTRIES: of the keys
    value_table: str = ""  # OBJECT, ENTRIES: the call's text table of the values ("": integers)
    skip_zeros: bool = False  # OBJECT: leave out keys whose value is 0
    text: str = ""  # CONST: the value's JSON text (or, without it, the one piece of ``table``)


SCORE = (
    Field("customer_id", PIECE, "row", CUSTOMER_IDS),
    Field("stage", PIECE, "stage", "stages"),
    Field("score", PIECE, "score", "floats"),
    Field("engagement", PIECE, "engagement", "floats"),
    Field("sentiment", PIECE, "sentiment", "floats"),
    Field("evidence", OBJECT, "evidence", "evidence", "floats"),
    Field("events", INT, "events"),
    Field("last_event_ts", INT, "last_event_ts"),
    Field("map", CONST, table="map"),
)
TRANSITION = (
    Field("customer_id", PIECE, "row", CUSTOMER_IDS),
    Field("from", PIECE, "from", "stages"),
    Field("to", PIECE, "to", "stages"),
    Field("ts", INT, "ts"),
    Field("event_id", PIECE, "event", "event_ids"),
    Field("version", INT, "version"),
    Field("cause", PIECE, "cause", "causes"),
    Field("map", CONST, table="map"),
)
SESSION = (
    Field("customer_id", PIECE, "row", CUSTOMER_IDS),
    Field("session_start", INT, "start"),
    Field("session_end", INT, "end"),
    Field("duration_ms", INT, "duration"),
    Field("events", INT, "events"),
    Field("channels", OBJECT, "channels", "channels", skip_zeros=True),
    Field("converted", PIECE, "converted", "booleans"),
    Field("stage_end", PIECE, "stage", "stages"),
)
CHANNEL_WINDOW = (
    Field("kind", CONST, text='"channel"'),
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
    Field("kind", CONST, text='"funnel"'),
    Field("window_start", INT, "start"),
    Field("window_end", INT, "end"),
    Field("transitions", ENTRIES, "transitions", "moves"),
    Field("populations", OBJECT, "populations", "populations"),
)


class Texts(NamedTuple):
    """A text table: pieces one separator byte apart in ``blob``, piece ``i`` from ``offsets[i]``."""

    blob: U8
    offsets: I64


class Entries(NamedTuple):
    """An ENTRIES field's entries: record ``i`` has entries ``first[i]:first[i + 1]``."""

    first: I64
    keys: I64  # the key: a piece number of the field's key table
    values: I64


def _pieces(texts: Sequence[bytes]) -> Texts:
    """Texts as one blob, a separator byte apart."""
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) + 1 for t in texts])
    return Texts(np.frombuffer(b",".join(texts), dtype=np.uint8), offsets)


_NONE = _pieces([])
_NO_ENTRIES = Entries(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))


def _items(whole: bytes, n: int) -> Texts:
    """The ``n`` items of a JSON array orjson wrote, laid out as ``_pieces`` does (one scan)."""
    if not n:
        return _NONE
    body = np.frombuffer(whole, dtype=np.uint8)[1:-1]
    offsets = np.empty(n + 1, dtype=np.int64)
    _array_items(body, offsets)
    return Texts(body, offsets)


def _json_strings(texts: Sequence[str | None]) -> Texts:
    """Strings in JSON (None as null), laid out as ``_pieces`` does, from one ``orjson`` call."""
    return _items(orjson.dumps(texts), len(texts))


def _float_texts(values: npt.NDArray[np.float64]) -> Texts:
    """The text orjson writes for each value (NaN as null), laid out as ``_pieces`` does."""
    return _items(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY), values.size)


def _names(names: Sequence[str | None]) -> list[bytes]:
    """Names as JSON strings (None as null)."""
    return [orjson.dumps(name) for name in names]


def _block(topic: str, keys: list[bytes], buf: U8, ends: I64) -> list[Output]:
    """The records a kernel wrote one after another into ``buf``, as a block (none if empty)."""
    bounds = ends.tolist()
    return [RecordBlock(topic, keys, buf[: bounds[-1]].tobytes(), bounds)] if bounds else []


class RecordKind:
    """A record kind's layout, derived once from its declared fields; renders batches of records.

    ``names`` are the text tables of names the fields may refer to (stages, channels...):
    with the literal pieces they make the kind's static table. Any other table but the
    customer ids is the one table of text a call brings (floats, event ids), each of its
    pieces written once.
    """

    def __init__(self, fields: Sequence[Field], names: Mapping[str, Sequence[bytes]]) -> None:
        literals: list[str] = []
        written: list[Field] = []
        text = "{"
        for f in fields:
            text += ("" if text == "{" else ",") + orjson.dumps(f.name).decode() + ":"
            if f.format == CONST:
                text += f.text or names[f.table][0].decode()
                continue
            literals.append(text + ("{" if f.format in (OBJECT, ENTRIES) else ""))
            text = "}" if f.format in (OBJECT, ENTRIES) else ""
            written.append(f)
        literals.append(text + "}")
        _check(written, names)
        pieces = [t.encode() for t in literals]
        base: dict[str, int] = {}
        for t in dict.fromkeys(f.table for f in written if f.table in names):
            base[t] = len(pieces)
            pieces += names[t]
        static = _pieces(pieces)

        def source(table: str) -> int:
            if not table:
                return NUMBER
            return STATIC_TEXT if table in names else CUSTOMER_TEXT if table == CUSTOMER_IDS else CALL_TEXT

        widths = {f.column: len(names[f.table]) if f.format == OBJECT else 1
                  for f in written if f.format != ENTRIES}
        starts = dict(zip(widths, np.cumsum([0, *widths.values()]).tolist(), strict=False))
        self.plan = [(name, starts[name], width) for name, width in widths.items()]
        self.width = sum(widths.values())
        per_field = [np.array(column, dtype=np.int64) for column in zip(*(
            (f.format, starts.get(f.column, 0), widths.get(f.column, 0),
             source(f.value_table if f.format in (OBJECT, ENTRIES) else f.table),
             base.get(f.table, 0), f.skip_zeros) for f in written), strict=True)]
        self.layout = RecordLayout._make([*per_field, static.blob, static.offsets])
        # bytes a record takes at most, but for the customer ids and a call's texts
        longest = {t: max(map(len, names[t])) for t in base}
        self.fixed = int(static.offsets[len(literals)]) - len(literals) + sum(
            _INT_WIDTH if f.format == INT
            else longest.get(f.table, 0) if f.format == PIECE
            else widths[f.column] * (longest[f.table] + 2 + (0 if f.value_table else _INT_WIDTH))
            for f in written if f.format != ENTRIES)
        self.customer_fields = sum(1 for f in written if f.table == CUSTOMER_IDS)
        self.entry_bytes = max((longest[f.table] + 2 + _INT_WIDTH for f in written if f.format == ENTRIES),
                               default=0)

    def render(self, topic: str, keys: list[bytes], columns: Mapping[str, npt.NDArray[Any]], *,
               customers: CustomerIndex | None = None, texts: Texts = _NONE,
               entries: Entries = _NO_ENTRIES) -> list[Output]:
        """One record per key, from its ``columns``, the customer ids, a call's ``texts`` and ``entries``."""
        n = len(keys)
        if not n:
            return []
        ints = np.empty((n, self.width), dtype=np.int64)
        for name, at, width in self.plan:
            if width == 1:
                ints[:, at] = columns[name]
            else:
                ints[:, at: at + width] = columns[name]
        if self.customer_fields and customers is None:
            msg = "this record kind writes customer ids: pass the shard's CustomerIndex"
            raise ValueError(msg)
        ids = (_NONE.blob, _NONE.offsets) if customers is None else (customers.ix.text, customers.ix.ends)
        id_bytes = 0 if customers is None else ESCAPED_BYTES * customers.longest + 2  # quoted
        size = n * self.fixed + texts.blob.size + entries.keys.size * self.entry_bytes + (
            n * self.customer_fields * id_bytes)
        buf = np.empty(size, dtype=np.uint8)
        ends = np.empty(n, dtype=np.int64)
        written = _render(buf, ends, self.layout, RecordValues(ints, entries.first, entries.keys,
                                                               entries.values, *ids, *texts))
        if written > size:  # a tripwire: the sizing above is an upper bound by construction
            msg = f"rendering {topic} records overran their buffer ({written} > {size} bytes)"
            raise RuntimeError(msg)
        return _block(topic, keys, buf, ends)


def _check(written: Sequence[Field], names: Mapping[str, Sequence[bytes]]) -> None:
    """Refuse a declaration the kernel would write wrong: where each field's text comes from."""
    per_call = {t for f in written for t in (f.table, f.value_table)} - {"", CUSTOMER_IDS, *names}
    for f in written:
        problem = None
        if f.format == PIECE and not f.table:
            problem = "a PIECE needs the table its piece comes from"
        elif f.format in (OBJECT, ENTRIES) and f.table not in names:
            problem = "an object's keys come from a table of names"
        elif f.format in (OBJECT, ENTRIES) and f.value_table and f.value_table not in per_call:
            problem = "an object's values are integers or pieces of the call's texts"
        elif f.format == ENTRIES and f.value_table:
            problem = "ENTRIES values are integers"
        if problem:
            msg = f"field {f.name!r}: {problem}"
            raise ValueError(msg)
    if len(per_call) > 1:
        msg = f"a record kind takes one table of text per call, not {sorted(per_call)}"
        raise ValueError(msg)


class RecordBuilder:
    """Renders every record of one journey map: scores, transitions, sessions, windows, late events."""

    def __init__(self, journey: JourneyMap, topics: Topics) -> None:
        # index + 1 -> name, so that NO_STAGE (-1) renders as None without a branch
        self.names_by_index: tuple[str | None, ...] = (None, *journey.stage_names, DORMANT)
        self.channel_names = (OTHER_CHANNEL, *journey.channels)
        self.channel_keys = tuple(f"channel:{name}".encode() for name in self.channel_names)
        self.type_names = tuple(journey.touchpoints)
        # funnel index (stage + 1) -> name; a transition's key is from * funnel_size + to
        self.funnel_names: tuple[str, ...] = (BEFORE_ENTRY, *journey.stage_names, DORMANT)
        self.funnel_size = len(self.funnel_names)
        self.map_version = journey.version  # on every score and transition record
        names = {
            "stages": _names(self.names_by_index),  # by stage + 1: null, stages, dormant
            "evidence": _names(journey.stage_names),
            "channels": _names(self.channel_names),
            "moves": _names([f"{a}>{b}" for a in self.funnel_names for b in self.funnel_names]),
            "populations": _names(self.funnel_names[1:]),
            "booleans": [b"false", b"true"],
            "causes": _names(CAUSES),
            "map": [orjson.dumps(self.map_version)],
        }
        self.score_kind = RecordKind(SCORE, names)
        self.transition_kind = RecordKind(TRANSITION, names)
        self.session_kind = RecordKind(SESSION, names)
        self.channel_kind = RecordKind(CHANNEL_WINDOW, names)
        self.funnel_kind = RecordKind(FUNNEL, names)
        self.n_stages = len(journey.stage_names)
        self.evidence_pieces = np.arange(3, 3 + self.n_stages, dtype=np.int64)
        self.saturation = journey.saturation
        self.topics = topics

    def stage_name(self, index: int) -> str | None:
        """Name of a stage index; -1 (no stage yet) is None."""
        return self.names_by_index[index + 1]

    def scores(self, state: ShardState, rows: I64) -> list[Output]:
        """One score record per row, values derived as PRODUCT §4 says."""
        n, k = rows.size, self.n_stages
        if not n:
            return []
        c = state.columns
        floats = np.empty((n, 3 + k), dtype=np.float64)  # score, engagement, sentiment, evidence
        _score_values(c, rows, self.saturation, floats)
        piece = np.arange(0, n * (3 + k), 3 + k, dtype=np.int64)
        return self.score_kind.render(
            self.topics.scores, state.index.keys(rows),
            {"row": rows, "stage": c.stage[rows] + 1, "score": piece, "engagement": piece + 1,
             "sentiment": piece + 2, "evidence": piece[:, None] + self.evidence_pieces,
             "events": c.n[rows], "last_event_ts": c.T[rows]},
            customers=state.index, texts=_float_texts(floats.ravel()))

    def transitions(self, index: CustomerIndex, rows: I64,
                    from_stage: npt.NDArray[np.int16], to_stage: npt.NDArray[np.int16], ts: I64,
                    event_ids: Sequence[str | None], versions: I64, causes: I64) -> list[Output]:
        """One record per stage change, in the order given (``rows`` of the shard's ``index``).

        ``causes`` index ``CAUSES``, one per change.
        """
        if not rows.size:
            return []
        return self.transition_kind.render(
            self.topics.transitions, index.keys(rows),
            {"row": rows, "from": from_stage + 1, "to": to_stage + 1, "ts": ts,
             "event": np.arange(rows.size), "version": versions, "cause": causes},
            customers=index, texts=_json_strings(event_ids))

    def sessions(self, index: CustomerIndex, closed: ClosedSessions) -> list[Output]:
        """One record per closed session (PRODUCT §5); ``index`` the shard's customer ids."""
        return self.session_kind.render(
            self.topics.sessions, index.keys(closed.rows),
            {"row": closed.rows, "start": closed.start, "end": closed.end,
             "duration": closed.end - closed.start, "events": closed.events, "channels": closed.channels,
             "converted": closed.converted, "stage": closed.stage + 1},
            customers=index)

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
        piece = np.arange(0, 3 * ch.start.size, 3, dtype=np.int64)
        keys = self.channel_keys
        out = self.channel_kind.render(
            topic, [keys[c] for c in ch.channel.tolist()],
            {"start": ch.start, "end": ch.start + width_ms, "channel": ch.channel,
             "events": counts[EVENTS], "customers": counts[CUSTOMERS], "impressions": impressions,
             "clicks": clicks, "ctr": piece, "conversions": counts[CONVERSIONS],
             "sentiment_mean": piece + 1, "responses": responses, "response_time_mean_ms": piece + 2},
            texts=_float_texts(means.ravel()))
        tr, starts = w.transitions, w.starts
        first = np.searchsorted(tr.start, np.append(starts, starts[-1] + 1)).astype(np.int64)
        return out + self.funnel_kind.render(
            topic, [b"funnel"] * starts.size,
            {"start": starts, "end": starts + width_ms, "populations": populations[:, 1:]},
            entries=Entries(first, tr.key, tr.value))

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
