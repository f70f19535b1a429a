import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from operators.base import EventBatch
from operators.reading import SourceRead
from operators.routing import route, shard_key, shard_of, split_by_shard
from operators.watermark import Report


def batch(cids: list[str]) -> EventBatch:
    n = len(cids)
    ts = np.arange(n, dtype=np.int64)
    return EventBatch(cids, [f"e{i}" for i in range(n)], ts, np.zeros(n, np.int32),
                      np.zeros(n, np.int32), np.full(n, np.nan), np.zeros(n, np.bool_),
                      np.full(n, -(2**63), np.int64), np.full(n, -(2**63), np.int64), np.zeros(n, np.int32),
                      np.zeros(n, np.int64))


def test_shard_of_is_stable_across_processes() -> None:
    # CRC-32 of b"cust-1" is 1427515075 by definition; Python's hash() would differ per process.
    assert shard_of("cust-1", 32) == 1427515075 % 32
    assert shard_of("cust-1", 1000) == 1427515075 % 1000


@given(st.lists(st.text(min_size=1, max_size=5), max_size=200), st.integers(1, 40))
def test_split_keeps_every_event_in_its_shard_and_order(cids: list[str], shards: int) -> None:
    parts = split_by_shard(batch(cids), shards)
    seen = []
    for key, part in parts:
        assert all(shard_key(shard_of(c, shards)) == key for c in part.customer_ids)
        assert list(part.ts) == sorted(part.ts)  # arrival order kept inside a shard
        seen.extend(part.ts.tolist())
    assert sorted(seen) == list(range(len(cids)))
    assert len({k for k, _ in parts}) == len(parts)


@given(st.lists(st.tuples(st.lists(st.text(min_size=1, max_size=5), max_size=30), st.booleans()), max_size=8),
       st.integers(1, 6))
def test_a_round_of_reads_reaches_each_shard_as_one_batch_and_every_report(
        reads: list[tuple[list[str], bool]], shards: int) -> None:
    """Every read of one activation in one split: a shard gets its events of all of them in
    read order, in one input, and every report of the round once, after the events."""
    round_, offset = [], 0
    for i, (cids, reports) in enumerate(reads):
        events = batch(cids)
        events.ts[:] += offset  # numbered across the round: read order is ts order
        offset += len(cids)
        round_.append(SourceRead(events, [], [], {}, Report(f"in#{i}", i, idle=False) if reports else None))
    out = route(round_, shards)
    kinds = [item.report is not None for _, item in out]
    assert kinds == sorted(kinds)  # the events first: scored before any report moves the watermark
    batches = [(key, item.events) for key, item in out if len(item.events)]
    assert len({key for key, _ in batches}) == len(batches)  # one input with events per shard
    assert all(item.report is None for _, item in out if len(item.events))
    seen = sorted(t for _, events in batches for t in events.ts.tolist())
    assert seen == list(range(offset))
    for key, events in batches:
        assert events.ts.tolist() == sorted(events.ts.tolist())
        assert all(shard_key(shard_of(c, shards)) == key for c in events.customer_ids)
    sent = sorted((key, item.report.partition) for key, item in out if item.report is not None)
    assert sent == sorted((shard_key(s), f"in#{i}") for i, (_, reports) in enumerate(reads) if reports
                          for s in range(shards))
