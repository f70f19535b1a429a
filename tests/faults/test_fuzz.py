"""10,000 hostile messages among valid events: no crash, each accounted for once, the valid ones unaffected.

Messages invalid by construction (random bytes, cut JSON, a missing or mistyped field,
nesting past 1,024 levels, documents past the size limit) must be in the dead-letter
topic; mutated events that may have stayed valid, deep valid events and events long
past the watermark are each either a dead letter or counted in their customer's score
(once), late ones also in the late topic.
"""

import hashlib
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from config.model import Settings
from journey.simulate import SimMessage, SimOptions, messages, produce
from tests.broker_fixtures import read_json
from tests.flows.test_end_to_end import final_scores, reference_from, run_flow
from tests.reference import event_time_ms, records_match

pytestmark = [pytest.mark.slow, pytest.mark.faults]
FUZZ = 10_000
MUST_DIE = ("random_bytes", "cut", "missing", "mistyped", "too_deep", "too_large")


def fuzzed(rng: random.Random, n: int, ts: int, types: list[str]) -> tuple[str, bytes]:
    """Message ``n``: its kind and bytes. Every event names its own customer, ``fuzz-<n>``.

    ``ts`` is the time of the valid events around it: hostile content, not hostile clocks
    (an event days ahead of its neighbours moves event time, and alignment with it).
    """
    event: dict[str, object] = {"event_id": f"fz-{n}", "customer_id": f"fuzz-{n}",
                                "ts": ts, "type": rng.choice(types), "channel": "web"}
    low = ts
    kind = rng.choices(["random_bytes", "cut", "missing", "mistyped", "flipped", "too_deep", "deep",
                        "too_large", "late", "odd"], [15, 10, 10, 10, 20, 5, 5, 3, 10, 12])[0]
    if kind == "random_bytes":
        return kind, rng.randbytes(rng.randrange(1, 300))
    if kind == "cut":
        whole = orjson.dumps(event)
        return kind, whole[:rng.randrange(1, len(whole) - 1)]
    if kind == "missing":
        del event[rng.choice(["event_id", "customer_id", "ts", "type"])]
    elif kind == "mistyped":
        field, value = rng.choice([("ts", 1.5), ("ts", "soon"), ("customer_id", 7), ("event_id", ""),
                                   ("sentiment", 3), ("value", -1), ("type", "teleport"),
                                   ("customer_id", "x" * 200), ("properties", [1, 2])])
        event[field] = value
    elif kind == "flipped":
        data = bytearray(orjson.dumps(event))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return kind, bytes(data)
    elif kind in ("too_deep", "deep"):
        depth = rng.randrange(1_030, 3_000) if kind == "too_deep" else rng.randrange(100, 1_000)
        body = b'{"a":' * depth + b"1" + b"}" * depth
        if kind == "deep" and rng.random() < 0.5:
            event["ts"] = low - 2 * 86_400_000  # long past the watermark: the late record holds it
        return kind, orjson.dumps(event)[:-1] + b',"properties":' + body + b"}"
    elif kind == "too_large":
        event["properties"] = {"blob": "x" * rng.randrange(70_000, 600_000)}
    elif kind == "late":
        event["ts"] = low - rng.randrange(1, 20) * 86_400_000
    else:  # valid and odd: unicode, escapes, integers past 64 bits in properties
        event["customer_id"] = f"fuzz-{n}-ü\u2028\"\\"
        odd = b'{"big":%d,"neg":%d,"s":"\\u0000\xc3\xa9\\ud83d\\ude00"}' % (2**70, -(2**65))
        return kind, orjson.dumps(event)[:-1] + b',"properties":' + odd + b"}"
    return kind, orjson.dumps(event)


def test_ten_thousand_fuzzed_messages(make_settings: Callable[..., Settings], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    valid = messages(settings, SimOptions(customers=500, events=20_000, seed=25, duplicates=0.02,
                                          out_of_order=0.02))
    rng = random.Random(2026)
    types = list(settings.journey.touchpoints)
    places = sorted(rng.randrange(len(valid)) for _ in range(FUZZ))
    fuzz = [fuzzed(rng, n, event_time_ms(orjson.loads(valid[at].value)["ts"]), types)
            for n, at in enumerate(places)]
    mixed = list(valid)
    for n, at in reversed(list(enumerate(places))):  # each right after the valid event it took its time from
        mixed.insert(at + 1, SimMessage(settings.topics.inputs[n % 2], b"fuzz", fuzz[n][1], "fuzz"))
    produce(settings, mixed, progress=None)
    run_flow(settings, tmp_path)  # exit 0: no crash

    ref = reference_from(settings, valid)
    dead = Counter(d["raw_sha256"] for d in read_json(settings, settings.topics.dlq) if d["key"] == "fuzz")
    late = [rec for rec in read_json(settings, settings.topics.late)
            if rec["event"]["customer_id"] not in ref.customers]
    scores = final_scores(settings)
    scored_fuzz = sum(rec["events"] for cid, rec in scores.items() if cid not in ref.customers)
    kinds = Counter(kind for kind, _ in fuzz)
    for kind, value in fuzz:
        if kind in MUST_DIE:
            digest = hashlib.sha256(value).hexdigest()
            assert dead[digest] > 0, (kind, value[:200])
    # each once, none lost: late events are scored too (PRODUCT §5), and written to the late topic
    assert sum(dead.values()) + scored_fuzz == FUZZ
    assert sum(dead.values()) >= sum(kinds[k] for k in MUST_DIE) and 0 < len(late) < scored_fuzz

    with capsys.disabled():
        print(f"\nfuzz: {FUZZ:,} messages ({', '.join(f'{k} {n:,}' for k, n in sorted(kinds.items()))}): "
              f"{sum(dead.values()):,} dead letters, {scored_fuzz:,} scored ({len(late):,} of them late)")
    problems = {cid: p for cid in ref.customers  # the valid customers: as if no fuzz had come
                if (p := records_match(scores[cid], ref.score_record(cid), 10.0))}
    assert not problems, list(problems.items())[:5]
