"""Records that carry input as it came never fail to render, whatever valid JSON the input holds."""

import json
import sys

import orjson
import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from operators.raw_records import late_record

TS = 1_800_000_000_000
SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text())
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def message(raw: bytes) -> Message:
    return Message(topic="clickstream", partition=3, offset=41, key=b"any key", value=raw)


def assert_renders(raw: bytes) -> None:
    """The record parses, holds the event as the reader read it, and says where it came from.

    Comparing documents 1,000 levels deep recurses past Python's default limit: raised here.
    """
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5_000))
    event = orjson.loads(raw)  # the reader accepted it
    topic, key, value = late_record("journey.late", "c1", message(raw), 1234)
    record = orjson.loads(value)
    assert (topic, key) == ("journey.late", b"c1")
    assert record == {"event": event, "late_by_ms": 1234, "topic": "clickstream", "partition": 3,
                      "offset": 41}


@pytest.mark.parametrize("depth", [1, 253, 254, 255, 300, 1_000])
def test_deeply_nested_properties_render(depth: int) -> None:
    """orjson reads 1,024 levels but writes about 254: the record must not depend on writing them."""
    nested = '{"a":' * depth + "1" + "}" * depth
    raw = f'{{"event_id":"e","customer_id":"c1","ts":{TS},"type":"page_view","properties":{nested}}}'.encode()
    assert_renders(raw)


@given(JSON_VALUES, st.sampled_from([None, 0, 2]), st.sampled_from(["", " \n\t "]))
def test_any_valid_properties_render(props: object, indent: int | None, padding: str) -> None:
    """Any JSON the reader accepts, compact or spread over lines with spaces around it."""
    doc = {"event_id": "e", "customer_id": "c1", "ts": TS, "type": "page_view", "properties": props}
    raw = (padding + json.dumps(doc, indent=indent, ensure_ascii=False) + padding).encode()
    assert_renders(raw)
