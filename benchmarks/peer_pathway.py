"""The score part of the job, done by Pathway: the peer of the whole-process throughput benchmark.

    python benchmarks/peer_pathway.py CONFIG BROKERS IN1,IN2 OUT

Written as a Pathway user would write it, with as much as possible done in Pathway's own
engine rather than in Python: it parses the JSON (``format="json"``), drops repeated
``(customer_id, event_id)``, looks weights and channel multipliers up by joins, and
keeps per customer the sums of PRODUCT §4 with its native reducers. A decayed sum valued
at the customer's latest time ``T`` is ``2^(-(T - ref)/H) · Σ w · 2^((t - ref)/H)`` for
any fixed ``ref``, so plain sums and a max give exactly the engine's values, in any
order. Each customer's score (stage, score, engagement, sentiment, evidence per stage,
events, last event time) goes to OUT as JSON. It reads the topics as they are when it
starts (``mode="static"``) and exits when everything read is written.

What it leaves out, and ``journey run`` does: validation to a dead-letter topic (it is
given no malformed input, and times as integers only: no RFC 3339 strings), the
de-duplication window (it forgets nothing), transitions, dormancy, lateness, sessions
and windows.
"""

import sys
import time

import pathway as pw

from config.model import load_settings

REF_MS = int(time.time() * 1000) - 400 * 86_400_000
"""Decay reference: 2^((t - REF)/H) stays far from overflow for history of a year or two."""


class Event(pw.Schema):
    """The fields of an input event that scoring reads."""

    event_id: str
    customer_id: str
    ts: int
    type: str
    channel: str | None = pw.column_definition(default_value=None)
    sentiment: float | None = pw.column_definition(default_value=None)


def main(config: str, brokers: str, inputs: str, output: str) -> None:
    journey = load_settings(config).journey
    stages = [s.name for s in journey.stages]
    half_life = float(journey.half_life_ms)
    kafka = {"bootstrap.servers": brokers, "group.id": f"pathway-{output}", "auto.offset.reset": "earliest"}

    raw = pw.Table.concat_reindex(*(  # one topic per reader
        pw.io.kafka.read(kafka, topic, schema=Event, format="json", mode="static", autocommit_duration_ms=500)
        for topic in inputs.split(",")))
    events = raw.select(pw.this.customer_id, pw.this.event_id, pw.this.type, pw.this.sentiment,
                        channel=pw.coalesce(pw.this.channel, ""), t=pw.this.ts)
    unique = events.groupby(pw.this.customer_id, pw.this.event_id).reduce(
        pw.this.customer_id, t=pw.reducers.min(pw.this.t), type=pw.reducers.any(pw.this.type),
        channel=pw.reducers.any(pw.this.channel), sentiment=pw.reducers.any(pw.this.sentiment))

    types = pw.debug.table_from_rows(
        pw.schema_from_types(type=str, weight=float, **{f"f_{s}": float for s in stages}),
        [(name, tp.weight, *(tp.stages.get(s, 0.0) for s in stages))
         for name, tp in journey.touchpoints.items()])
    channels = pw.debug.table_from_rows(pw.schema_from_types(channel=str, mult=float),
                                        list(journey.channels.items()))
    typed = unique.join(types, pw.left.type == pw.right.type).select(*pw.left, *pw.right.without("type"))
    terms = typed.join_left(channels, pw.left.channel == pw.right.channel).select(
        *pw.left, w=pw.left.weight * pw.coalesce(pw.right.mult, 1.0),
        x=2.0 ** ((pw.left.t - REF_MS) / half_life))
    required = sorted({t for s in journey.stages for t in s.requires})
    sums = terms.groupby(pw.this.customer_id).reduce(
        pw.this.customer_id,
        T=pw.reducers.max(pw.this.t),
        n=pw.reducers.count(),
        S=pw.reducers.sum(pw.this.w * pw.this.x),
        Sn=pw.reducers.sum(pw.coalesce(pw.this.sentiment, 0.0) * pw.this.x),
        Sd=pw.reducers.sum(pw.if_else(pw.this.sentiment.is_none(), 0.0, pw.this.x)),
        **{f"E_{s}": pw.reducers.sum(pw.this.w * pw.this[f"f_{s}"] * pw.this.x) for s in stages},
        **{f"c_{r}": pw.reducers.sum(pw.if_else(pw.this.type == r, 1, 0)) for r in required},
    )
    at_T = sums.select(  # every sum valued at T
        *pw.this, d=2.0 ** (-(pw.this.T - REF_MS) / half_life))
    valued = at_T.select(
        pw.this.customer_id, pw.this.T, pw.this.n, S=pw.this.S * pw.this.d,
        sentiment=pw.if_else(pw.this.Sd > 0.0, pw.this.Sn / pw.this.Sd, None),
        **{f"c_{r}": pw.this[f"c_{r}"] for r in required},
        **{s: pw.this[f"E_{s}"] * pw.this.d for s in stages})
    stage: pw.ColumnExpression = pw.declare_type(str, stages[0])
    for rule in journey.stages[1:]:  # the last stage whose rule holds wins: build from the second up
        s = rule.name
        holds = valued[s] >= (rule.threshold if rule.threshold is not None else float("-inf"))
        for r, count in rule.requires.items():
            holds &= valued[f"c_{r}"] >= count
        if rule.min_sentiment is not None:
            holds &= pw.coalesce(valued.sentiment, -2.0) >= rule.min_sentiment
        stage = pw.if_else(holds, s, stage)
    positive = pw.if_else(valued.S > 0.0, valued.S, 0.0)
    scores = valued.select(
        pw.this.customer_id, stage=stage, score=pw.this.S,
        engagement=100.0 * positive / (positive + journey.saturation), sentiment=pw.this.sentiment,
        **{f"evidence_{s}": pw.this[s] for s in stages}, events=pw.this.n, last_event_ts=pw.this.T)
    pw.io.kafka.write(scores, {"bootstrap.servers": brokers}, topic_name=output, format="json",
                      key=scores.customer_id)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)


if __name__ == "__main__":
    main(*sys.argv[1:5])
