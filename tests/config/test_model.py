"""The journey-map loader: the default file, and every kind of mistake named precisely."""

import re
from pathlib import Path

import numpy as np
import orjson
import pytest

from config.durations import format_duration_ms, parse_duration_ms
from config.errors import ConfigError
from config.model import DEFAULT_PATH, JourneyMap, live_changes, load_settings, map_document, parse_map

MINIMAL = """
[journey]
stages = ["a", "b"]
[stages.b]
threshold = 2.0
[touchpoints.x]
weight = 1.0
stages = { b = 1.0 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.toml"
    path.write_text(text)
    return path


def test_default_map_matches_the_catalogue() -> None:
    s = load_settings(DEFAULT_PATH)
    j = s.journey
    assert j.stage_names == ("awareness", "consideration", "decision", "retention", "advocacy")
    assert len(j.touchpoints) == 26 and j.touchpoints["purchase"].conversion
    assert dict(j.touchpoints["purchase"].stages) == {"decision": 1.0, "retention": 0.3}
    assert j.touchpoints["unsubscribe"].weight == -5.0 and j.channels["store"] == 1.5
    assert j.half_life_ms == 14 * 86_400_000 and j.allowed_lateness_ms == 300_000
    a = j.arrays
    assert a.stage_threshold.tolist()[1:] == [3.0, 5.0, 4.0, 6.0]
    assert np.isnan(a.stage_min_sentiment[:4]).all() and a.stage_min_sentiment[4] == 0.2
    assert a.stage_requires[:, 0].tolist() == [0, 0, 0, 1, 1]
    assert s.topics.inputs == ("clickstream", "touchpoints") and s.kafka.brokers


def test_minimal_map_runs_with_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL))
    assert s.topics.dlq == "journey.dlq" and s.journey.dedup_window_ms == 86_400_000


@pytest.mark.parametrize(("text", "expected"), [
    (MINIMAL + "\n[extra]\n", "unknown key 'extra'"),
    (MINIMAL.replace('weight = 1.0', 'weight = 1.0\ncolour = "red"'),
     "[touchpoints.x]: unknown key 'colour'"),
    (MINIMAL.replace("{ b = 1.0 }", "{ zz = 1.0 }"), "[touchpoints.x.stages.zz]"),
    (MINIMAL.replace("threshold = 2.0", "threshold = 2.0\nrequires = { nope = 1 }"),
     "[stages.b.requires.nope]"),
    (MINIMAL.replace("[journey]", '[journey]\nhalf_life = "-3d"'), "[journey.half_life]"),
    (MINIMAL.replace("[journey]", '[journey]\nhalf_life = "14"'), "a duration"),
    (MINIMAL.replace("[journey]", "[journey]\nsaturation = \"lots\""), "[journey.saturation]"),
    (MINIMAL.replace("threshold = 2.0", "threshold = true"), "[stages.b.threshold]"),
    (MINIMAL.replace("[stages.b]\nthreshold = 2.0", ""), "[stages.b]"),
    (MINIMAL.replace('"b"]', '"b", "dormant"]'), "reserved"),
    (MINIMAL + '\n[kafka.properties]\n"sasl.password" = "hunter2"\n', "environment variable"),
    (MINIMAL + '\n[topics]\ninputs = []\n', "[topics.inputs]"),
    ("[journey\n", "not valid TOML"),
])
def test_mistakes_name_file_key_and_expectation(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert "hunter2" not in str(info.value)


def test_secrets_come_from_the_environment_and_stay_out_of_repr(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[kafka.secrets]\n"sasl.password" = "KAFKA_PW"\n')
    with pytest.raises(ConfigError, match="KAFKA_PW"):
        load_settings(path, environ={})
    s = load_settings(path, environ={"KAFKA_PW": "canary-s3cret"})
    assert s.kafka.client_config()["sasl.password"] == "canary-s3cret"
    assert "canary-s3cret" not in repr(s) and "canary-s3cret" not in repr(s.kafka)


def test_durations() -> None:
    assert parse_duration_ms("250ms") == 250 and parse_duration_ms("1.5h") == 5_400_000
    assert format_duration_ms(86_400_000) == "1d" and format_duration_ms(1500) == "1500ms"
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms("5 fortnights")


def test_evidence_factors_may_be_negative(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL.replace("{ b = 1.0 }", "{ a = 1.5, b = -0.5 }")))
    assert dict(s.journey.touchpoints["x"].stages) == {"a": 1.5, "b": -0.5}
    assert s.journey.arrays.type_factor[0].tolist() == [1.5, -0.5]
    with pytest.raises(ConfigError, match=r"\[touchpoints.x.stages.b\]: expected a number"):
        load_settings(write(tmp_path, MINIMAL.replace("{ b = 1.0 }", "{ b = nan }")))


def test_a_secret_may_come_from_a_mounted_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[kafka.secrets]\n"sasl.password" = "KAFKA_PW"\n')
    mounted = tmp_path / "password"
    mounted.write_text("canary-from-file\n")
    s = load_settings(path, environ={"KAFKA_PW_FILE": str(mounted)})
    assert s.kafka.client_config()["sasl.password"] == "canary-from-file"  # one trailing newline less
    assert load_settings(path, environ={"KAFKA_PW": "direct", "KAFKA_PW_FILE": str(mounted)}
                         ).kafka.properties["sasl.password"] == "direct"  # the variable itself wins
    with pytest.raises(ConfigError, match="KAFKA_PW_FILE") as info:
        load_settings(path, environ={"KAFKA_PW_FILE": str(tmp_path / "absent")})
    assert "sasl.password" in str(info.value) and "canary" not in str(info.value)


def test_output_topics_are_created_as_the_file_says_scores_compacted_by_default(tmp_path: Path) -> None:
    default = load_settings(write(tmp_path, MINIMAL)).topics
    assert default.replication_factor == -1  # the broker's default
    assert default.creation()["journey.scores"] == {"cleanup.policy": "compact"}
    assert default.creation()["journey.dlq"] == {}
    topics = load_settings(write(tmp_path, MINIMAL + """
[topics]
replication_factor = 3
dlq = "errors"
[topics.config]
"min.insync.replicas" = 2
[topics.config.scores]
"cleanup.policy" = "compact,delete"
[topics.config.dlq]
"retention.ms" = 604800000
""")).topics
    made = topics.creation()
    assert topics.replication_factor == 3
    assert made["journey.scores"] == {"cleanup.policy": "compact,delete", "min.insync.replicas": "2"}
    assert made["errors"] == {"min.insync.replicas": "2", "retention.ms": "604800000"}
    assert made["journey.transitions"] == {"min.insync.replicas": "2"}
    for bad, key in (("[topics]\nreplication_factor = 0\n", "[topics.replication_factor]"),
                     ('[topics.config.scorez]\n"a" = 1\n', "[topics.config.scorez]"),
                     ('[topics.config]\n"a" = [1]\n', "[topics.config.a]")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_settings(write(tmp_path, MINIMAL + bad))


def test_a_map_document_reads_back_as_the_same_map() -> None:
    """What the control topic carries (through JSON) is the map, hash and all."""
    j = load_settings(DEFAULT_PATH).journey
    document = orjson.loads(orjson.dumps(map_document(j)))
    again = parse_map("doc", document)
    assert again == j and again.version == j.version and again.arrays.stage_requires.tolist() == \
        j.arrays.stage_requires.tolist()
    with pytest.raises(ConfigError, match=r"doc: \[stages.decision.threshold\]: expected a number"):
        parse_map("doc", {**document, "stages": {**document["stages"], "decision": {"threshold": "5"}}})
    with pytest.raises(ConfigError, match="unknown key 'kafka'"):
        parse_map("doc", {**document, "kafka": {}})


LIVE_EDITS = [  # what a running flow takes: rules, weights, multipliers, saturation
    ("[stages.consideration]\nthreshold = 3.0", "[stages.consideration]\nthreshold = 2.0"),
    ("min_sentiment = 0.2", "min_sentiment = 0.4"),
    ("requires = { purchase = 1 }", "requires = { purchase = 2 }"),
    ("store = 1.5", "store = 2.5"),
    ('saturation = 25.0', 'saturation = 40.0'),
]
FRAME_EDITS = [  # (edit, the place the refusal names)
    (('stages = ["awareness", "consideration", "decision", "retention", "advocacy"]',
      'stages = ["awareness", "consideration", "decision", "retention", "advocacy", "loyal"]',
      "[stages.advocacy]", "[stages.loyal]\nthreshold = 9.0\n\n[stages.advocacy]"),
     "[journey].stages"),
    (('half_life = "14d"', 'half_life = "7d"'), "[journey].half_life: 14d -> 7d"),
    (("store = 1.5", "store = 1.5\nkiosk = 1.0"), "the channels of [channels]"),
    (('session_gap = "30m"', 'session_gap = "20m"'), "[journey].session_gap: 30m -> 20m"),
]


def edited(tmp_path: Path, *edits: str) -> JourneyMap:
    """The default map with each (old, new) pair of ``edits`` replaced once."""
    text = DEFAULT_PATH.read_text()
    for old, new in zip(edits[::2], edits[1::2], strict=True):
        assert old in text, old
        text = text.replace(old, new, 1)
    return load_settings(write(tmp_path, text)).journey


@pytest.mark.parametrize(("old", "new"), LIVE_EDITS)
def test_a_running_flow_takes_new_rules_weights_and_saturation(tmp_path: Path, old: str, new: str) -> None:
    base = load_settings(DEFAULT_PATH).journey
    changed = edited(tmp_path, old, new)
    assert changed.version != base.version and live_changes(base, changed) == []


@pytest.mark.parametrize(("edit", "named"), FRAME_EDITS)
def test_a_running_flow_refuses_layout_changes_naming_them(tmp_path: Path, edit: tuple[str, ...],
                                                          named: str) -> None:
    base = load_settings(DEFAULT_PATH).journey
    changes = live_changes(base, edited(tmp_path, *edit))
    assert len(changes) == 1 and changes[0].startswith(named), changes
