"""``journey apply-map``: a checked map is published once to the control topic, nothing a flow cannot take."""

from collections.abc import Callable
from pathlib import Path

import orjson

from config.model import Settings, load_settings
from tests.broker_fixtures import journey_cli, read_topic, write_config

LOWER = ("[stages.consideration]\nthreshold = 3.0", "[stages.consideration]\nthreshold = 2.0")


def variant(base: Path, path: Path, old: str, new: str) -> Path:
    """``base`` with ``old`` replaced by ``new`` once, written to ``path``."""
    text = base.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


def published(settings: Settings) -> list[tuple[bytes | None, dict]]:
    return [(key, orjson.loads(value or b""))
            for key, value, _ in read_topic(settings, settings.topics.control)]


def test_apply_map_publishes_a_checked_map_once_and_refuses_what_a_flow_cannot_take(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    base = write_config(settings, tmp_path / "base.toml")

    broken = variant(base, tmp_path / "broken.toml", LOWER[0], '[stages.consideration]\nthreshold = "2"')
    refused = journey_cli("apply-map", str(broken))
    assert refused.returncode == 2, refused.stderr
    assert "[stages.consideration.threshold]: expected a number" in refused.stderr
    assert published(settings) == []  # a map that fails check-config is never published

    first = journey_cli("apply-map", str(base))
    assert first.returncode == 0, first.stderr
    version = load_settings(base).journey.version
    assert f"published map {version} to {settings.topics.control!r} at offset 0" in first.stdout

    again = journey_cli("apply-map", str(base))
    assert again.returncode == 0, again.stderr
    assert f"map {version} is already the last on" in again.stdout and "nothing published" in again.stdout

    lower = variant(base, tmp_path / "lower.toml", *LOWER)
    second = journey_cli("apply-map", str(lower))
    assert second.returncode == 0, second.stderr
    lowered = load_settings(lower).journey.version
    assert f"published map {lowered}" in second.stdout and f"after {version}" in second.stdout

    layout = variant(lower, tmp_path / "layout.toml", 'half_life = "14d"', 'half_life = "7d"')
    third = journey_cli("apply-map", str(layout))
    assert third.returncode == 2
    assert "cannot take this map: it changes [journey].half_life: 14d -> 7d" in third.stderr
    assert "journey backtest --candidate FILE" in third.stderr

    audit = published(settings)  # the trail: who, when, which map, every publication kept
    assert [record["version"] for _, record in audit] == [version, lowered]
    assert len({key for key, _ in audit}) == 2
    for key, record in audit:
        assert key is not None and key.decode().startswith(record["version"] + "@")
        assert "@" in record["applied_by"] and record["applied_at"].endswith("+00:00")
    assert audit[1][1]["map"]["stages"]["consideration"]["threshold"] == 2.0
