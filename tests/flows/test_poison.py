"""The poison catalogue: each message lands in the DLQ with its reason; valid events still score."""

import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from config.model import Settings
from journey.poison import catalogue
from journey.simulate import SimMessage, SimOptions, messages, produce
from operators.base import wall_clock_ms
from tests.broker_fixtures import read_json
from tests.flows.test_end_to_end import assert_matches_reference, reference_from, run_flow

pytestmark = pytest.mark.slow


def test_poison_catalogue_goes_to_dlq(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    valid = messages(settings, SimOptions(customers=200, events=2_000, seed=3))
    poisons = catalogue(wall_clock_ms())
    mixed = list(valid)
    rng = random.Random(7)
    for p in poisons:  # scattered among the valid events, on both input topics
        topic = settings.topics.inputs[rng.randrange(2)]
        mixed.insert(rng.randrange(len(mixed)), SimMessage(topic, b"poison", p.value, "malformed"))
    produce(settings, mixed, progress=None)
    run_flow(settings, tmp_path)

    dead = read_json(settings, settings.topics.dlq)
    assert len(dead) == len(poisons)
    by_raw = {}
    for d in dead:
        assert d["topic"] in settings.topics.inputs and d["offset"] >= 0 and d["key"] == "poison"
        by_raw.setdefault(d["raw_sha256"], []).append(d)
    for p in poisons:
        digest = hashlib.sha256(p.value).hexdigest() if p.value is not None else None
        (record,) = by_raw[digest]
        assert record["reason"] == p.reason, (p.name, record["reason"], record["detail"])
        assert record["detail"]
        if p.value is not None and len(p.value) > 65_536:
            assert record["raw_truncated"] and record["raw_bytes"] == len(p.value)
        if p.name == "invalid_utf8":
            assert record["raw_encoding"] == "base64"
    assert_matches_reference(settings, reference_from(settings, valid))
    assert all(orjson.loads(m.value)["customer_id"] != "poison" for m in valid)
