"""A real Prometheus server (Debian's ``prometheus`` package) scraping what a test serves."""

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from journey.broker import free_port

SCRAPE_INTERVAL_S = 1


class Prometheus:
    """One server process with its own data directory, scraping ``targets`` as job ``job``."""

    def __init__(self, workdir: Path, targets: list[str], job: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is missing: install Debian's `prometheus` package "
                        "(apt-get install prometheus; scripts/setup does when it can)")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }))
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"], stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"prometheus not ready within {timeout_s} s: {self.log.read_text()[-2000:]}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now (an error in the query fails the test)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as page:
                body = json.load(page)
        except urllib.error.HTTPError as err:
            msg = f"{expr}: {err.read().decode()}"
            raise AssertionError(msg) from err
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets_up(self) -> list[dict[str, Any]]:
        """What the server says of its scrape targets."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=10) as page:
            active: list[dict[str, Any]] = json.load(page)["data"]["activeTargets"]
        return active

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Prometheus]]:
    """Start Prometheus servers scraping the given targets; all stop when the test ends."""
    started: list[Prometheus] = []

    def start(targets: list[str], job: str = "journey") -> Prometheus:
        server = Prometheus(tmp_path_factory.mktemp("prometheus"), targets, job)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
