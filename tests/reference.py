"""A slow, obvious implementation of PRODUCT §4, written from the spec, for comparisons.

It reads the journey map through the config objects (names, not arrays) and keeps
every event id it has accepted, so it is the exact semantics without memory bounds.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from config.model import JourneyMap


def event_time_ms(ts: object) -> int:
    if isinstance(ts, int):
        return ts
    assert isinstance(ts, str)
    parsed = datetime.fromisoformat(ts)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


@dataclass
class Customer:
    T: int = 0
    S: float = 0.0
    E: dict[str, float] = field(default_factory=dict)
    Sn: float = 0.0
    Sd: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    n: int = 0
    stage: str | None = None
    seen: set[str] = field(default_factory=set)


@dataclass
class Transition:
    customer_id: str
    from_stage: str | None
    to_stage: str | None
    ts: int
    event_id: str
    version: int


class Reference:
    def __init__(self, journey: JourneyMap) -> None:
        self.journey = journey
        self.customers: dict[str, Customer] = {}
        self.transitions: list[Transition] = []
        self.duplicates = 0

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one valid event; False when it was a duplicate."""
        cid = event["customer_id"]
        c = self.customers.get(cid)
        if c is None:
            c = self.customers[cid] = Customer(E={s: 0.0 for s in self.journey.stage_names})
        old_stage = c.stage
        if not apply_event(self.journey, c, event):
            self.duplicates += 1
            return False
        if c.stage != old_stage:
            self.transitions.append(Transition(cid, old_stage, c.stage, event_time_ms(event["ts"]),
                                               event["event_id"], c.n))
        return True

    def score_record(self, cid: str) -> dict[str, Any]:
        return score_record(self.journey, cid, self.customers[cid])


def apply_event(j: JourneyMap, c: Customer, event: dict[str, Any]) -> bool:
    """PRODUCT §4 for one event and one customer; False when it was a duplicate."""
    eid = event["event_id"]
    t = event_time_ms(event["ts"])
    if c.n > 0 and eid in c.seen and abs(c.T - t) <= j.dedup_window_ms:
        return False
    tp = j.touchpoints[event["type"]]
    w = tp.weight * j.channels.get(event.get("channel") or "", 1.0)
    sentiment = event.get("sentiment")
    if c.n == 0 or t >= c.T:
        d = 2.0 ** (-(t - c.T) / j.half_life_ms) if c.n > 0 else 0.0
        c.S = c.S * d + w
        for s in c.E:
            c.E[s] = c.E[s] * d + w * tp.stages.get(s, 0.0)
        c.Sn *= d
        c.Sd *= d
        if sentiment is not None:
            c.Sn += sentiment
            c.Sd += 1.0
        c.T = t
    else:
        d = 2.0 ** (-(c.T - t) / j.half_life_ms)
        c.S += w * d
        for s in c.E:
            c.E[s] += w * tp.stages.get(s, 0.0) * d
        if sentiment is not None:
            c.Sn += sentiment * d
            c.Sd += d
    c.counts[event["type"]] = c.counts.get(event["type"], 0) + 1
    c.n += 1
    c.seen.add(eid)
    c.stage = stage_of(j, c)
    return True

def stage_of(j: JourneyMap, c: Customer) -> str:
    stages = j.stages
    for stage in reversed(stages[1:]):
        if stage.threshold is not None and c.E[stage.name] < stage.threshold:
            continue
        if any(c.counts.get(tp, 0) < need for tp, need in stage.requires.items()):
            continue
        if stage.min_sentiment is not None and not (
                c.Sd > 0 and c.Sn / c.Sd >= stage.min_sentiment):
            continue
        return stage.name
    return stages[0].name


def score_record(j: JourneyMap, cid: str, c: Customer) -> dict[str, Any]:
    pos = max(c.S, 0.0)
    return {
        "customer_id": cid,
        "stage": c.stage,
        "score": c.S,
        "engagement": 100.0 * pos / (pos + j.saturation),
        "sentiment": c.Sn / c.Sd if c.Sd > 0 else None,
        "evidence": dict(c.E),
        "events": c.n,
        "last_event_ts": c.T,
    }


class RememberedIds:
    """One customer's bounded de-duplication memory, as the engine documents it, in a plain list.

    ``slots`` ids: a new one is not kept if it is older than ``T - dedup_window`` (no
    duplicate of it could be caught), else it takes the first slot that is empty or holds
    an id older than that, else the oldest id's (the first of equals).
    """

    def __init__(self, slots: int) -> None:
        self.slots: list[tuple[str, int] | None] = [None] * slots

    def __contains__(self, eid: str) -> bool:
        return any(s is not None and s[0] == eid for s in self.slots)

    def remember(self, eid: str, t: int, horizon: int) -> None:
        if t < horizon:
            return
        for k, s in enumerate(self.slots):
            if s is None or s[1] < horizon:
                self.slots[k] = (eid, t)
                return
        times = [s[1] for s in self.slots if s is not None]
        self.slots[times.index(min(times))] = (eid, t)


def close(a: float | None, b: float | None, scale: float = 1.0) -> bool:
    """Equal within 1e-9 relative (absolute near zero, relative to the sums' scale)."""
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), scale)


def records_match(got: dict[str, Any], want: dict[str, Any], scale: float = 1.0) -> list[str]:
    """Field-by-field differences between a score record and the reference's."""
    problems = []
    for key in ("customer_id", "stage", "events", "last_event_ts"):
        if got[key] != want[key]:
            problems.append(f"{key}: {got[key]!r} != {want[key]!r}")
    for key in ("score", "engagement", "sentiment"):
        if not close(got[key], want[key], scale):
            problems.append(f"{key}: {got[key]!r} != {want[key]!r}")
    if set(got["evidence"]) != set(want["evidence"]) or not all(
            close(got["evidence"][k], want["evidence"][k], scale) for k in want["evidence"]):
        problems.append(f"evidence: {got['evidence']!r} != {want['evidence']!r}")
    return problems
