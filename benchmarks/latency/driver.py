"""An open-loop driver: pre-encoded events, sent at a fixed rate whatever the system does.

    python -m benchmarks.latency.driver BROKERS TOPICS RATE SECONDS START_MS OUT.npz

Every event is encoded before the first is sent; event ``i`` is due at ``START_MS + i /
RATE`` (wall clock, ms) and carries that time as its ``ts``. The driver sends what is due,
then sleeps to the next millisecond, so it never waits for the system under test (no
coordinated omission: latency is counted from when an event was due, not from when a
busy driver got round to it). Topics are used in turn, event by event; the producer
batches as real producers do (``linger.ms`` 5). Writes, per event, its customer id number,
due time and when the broker acknowledged it, and how late the driver itself was at worst:
an event acknowledged long after it was due reached the broker's log late, whatever
reads it (the broker, not the system under test, was slow).
"""

import sys
import time
from functools import partial

import numpy as np
import orjson
from confluent_kafka import Message, Producer

TYPES = ("page_view", "product_view", "ad_impression", "email_open", "add_to_cart", "review_read")
CHANNELS = ("web", "app", "ads", "email", "social")
CUSTOMERS = 200_000
"""Customers the events are spread over: two events of one customer rarely share a batch
(a score record per customer per batch would hide the first)."""


def encode(
    n: int, rate: float, start_ms: int, seed: int = 1
) -> tuple[list[bytes], list[bytes], np.ndarray, np.ndarray]:
    """Keys, values, customer numbers and due times (ms) of ``n`` events."""
    rng = np.random.default_rng(seed)
    customer = rng.integers(0, CUSTOMERS, n)
    due = start_ms + (np.arange(n) * 1000.0 / rate).astype(np.int64)
    kinds = rng.integers(0, len(TYPES), n)
    channels = rng.integers(0, len(CHANNELS), n)
    keys, values = [], []
    for i, (c, t, k, ch) in enumerate(
        zip(customer.tolist(), due.tolist(), kinds.tolist(), channels.tolist(), strict=True)
    ):
        cid = f"lat-{c:06d}"
        keys.append(cid.encode())
        values.append(
            orjson.dumps(
                {
                    "event_id": f"lat-{start_ms}-{i}",
                    "customer_id": cid,
                    "ts": t,
                    "type": TYPES[k],
                    "channel": CHANNELS[ch],
                }
            )
        )
    return keys, values, customer, due


def drive(
    brokers: str, topics: list[str], rate: float, seconds: float, start_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    n = int(rate * seconds)
    keys, values, customer, due = encode(n, rate, start_ms)
    producer = Producer(
        {"bootstrap.servers": brokers, "linger.ms": 5, "queue.buffering.max.messages": 2_000_000}
    )
    failed: list[str] = []
    produced = np.zeros(n)  # wall clock (ms) when each event was handed to the producer ...
    acked = np.zeros(n)  # ... and when the broker's acknowledgement of it came back

    def report(i: int, err: object, msg: Message) -> None:
        if err is not None:
            failed.append(str(err))
        latency = msg.latency()  # the client's own count, not when this callback got its turn
        acked[i] = produced[i] + latency * 1000 if latency is not None else time.time() * 1000

    sent, worst = 0, 0.0
    wait = max(0.0, start_ms / 1000 - time.time())
    time.sleep(wait)
    due_s = due / 1000.0
    produce, poll, topics_n = producer.produce, producer.poll, len(topics)
    while sent < n:
        now = time.time()
        until = int(np.searchsorted(due_s, now, side="right"))
        if until > sent:
            worst = max(worst, now - due_s[sent])
        produced[sent:until] = now * 1000
        for i in range(sent, until):
            produce(topics[i % topics_n], values[i], keys[i], on_delivery=partial(report, i))
        sent = max(sent, until)
        poll(0)
        if sent < n:
            time.sleep(max(0.0, min(0.001, due_s[sent] - time.time())))
    if producer.flush(60) or failed:
        msg = f"driver: not every event was delivered: {(failed or ['timeout'])[0]}"
        raise SystemExit(msg)
    return customer, due, acked, worst


def main() -> int:
    brokers, topics, rate, seconds, start_ms, out = sys.argv[1:7]
    customer, due, acked, worst = drive(brokers, topics.split(","), float(rate), float(seconds),
                                        int(start_ms))
    np.savez(out, customer=customer, due=due, acked=acked, worst_lag_s=np.array([worst]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
