"""The command line works from any directory, even one that holds packages named like ours."""

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from config.model import Settings
from journey.broker import free_port
from journey.simulate import SimOptions, messages, produce
from tests.broker_fixtures import read_json, write_config

pytestmark = pytest.mark.slow

JOURNEY = Path(sys.executable).with_name("journey")  # the console script, as a user runs it
SHADOWS = ("config", "operators", "flows", "journey")


@pytest.fixture
def crowded(tmp_path: Path) -> Path:
    """A working directory whose own packages fail loudly when imported."""
    for name in SHADOWS:
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text(
            f'raise ImportError("the working directory\'s {name} package was imported")\n')
    return tmp_path


def test_run_from_a_directory_with_packages_of_our_names(
        crowded: Path, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(inputs=("events",))
    produced = messages(settings, SimOptions(customers=50, events=500, seed=4))
    produce(settings, produced, progress=None)
    config = write_config(settings, crowded / "map.toml")
    done = subprocess.run([str(JOURNEY), "run", "--config", "map.toml", "--until-end"], cwd=crowded,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "working directory" not in done.stderr
    assert len({r["customer_id"] for r in read_json(settings, settings.topics.scores)}) == 50
    assert config.exists()


def test_demo_from_a_directory_with_packages_of_our_names(crowded: Path) -> None:
    """The demo runs anywhere, shows customers, and serves the flow's metrics where it says."""
    port = free_port()
    demo = subprocess.Popen([str(JOURNEY), "demo", "--rate", "500", "--customers", "100",
                             "--metrics-port", str(port)], cwd=crowded,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        seen = ""
        assert demo.stdout is not None
        while time.monotonic() < deadline and "customers tracked" not in seen:
            line = demo.stdout.readline()
            if not line and demo.poll() is not None:
                break
            seen += line
        time.sleep(8)  # frames with customers in them
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            scraped = page.read().decode()
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    out = seen + out
    assert demo.returncode == 0, out[-3000:]
    assert "working directory" not in out and "the flow exited" not in out
    tracked = [int(line.split()[-1].replace(",", "")) for line in out.splitlines()
               if line.strip().startswith("customers tracked")]
    assert tracked and tracked[-1] > 0, out[-2000:]
    assert "demo stopped" in out
    assert f"Prometheus metrics at http://127.0.0.1:{port}/metrics" in out
    events = [float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
              if line.startswith("journey_events_total{")]
    assert events and sum(events) > 0, scraped[:2000]
