"""Session-wide fixtures: the default journey map, the embedded broker, a Prometheus server."""

import pytest

from config.model import DEFAULT_PATH, Settings, load_settings

pytest_plugins = ["tests.broker_fixtures", "tests.prometheus_server"]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings(DEFAULT_PATH)
