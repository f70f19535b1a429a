"""The shard's customer index against a dict: the same rows, the same ids back, after a resume too."""

import itertools

import numpy as np
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from operators.state import CustomerIndex

# any text, lone surrogates included (an escaped one in JSON parses to one), and plain ids
ids_drawn = st.text(st.characters(), max_size=20) | st.from_regex(r"c-[0-9]{1,6}", fullmatch=True)


@given(st.lists(st.lists(ids_drawn, max_size=400), min_size=1, max_size=8), st.lists(ids_drawn, max_size=20),
       st.integers(0, 8))
@hyp_settings(max_examples=60, deadline=None)
def test_rows_are_a_dicts_in_order_of_arrival(batches: list[list[str]], strangers: list[str],
                                              resume_after: int) -> None:
    index, want = CustomerIndex(), {}
    for k, batch in enumerate(batches):
        if k == resume_after:
            index = CustomerIndex.from_snapshot(index.snapshot())
        assert index.rows_for(batch).tolist() == [want.setdefault(cid, len(want)) for cid in batch]
    assert len(index) == len(want)
    assert index.ids() == list(want)
    rows = np.array(sorted(want.values())[::-1], dtype=np.int64)
    assert index.keys(rows) == [cid.encode("utf-8", "surrogatepass") for cid in list(want)[::-1]]
    unknown = [cid for cid in strangers if cid not in want]
    assert index.rows_for(unknown, add=False).tolist() == [-1] * len(unknown)
    assert len(index) == len(want)  # looking up adds nothing
    for cid, row in want.items():
        assert index[cid] == row


def test_ids_of_one_length_differing_in_any_byte_are_told_apart() -> None:
    ids = ["".join(p) for p in itertools.product("abcdefghijklmnopqrst", repeat=3)]
    index = CustomerIndex()
    assert index.rows_for(ids).tolist() == list(range(len(ids)))
    assert index.rows_for(ids[::-1], add=False).tolist() == list(range(len(ids)))[::-1]


def test_the_table_stays_at_most_three_quarters_full() -> None:
    index = CustomerIndex()
    for start in range(0, 100_000, 7_000):
        index.rows_for([f"customer-{i}" for i in range(start, start + 7_000)])
        assert 4 * len(index) <= 3 * index.ix.table.size < 8 * len(index)
    assert index.rows_for(["customer-99999", "customer-0"]).tolist() == [99_999, 0]
