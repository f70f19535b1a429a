"""A slow, obvious implementation of the windows of PRODUCT §5, for streams without late events.

Fed the events in the order the engine applies them to each customer, it keeps
everything (every event of every customer) and computes the records at the end:
sessions by clustering each customer's event times with ``session_gap``; channel
and funnel records per epoch-aligned ``metrics_window``.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from config.model import DORMANT, OTHER_CHANNEL, JourneyMap
from tests.reference import Reference, event_time_ms


@dataclass
class _Seen:
    ts: int
    order: int
    channel: str
    converted: bool
    stage_after: str


@dataclass
class _Channel:
    events: int = 0
    customers: set[str] = field(default_factory=set)
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    sentiments: list[float] = field(default_factory=list)
    response_times: list[int] = field(default_factory=list)


class WindowsReference:
    def __init__(self, journey: JourneyMap) -> None:
        self.journey = journey
        self.scores = Reference(journey)
        self.seen: dict[str, list[_Seen]] = defaultdict(list)
        self.channels: dict[tuple[int, str], _Channel] = defaultdict(_Channel)
        self.transitions: Counter[tuple[int, str, str]] = Counter()
        self.windows: set[int] = set()
        self.last_outbound: dict[tuple[str, str], int] = {}
        self.answered: set[tuple[str, str]] = set()
        self.order = 0

    def window_of(self, ts: int) -> int:
        return ts - ts % self.journey.metrics_window_ms

    def apply(self, event: dict) -> None:
        """One valid event, in the order the engine sees it for its customer."""
        before = len(self.scores.transitions)
        if not self.scores.apply(event):
            return  # duplicates enter no window
        cid, ts = event["customer_id"], event_time_ms(event["ts"])
        tp = self.journey.touchpoints[event["type"]]
        channel = event.get("channel")
        channel = channel if channel in self.journey.channels else OTHER_CHANNEL
        start = self.window_of(ts)
        self.windows.add(start)
        self.order += 1
        self.seen[cid].append(_Seen(ts, self.order, channel, tp.conversion,
                                    self.scores.customers[cid].stage))
        ch = self.channels[start, channel]
        ch.events += 1
        ch.customers.add(cid)
        ch.impressions += "impression" in tp.roles
        ch.clicks += "click" in tp.roles
        ch.conversions += tp.conversion
        if event.get("sentiment") is not None:
            ch.sentiments.append(event["sentiment"])
        key = (cid, channel)
        if "outbound" in tp.roles and (key not in self.last_outbound or ts >= self.last_outbound[key]):
            self.last_outbound[key] = ts
            self.answered.discard(key)
        if "response" in tp.roles and key in self.last_outbound and ts >= self.last_outbound[key] \
                and key not in self.answered:
            self.answered.add(key)
            ch.response_times.append(ts - self.last_outbound[key])
        for t in self.scores.transitions[before:]:
            self.transitions[start, t.from_stage or "none", t.to_stage] += 1

    def sessions(self) -> list[dict]:
        gap = self.journey.session_gap_ms
        out = []
        for cid, seen in self.seen.items():
            ordered = sorted(seen, key=lambda s: s.ts)
            group = [ordered[0]]
            for s in ordered[1:]:
                if s.ts - group[-1].ts < gap:
                    group.append(s)
                else:
                    out.append(self._session(cid, group))
                    group = [s]
            out.append(self._session(cid, group))
        return out

    @staticmethod
    def _session(cid: str, group: list[_Seen]) -> dict:
        start, end = group[0].ts, group[-1].ts
        return {"customer_id": cid, "session_start": start, "session_end": end,
                "duration_ms": end - start, "events": len(group),
                "channels": dict(Counter(s.channel for s in group)),
                "converted": any(s.converted for s in group),
                "stage_end": max(group, key=lambda s: s.order).stage_after}

    def metrics(self) -> list[dict]:
        width = self.journey.metrics_window_ms
        names = [*self.journey.stage_names, DORMANT]
        population = dict.fromkeys(names, 0)
        out = []
        for start in sorted(self.windows):
            for (w, name), ch in sorted(self.channels.items()):
                if w != start:
                    continue
                out.append({
                    "kind": "channel", "window_start": start, "window_end": start + width,
                    "channel": name, "events": ch.events, "customers": len(ch.customers),
                    "impressions": ch.impressions, "clicks": ch.clicks,
                    "ctr": ch.clicks / ch.impressions if ch.impressions else None,
                    "conversions": ch.conversions,
                    "sentiment_mean": sum(ch.sentiments) / len(ch.sentiments) if ch.sentiments else None,
                    "responses": len(ch.response_times),
                    "response_time_mean_ms": (sum(ch.response_times) / len(ch.response_times)
                                              if ch.response_times else None),
                })
            moves = {(f, t): n for (w, f, t), n in self.transitions.items() if w == start}
            for (f, t), n in moves.items():
                if f != "none":
                    population[f] -= n
                population[t] += n
            out.append({"kind": "funnel", "window_start": start, "window_end": start + width,
                        "transitions": {f"{f}>{t}": n for (f, t), n in moves.items()},
                        "populations": dict(population)})
        return out


def comparable_sessions(records: list[dict]) -> list[dict]:
    """Session records in (customer, start) order."""
    return sorted(records, key=lambda s: (s["customer_id"], s["session_start"]))


def comparable_metrics(records: list[dict]) -> list[dict]:
    """Metrics records with floats to 9 places, in (window, kind, channel) order."""
    rounded = [{k: round(v, 9) if isinstance(v, float) else v for k, v in r.items()} for r in records]
    return sorted(rounded, key=lambda r: (r["window_start"], r["kind"], r.get("channel", "")))
