"""A tenfold burst of live input: memory stays bounded, and the consumer lag returns to 0."""

import re
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from config.model import Settings
from journey.broker import free_port
from journey.simulate import SimOptions, messages, produce
from tests.broker_fixtures import committed, read_topic, spawn_journey, wait_until, write_config

pytestmark = [pytest.mark.slow, pytest.mark.faults]
BASE_RATE = 2_000
SECONDS = 5
MEMORY_BOUND_MB = 300
"""The most the process may grow in a burst: the source pauses partitions whose queue is a batch
long, and the producer's queue is bounded; what grows beyond that leaks."""


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def test_a_ten_times_burst_keeps_memory_bounded_and_lag_returns_to_zero(
        make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    rates = (BASE_RATE, 10 * BASE_RATE, BASE_RATE)
    produced = messages(settings, SimOptions(customers=5_000, events=sum(rates) * SECONDS, seed=27))
    cuts = [0, BASE_RATE * SECONDS, 11 * BASE_RATE * SECONDS, len(produced)]
    burst_started = threading.Event()

    def feed() -> None:
        for i, rate in enumerate(rates):
            if i == 1:
                burst_started.set()
            produce(settings, produced[cuts[i]:cuts[i + 1]], rate=rate, progress=None)

    produce(settings, produced[:1], progress=None)  # the input topics exist before the flow starts
    port, log = free_port(), tmp_path / "flow.log"
    flow = spawn_journey("run", "--config", str(write_config(settings, tmp_path / "map.toml")),
                         "--metrics-port", str(port), "--snapshot-interval", "1", log=log)
    feeder = threading.Thread(target=feed)
    try:
        wait_until(lambda: bool(read_topic(settings, settings.topics.scores)), 60, "the flow scores")
        feeder.start()
        burst_started.wait(60)
        before = rss_mb(flow.pid)
        peak = before
        while feeder.is_alive():
            peak = max(peak, rss_mb(flow.pid))
            time.sleep(0.1)
        total = len(produced) + 1
        caught_up = wait_until(lambda: sum(committed(settings).values()) == total, 120, "lag back to 0")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            lags = re.findall(r"^journey_consumer_lag_messages\{.*\} (\S+)$", page.read().decode(), re.M)
        flow.send_signal(signal.SIGTERM)
        assert flow.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if feeder.is_alive():
            feeder.join()
        if flow.poll() is None:
            flow.kill()
    with capsys.disabled():
        print(f"\nburst {rates[1]:,}/s for {SECONDS} s: resident memory {before:.0f} MB -> peak "
              f"{peak:.0f} MB; every message read {caught_up:.1f} s after the feed ended")
    assert lags and all(float(v) == 0 for v in lags)
    assert peak - before < MEMORY_BOUND_MB
