"""A recovery store resumes only under the state layout that wrote it; under another map of that
layout, stages are evaluated again at the restart and the map applies from the first new event
(real broker, ``journey run`` as a user runs it)."""

import re
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from config.model import Settings, layout_changes, load_settings
from journey.broker import EmbeddedBroker
from journey.simulate import SimOptions, messages, produce
from operators.routing import DEFAULT_SHARDS
from operators.shard import state_layout
from tests.broker_fixtures import journey_cli, read_json, read_topic, write_config
from tests.flows.test_end_to_end import assert_matches_reference, reference_from
from tests.reference import records_match, stage_of

pytestmark = pytest.mark.slow
DAY = 86_400_000


def run(config: Path, store: Path, *options: str) -> tuple[int, str]:
    done = journey_cli("run", "--config", str(config), "--until-end", "--recovery-dir", str(store), *options)
    return done.returncode, done.stderr


def test_a_resume_under_another_layout_stops_before_reading_input(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(inputs=("events",))
    produced = messages(settings, SimOptions(customers=100, events=1_000, seed=3, span_ms=DAY))
    produce(settings, produced[:600], progress=None, partitions=1)
    config = write_config(settings, tmp_path / "map.toml")
    store = tmp_path / "store"
    rc, err = run(config, store)
    assert rc == 0, err[-3000:]
    assert "no --recovery-dir" not in err  # a run with a store does not warn that restarts start over
    assert f"recovery store {store}: fresh start" in err
    written = len(read_topic(settings, settings.topics.scores))
    produce(settings, produced[600:], progress=None, partitions=1)

    wider = tmp_path / "wider.toml"
    wider.write_text(config.read_text().replace("[channels]\n", "[channels]\ntv = 1.3\n"))
    rc, err = run(wider, store)
    assert rc == 2, err[-3000:]
    assert "[channels]: added 'tv'" in err and "new --recovery-dir" in err and str(store) in err
    assert "Traceback" not in err
    assert len(read_topic(settings, settings.topics.scores)) == written  # nothing was read

    rc, err = run(config, store)  # the map that wrote the store still resumes it
    assert rc == 0, err[-3000:]
    assert len(read_topic(settings, settings.topics.scores)) > written
    topic = settings.topics.inputs[0]
    assert f"recovery store {store}: resuming from epoch " in err
    assert f"at offsets (partition@next offset): {topic} 0@600" in err  # where the first run ended


def test_a_store_that_does_not_fit_the_topics_is_refused(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """The same topic names on an emptied broker hold fewer messages than the store has read."""
    settings = make_settings(inputs=("events",))
    produced = messages(settings, SimOptions(customers=100, events=800, seed=6, span_ms=DAY))
    produce(settings, produced, progress=None, partitions=1)
    config = write_config(settings, tmp_path / "map.toml")
    store = tmp_path / "store"
    rc, err = run(config, store)
    assert rc == 0, err[-3000:]
    with EmbeddedBroker() as emptied:
        moved = settings.with_brokers(emptied.bootstrap)
        produce(moved, produced[:300], progress=None, partitions=1)
        rc, err = run(config, store, "--brokers", emptied.bootstrap)
        assert rc == 2, err[-3000:]
        assert f"--recovery-dir {store} does not fit the input topics at {emptied.bootstrap}" in err
        topic = re.escape(settings.topics.inputs[0])
        assert re.search(rf"{topic}\[0\] holds offsets 0 to \d+, not the saved 800", err), err[-2000:]
        assert "Traceback" not in err
        assert not read_topic(moved, settings.topics.scores)  # refused before reading anything


def test_a_store_whose_creation_was_cut_short_is_made_again_by_the_next_run(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A kill inside the store's creation (here: a partition left without its tables) does not
    stop the next run: nothing was kept, so the store is made again and the input read whole."""
    settings = make_settings(inputs=("events",))
    produced = messages(settings, SimOptions(customers=100, events=500, seed=8, span_ms=DAY))
    produce(settings, produced, progress=None, partitions=1)
    config = write_config(settings, tmp_path / "map.toml")
    store = tmp_path / "store"
    store.mkdir()
    (store / "part-0.sqlite3").write_bytes(b"")
    rc, err = run(config, store)
    assert rc == 0, err[-3000:]
    assert "its creation was interrupted before anything was kept in it; creating it again" in err
    assert f"recovery store {store}: fresh start" in err
    assert_matches_reference(settings, reference_from(settings, produced))


def test_a_store_resumes_with_the_shards_it_was_written_with(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(inputs=("events",))
    produced = messages(settings, SimOptions(customers=200, events=2_000, seed=4, span_ms=DAY))
    config = write_config(settings, tmp_path / "map.toml")
    store = tmp_path / "store"
    produce(settings, produced[:1_000], progress=None, partitions=1)
    rc, err = run(config, store, "--shards", "7")
    assert rc == 0, err[-3000:]
    produce(settings, produced[1_000:], progress=None, partitions=1)

    rc, err = run(config, store, "--shards", "5")  # said outright, another count is refused
    assert rc == 2 and "the number of shards: 7 -> 5" in err, err[-3000:]
    rc, err = run(config, store)  # not said: the store's
    assert rc == 0, err[-3000:]
    assert "7 customer shards, as the recovery store was written" in err
    assert_matches_reference(settings, reference_from(settings, produced))


def test_changes_that_keep_the_layout_resume_evaluate_stages_again_and_apply_from_the_next_event(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(inputs=("events",))
    produced = messages(settings, SimOptions(customers=300, events=6_000, seed=5, span_ms=2 * DAY))
    before, after = produced[:3_000], produced[3_000:]
    config = write_config(settings, tmp_path / "map.toml")
    changed = tmp_path / "changed.toml"
    changed.write_text(config.read_text()
                       .replace('half_life = "14d"', 'half_life = "7d"')
                       .replace("[stages.decision]\nthreshold = 5.0", "[stages.decision]\nthreshold = 3.5")
                       .replace("[channels]\nweb = 1.0", "[channels]\nweb = 1.6")
                       .replace("purchase]\nweight = 10.0", "purchase]\nweight = 7.5"))
    new_map = load_settings(changed).journey
    assert new_map.layout == settings.journey.layout and new_map != settings.journey
    store = tmp_path / "store"

    produce(settings, before, progress=None, partitions=1)
    rc, err = run(config, store)
    assert rc == 0, err[-3000:]
    produce(settings, after, progress=None, partitions=1)
    rc, err = run(changed, store)
    assert rc == 0, err[-3000:]

    ref = reference_from(settings, before)
    ref.journey = new_map  # the changed map: every stage evaluated under it at the restart, ...
    moved = {}
    for cid, customer in ref.customers.items():
        stage = stage_of(new_map, customer)
        if stage != customer.stage:
            moved[cid] = (customer.stage, stage)
            customer.stage = stage
    for m in after:  # ... then applied from the first event on
        if m.kind != "malformed":
            ref.apply(orjson.loads(m.value))
    scores = assert_matches_reference(settings, ref)
    by_map = [t for t in read_json(settings, settings.topics.transitions) if t["cause"] == "map"]
    assert moved and {t["customer_id"]: (t["from"], t["to"]) for t in by_map} == moved
    assert {t["map"] for t in by_map} == {new_map.version}
    returning = {orjson.loads(m.value)["customer_id"] for m in after} & {
        orjson.loads(m.value)["customer_id"] for m in before}
    unchanged = reference_from(settings, produced)  # had the first map stayed
    assert len(returning) > 100
    assert sum(1 for c in returning if records_match(scores[c], unchanged.score_record(c), 10.0)) > 100


def test_layout_changes_are_named_in_the_files_terms(settings: Settings) -> None:
    saved = state_layout(settings.journey, DEFAULT_SHARDS)
    assert layout_changes(saved, saved) == []
    now = {**saved, "stages": [*saved["stages"][:-1], "loyal", "advocacy"],  # type: ignore[misc]
           "channels": saved["channels"][1:], "metrics_window_ms": 300_000, "shards": 16}  # type: ignore[index]
    assert layout_changes(saved, now) == [
        f"the number of shards: {DEFAULT_SHARDS} -> 16",
        "[journey].stages: added 'loyal'",
        "[channels]: removed 'web'",
        "[journey].metrics_window: 1m -> 5m",
    ]
    assert layout_changes({"schema": 0}, saved)[0].startswith("the state's schema version")
