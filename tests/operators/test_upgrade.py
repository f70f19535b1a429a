"""A recovery store of state format 1 resumes: the same customers, sums and remembered ids, in format 2.

``data/shard-format-1.pickle`` is what ``ShardScorer.snapshot()`` of revision 88a50c2
(format 1: customer ids as strings, every remembered event id in the customer's row)
wrote (without windows) after the first ``SAVED`` events of ``upgrade_history.history()``,
scored in one batch (that module imports nothing the revision lacks, so it ran there too).
"""

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np

from config.model import DEFAULT_PATH, layout_changes, load_settings
from operators.base import NO_TIME, each_record
from operators.metrics import EngineMetrics
from operators.records import RecordBuilder
from operators.routing import ShardInput
from operators.score_kernels import CustomerColumns
from operators.scoring import score_batch
from operators.shard import STATE_SCHEMA, UPGRADABLE_SCHEMAS, ShardScorer, resumable_layout
from operators.state import ShardState
from tests.operators.test_scoring import batch_of
from tests.operators.upgrade_history import SAVED, history

FIXTURE = Path(__file__).parent / "data" / "shard-format-1.pickle"
SETTINGS = load_settings(DEFAULT_PATH)


def scorer(resume: dict | None) -> ShardScorer:
    j = SETTINGS.journey
    return ShardScorer(j, RecordBuilder(j, SETTINGS.topics), EngineMetrics(), 1, resume, windows=False)


def remembered(state: ShardState) -> list[list[tuple[int, int]]]:
    """Each row's remembered ids (hash, time), in slot order over the inline slots and its overflow row."""
    c, more = state.columns, state.more.cols
    out = []
    for r in range(state.size):
        slots = list(zip(c.dd_hash[r].tolist(), c.dd_ts[r].tolist(), strict=True))
        if c.dd_more[r] >= 0:
            slots += zip(more.hash[c.dd_more[r]].tolist(), more.ts[c.dd_more[r]].tolist(), strict=True)
        out.append([s for s in slots if s[1] != NO_TIME])
    return out


def test_a_format_1_snapshot_resumes_as_the_same_state() -> None:
    old = pickle.loads(FIXTURE.read_bytes())
    assert old["layout"]["schema"] in UPGRADABLE_SCHEMAS
    resumed = scorer(old)
    fresh = scorer(None)
    events = history()
    fresh.on_batch([ShardInput(batch_of(events[:SAVED], SETTINGS.journey), None)])
    assert resumed.state.all_ids() == fresh.state.all_ids() == old["state"]["ids"]
    for name in set(CustomerColumns._fields) - {"dd_more"}:  # overflow rows are numbered as taken
        got, want = getattr(resumed.state.columns, name), getattr(fresh.state.columns, name)
        assert np.array_equal(got[: fresh.state.size], want[: fresh.state.size]), name
    saved = old["state"]["columns"]
    assert remembered(resumed.state) == [
        [(h, t) for h, t in zip(saved["dd_hash"][r].tolist(), saved["dd_ts"][r].tolist(), strict=True)
         if t != NO_TIME] for r in range(len(old["state"]["ids"]))]
    # customers who held more than their row's ids took overflow rows, the others none
    assert 0 < resumed.state.more.in_use < resumed.state.size
    # from here on both decide alike: re-deliveries of what was saved, then new events
    rest = [dict(e) for e in events[SAVED - 100: SAVED]] + events[SAVED:]
    outputs = [each_record(step.on_batch([ShardInput(batch_of(rest, SETTINGS.journey), None)])[0][0].records)
               for step in (resumed, fresh)]
    assert outputs[0] == outputs[1] and outputs[0]
    assert remembered(resumed.state) == remembered(fresh.state)


def test_a_format_1_layout_is_resumed_and_other_schemas_are_not() -> None:
    old = pickle.loads(FIXTURE.read_bytes())["layout"]
    now = scorer(None).layout
    assert layout_changes(resumable_layout(old), now) == []
    (change,) = layout_changes(resumable_layout({**old, "schema": "1.00000000"}), now)
    assert change.startswith("the state's schema version")
    assert change.endswith(f"1.00000000 -> {STATE_SCHEMA}")


def as_format_1(state: ShardState) -> dict:
    """``state``'s snapshot as format 1 wrote it, where its ids fit one row (no overflow row held)."""
    assert state.more.in_use == 0
    snap = state.snapshot()
    columns = {name: snap["columns"][name] for name in CustomerColumns._fields if name != "dd_more"}
    return {"columns": columns, "ids": state.all_ids()}


def test_format_1_snapshots_of_an_empty_shard_and_of_one_id_a_customer_resume() -> None:
    for slots in (1, 32):
        j = replace(SETTINGS.journey, dedup_slots=slots)
        empty = ShardState.from_snapshot(j.arrays, as_format_1(ShardState(j.arrays)))
        assert empty.size == 0 and empty.all_ids() == []
        once = [e for e in history() if e["customer_id"].startswith("once-")]
        state = ShardState(j.arrays)
        score_batch(state, batch_of(once, j), j.arrays, j.dormant_after_ms)
        for resumed in (ShardState.from_snapshot(j.arrays, as_format_1(state)), empty):
            again = score_batch(resumed, batch_of(once, j), j.arrays, j.dormant_after_ms)
            assert again.accepted.tolist() == [resumed is empty] * len(once)  # re-deliveries caught
        assert remembered(ShardState.from_snapshot(j.arrays, as_format_1(state))) == remembered(state)
