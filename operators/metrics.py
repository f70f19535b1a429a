"""Engine metrics, updated once per batch; the registry is injected so tests read values directly."""

from prometheus_client import CollectorRegistry, Counter, Gauge


class EngineMetrics:
    """The counters the flow's steps update. No label ever holds a customer id."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter("journey_events", "Valid events accepted for scoring", registry=r)
        self.rejected = Counter("journey_events_rejected", "Messages sent to the dead-letter topic",
                                ["reason"], registry=r)
        self.duplicates = Counter("journey_events_duplicate", "Events dropped as re-deliveries",
                                  registry=r)
        self.transitions = Counter("journey_stage_transitions", "Stage changes",
                                   ["from_stage", "to_stage"], registry=r)
        self.tracked = Gauge("journey_customers_tracked", "Customers held in this process's state",
                             registry=r)
        self.late = Counter("journey_events_late", "Events older than the watermark when read",
                            registry=r)
        self.open_sessions = Gauge("journey_open_sessions", "Sessions not closed yet", registry=r)
        self.session_slots = Gauge("journey_session_slots",
                                   "Session slots reserved (memory follows open sessions)", registry=r)
        self.open_windows = Gauge("journey_open_windows",
                                  "Tumbling windows not closed yet, summed over shards", registry=r)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (tests and the demo view read metrics this way)."""
        got = self.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got
