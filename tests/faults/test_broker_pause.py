"""The broker paused (SIGSTOP) under a live flow: logged, survived, nothing lost; a delivery timeout
shorter than the pause never ends in success with output missing."""

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from config.model import Settings
from journey.broker import EmbeddedBroker
from journey.simulate import SimOptions, messages, produce
from tests.broker_fixtures import (
    journey_cli,
    producing,
    read_topic,
    spawn_journey,
    stop_once_read,
    wait_until,
    write_config,
)
from tests.flows.test_end_to_end import assert_matches_reference, reference_from

pytestmark = [pytest.mark.slow, pytest.mark.faults]


@contextmanager
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own: pausing it stops no other test."""
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        yield broker


@contextmanager
def paused(broker: EmbeddedBroker) -> Iterator[None]:
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.pid, signal.SIGCONT)


def test_a_broker_paused_20_s_is_logged_survived_and_loses_nothing(
        make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with own_broker(tmp_path) as broker:
        settings = make_settings().with_brokers(broker.bootstrap)
        produced = messages(settings, SimOptions(customers=2_000, events=45_000, seed=23))
        log = tmp_path / "flow.log"
        with producing(settings, produced, rate=3_000) as producer:
            flow = spawn_journey("run", "--config", str(write_config(settings, tmp_path / "map.toml")),
                                 "--snapshot-interval", "1", log=log)
            try:
                wait_until(lambda: len(read_topic(settings, settings.topics.scores)) > 1_000, 60, "output")
                watch = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "pause-test"})
                watch.assign([TopicPartition(settings.topics.scores, p, OFFSET_END) for p in range(4)])
                watch.consume(1_000, 1)  # positioned at the end before the pause
                with paused(broker):
                    time.sleep(20)
                    assert flow.poll() is None, log.read_text()[-3000:]
                continued_ms = time.time() * 1000  # SIGCONT: then the first output produced after it
                wait_until(lambda: any(m.error() is None and m.timestamp()[1] >= continued_ms
                                       for m in watch.consume(1_000, 0.05)),
                           30, "output produced after the pause", every_s=0)
                resumed = time.time() - continued_ms / 1000
                watch.close()
                producer.join()
                code = stop_once_read(flow, settings, len(produced))
            finally:
                if flow.poll() is None:
                    flow.kill()
        text = log.read_text()
        assert code == 0, text[-3000:]
        assert f"Kafka at {broker.bootstrap} stalled: no answer within 5 s" in text
        assert f"Kafka at {broker.bootstrap} answers again after a stall of" in text
        assert "Traceback" not in text
        with capsys.disabled():
            print(f"\nbroker paused 20 s: new output {resumed:.1f} s after SIGCONT")
        assert resumed < 5  # the bar: output resumes within 5 s of SIGCONT
        assert_matches_reference(settings, reference_from(settings, produced))  # 0 lost, 0 wrong


def test_a_delivery_timeout_shorter_than_a_pause_fails_loudly_or_retries_never_loses(
        make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with own_broker(tmp_path) as broker:
        settings = make_settings().with_brokers(broker.bootstrap)
        produced = messages(settings, SimOptions(customers=2_000, events=40_000, seed=24))
        produce(settings, produced, progress=None)
        config = write_config(settings, tmp_path / "map.toml")
        config.write_text(config.read_text() + '\n[kafka.properties]\n"message.timeout.ms" = 2000\n')
        store = str(tmp_path / "store")
        log = tmp_path / "flow.log"
        flow = spawn_journey("run", "--config", str(config), "--until-end", "--recovery-dir", store,
                             "--snapshot-interval", "1", log=log)
        try:
            wait_until(lambda: bool(read_topic(settings, settings.topics.scores)), 60, "output")
            with paused(broker):
                time.sleep(8)
            code = flow.wait(timeout=240)
        finally:
            if flow.poll() is None:
                flow.kill()
        text = log.read_text()
        if code == 4:  # failed loudly, before its input advanced: a restart from the store completes it
            assert "not delivered within" in text and "stopping before input advances" in text, text[-3000:]
            again = journey_cli("run", "--config", str(config), "--until-end", "--recovery-dir", store)
            assert again.returncode == 0, again.stderr[-3000:]
        else:
            assert code == 0, text[-3000:]  # re-sent until delivered
        with capsys.disabled():
            print(f"\ndelivery timeout 2 s, broker paused 8 s: the run exited {code}")
        assert_matches_reference(settings, reference_from(settings, produced))
