"""A real Prometheus scrapes a live flow fed by ``journey simulate``: every panel shows data."""

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.model import Settings
from grafana.alerts import rules
from grafana.dashboards import DASHBOARDS
from grafana.panels import panel_queries
from grafana.promql import metric_names
from tests.broker_fixtures import LiveFlow
from tests.grafana.conftest import Promtool
from tests.prometheus_server import Prometheus

pytestmark = pytest.mark.slow


@pytest.fixture
def live(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[LiveFlow]:
    faults = ("--duplicates", "0.02", "--late", "0.01", "--malformed", "0.01")
    flow = LiveFlow(make_settings(), tmp_path, *faults)
    yield flow
    flow.stop()


def wait_until(server: Prometheus, live: LiveFlow, expr: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not server.query(expr):
        assert live.flow.poll() is None, live.log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {expr} within {timeout_s} s: {live.log.read_text()[-3000:]}"
        time.sleep(1)


def test_every_panel_query_returns_series_from_a_live_flow(
        live: LiveFlow, prometheus: Callable[..., Prometheus], promtool: Promtool, tmp_path: Path) -> None:
    server = prometheus([f"127.0.0.1:{live.port}"])
    # scores flowing, latency observed, a metrics window closed, all over several scrapes
    wait_until(server, live, "rate(journey_end_to_end_latency_seconds_count[1m]) > 0")
    wait_until(server, live, "sum(journey_channel_events) > 0")
    wait_until(server, live, "count_over_time(journey_channel_events[1m]) > 4")

    empty = [(board, title, expr) for board, build in DASHBOARDS.items()
             for title, expr in panel_queries(build()) if not server.query(expr)]
    assert not empty, "\n".join(f"{board} / {title}: {expr}" for board, title, expr in empty)

    scraped = live.scrape()
    exported = {s.name for family in text_string_to_metric_families(scraped) for s in family.samples}
    used = {name for build in DASHBOARDS.values() for _, expr in panel_queries(build())
            for name in metric_names(expr)}
    used |= {name for rule in rules() for name in metric_names(rule["expr"])}
    assert used - exported == set()
    for rule in rules():  # each rule evaluates (its result depends on the moment: none firing here)
        server.query(rule["expr"])

    scrape_file = tmp_path / "scrape.txt"
    scrape_file.write_text(scraped)
    with scrape_file.open() as stdin:
        done = subprocess.run(["promtool", "check", "metrics"], stdin=stdin, capture_output=True,
                              text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (target,) = server.targets_up()
    assert target["health"] == "up" and target["labels"]["job"] == "journey"
