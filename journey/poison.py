"""Messages every production stream meets sooner or later, with the dead-letter reason each earns."""

from typing import NamedTuple

import orjson


class Poison(NamedTuple):
    """One bad message and the reason the engine must give for rejecting it."""

    name: str
    reason: str
    value: bytes | None


def _event(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"event_id": "p", "customer_id": "poison", "ts": 1_700_000_000_000,
                               "type": "page_view", "channel": "web"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def catalogue(now_ms: int, tag: str = "p") -> list[Poison]:
    """The poison catalogue; ``tag`` makes event ids unique per use."""
    def ev(**fields: object) -> bytes:
        return orjson.dumps(_event(event_id=f"{tag}-{fields.pop('n', 0)}", **fields))

    deep = b"[" * 2000 + b"]" * 2000
    return [
        Poison("invalid_utf8", "invalid_utf8", b'{"event_id": "\xff\xfe"}'),
        Poison("not_json", "invalid_json", b"event_id=1&customer_id=2"),
        Poison("truncated_json", "invalid_json", ev(n=1)[:-5]),
        Poison("nan", "non_finite_number",
               ev(n=2, sentiment=0.5).replace(b"0.5", b"NaN")),
        Poison("infinity", "non_finite_number", ev(n=3, value=1).replace(b'"value":1', b'"value":1e999')),
        Poison("deep_nesting", "too_deep", b'{"event_id":"x","properties":' + deep + b"}"),
        Poison("not_object", "not_an_object", b'["page_view", 1700000000000]'),
        Poison("empty", "empty_message", None),
        Poison("missing_customer", "missing_field", ev(n=4, customer_id=_DROP)),
        Poison("missing_ts", "missing_field", ev(n=5, ts=_DROP)),
        Poison("ts_float", "invalid_field", ev(n=6, ts=1_700_000_000_000.5)),
        Poison("customer_int", "invalid_field", ev(n=7, customer_id=42)),
        Poison("long_event_id", "invalid_field", ev(n=8, customer_id="x" * 129)),
        Poison("bad_rfc3339", "invalid_field", ev(n=9, ts="yesterday")),
        Poison("naive_rfc3339", "invalid_field", ev(n=10, ts="2024-05-01T10:00:00")),
        Poison("negative_value", "invalid_field", ev(n=11, value=-3)),
        Poison("sentiment_range", "invalid_field", ev(n=12, sentiment=1.5)),
        Poison("unknown_type", "unknown_type", ev(n=13, type="teleport")),
        Poison("huge", "too_large", ev(n=14, properties={"blob": "x" * 100 * 1024})),
        Poison("future", "ts_in_future", ev(n=15, ts=now_ms + 86_400_000)),
        Poison("before_2000", "ts_before_2000", ev(n=16, ts=946_684_799_999)),
    ]
