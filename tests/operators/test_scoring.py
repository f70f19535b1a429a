"""The Numba scoring kernel against the plain-Python reference (tests/reference.py)."""

import itertools
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config.model import JourneyMap, Settings, Topics
from operators.base import NO_TIME, EventBatch
from operators.records import RecordBuilder
from operators.score_kernels import INLINE_IDS, CustomerColumns
from operators.scoring import hash_ids, restage, score_batch
from operators.state import ShardState
from tests.reference import Reference, RememberedIds, close, stage_of

BASE = 1_700_000_000_000
DAY = 86_400_000


def batch_of(events: list[dict], jmap: JourneyMap) -> EventBatch:
    return EventBatch(
        [e["customer_id"] for e in events],
        [e["event_id"] for e in events],
        np.array([e["ts"] for e in events], dtype=np.int64),
        np.array([jmap.type_index[e["type"]] for e in events], dtype=np.int32),
        np.array([jmap.channel_index.get(e.get("channel") or "", 0) for e in events], dtype=np.int32),
        np.array([np.nan if e.get("sentiment") is None else e["sentiment"] for e in events]),
        np.array([bool(e.get("late")) for e in events], dtype=np.bool_),
        np.full(len(events), NO_TIME, dtype=np.int64),
        np.full(len(events), NO_TIME, dtype=np.int64),
        np.zeros(len(events), dtype=np.int32),
        np.zeros(len(events), dtype=np.int64),
    )


def run_kernel(events: list[dict], jmap: JourneyMap, cuts: list[int] | None = None):
    """Score ``events`` in batches cut at ``cuts``; return state and all transitions."""
    state = ShardState(jmap.arrays, capacity=2)  # small, so growth is exercised
    bounds = [0, *sorted(cuts or []), len(events)]
    transitions, duplicates = [], 0
    for lo, hi in itertools.pairwise(bounds):
        if lo == hi:
            continue
        part = events[lo:hi]
        res = score_batch(state, batch_of(part, jmap), jmap.arrays, jmap.dormant_after_ms)
        duplicates += res.duplicates
        tr = res.transitions
        for i, f, t, v in zip(tr.event, tr.from_stage, tr.to_stage, tr.version, strict=True):
            e = part[i]
            transitions.append((e["customer_id"], int(f), int(t), e["ts"], e["event_id"], int(v)))
    return state, transitions, duplicates


def assert_state_matches(state: ShardState, ref: Reference, jmap: JourneyMap) -> None:
    names = jmap.stage_names
    builder = RecordBuilder(jmap, Topics())
    scale = max(abs(t.weight) for t in jmap.touchpoints.values()) * max(
        [1.0, *jmap.channels.values()])
    assert set(state.all_ids()) == set(ref.customers)
    for cid, c in ref.customers.items():
        r = state.index[cid]
        assert state.T[r] == c.T and state.n[r] == c.n, cid
        assert close(state.S[r], c.S, scale), (cid, state.S[r], c.S)
        assert close(state.Sn[r], c.Sn, 1.0) and close(state.Sd[r], c.Sd, 1.0), cid
        for k, name in enumerate(names):
            assert close(state.E[r, k], c.E[name], scale), (cid, name, state.E[r, k], c.E[name])
        assert builder.stage_name(int(state.stage[r])) == c.stage, cid


def stage_index(jmap: JourneyMap, name: str | None) -> int:
    return -1 if name is None else jmap.stage_names.index(name)


def ref_transitions(ref: Reference, jmap: JourneyMap) -> list[tuple]:
    return [(t.customer_id, stage_index(jmap, t.from_stage), stage_index(jmap, t.to_stage), t.ts,
             t.event_id, t.version) for t in ref.transitions]


def reference_of(events: list[dict], jmap: JourneyMap) -> Reference:
    ref = Reference(jmap)
    for e in events:
        ref.apply(e)
    return ref


# --- fixed cases ---------------------------------------------------------------------------

def test_single_customer_decay_by_hand(settings: Settings) -> None:
    jmap = settings.journey
    h = jmap.half_life_ms
    events = [
        {"customer_id": "c", "event_id": "1", "ts": BASE, "type": "product_view", "channel": "web"},
        {"customer_id": "c", "event_id": "2", "ts": BASE + h, "type": "add_to_cart", "channel": "app"},
        # out of order: one half-life before T
        {"customer_id": "c", "event_id": "3", "ts": BASE, "type": "page_view", "channel": "store"},
    ]
    state, transitions, _ = run_kernel(events, jmap)
    r = state.index["c"]
    # product_view 1.0*web 1.0 halved; add_to_cart 3.0*app 1.2; page_view 0.5*store 1.5 halved
    assert state.S[r] == pytest.approx(0.5 + 3.6 + 0.375, rel=1e-12)
    k = jmap.stage_names.index
    assert state.E[r, k("consideration")] == pytest.approx(0.5 + 0.375 * 0.5, rel=1e-12)
    assert state.E[r, k("decision")] == pytest.approx(3.6, rel=1e-12)
    assert state.T[r] == BASE + h and state.n[r] == 3
    assert [(f, t) for _, f, t, *_ in transitions] == [(-1, 0)]  # entry only: decision needs 5


def test_stage_rules_requires_and_sentiment(settings: Settings) -> None:
    jmap = settings.journey
    k = jmap.stage_names.index
    e = [
        {"customer_id": "a", "event_id": "1", "ts": BASE, "type": "add_to_cart"},
        {"customer_id": "a", "event_id": "2", "ts": BASE + 1, "type": "checkout_start"},
        {"customer_id": "a", "event_id": "3", "ts": BASE + 2, "type": "referral"},
        {"customer_id": "a", "event_id": "4", "ts": BASE + 3, "type": "purchase"},
        {"customer_id": "a", "event_id": "5", "ts": BASE + 4, "type": "survey_response",
         "sentiment": 0.1},
        {"customer_id": "a", "event_id": "6", "ts": BASE + 5, "type": "review_write",
         "sentiment": 0.9},
    ]
    state, transitions, _ = run_kernel(e, jmap)
    path = [(f, t) for _, f, t, *_ in transitions]
    # decision at checkout (7 >= 5); referral gives advocacy evidence 6 but no purchase yet;
    # purchase unlocks advocacy? sentiment undefined -> retention; then sentiment mean 0.5 -> advocacy
    assert path == [(-1, 0), (0, k("decision")), (k("decision"), k("retention")),
                    (k("retention"), k("advocacy"))]
    assert transitions[-1][4] == "6" and transitions[-1][5] == 6
    assert_state_matches(state, reference_of(e, jmap), jmap)


def test_duplicates_inside_window_change_nothing(settings: Settings) -> None:
    jmap = settings.journey
    events = [{"customer_id": f"c{i % 3}", "event_id": f"e{i}", "ts": BASE + i * 60_000,
               "type": "page_view", "channel": "web"} for i in range(30)]
    state, _, dups = run_kernel(events + events[::-1], jmap, cuts=[7, 30, 44])
    assert dups == 30
    assert_state_matches(state, reference_of(events, jmap), jmap)


def test_duplicate_beyond_window_counts_again(settings: Settings) -> None:
    jmap = settings.journey
    first = {"customer_id": "c", "event_id": "x", "ts": BASE, "type": "page_view"}
    later = {"customer_id": "c", "event_id": "y", "ts": BASE + jmap.dedup_window_ms + 1,
             "type": "page_view"}
    events = [first, later, dict(first)]  # the replayed "x" is older than T - window
    state, _, dups = run_kernel(events, jmap)
    ref = reference_of(events, jmap)
    assert dups == 0 and ref.duplicates == 0 and state.n[state.index["c"]] == 3
    assert_state_matches(state, ref, jmap)


def test_dedup_memory_is_bounded_per_customer(settings: Settings) -> None:
    jmap = settings.journey
    slots = jmap.dedup_slots
    events = [{"customer_id": "c", "event_id": f"e{i}", "ts": BASE + i, "type": "page_view"}
              for i in range(slots + 1)]
    state, _, _ = run_kernel(events, jmap)
    assert state.dd_hash.shape[1] + state.more.cols.hash.shape[1] == slots
    # The newest ``slots`` ids are remembered: replaying them is caught.
    _, _, dups = run_kernel(events + events[1:], jmap)
    assert dups == slots


def test_only_customers_with_more_ids_than_their_row_holds_take_an_overflow_row(settings: Settings) -> None:
    jmap = settings.journey
    inline = INLINE_IDS
    events = [{"customer_id": f"one-{i}", "event_id": "x", "ts": BASE, "type": "page_view"}
              for i in range(50)]
    events += [{"customer_id": "many", "event_id": f"e{i}", "ts": BASE + i, "type": "page_view"}
               for i in range(inline + 1)]
    state, _, _ = run_kernel(events, jmap)
    assert state.dd_hash.shape[1] == inline
    assert state.more.in_use == 1
    assert state.dd_more[state.index["many"]] >= 0
    assert all(state.dd_more[state.index[f"one-{i}"]] == -1 for i in range(50))


def test_hash_ids_is_stable_and_distinguishes() -> None:
    h = hash_ids(["a", "b", "", "é", "a"])
    assert h[0] == h[4] and len(set(h.tolist())) == 4
    # FNV-1a of "a" from its definition
    assert int(h[0]) == ((0xCBF29CE484222325 ^ 0x61) * 0x100000001B3) % 2**64


def test_state_snapshot_round_trip(settings: Settings) -> None:
    jmap = settings.journey
    events = [{"customer_id": f"c{i % 5}", "event_id": str(i), "ts": BASE + i, "type": "purchase"}
              for i in range(20)]
    state, _, _ = run_kernel(events[:10], jmap)
    restored = ShardState.from_snapshot(jmap.arrays, state.snapshot())
    for s in (state, restored):
        score_batch(s, batch_of(events[10:], jmap), jmap.arrays, jmap.dormant_after_ms)
    assert restored.all_ids() == state.all_ids()
    for name in CustomerColumns._fields:
        assert np.array_equal(getattr(restored, name)[: restored.size],
                              getattr(state, name)[: state.size]), name


# --- generated cases -----------------------------------------------------------------------

def event_lists(jmap: JourneyMap, max_size: int = 60, span_ms: int = 60 * DAY):
    channels = [*jmap.channels, "unlisted", None]

    @st.composite
    def build(draw):
        n = draw(st.integers(1, max_size))
        events = []
        for i in range(n):
            if events and draw(st.integers(0, 9)) == 0:  # an exact re-delivery
                events.append(dict(draw(st.sampled_from(events))))
                continue
            events.append({
                "customer_id": draw(st.sampled_from(["c0", "c1", "c2", "c3"])),
                "event_id": f"e{i}",
                "ts": BASE + draw(st.integers(0, span_ms)),
                "type": draw(st.sampled_from(list(jmap.touchpoints))),
                "channel": draw(st.sampled_from(channels)),
                "sentiment": draw(st.none() | st.floats(-1, 1)),
            })
        cuts = draw(st.lists(st.integers(0, n), max_size=4))
        return events, cuts

    return build()


HYP = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYP
@given(data=st.data())
def test_kernel_matches_reference(settings: Settings, data) -> None:
    assert_kernel_matches_reference(settings.journey, data)


def assert_kernel_matches_reference(jmap: JourneyMap, data) -> None:
    events, cuts = data.draw(event_lists(jmap))
    state, transitions, dups = run_kernel(events, jmap, cuts)
    ref = reference_of(events, jmap)
    assert dups == ref.duplicates
    assert transitions == ref_transitions(ref, jmap)
    assert_state_matches(state, ref, jmap)


def with_negative_factors(jmap: JourneyMap) -> JourneyMap:
    """Evidence against stages (PRODUCT §3): a support ticket counts against advocacy."""
    tps = dict(jmap.touchpoints)
    for name, factors in (("support_ticket", {"retention": 1.0, "advocacy": -0.5}),
                          ("unsubscribe", {"consideration": -1.0, "decision": -1.0}),
                          ("complaint", {"retention": -0.75, "advocacy": -2.0}),
                          ("ad_click", {"awareness": 1.0, "decision": -0.25})):
        tps[name] = replace(tps[name], stages=factors)
    return replace(jmap, touchpoints=tps)


@HYP
@given(data=st.data())
def test_kernel_matches_reference_with_negative_factors(settings: Settings, data) -> None:
    jmap = with_negative_factors(settings.journey)
    assert (jmap.arrays.type_factor < 0).sum() == 6
    assert_kernel_matches_reference(jmap, data)


@HYP
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_shuffled_arrival_gives_same_state(settings: Settings, data, seed: int) -> None:
    jmap = settings.journey
    events, cuts = data.draw(event_lists(jmap))
    unique = list({e["event_id"]: e for e in events}.values())
    shuffled = unique[:]
    random.Random(seed).shuffle(shuffled)
    a, _, _ = run_kernel(unique, jmap)
    b, _, _ = run_kernel(shuffled, jmap, cuts)
    for ra, cid in enumerate(a.all_ids()):
        rb = b.index[cid]
        assert a.T[ra] == b.T[rb] and a.n[ra] == b.n[rb]
        assert np.array_equal(a.counts[ra], b.counts[rb])
        for x, y in ((a.S[ra], b.S[rb]), (a.Sn[ra], b.Sn[rb]), (a.Sd[ra], b.Sd[rb]),
                     *zip(a.E[ra], b.E[rb], strict=True)):
            assert close(float(x), float(y), 10.0), (cid, x, y)


@HYP
@given(data=st.data())
def test_replaying_duplicates_changes_nothing(settings: Settings, data) -> None:
    jmap = settings.journey
    # Within the dedup window of T every re-delivery is caught, whatever the order.
    events, cuts = data.draw(event_lists(jmap, max_size=25, span_ms=jmap.dedup_window_ms))
    unique = list({e["event_id"]: e for e in events}.values())
    once, _, _ = run_kernel(unique, jmap)
    twice, transitions, dups = run_kernel(unique + unique, jmap, cuts)
    ref = reference_of(unique + unique, jmap)
    assert dups == ref.duplicates
    assert transitions == ref_transitions(ref, jmap)
    for name in ("T", "S", "E", "Sn", "Sd", "counts", "n", "stage"):
        assert np.array_equal(getattr(once, name)[: once.size], getattr(twice, name)[: twice.size])


def bounded_decisions(events: list[dict], jmap: JourneyMap) -> list[bool]:
    """Whether each event is accepted, with one ``RememberedIds`` of ``dedup_slots`` per customer."""
    T: dict[str, int] = {}
    memory: dict[str, RememberedIds] = {}
    out = []
    for e in events:
        cid, t = e["customer_id"], e["ts"]
        ids = memory.setdefault(cid, RememberedIds(jmap.dedup_slots))
        if cid in T and e["event_id"] in ids and abs(T[cid] - t) <= jmap.dedup_window_ms:
            out.append(False)
            continue
        T[cid] = max(T.get(cid, t), t)
        ids.remember(e["event_id"], t, T[cid] - jmap.dedup_window_ms)
        out.append(True)
    return out


@HYP
@given(data=st.data())
def test_bounded_dedup_memory_decides_as_one_row_of_slots(settings: Settings, data) -> None:
    # Ids are few and reused with other times, customers hold more ids than their row (and
    # than ``dedup_slots``), times run over several windows on a coarse grid (ties, and
    # times exactly a window apart): eviction and the overflow rows decide every event as
    # one plain list of ``dedup_slots`` ids would.
    jmap = replace(settings.journey, dedup_slots=data.draw(st.integers(1, 5)))
    window = jmap.dedup_window_ms
    n = data.draw(st.integers(1, 80))
    events = [{"customer_id": data.draw(st.sampled_from(["c0", "c1", "c2"])),
               "event_id": data.draw(st.sampled_from([f"e{i}" for i in range(8)])),
               "ts": BASE + data.draw(st.integers(0, 12)) * (window // 4), "type": "page_view"}
              for _ in range(n)]
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    state = ShardState(jmap.arrays, capacity=1)
    accepted = []
    for lo, hi in itertools.pairwise([0, *cuts, n]):
        if hi > lo:
            result = score_batch(state, batch_of(events[lo:hi], jmap), jmap.arrays, jmap.dormant_after_ms)
            accepted += result.accepted.tolist()
    assert accepted == bounded_decisions(events, jmap)


def new_rules(jmap: JourneyMap, draw) -> JourneyMap:
    """The map with other thresholds, ``requires`` counts and ``min_sentiment`` (a live update may)."""
    stages = [jmap.stages[0]]
    for stage in jmap.stages[1:]:
        stages.append(replace(
            stage, threshold=draw(st.floats(-2.0, 12.0)),
            requires={t: draw(st.integers(1, 3)) for t in stage.requires},
            min_sentiment=draw(st.none() | st.floats(-1.0, 1.0))))
    return replace(jmap, stages=tuple(stages))


@HYP
@given(data=st.data())
def test_evaluating_again_under_new_rules_matches_the_reference(settings: Settings, data) -> None:
    """After a map's switch every customer's stage is the reference's ``stage_of`` under the new rules;
    the rows reported are exactly those that moved, with their stages before; dormant stays dormant."""
    jmap = settings.journey
    events, cuts = data.draw(event_lists(jmap))
    state, _, _ = run_kernel(events, jmap, cuts)
    ref = reference_of(events, jmap)
    asleep = data.draw(st.sets(st.sampled_from(state.all_ids())))
    dormant = len(jmap.stage_names)
    for cid in asleep:
        state.columns.stage[state.index[cid]] = dormant
    before = state.columns.stage[: state.size].copy()
    new = new_rules(jmap, data.draw)
    rows, was = restage(state, new.arrays)
    names = jmap.stage_names
    for r, cid in enumerate(state.all_ids()):
        want = dormant if cid in asleep else names.index(stage_of(new, ref.customers[cid]))
        assert state.columns.stage[r] == want, cid
    moved = [r for r in range(state.size) if before[r] != state.columns.stage[r]]
    assert rows.tolist() == moved and was.tolist() == before[moved].tolist()
    again, _ = restage(state, new.arrays)
    assert again.size == 0  # evaluating twice under one map moves no one


CENSUS_WHILE_GROWING = """
import sys, threading, time
from config.model import DEFAULT_PATH, load_settings
from operators.columns import capacity
from operators.scoring import stage_census
from operators.state import ShardState

jmap = load_settings(DEFAULT_PATH).journey
state = ShardState(jmap.arrays, capacity=1)
seen, done = [], threading.Event()

def scrape():
    while not done.is_set():
        size = state.size
        seen.append((size, capacity(state.columns)))
        stage_census(state, jmap.saturation)

thread = threading.Thread(target=scrape)
thread.start()
while len(seen) < 3:
    time.sleep(0.001)
sys.setswitchinterval(1e-6)  # hand the interpreter over as often as it can
for k in range(2_000):
    state.rows_for([f"c{k}-{i}" for i in range(50)])
done.set()
thread.join()
print(len(seen), sum(size > rows for size, rows in seen), int(stage_census(state, jmap.saturation)[0].sum()))
"""


def test_a_census_taken_while_the_shard_grows_reads_only_rows_its_arrays_hold() -> None:
    """A Prometheus scrape takes the census from its own thread while the worker adds customers:
    the rows in use it reads never outnumber the rows of the arrays it reads after. The census
    kernel runs without bounds checks, so more would read past them: in a process of its own,
    so that a crash fails this test rather than the session."""
    done = subprocess.run([sys.executable, "-c", CENSUS_WHILE_GROWING], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    scrapes, beyond, staged = map(int, done.stdout.split())
    assert scrapes > 10 and beyond == 0
    assert staged == 0  # rows added, none scored: no stage yet
