"""Records written by the JSON kernels are byte for byte what orjson writes for the obvious dict."""

from dataclasses import replace

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from config.model import DEFAULT_PATH, load_settings
from operators.base import each_record
from operators.json_kernels import OBJECT, PIECE
from operators.records import CAUSES, Field, RecordBuilder, RecordKind
from operators.state import CustomerIndex, ShardState
from operators.window_kernels import (
    CLICKS,
    CONVERSIONS,
    CUSTOMERS,
    EVENTS,
    IMPRESSIONS,
    N_COUNTS,
    RESPONSE_TIME_SUM,
    RESPONSES,
    SENTIMENT_N,
    SENTIMENT_SUM,
)
from operators.windows import ChannelEntries, ClosedSessions, Entries, WindowShares

SETTINGS = load_settings(DEFAULT_PATH)
# names that need escaping, beside the default catalogue's
ODD = replace(SETTINGS.journey, channels={'we"b': 1.0, "é-mail\\": 0.8, "ads\n": 0.6, "push": 0.7})
WIDTH = 60_000

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
small = st.integers(min_value=0, max_value=3)


def builders() -> st.SearchStrategy[RecordBuilder]:
    return st.sampled_from([RecordBuilder(SETTINGS.journey, SETTINGS.topics),
                            RecordBuilder(ODD, SETTINGS.topics)])


def mean(total: float, n: int) -> float | None:
    return float(total) / int(n) if n > 0 else None


def index_of(ids: list[str]) -> CustomerIndex:
    """A shard's index holding ``ids`` (distinct), row ``i`` for ``ids[i]``."""
    index = CustomerIndex()
    assert index.rows_for(ids).tolist() == list(range(len(ids)))
    return index


def test_customer_ids_are_escaped_as_orjson_escapes_them() -> None:
    ids = ["".join(map(chr, range(32))), '"quoted" \\back\\', "\x7f/é\u2028\U0001f600", "plain-0"]
    state = ShardState(SETTINGS.journey.arrays, capacity=1)
    state.rows_for(ids)
    rb = RecordBuilder(SETTINGS.journey, SETTINGS.topics)
    out = each_record(rb.scores(state, np.arange(len(ids), dtype=np.int64)))
    assert [orjson.loads(value)["customer_id"] for _, _, value in out] == ids
    assert [value.split(b',"stage"')[0] for _, _, value in out] == [
        b'{"customer_id":' + orjson.dumps(cid) for cid in ids]
    assert [key for _, key, _ in out] == [cid.encode() for cid in ids]


@given(builders(), st.data())
@hyp_settings(max_examples=150, deadline=None)
def test_session_records(rb: RecordBuilder, data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=12))
    # plain ids take a faster path than ids that need escaping
    id_texts = data.draw(st.sampled_from([st.text(max_size=12),
                                          st.from_regex(r"[a-z0-9-]{0,12}", fullmatch=True)]))
    ids = data.draw(st.lists(id_texts, min_size=n, max_size=n, unique=True))
    c, stages = len(rb.channel_names), len(rb.names_by_index)
    start = np.array(data.draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n)), dtype=np.int64)
    closed = ClosedSessions(
        rows=np.array(data.draw(st.permutations(range(n))), dtype=np.int64),
        start=start,
        end=start + np.array(data.draw(st.lists(st.integers(0, 2**61), min_size=n, max_size=n))),
        events=np.array(data.draw(st.lists(ints, min_size=n, max_size=n)), dtype=np.int64),
        converted=np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        stage=np.array(data.draw(st.lists(st.integers(-1, stages - 2), min_size=n, max_size=n)),
                       dtype=np.int16),
        channels=np.array(data.draw(st.lists(st.lists(small, min_size=c, max_size=c),
                                             min_size=n, max_size=n)), dtype=np.int64),
    )
    out = each_record(rb.sessions(index_of(ids), closed))
    assert len(out) == n
    for i, (topic, key, value) in enumerate(out):
        r, s, e = int(closed.rows[i]), int(closed.start[i]), int(closed.end[i])
        assert (topic, key) == (SETTINGS.topics.sessions, ids[r].encode())
        assert value == orjson.dumps({
            "customer_id": ids[r], "session_start": s, "session_end": e, "duration_ms": e - s,
            "events": int(closed.events[i]),
            "channels": {rb.channel_names[k]: int(v) for k, v in enumerate(closed.channels[i]) if v},
            "converted": bool(closed.converted[i]), "stage_end": rb.stage_name(int(closed.stage[i])),
        })


@given(builders(), st.data())
@hyp_settings(max_examples=150, deadline=None)
def test_window_records(rb: RecordBuilder, data: st.DataObject) -> None:
    c, funnel = len(rb.channel_names), rb.funnel_size
    k = data.draw(st.integers(min_value=1, max_value=6))
    starts = np.array(sorted(data.draw(st.sets(st.integers(0, 2**40), min_size=k, max_size=k))),
                      dtype=np.int64) * WIDTH
    cells = sorted(data.draw(st.sets(st.tuples(st.integers(0, k - 1), st.integers(0, c - 1)),
                                     max_size=3 * k)))
    m = len(cells)
    counts = np.array(data.draw(st.lists(st.lists(st.integers(0, 50), min_size=N_COUNTS,
                                                  max_size=N_COUNTS), min_size=m, max_size=m)),
                      dtype=np.int64).reshape(m, N_COUNTS)
    counts[:, EVENTS] += 1  # an entry has events
    floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
    sums = np.array(data.draw(st.lists(st.tuples(floats, floats), min_size=m, max_size=m)),
                    dtype=np.float64).reshape(m, 2)
    moves = sorted(data.draw(st.sets(st.tuples(st.integers(0, k - 1), st.integers(0, funnel**2 - 1)),
                                     max_size=4 * k)))
    move_counts = data.draw(st.lists(st.integers(1, 10**6), min_size=len(moves), max_size=len(moves)))
    populations = np.array(data.draw(st.lists(st.lists(st.integers(0, 10**9), min_size=funnel,
                                                       max_size=funnel), min_size=k, max_size=k)),
                           dtype=np.int64)
    totals = WindowShares(
        starts,
        ChannelEntries(starts[[j for j, _ in cells]], np.array([ch for _, ch in cells], dtype=np.int64),
                       counts, sums),
        Entries(starts[[j for j, _ in moves]], np.array([key for _, key in moves], dtype=np.int64),
                np.array(move_counts, dtype=np.int64)),
        Entries(starts[:0], starts[:0], starts[:0]),
    )
    out = each_record(rb.windows(totals, WIDTH, populations))
    assert len(out) == m + k
    for (j, ch), row, total, (topic, key, value) in zip(cells, counts, sums, out[:m], strict=True):
        assert (topic, key) == (SETTINGS.topics.metrics, f"channel:{rb.channel_names[ch]}".encode())
        assert value == orjson.dumps({
            "kind": "channel", "window_start": int(starts[j]), "window_end": int(starts[j]) + WIDTH,
            "channel": rb.channel_names[ch], "events": int(row[EVENTS]),
            "customers": int(row[CUSTOMERS]), "impressions": int(row[IMPRESSIONS]),
            "clicks": int(row[CLICKS]), "ctr": mean(row[CLICKS], row[IMPRESSIONS]),
            "conversions": int(row[CONVERSIONS]),
            "sentiment_mean": mean(total[SENTIMENT_SUM], row[SENTIMENT_N]),
            "responses": int(row[RESPONSES]),
            "response_time_mean_ms": mean(total[RESPONSE_TIME_SUM], row[RESPONSES]),
        })
    names = rb.funnel_names
    for j, (topic, key, value) in enumerate(out[m:]):
        assert (topic, key) == (SETTINGS.topics.metrics, b"funnel")
        assert value == orjson.dumps({
            "kind": "funnel", "window_start": int(starts[j]), "window_end": int(starts[j]) + WIDTH,
            "transitions": {f"{names[key // funnel]}>{names[key % funnel]}": n
                            for (w, key), n in zip(moves, move_counts, strict=True) if w == j},
            "populations": dict(zip(names[1:], populations[j, 1:].tolist(), strict=True)),
        })


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)


@given(builders(), st.data())
@hyp_settings(max_examples=150, deadline=None)
def test_score_records(rb: RecordBuilder, data: st.DataObject) -> None:
    jmap = SETTINGS.journey
    n = data.draw(st.integers(min_value=1, max_value=12))
    ids = data.draw(st.lists(st.text(max_size=12), min_size=n, max_size=n, unique=True))
    state = ShardState(jmap.arrays, capacity=1)
    state.rows_for(ids)
    k = len(jmap.stage_names)
    cols = state.columns
    cols.S[:n] = data.draw(st.lists(finite, min_size=n, max_size=n))
    cols.Sn[:n] = data.draw(st.lists(finite, min_size=n, max_size=n))
    cols.Sd[:n] = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.25]), min_size=n, max_size=n))
    cols.E[:n] = np.array(data.draw(st.lists(finite, min_size=n * k, max_size=n * k))).reshape(n, k)
    cols.n[:n] = data.draw(st.lists(st.integers(1, 2**62), min_size=n, max_size=n))
    cols.T[:n] = data.draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n))
    cols.stage[:n] = data.draw(st.lists(st.integers(0, k), min_size=n, max_size=n))
    rows = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True)),
                    dtype=np.int64)
    out = each_record(rb.scores(state, rows))
    assert len(out) == rows.size
    for r, (topic, key, value) in zip(rows.tolist(), out, strict=True):
        S, Sn, Sd = float(cols.S[r]), float(cols.Sn[r]), float(cols.Sd[r])
        pos = S if S > 0.0 else 0.0  # as numpy.maximum: -0.0 counts as 0.0
        assert (topic, key) == (SETTINGS.topics.scores, ids[r].encode())
        assert value == orjson.dumps({
            "customer_id": ids[r], "stage": rb.stage_name(int(cols.stage[r])), "score": S,
            "engagement": 100.0 * pos / (pos + jmap.saturation),
            "sentiment": Sn / Sd if Sd > 0 else None,
            "evidence": dict(zip(jmap.stage_names, cols.E[r].tolist(), strict=True)),
            "events": int(cols.n[r]), "last_event_ts": int(cols.T[r]), "map": rb.map_version,
        })


@given(builders(), st.data())
@hyp_settings(max_examples=150, deadline=None)
def test_transition_records(rb: RecordBuilder, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.text(max_size=12), min_size=1, max_size=8, unique=True))
    m = data.draw(st.integers(min_value=1, max_value=12))
    stages = len(rb.names_by_index)
    rows = np.array(data.draw(st.lists(st.integers(0, len(ids) - 1), min_size=m, max_size=m)), dtype=np.int64)
    from_stage = np.array(data.draw(st.lists(st.integers(-1, stages - 2), min_size=m, max_size=m)),
                          dtype=np.int16)
    to_stage = np.array(data.draw(st.lists(st.integers(0, stages - 2), min_size=m, max_size=m)),
                        dtype=np.int16)
    ts = np.array(data.draw(st.lists(ints, min_size=m, max_size=m)), dtype=np.int64)
    versions = np.array(data.draw(st.lists(st.integers(1, 2**62), min_size=m, max_size=m)), dtype=np.int64)
    # plain ids take a faster path than ids that need escaping; dormancy has no event id
    eid_texts = data.draw(st.sampled_from([st.text(max_size=12),
                                           st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True)]))
    event_ids = data.draw(st.lists(st.none() | eid_texts, min_size=m, max_size=m))
    causes = np.array(data.draw(st.lists(st.integers(0, len(CAUSES) - 1), min_size=m, max_size=m)))
    out = each_record(rb.transitions(index_of(ids), rows, from_stage, to_stage, ts, event_ids, versions,
                                     causes))
    assert len(out) == m
    for i, (topic, key, value) in enumerate(out):
        r = int(rows[i])
        assert (topic, key) == (SETTINGS.topics.transitions, ids[r].encode())
        assert value == orjson.dumps({
            "customer_id": ids[r], "from": rb.stage_name(int(from_stage[i])),
            "to": rb.stage_name(int(to_stage[i])), "ts": int(ts[i]), "event_id": event_ids[i],
            "version": int(versions[i]), "cause": CAUSES[causes[i]], "map": rb.map_version,
        })


@pytest.mark.parametrize(("fields", "problem"), [
    ((Field("a", PIECE, "a"),), "needs the table"),
    ((Field("a", OBJECT, "a", "floats"),), "keys come from a table of names"),
    ((Field("a", OBJECT, "a", "stages", "stages"),), "values are integers or pieces of the call's"),
    ((Field("a", PIECE, "a", "floats"), Field("b", PIECE, "b", "event_ids")), "one table of text"),
])
def test_declarations_the_kernel_would_write_wrong_are_refused(fields: tuple[Field, ...],
                                                               problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RecordKind(fields, {"stages": [b'"a"', b'"b"']})
