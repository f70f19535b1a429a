"""Synthetic customer journeys through the stages and channels of the default map.

Customers move forward through awareness → consideration → decision → purchase →
retention → advocacy at their own pace, stop at a persona depth, sometimes loop back
and sometimes complain. Everything is drawn from one seeded RNG, so a seed names a
data set. Faults (re-deliveries, out-of-order, late and malformed messages) are
injected on request, and the returned manifest says what each message is.
"""

import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, TextIO

import orjson
from confluent_kafka import Producer

from config.errors import DeliveryError
from config.model import Settings
from journey.kafka_io import client_config, ensure_topics
from journey.poison import catalogue
from operators.base import wall_clock_ms
from operators.events import event_time_ms

# (type, channel, weight) per step of the journey
_MENUS: list[list[tuple[str, str, int]]] = [
    [("ad_impression", "ads", 5), ("social_view", "social", 3), ("ad_click", "ads", 2),
     ("page_view", "web", 3), ("social_engage", "social", 1)],
    [("product_view", "web", 4), ("product_view", "app", 2), ("review_read", "web", 2),
     ("email_sent", "email", 2), ("email_open", "email", 2), ("email_click", "email", 1),
     ("newsletter_signup", "email", 1), ("webinar_attend", "web", 1), ("page_view", "app", 2)],
    [("add_to_cart", "web", 3), ("add_to_cart", "app", 2), ("checkout_start", "web", 2),
     ("trial_start", "app", 1), ("product_view", "app", 1)],
    [("purchase", "web", 2), ("purchase", "store", 1), ("purchase", "app", 1),
     ("checkout_start", "web", 1)],
    [("support_ticket", "support", 2), ("survey_response", "email", 2), ("loyalty_signup", "app", 1),
     ("push_sent", "push", 1), ("sms_sent", "sms", 1), ("purchase", "app", 1)],
    [("review_write", "web", 2), ("social_share", "social", 2), ("referral", "web", 1),
     ("survey_response", "email", 1)],
]
_NEGATIVE = [("unsubscribe", "email"), ("complaint", "support")]
_DEPTH_WEIGHTS = [30, 25, 15, 10, 10, 10]  # how far a persona goes
_SENTIMENT_TYPES = {"support_ticket", "survey_response", "review_write", "complaint"}
_CLICKSTREAM = {"page_view", "product_view", "add_to_cart", "checkout_start", "ad_click",
                "ad_impression", "social_view", "social_engage", "review_read"}
_MINUTE = 60_000
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SimMessage(NamedTuple):
    """One produced message and what it is: ``event``, ``duplicate`` or ``malformed``."""

    topic: str
    key: bytes
    value: bytes | None
    kind: str
    late: bool = False


@dataclass
class SimOptions:
    """What ``journey simulate`` produces."""

    customers: int = 1_000
    events: int = 100_000
    seed: int = 1
    duplicates: float = 0.0
    out_of_order: float = 0.0
    late: float = 0.0
    malformed: float = 0.0
    span_ms: int = 30 * _DAY
    end_ms: int | None = None  # event time of the newest event; default: now
    rfc3339: float = 0.05  # share of events whose ts is an RFC 3339 string
    lateness_ms: int = 5 * _MINUTE  # how far back a late event is pushed beyond


@dataclass
class _Customer:
    cid: str
    depth: int
    step: int = 0
    clock: int = 0
    mood: float = 0.0
    session: int = 0


@dataclass
class SimStats:
    """Counts of what was produced, by kind."""

    produced: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


def journeys(opts: SimOptions) -> list[dict[str, object]]:
    """Valid events in event-time order, ``opts.events`` of them over ``opts.customers`` people."""
    rng = random.Random(opts.seed)
    customers = [
        _Customer(f"cust-{opts.seed}-{i:07d}", rng.choices(range(6), _DEPTH_WEIGHTS)[0],
                  clock=rng.randrange(0, max(1, opts.span_ms // 2)),
                  mood=rng.uniform(-0.3, 0.9))
        for i in range(opts.customers)
    ]
    raw: list[tuple[int, int, str, str, _Customer]] = []
    while len(raw) < opts.events:
        c = customers[rng.randrange(len(customers))]
        c.session += 1
        menu = _MENUS[c.step]
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.02:
                kind, channel = rng.choice(_NEGATIVE)
            else:
                kind, channel, _w = rng.choices(menu, [w for *_, w in menu])[0]
            c.clock += rng.randint(5_000, 5 * _MINUTE)
            raw.append((c.clock, len(raw), kind, channel, c))
            if len(raw) >= opts.events:
                break
        c.clock += rng.randint(_HOUR, 3 * _DAY)
        if c.step < c.depth and rng.random() < 0.6:
            c.step += 1
        elif rng.random() < 0.1:
            c.step = max(0, c.step - 2)  # journeys loop back
    raw.sort(key=lambda r: (r[0], r[1]))
    end = opts.end_ms if opts.end_ms is not None else wall_clock_ms()
    lo, hi = raw[0][0], raw[-1][0]
    scale = opts.span_ms / max(1, hi - lo)
    events = []
    for n, (vts, _, kind, channel, c) in enumerate(raw):
        ts = end - opts.span_ms + round((vts - lo) * scale)
        event: dict[str, object] = {
            "event_id": f"{opts.seed}-{n:09d}",
            "customer_id": c.cid,
            "ts": _iso(ts) if rng.random() < opts.rfc3339 else ts,
            "type": kind,
            "channel": channel,
            "session_id": f"{c.cid}-s{c.session}",
        }
        if channel == "ads":
            event["campaign_id"] = f"cmp-{rng.randint(1, 12)}"
        if kind == "purchase":
            event["value"] = round(rng.uniform(5, 400), 2)
        if kind in _SENTIMENT_TYPES:
            base = -0.8 if kind == "complaint" else c.mood
            event["sentiment"] = round(max(-1.0, min(1.0, rng.gauss(base, 0.3))), 3)
        events.append(event)
    return events


def messages(settings: Settings, opts: SimOptions) -> list[SimMessage]:
    """The messages to produce, in order, with faults injected as ``opts`` asks."""
    rng = random.Random(opts.seed * 7919 + 1)
    inputs = settings.topics.inputs
    out: list[SimMessage] = []
    # (release once the stream's event time passes this, message): out of order, re-delivered
    # and late messages. Out-of-order and re-delivered ones come back within half the
    # allowed lateness (on time, just not in order); late ones beyond twice the lateness.
    held: list[tuple[int, SimMessage]] = []
    poisons = 0
    now = wall_clock_ms()
    soon = max(1, opts.lateness_ms // 2)
    for event in journeys(opts):
        kind = str(event["type"])
        topic = inputs[0] if len(inputs) == 1 or kind in _CLICKSTREAM else inputs[1]
        key = str(event["customer_id"]).encode()
        msg = SimMessage(topic, key, orjson.dumps(event), "event")
        ts = event_time_ms(event["ts"])
        ripe = [m for at, m in held if at <= ts]
        held = [(at, m) for at, m in held if at > ts]
        out.extend(ripe)
        r = rng.random()
        if r < opts.late:
            held.append((ts + 2 * opts.lateness_ms + _MINUTE, msg._replace(late=True)))
        elif r < opts.late + opts.out_of_order:
            held.append((ts + rng.randint(1, soon), msg))
        else:
            out.append(msg)
        if rng.random() < opts.duplicates:
            held.append((ts + rng.randint(0, soon), msg._replace(kind="duplicate")))
        if rng.random() < opts.malformed:
            pick = catalogue(now, tag=f"poison-{opts.seed}-{poisons}")
            poison = pick[rng.randrange(len(pick))]
            poisons += 1
            out.append(SimMessage(inputs[poisons % len(inputs)], key, poison.value, "malformed"))
    # Still-held late messages would only be a little out of order at the very end of the
    # stream, not late: they are left out rather than mislabelled.
    out.extend(m for _, m in held if not m.late)
    return out


def produce(settings: Settings, msgs: list[SimMessage], *, rate: float | None = None,
            progress: TextIO | None = sys.stderr, partitions: int = 4) -> SimStats:
    """Produce ``msgs`` (creating the input topics), at most ``rate`` per second if given."""
    ensure_topics(settings.kafka, settings.topics.inputs, partitions)
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(client_config(settings.kafka, **{
        "partitioner": "murmur2_random", "linger.ms": 20, "queue.buffering.max.messages": 1_000_000}))
    stats = SimStats()
    started = last_report = time.monotonic()
    total = len(msgs)
    for i, m in enumerate(msgs):
        while True:
            try:
                producer.produce(m.topic, m.value, m.key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        stats.kinds[m.kind] = stats.kinds.get(m.kind, 0) + 1
        if rate:
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                producer.poll(ahead)
        if i % 1000 == 0:
            producer.poll(0)
            now = time.monotonic()
            if progress is not None and now - last_report >= 0.5:
                last_report = now
                _report(progress, i + 1, total, now - started, end="\r")
    left = producer.flush(60)
    if left or failures:
        msg = f"simulate: {left + len(failures)} message(s) not delivered: {(failures or ['timeout'])[0]}"
        raise DeliveryError(msg)
    stats.produced = total
    if progress is not None:
        _report(progress, total, total, time.monotonic() - started, end="\n")
    return stats


def stream(settings: Settings, opts: SimOptions) -> Iterator[list[SimMessage]]:
    """Endless rounds of journeys (new customers each round), for the live demo.

    The first round covers ``opts.span_ms`` up to now; each later one the time since the
    previous round ended, so event time moves on with the wall clock and a live run
    sees on-time events, not the same hour over and over.
    """
    round_no = 0
    ended = None
    while True:
        now = wall_clock_ms()
        span = opts.span_ms if ended is None else max(1_000, now - ended)
        yield messages(settings, replace(opts, seed=opts.seed + round_no, span_ms=span, end_ms=now))
        ended = now
        round_no += 1


def _report(out: TextIO, done: int, total: int, elapsed: float, end: str) -> None:
    rate = done / elapsed if elapsed > 0 else 0.0
    out.write(f"simulate: {done:,}/{total:,} messages ({rate:,.0f}/s){' ' * 8}{end}")
    out.flush()


def _iso(ts_ms: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ts_ms)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
