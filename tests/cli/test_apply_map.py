"""``journey apply-map``: a checked map is published once to the control topic, nothing a flow cannot take."""

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from config.errors import ConfigError
from config.model import DEFAULT_PATH, MAP_SECTIONS, Settings, load_settings, map_document
from journey.control import APPLY, RUN, decode, in_force, publish
from journey.kafka_io import ensure_topics
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
    assert f"map {version} is already in force on" in again.stdout and "nothing published" in again.stdout

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
        # the map and who/when/how: nothing of [kafka] or [topics]
        assert set(record) == {"version", "applied_by", "applied_at", "origin", "map"}
        assert set(record["map"]) == set(MAP_SECTIONS) and record["origin"] == "apply-map"
    assert audit[1][1]["map"]["stages"]["consideration"]["threshold"] == 2.0


def test_a_live_flow_runs_its_files_map_unless_maps_were_applied_since_a_flow_started_with_it(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    base = write_config(settings, tmp_path / "base.toml")
    first = load_settings(base)
    start = in_force(first)  # an empty topic: the file's map, published as the flow starts
    assert start.publish and start.journey.version == first.journey.version and start.follow_from == 0
    started = publish(first, first.journey, "tests", RUN)

    lower = load_settings(variant(base, tmp_path / "lower.toml", *LOWER))
    applied = publish(lower, lower.journey, "tests", APPLY)
    restart = in_force(first)  # the same file again: the map applied since is in force
    assert not restart.publish and restart.journey.version == lower.journey.version
    assert restart.follow_from == applied > started

    edited = load_settings(variant(base, tmp_path / "edited.toml", "store = 1.5", "store = 1.7"))
    fresh = in_force(edited)  # the file was edited since: the newest intent, published as it starts
    assert fresh.publish and fresh.journey.version == edited.journey.version
    assert fresh.follow_from == applied + 1


@pytest.mark.parametrize("tables", [
    {"touchpoints": {"page_view": {"weight": 1.0, "roles": [[1]]}}},  # a role that is no name
    {"journey": {"half_life": "9" * 400 + "d"}},  # a duration no float holds
    {"stages": {"retention": {"threshold": 4.0, "requires": {"purchase": 2**63}}}},  # past 64 bits
])
def test_a_control_record_that_is_no_map_is_refused_never_raised(tables: dict) -> None:
    document = map_document(load_settings(DEFAULT_PATH).journey)
    for section, content in tables.items():
        document[section] = {**document[section], **content}
    value = orjson.dumps({"version": "x", "map": document})
    with pytest.raises(ConfigError, match="control topic 'c' offset 7: "):
        decode("c", 7, value)


def test_a_control_topic_that_deletes_by_retention_is_said(make_settings: Callable[..., Settings],
                                                           tmp_path: Path) -> None:
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.topics.control], 1)  # made by hand, without compaction
    done = journey_cli("apply-map", str(write_config(settings, tmp_path / "map.toml")))
    assert done.returncode == 0, done.stderr
    assert f"the control topic {settings.topics.control!r} has cleanup.policy=delete" in done.stderr
    other = write_config(make_settings(), tmp_path / "other.toml")
    assert journey_cli("apply-map", str(other)).returncode == 0  # makes the topic, compacted
    again = journey_cli("apply-map", str(other))  # finds it, and has nothing to say
    assert again.returncode == 0 and "nothing published" in again.stdout
    assert "cleanup.policy" not in again.stderr
