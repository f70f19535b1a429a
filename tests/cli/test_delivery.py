"""A delivery that cannot succeed stops the sink with an error; it is never dropped quietly."""

from dataclasses import replace

import pytest

from config import DEFAULT_PATH, load_settings
from journey.broker import EmbeddedBroker
from journey.errors import DeliveryError
from journey.kafka_io import KafkaBatchSink, ensure_topics


def test_sink_raises_when_broker_is_gone() -> None:
    broker = EmbeddedBroker().start()
    settings = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
    ensure_topics(settings.kafka, ["out"], 1)
    sink = KafkaBatchSink(settings.kafka, delivery_timeout_s=3.0).build("out", 0, 1)
    sink.write_batch([[("out", b"k", b"delivered")]])  # works while the broker is up
    broker.stop()
    with pytest.raises(DeliveryError, match="not delivered"):
        sink.write_batch([[("out", b"k", b"lost?")] * 10])


def test_failed_delivery_reports_stop_the_sink() -> None:
    """Failed deliveries are reported by librdkafka (only those are) and end in DeliveryError."""
    broker = EmbeddedBroker().start()
    settings = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
    ensure_topics(settings.kafka, ["out"], 1)
    kafka = replace(settings.kafka, properties={**settings.kafka.properties, "message.timeout.ms": "500"})
    sink = KafkaBatchSink(kafka, delivery_timeout_s=3.0).build("out", 0, 1)
    sink.write_batch([[("out", b"k", b"delivered")]])
    broker.stop()
    with pytest.raises(DeliveryError, match="timed out"):  # the failure's own report, not a deadline
        sink.write_batch([[("out", b"k", b"lost?")] * 10])
