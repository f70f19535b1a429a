"""Route events to shards by a stable hash of the customer id.

Python's ``hash()`` of a str differs per process, so processes and restarts would
disagree; CRC-32 of the UTF-8 bytes is the same everywhere, forever.
"""

import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from config.model import JourneyMap
from operators.base import EMPTY_BATCH, EventBatch
from operators.reading import SourceRead
from operators.watermark import Report

DEFAULT_SHARDS = 4
"""Customer shards per worker of the cluster, when neither ``--shards`` nor a recovery store says.

A shard step costs a fixed ~0.3 ms whatever it holds, so at live rates, where an
activation brings a few events, fewer shards answer sooner (on one worker at 5k events/s,
one input topic quiet, medians of 3: p50 17 ms with 4 shards, 15 ms with one, against a
floor of 9; earlier, 39 ms with 32 shards against 21 with one). More than one per worker
gives Bytewax, which places shard keys on workers by their hash, some to even out with.
The count is fixed for the life of a recovery store: shard keys name the saved state.
"""


class MapChange(NamedTuple):
    """A journey map published to the control topic, validated: every shard takes it at an epoch's end."""

    journey: JourneyMap
    applied_by: str
    applied_at: str  # when it was published (ISO 8601, UTC)


class ShardInput(NamedTuple):
    """What a round of reads brings one shard: its events, a partition's report, or a new map.

    Reports and maps go to every shard; a round's events come first, reports after them.
    """

    events: EventBatch
    report: Report | None
    change: MapChange | None = None


def shard_of(customer_id: str, shards: int) -> int:
    """Shard of one customer."""
    return zlib.crc32(customer_id.encode("utf-8", "surrogatepass")) % shards


def shard_key(shard: int) -> str:
    """Bytewax state key of a shard (fixed width, so keys sort like numbers)."""
    return f"{shard:04d}"


def split_by_shard(batch: EventBatch, shards: int) -> list[tuple[str, EventBatch]]:
    """The batch cut into one sub-batch per shard present, each in arrival order."""
    if not len(batch):
        return []
    crc = zlib.crc32
    of = np.fromiter((crc(c.encode("utf-8", "surrogatepass")) for c in batch.customer_ids),
                     dtype=np.int64, count=len(batch)) % shards
    order = np.argsort(of, kind="stable")
    cuts = np.flatnonzero(np.diff(of[order])) + 1
    return [(shard_key(int(of[idx[0]])), batch.take(idx)) for idx in np.split(order, cuts)]


def route(reads: Sequence[SourceRead], shards: int) -> list[tuple[str, ShardInput]]:
    """Each shard's events of a round of hand-overs, in one sub-batch; each report to every shard.

    The flow hands over every read of one activation at once (``flat_map_batch``), so a
    live round of many partitions costs one split, and each shard one input, instead of
    one per partition: the shard's step joins its inputs into one batch anyway, and
    applies the reports after scoring them.
    """
    batches = [read.events for read in reads if len(read.events)]
    out = [(key, ShardInput(events, None))
           for key, events in split_by_shard(EventBatch.concat(batches), shards)] if batches else []
    out += [(shard_key(s), ShardInput(EMPTY_BATCH, read.report))
            for read in reads if read.report is not None for s in range(shards)]
    return out


def to_every_shard(change: MapChange, shards: int) -> list[tuple[str, ShardInput]]:
    """A new map to every shard, so that all of them take it at the end of the same epoch."""
    return [(shard_key(s), ShardInput(EMPTY_BATCH, None, change)) for s in range(shards)]
