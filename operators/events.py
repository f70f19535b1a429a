"""Turn raw Kafka messages into columns of valid events; everything else becomes a dead letter.

Validation is per message by nature (orjson, then field rules of PRODUCT §2); its
output is columnar so that routing and scoring work on whole arrays.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from config.model import JourneyMap
from operators.base import NO_TIME, Clock, EventBatch, OutRecord, wall_clock_ms
from operators.raw_records import dead_letter

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_ID_BYTES = 128
# Dead-letter reasons (machine-readable; the README lists them with examples).
EMPTY_MESSAGE = "empty_message"
TOO_LARGE = "too_large"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NON_FINITE_NUMBER = "non_finite_number"
TOO_DEEP = "too_deep"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
UNKNOWN_TYPE = "unknown_type"
TS_IN_FUTURE = "ts_in_future"
TS_BEFORE_2000 = "ts_before_2000"
REASONS = (EMPTY_MESSAGE, TOO_LARGE, INVALID_UTF8, INVALID_JSON, NON_FINITE_NUMBER, TOO_DEEP, NOT_AN_OBJECT,
           MISSING_FIELD, INVALID_FIELD, UNKNOWN_TYPE, TS_IN_FUTURE, TS_BEFORE_2000)
"""Every dead-letter reason (the metrics count each from 0, so their series exist before the first)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

@dataclass(frozen=True)
class ParsedBatch:
    """What one batch of raw messages became: valid events and dead letters.

    ``event_index`` and ``dead_index`` give the position of each in the input, so that
    a reader can hand over any prefix of the messages.
    """

    events: EventBatch
    event_index: npt.NDArray[np.int64]
    dead_letters: list[OutRecord]
    dead_index: list[int]
    dead_reasons: list[str]

    @property
    def reasons(self) -> dict[str, int]:
        """Dead letters counted by reason."""
        return dict(Counter(self.dead_reasons))


class Rejected(Exception):
    """A message that breaks a rule of PRODUCT §2; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _text_id(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if value is None:
        raise Rejected(MISSING_FIELD, f"'{name}' is required")
    if not isinstance(value, str):
        raise Rejected(INVALID_FIELD, f"'{name}' must be a string, got {type(value).__name__}")
    size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_ID_BYTES:
        raise Rejected(INVALID_FIELD, f"'{name}' must be 1-{MAX_ID_BYTES} bytes, got {size}")
    return value


def event_time_ms(value: object) -> int:
    """Event time in epoch ms from integer ms or an RFC 3339 string; Rejected otherwise."""
    if value is None:
        raise Rejected(MISSING_FIELD, "'ts' is required")
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as err:
            raise Rejected(INVALID_FIELD, f"'ts' is not an RFC 3339 timestamp: {value[:64]!r}") from err
        if parsed.tzinfo is None:
            raise Rejected(INVALID_FIELD, f"'ts' needs a UTC offset (e.g. 'Z'): {value[:64]!r}")
        return (parsed - _EPOCH) // _MS
    raise Rejected(INVALID_FIELD,
                   f"'ts' must be integer epoch milliseconds or an RFC 3339 string, got "
                   f"{type(value).__name__}")


def _number(doc: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:
        raise Rejected(INVALID_FIELD, f"'{name}' must be a number, got {type(value).__name__}")
    if not low <= value <= high:
        raise Rejected(INVALID_FIELD, f"'{name}' must be in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _json_reason(raw: bytes, err: orjson.JSONDecodeError) -> Rejected:
    text = str(err)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as uerr:
        return Rejected(INVALID_UTF8, f"not valid UTF-8 at byte {uerr.start}")
    if "infinity" in text or (text.startswith("unexpected character") and b"NaN" in raw):
        return Rejected(NON_FINITE_NUMBER, f"NaN and Infinity are not JSON numbers: {text}")
    if "depth limit" in text or "recursion" in text:
        return Rejected(TOO_DEEP, f"nesting deeper than orjson's limit: {text}")
    return Rejected(INVALID_JSON, text)


class EventParser:
    """Validates raw messages against one journey map and a clock."""

    def __init__(self, journey: JourneyMap, dlq_topic: str, clock: Clock = wall_clock_ms) -> None:
        self.type_index = journey.type_index
        self.channel_index = journey.channel_index
        self.max_bytes = journey.max_event_bytes
        self.max_future_ms = journey.max_future_ms
        self.dlq_topic = dlq_topic
        self.clock = clock

    def parse(self, messages: Sequence[Message], topic_idx: int = 0) -> ParsedBatch:
        """Split ``messages`` (of input topic ``topic_idx``) into valid events and dead-letter records."""
        cids: list[str] = []
        eids: list[str] = []
        ts: list[int] = []
        types: list[int] = []
        chans: list[int] = []
        sents: list[float] = []
        appended: list[int] = []
        index: list[int] = []
        dead: list[OutRecord] = []
        dead_index: list[int] = []
        dead_reasons: list[str] = []
        now = self.clock()
        latest = now + self.max_future_ms
        for i, msg in enumerate(messages):
            try:
                cid, eid, t, tp, ch, sent = self.validate(msg.value(), latest)
            except Rejected as rej:
                dead.append(dead_letter(self.dlq_topic, msg, rej.reason, rej.detail))
                dead_index.append(i)
                dead_reasons.append(rej.reason)
                continue
            index.append(i)
            cids.append(cid)
            eids.append(eid)
            ts.append(t)
            types.append(tp)
            chans.append(ch)
            sents.append(sent)
            kind, stamp = msg.timestamp()
            appended.append(now if kind == TIMESTAMP_NOT_AVAILABLE else stamp)  # latency starts at read
        n = len(cids)
        events = EventBatch(
            cids, eids,
            np.array(ts, dtype=np.int64),
            np.array(types, dtype=np.int32),
            np.array(chans, dtype=np.int32),
            np.array(sents, dtype=np.float64),
            np.zeros(n, dtype=np.bool_),
            np.full(n, NO_TIME, dtype=np.int64),  # a reader sets both marks
            np.full(n, NO_TIME, dtype=np.int64),
            np.full(n, topic_idx, dtype=np.int32),
            np.array(appended, dtype=np.int64),
        )
        return ParsedBatch(events, np.array(index, dtype=np.int64), dead, dead_index, dead_reasons)

    def validate(self, raw: bytes | None, latest: int) -> tuple[str, str, int, int, int, float]:
        """One message's fields, or Rejected with the first rule it breaks."""
        if raw is None or not raw:
            raise Rejected(EMPTY_MESSAGE, "the message has no value")
        if len(raw) > self.max_bytes:
            raise Rejected(TOO_LARGE, f"{len(raw)} bytes exceeds max_event_bytes {self.max_bytes}")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise _json_reason(raw, err) from None
        if type(doc) is not dict:
            raise Rejected(NOT_AN_OBJECT, f"the event must be a JSON object, got {type(doc).__name__}")
        eid = _text_id(doc, "event_id")
        cid = _text_id(doc, "customer_id")
        t = event_time_ms(doc.get("ts"))
        if t < MIN_TS_MS:
            raise Rejected(TS_BEFORE_2000, f"'ts' {t} is before 2000-01-01")
        if t > latest:
            raise Rejected(TS_IN_FUTURE, f"'ts' {t} is more than max_future ahead of the clock")
        kind = doc.get("type")
        if kind is None:
            raise Rejected(MISSING_FIELD, "'type' is required")
        if not isinstance(kind, str):
            raise Rejected(INVALID_FIELD, f"'type' must be a string, got {type(kind).__name__}")
        tp = self.type_index.get(kind)
        if tp is None:
            raise Rejected(UNKNOWN_TYPE, f"'type' {kind[:64]!r} is not in the journey map")
        channel = doc.get("channel")
        if channel is not None and not isinstance(channel, str):
            raise Rejected(INVALID_FIELD, f"'channel' must be a string, got {type(channel).__name__}")
        _number(doc, "value", 0.0, float("inf"))
        sentiment = _number(doc, "sentiment", -1.0, 1.0)
        for name in ("session_id", "campaign_id"):
            extra = doc.get(name)
            if extra is not None and not isinstance(extra, str):
                raise Rejected(INVALID_FIELD, f"'{name}' must be a string, got {type(extra).__name__}")
        props = doc.get("properties")
        if props is not None and type(props) is not dict:
            raise Rejected(INVALID_FIELD, f"'properties' must be an object, got {type(props).__name__}")
        return (cid, eid, t, tp, self.channel_index.get(channel, 0) if channel else 0,
                np.nan if sentiment is None else sentiment)
