"""Validation of single messages, with the clock injected."""

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from config.model import Settings
from journey.poison import catalogue
from operators.events import EventParser

NOW = 1_800_000_000_000


def parse(settings: Settings, *values: bytes | None):
    parser = EventParser(settings.journey, "dlq", clock=lambda: NOW)
    return parser.parse([Message(topic="in", partition=0, offset=i, key=b"k", value=v)
                         for i, v in enumerate(values)])


def event(**fields) -> bytes:
    base = {"event_id": "e1", "customer_id": "c1", "ts": NOW - 1000, "type": "page_view"}
    base.update(fields)
    return orjson.dumps(base)


def test_every_poison_gets_its_reason(settings: Settings) -> None:
    for p in catalogue(NOW):
        got = parse(settings, p.value)
        assert len(got.events) == 0 and got.reasons == {p.reason: 1}, p.name
        record = orjson.loads(got.dead_letters[0][2])
        assert record["reason"] == p.reason and record["offset"] == 0 and record["key"] == "k"


def test_valid_event_columns(settings: Settings) -> None:
    got = parse(settings, event(channel="store", sentiment=-0.5),
                event(event_id="e2", ts="2027-01-15T08:00:00.123+01:00", channel="martian"))
    j = settings.journey
    assert got.events.customer_ids == ["c1", "c1"] and not got.dead_letters
    # 2027-01-15T07:00:00.123Z, worked out by hand
    assert got.events.ts.tolist() == [NOW - 1000, 1_799_996_400_123]
    assert got.events.chan_idx.tolist() == [j.channel_index["store"], 0]  # unknown -> other
    assert got.events.sentiment[0] == -0.5 and got.events.sentiment[1] != got.events.sentiment[1]


@pytest.mark.parametrize(("ts", "ok"), [
    (NOW + 5 * 60_000, True), (NOW + 5 * 60_000 + 1, False), (946_684_800_000, True),
])
def test_time_bounds_use_the_injected_clock(settings: Settings, ts: int, ok: bool) -> None:
    got = parse(settings, event(ts=ts))
    assert len(got.events) == (1 if ok else 0)


def test_unknown_fields_are_tolerated_and_ids_measured_in_bytes(settings: Settings) -> None:
    assert len(parse(settings, event(new_field={"a": 1})).events) == 1
    assert len(parse(settings, event(customer_id="é" * 64)).events) == 1  # 128 bytes
    assert parse(settings, event(customer_id="é" * 65)).reasons == {"invalid_field": 1}


def test_dead_letter_keeps_binary_and_cuts_large(settings: Settings) -> None:
    raw = b"\xff" * 70_000
    rec = orjson.loads(parse(settings, raw).dead_letters[0][2])
    assert rec["reason"] == "too_large" and rec["raw_encoding"] == "base64"
    assert rec["raw_truncated"] and rec["raw_bytes"] == 70_000 and len(rec["raw_sha256"]) == 64


def test_latency_starts_at_the_kafka_timestamp_or_at_reading_without_one(settings: Settings) -> None:
    parser = EventParser(settings.journey, "dlq", clock=lambda: NOW)
    stamped = Message(topic="in", partition=0, offset=0, key=b"k", value=event(event_id="a"),
                      timestamp=(TIMESTAMP_CREATE_TIME, NOW - 250))
    unstamped = Message(topic="in", partition=0, offset=1, key=b"k", value=event(event_id="b"))
    got = parser.parse([stamped, unstamped], topic_idx=1)
    assert got.events.appended.tolist() == [NOW - 250, NOW]
    assert got.events.topic_idx.tolist() == [1, 1]
