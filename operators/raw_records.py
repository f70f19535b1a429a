"""Records that carry input as it came: dead letters (PRODUCT §2) and late events (§5).

They are made where input is read, before routing, so they sit with parsing in the
import order; everything else the engine writes is rendered by ``records``.
"""

import base64
import hashlib
from typing import Any

import orjson
from confluent_kafka import Message

from operators.base import OutRecord

RAW_LIMIT = 65_536
"""Raw bytes kept in a dead letter at most (the SHA-256 covers all of them)."""


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

    The event is the message's own JSON text, put in as it came: it was read as valid
    JSON, so it is valid inside the record too, whatever it holds. Parsing it and writing
    it out again would fail where orjson writes less than it reads (nesting deeper than
    ~254 levels), and one such event would stop the flow at every restart.
    Keyed by customer id like every output that has one (the message key may be anything).
    """
    rest = orjson.dumps({"late_by_ms": late_by_ms, "topic": msg.topic(), "partition": msg.partition(),
                         "offset": msg.offset()})
    return (topic, customer_id.encode(), b'{"event":' + (msg.value() or b"null") + b"," + rest[1:])
