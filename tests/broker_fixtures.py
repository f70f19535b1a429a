"""The real embedded broker for the whole session, plus factories for topics and runs."""

import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from config.model import DEFAULT_PATH, OUTPUT_ROLES, Settings, Topics, load_settings
from journey.broker import EmbeddedBroker, free_port
from journey.kafka_io import cluster_metadata
from journey.simulate import SimMessage, produce

ROOT = Path(__file__).resolve().parent.parent
LIVE_SPAN_MS = 60_000
"""Event time spanned by input produced live over a few seconds: close to the wall clock, as live
input is. (Thirty days of history produced in fifteen seconds would pass two days of event time
per second, and a partition read half a second ahead would be a day ahead: the de-duplication
window is measured in event time, and a live run does not hold partitions back.)"""


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture
def make_settings(broker: EmbeddedBroker) -> Callable[..., Settings]:
    """Settings on the session broker with topic names unique to the calling test."""

    def make(inputs: tuple[str, ...] = ("clickstream", "touchpoints"), outputs: str = "",
             prefix: str | None = None) -> Settings:
        tag = prefix or uuid.uuid4().hex[:10]
        out = f"{tag}.{outputs}" if outputs else tag
        base = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
        topics = Topics(
            inputs=tuple(f"{tag}.{t}" for t in inputs),
            **{name: f"{out}.journey.{name}" for name in
               OUTPUT_ROLES},
            control=f"{out}.journey.control",
        )
        return replace(base, topics=topics)

    return make


def write_config(settings: Settings, path: Path) -> Path:
    """A TOML file with the default map and ``settings``' brokers and topics."""
    t = settings.topics
    text = DEFAULT_PATH.read_text()
    text += f'\n[kafka]\nbrokers = "{settings.kafka.brokers}"\n\n[topics]\n'
    text += "inputs = [" + ", ".join(f'"{i}"' for i in t.inputs) + "]\n"
    for name in (*OUTPUT_ROLES, "control"):
        text += f'{name} = "{getattr(t, name)}"\n'
    path.write_text(text)
    return path


def write_live_config(settings: Settings, path: Path) -> Path:
    """``write_config`` for input produced live over ``LIVE_SPAN_MS``: de-duplication remembers 128 ids.

    Within a minute every event of a customer is inside the 24 h de-duplication window,
    and the most active customers send more than the default 32 events: the reference
    remembers every id, the engine this many per customer (PRODUCT §4).
    """
    path = write_config(settings, path)
    path.write_text(path.read_text().replace("[journey]\n", "[journey]\ndedup_slots = 128\n", 1))
    return path


def journey_cli(*args: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the ``journey`` command line in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-P", "-m", "journey.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, **kw)  # type: ignore[call-overload]


def read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None, int]]:
    """Every message of ``topic`` as (key, value, partition), each partition in offset order."""
    meta = cluster_metadata(settings.kafka)
    if topic not in meta.topics:
        return []
    parts = list(meta.topics[topic].partitions)
    c = Consumer({"bootstrap.servers": settings.kafka.brokers, "group.id": "tests",
                  "enable.partition.eof": True, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[tuple[bytes | None, bytes | None, int]] = []
    at_end: set[int] = set()
    while len(at_end) < len(parts):
        for m in c.consume(10_000, 0.2):
            if m.error() is None:
                out.append((m.key(), m.value(), m.partition()))
            elif m.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(m.partition())
            else:
                raise AssertionError(m.error())
    c.close()
    out.sort(key=lambda kvp: kvp[2])  # stable: keeps offset order inside each partition
    return out


def read_json(settings: Settings, topic: str) -> list[dict]:
    return [orjson.loads(v) for _, v, _ in read_topic(settings, topic)]


def spawn_journey(*args: str, log: Path, env: dict[str, str] | None = None) -> "subprocess.Popen[bytes]":
    """``journey ARGS`` in the background, stdout and stderr to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-P", "-m", "journey.cli", *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def committed(settings: Settings, partitions: int = 4) -> dict[tuple[str, int], int]:
    """The offsets the flow committed to its consumer group, by input partition (0 before any)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka.brokers, "group.id": "journey-stream"})
    try:
        offsets = consumer.committed([TopicPartition(t, p) for t in settings.topics.inputs
                                      for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in offsets}


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2) -> float:
    """Poll ``condition`` until it holds; the seconds it took (fails the test after ``timeout_s``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s:g} s: {what}"
        time.sleep(every_s)
    return time.monotonic() - started


@contextmanager
def producing(settings: Settings, msgs: list[SimMessage], rate: float) -> Iterator[threading.Thread]:
    """``msgs`` produced at ``rate`` per second from a thread; the input topics hold some when it yields."""
    thread = threading.Thread(target=produce, args=(settings, msgs), kwargs={"rate": rate, "progress": None})
    thread.start()
    try:
        wait_until(lambda: bool(read_topic(settings, settings.topics.inputs[-1])), 30, "input topics")
        yield thread
    finally:
        thread.join()


def stop_once_read(proc: "subprocess.Popen[bytes]", settings: Settings, total: int,
                   timeout_s: float = 180) -> int:
    """SIGTERM to ``proc`` once its flow has read all ``total`` input messages; its exit code."""
    wait_until(lambda: sum(committed(settings).values()) == total, timeout_s, "every message read")
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=90)


class LiveFlow:
    """``journey run`` serving metrics, fed live by ``journey simulate`` (both as a user runs them)."""

    def __init__(self, settings: Settings, workdir: Path, *sim_faults: str) -> None:
        self.settings = settings
        config = str(write_config(settings, workdir / "journey.toml"))
        self.port = free_port()
        self.log = workdir / "flow.log"

        # 60,000 events at 3,000/s: input keeps flowing for the whole test
        self.simulator = spawn_journey("simulate", "--config", config, "--brokers", settings.kafka.brokers,
                                 "--customers", "2000", "--events", "60000", "--rate", "3000", *sim_faults,
                                 log=workdir / "simulate.log")
        self._wait_for_input_topics()
        self.flow = spawn_journey("run", "--config", config, "--metrics-port", str(self.port),
                            "--snapshot-interval", "1", log=self.log)

    def _wait_for_input_topics(self) -> None:
        deadline = time.monotonic() + 30
        while not set(self.settings.topics.inputs) <= set(cluster_metadata(self.settings.kafka).topics):
            assert time.monotonic() < deadline, "the simulator created no input topics"
            time.sleep(0.2)

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as page:
            return page.read().decode()

    def stop(self) -> None:
        for proc in (self.simulator, self.flow):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (self.simulator, self.flow):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
