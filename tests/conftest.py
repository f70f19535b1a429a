"""Session-wide fixtures: the default journey map and (in flows/cli) the embedded broker."""

import pytest

from config.model import DEFAULT_PATH, Settings, load_settings

pytest_plugins = ["tests.broker_fixtures"]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings(DEFAULT_PATH)
