"""A canary secret from the environment appears nowhere: logs (``-v``), metrics, outputs, recovery files."""

import os
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from config.model import Settings
from journey.broker import free_port
from journey.simulate import SimOptions, messages, produce
from tests.broker_fixtures import committed, journey_cli, read_topic, spawn_journey, wait_until, write_config

pytestmark = [pytest.mark.slow, pytest.mark.faults]
CANARY = "canary-5e1f0c-do-not-leak"


def test_a_canary_secret_appears_nowhere(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    produced = messages(settings, SimOptions(customers=300, events=5_000, seed=26, malformed=0.05, late=0.02))
    produce(settings, produced, progress=None)
    config = write_config(settings, tmp_path / "map.toml")
    config.write_text(config.read_text() + """
[kafka.properties]
"debug" = "conf"
"sasl.username" = "journey"
[kafka.secrets]
"sasl.password" = "JOURNEY_TEST_CANARY"
""")
    env = {**os.environ, "JOURNEY_TEST_CANARY": CANARY}
    store, port, log = tmp_path / "store", free_port(), tmp_path / "flow.log"
    flow = spawn_journey("-v", "run", "--config", str(config), "--recovery-dir", str(store),
                         "--metrics-port", str(port), "--snapshot-interval", "1", log=log, env=env)
    try:
        wait_until(lambda: sum(committed(settings).values()) == len(produced), 60, "all read, snapshotted")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            metrics = page.read().decode()
        flow.send_signal(signal.SIGTERM)
        assert flow.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if flow.poll() is None:
            flow.kill()
    failing = journey_cli("-v", "run", "--config", str(config), "--brokers", f"127.0.0.1:{free_port()}",
                          env=env, timeout=60)
    assert failing.returncode == 3
    # librdkafka repeats a bad value in its refusal: a secret used where it does not belong
    echoed = tmp_path / "echoed.toml"
    as_mechanism = config.read_text().replace('"sasl.password" =', '"sasl.mechanism" =')
    echoed.write_text(as_mechanism.replace('[kafka.properties]\n',
                                   '[kafka.properties]\n"security.protocol" = "SASL_PLAINTEXT"\n'))
    refused = journey_cli("-v", "run", "--config", str(echoed), env=env, timeout=60)
    assert refused.returncode == 2 and "Unsupported SASL mechanism: ***" in refused.stderr, refused.stderr

    text = log.read_text()
    assert "sasl.password = [redacted]" in text  # the secret did reach the client, and its log
    assert "journey_events_total" in metrics
    outputs = [settings.topics.scores, settings.topics.transitions, settings.topics.dlq, settings.topics.late]
    records = [(key or b"") + (value or b"") for topic in outputs
               for key, value, _ in read_topic(settings, topic)]
    assert len(records) > 1_000 and any(b'"reason"' in r for r in records)
    files = [p for p in store.rglob("*") if p.is_file()]
    assert files
    errors = failing.stderr + failing.stdout + refused.stderr + refused.stdout
    for where, found in [("log", CANARY in text), ("errors", CANARY in errors),
                         ("metrics", CANARY in metrics),
                         ("outputs", any(CANARY.encode() in r for r in records)),
                         ("recovery files", any(CANARY.encode() in p.read_bytes() for p in files))]:
        assert not found, where
