"""The floor: a pass-through loop that copies every input message to one output topic, no work.

    python -m benchmarks.latency.floor BROKERS INPUTS OUTPUT

One consumer for every input partition, with the engine's consumer settings, and one
producer with the engine's sink settings: what the broker and the Kafka client cost,
below which no engine on this broker can go. Runs until it is terminated.
"""

import signal
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from journey.kafka_io import CONSUMER_TUNING, PRODUCER_TUNING


def main() -> int:
    brokers, inputs, output = sys.argv[1:4]
    meta = AdminClient({"bootstrap.servers": brokers}).list_topics(timeout=10)
    parts = [
        TopicPartition(t, p, -1) for t in inputs.split(",") for p in meta.topics[t].partitions
    ]  # -1: end
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "latency-floor",
            "enable.auto.commit": False,
            **CONSUMER_TUNING,
        }
    )
    consumer.assign(parts)
    producer = Producer({"bootstrap.servers": brokers, **PRODUCER_TUNING, "partitioner": "murmur2_random"})
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        # poll returns with the first message that arrives; consume(n, 0) takes what else is
        # there (consume(n, t) would wait until n messages or t: a floor must never wait)
        first = consumer.poll(0.05)
        for m in [first, *consumer.consume(1_000, 0)] if first is not None else []:
            if m.error() is None:
                producer.produce(output, m.value(), m.key())
        producer.poll(0)
    producer.flush(10)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
