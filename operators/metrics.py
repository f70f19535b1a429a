"""What the engine tells Prometheus: every metric declared once here, updated once per batch.

The registry and the clock are injected, so tests read values without a server and
control time. Dashboards and alert rules (``grafana/``) take the names from the
declarations below, so a renamed metric cannot leave a panel or a rule behind.

No label ever holds a customer id: the series count follows the journey map and the
input topics, never the number of customers.
"""

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from operators.base import Clock, wall_clock_ms


class Declared(NamedTuple):
    """One metric as Prometheus stores it: counters end in ``_total``, histograms add suffixes."""

    name: str
    help: str
    labels: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name

    @property
    def bucket(self) -> str:
        """The ``_bucket`` series of a histogram (what ``histogram_quantile`` reads)."""
        return f"{self.name}_bucket"


# -- counters ---------------------------------------------------------------------------------
EVENTS = Declared("journey_events_total", "Valid events scored (re-deliveries not counted)",
                  ("topic", "type", "channel"))
REJECTED = Declared("journey_events_rejected_total", "Messages sent to the dead-letter topic",
                    ("reason",))
DUPLICATES = Declared("journey_events_duplicate_total", "Events dropped as re-deliveries")
LATE = Declared("journey_events_late_total", "Events older than the watermark when read")
TRANSITIONS = Declared("journey_stage_transitions_total", "Stage changes",
                       ("from_stage", "to_stage"))
MAP_UPDATES = Declared("journey_map_updates_total",
                       "Journey maps read from the control topic: applied, or refused (the log says why)",
                       ("result",))
MAP_RESULTS = ("applied", "refused")
"""The ``result`` of a map read from the control topic."""
OUTPUT = Declared("journey_output_messages_total", "Messages handed to the producer, by output topic",
                  ("topic",))
DELIVERY_ERRORS = Declared("journey_delivery_errors_total",
                           "Failed deliveries of output messages (each is re-sent, or the flow stops)")
# -- gauges -----------------------------------------------------------------------------------
CUSTOMERS = Declared("journey_customers", "Customers in each stage (the population)", ("stage",))
TRACKED = Declared("journey_customers_tracked", "Customers held in this process's state")
SENTIMENT = Declared("journey_stage_sentiment",
                     "Mean decayed sentiment of the customers in a stage who have one", ("stage",))
ENGAGEMENT = Declared("journey_stage_engagement",
                      "Mean engagement (0-100, as of each customer's last event) in a stage", ("stage",))
WATERMARK_LAG = Declared("journey_watermark_lag_seconds",
                         "Wall clock minus this process's event-time watermark")
CONSUMER_LAG = Declared("journey_consumer_lag_messages",
                        "Messages not handed to the flow yet, to the head of the log as of the last fetch",
                        ("topic", "partition"))
STATE_BYTES = Declared("journey_state_bytes",
                       "Bytes the state arrays of this process's shards hold, room reserved included: "
                       "customers, their remembered event ids and id index, open sessions and windows")
OPEN_SESSIONS = Declared("journey_open_sessions", "Sessions not closed yet")
SESSION_SLOTS = Declared("journey_session_slots", "Session slots reserved (memory follows open sessions)")
OPEN_WINDOWS = Declared("journey_open_windows", "Tumbling windows not closed yet, summed over shards")
CHANNEL_EVENTS = Declared("journey_channel_events", "Events per channel in the last closed metrics window",
                          ("channel",))
CHANNEL_CTR = Declared("journey_channel_ctr",
                       "Clicks per impression in the last closed metrics window that had impressions",
                       ("channel",))
CHANNEL_RESPONSE = Declared("journey_channel_response_time_seconds",
                            "Mean response time in the last closed metrics window that had responses",
                            ("channel",))
CHANNEL_CONVERSIONS = Declared("journey_channel_conversions",
                               "Conversions per channel in the last closed metrics window", ("channel",))
BUILD_INFO = Declared("journey_build_info", "Always 1: the running version and journey map",
                      ("version", "journey_map"))
# -- histograms -------------------------------------------------------------------------------
BATCH_SECONDS = Declared("journey_batch_seconds", "Time the score step took for one batch")
BATCH_EVENTS = Declared("journey_batch_events", "Events in one batch of the score step")
LATENCY = Declared("journey_end_to_end_latency_seconds",
                   "Kafka timestamp of an input event (create or append time) to its score's delivery")
READ_DELAY = Declared("journey_read_delay_seconds",
                      "Kafka timestamp of an input event (create or append time) to when the engine's "
                      "source took it: producers, broker, fetch and the consumer's queue")

BATCH_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_EVENTS_BUCKETS = (1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

ENGINE_METRICS = (EVENTS, REJECTED, DUPLICATES, LATE, TRANSITIONS, OUTPUT, DELIVERY_ERRORS, CUSTOMERS,
                  MAP_UPDATES, TRACKED, STATE_BYTES, SENTIMENT, ENGAGEMENT, WATERMARK_LAG, CONSUMER_LAG,
                  OPEN_SESSIONS, SESSION_SLOTS, OPEN_WINDOWS, CHANNEL_EVENTS, CHANNEL_CTR, CHANNEL_RESPONSE,
                  CHANNEL_CONVERSIONS, BUILD_INFO, BATCH_SECONDS, BATCH_EVENTS, LATENCY, READ_DELAY)
"""Every metric of the engine's own (the standard process and Python collectors come on top)."""


def _counter(d: Declared, registry: CollectorRegistry) -> Counter:
    return Counter(d.name, d.help, d.labels, registry=registry)


def _gauge(d: Declared, registry: CollectorRegistry) -> Gauge:
    return Gauge(d.name, d.help, d.labels, registry=registry)


class BulkHistogram(Collector):
    """A histogram fed whole arrays at once: one ``observe`` per value would cost per event."""

    def __init__(self, declared: Declared, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.declared = declared
        self.bounds = np.array(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last: above every bound
        self.sum = 0.0
        self.lock = threading.Lock()
        registry.register(self)

    def observe(self, values: npt.NDArray[np.float64]) -> None:
        """Count every value of ``values`` (seconds)."""
        if not values.size:
            return
        slots = np.searchsorted(self.bounds, values, side="left")  # le: a value on a bound counts in it
        add = np.bincount(slots, minlength=self.counts.size)
        with self.lock:
            self.counts += add
            self.sum += float(values.sum())

    def collect(self) -> Iterator[Metric]:
        """The cumulative buckets, as Prometheus reads a histogram (bounds written as ``Histogram`` does)."""
        with self.lock:
            cumulative = np.cumsum(self.counts).tolist()
            total = self.sum
        les = [*(floatToGoString(b) for b in self.bounds.tolist()), "+Inf"]  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(self.declared.name, self.declared.help,
                                    buckets=list(zip(les, cumulative, strict=True)), sum_value=total)


class GridCounter(Collector):
    """A counter whose label sets are the cells of a grid known in advance, counted into arrays.

    A step adds a whole batch to its array with one ``bincount``, where a prometheus_client
    counter would take a ``labels().inc()`` per cell; a scrape sums the arrays of every
    step that holds one. Cells never counted have no series, as with ``labels()``.
    """

    def __init__(self, declared: Declared, registry: CollectorRegistry) -> None:
        self.declared = declared
        self.cells: list[tuple[str, ...]] = []
        self.parts: list[npt.NDArray[np.int64]] = []
        registry.register(self)

    def counts(self, cells: list[tuple[str, ...]]) -> npt.NDArray[np.int64]:
        """A zeroed array for one step to count into: position ``i`` counts ``cells[i]``'s labels."""
        self.cells = cells
        part = np.zeros(len(cells), dtype=np.int64)
        self.parts.append(part)
        return part

    def collect(self) -> Iterator[Metric]:
        """The cells counted so far, summed over the steps."""
        family = CounterMetricFamily(self.declared.name, self.declared.help, labels=self.declared.labels)
        if self.parts:
            total = np.sum(list(self.parts), axis=0)
            for i in np.flatnonzero(total).tolist():
                family.add_metric(self.cells[i], float(total[i]))
        yield family


CensusPart = Callable[[], npt.NDArray[np.float64]]
"""A shard's census now: a (4, stages) array of customers, customers with a sentiment, the sum of
their sentiments, the sum of engagements."""


class StateBytes(Collector):
    """``journey_state_bytes``, summed over this process's shards when Prometheus scrapes.

    Asked at the scrape, as the census is: nothing is counted per batch for it.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.parts: list[Callable[[], int]] = []
        registry.register(self)

    def add(self, part: Callable[[], int]) -> None:
        """Count one more shard's bytes."""
        self.parts.append(part)

    def collect(self) -> Iterator[Metric]:
        """The gauge."""
        gauge = GaugeMetricFamily(STATE_BYTES.name, STATE_BYTES.help)
        gauge.add_metric([], float(sum(part() for part in list(self.parts))))
        yield gauge


class StageCensus(Collector):
    """Population, mean sentiment and mean engagement per stage, over this process's shards.

    Counted when Prometheus scrapes, not as events come: a pass over every customer costs
    too much per batch, and a census taken at the last batch would go stale as soon as
    input stops. Read while a worker may be scoring, it is as of some moment of the
    scrape, which is all a gauge promises.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stages: tuple[str, ...] = ()
        self.parts: list[CensusPart] = []
        registry.register(self)

    def add(self, stages: tuple[str, ...], part: CensusPart) -> None:
        """Count one more shard's customers (stages in index order, dormant last)."""
        self.stages = stages
        self.parts.append(part)

    def collect(self) -> Iterator[Metric]:
        """The three gauges; where a mean is undefined (nobody in the stage, or no sentiment) it is NaN.

        Every stage keeps its three series whoever is in it, so the series count follows
        the map alone.
        """
        population = GaugeMetricFamily(CUSTOMERS.name, CUSTOMERS.help, labels=CUSTOMERS.labels)
        sentiment = GaugeMetricFamily(SENTIMENT.name, SENTIMENT.help, labels=SENTIMENT.labels)
        engagement = GaugeMetricFamily(ENGAGEMENT.name, ENGAGEMENT.help, labels=ENGAGEMENT.labels)
        parts = [part() for part in list(self.parts)]
        if parts:
            count, with_sentiment, sentiment_sum, engagement_sum = np.sum(parts, axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                sentiment_mean, engagement_mean = sentiment_sum / with_sentiment, engagement_sum / count
            for k, stage in enumerate(self.stages):
                population.add_metric([stage], float(count[k]))
                sentiment.add_metric([stage], float(sentiment_mean[k]))
                engagement.add_metric([stage], float(engagement_mean[k]))
        yield from (population, sentiment, engagement)


class EngineMetrics:
    """The metrics the flow's steps and its Kafka source and sink update."""

    def __init__(self, registry: CollectorRegistry | None = None, clock: Clock = wall_clock_ms, *,
                 process_collectors: bool = False) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # a `_created` per counter: twice the series
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self.events = GridCounter(EVENTS, r)
        self.rejected = _counter(REJECTED, r)
        self.duplicates = _counter(DUPLICATES, r)
        self.late = _counter(LATE, r)
        self.transitions = _counter(TRANSITIONS, r)
        self.output = _counter(OUTPUT, r)
        self.map_updates = _counter(MAP_UPDATES, r)
        self.release = ""  # the running version, once ``describe_run`` says
        for result in MAP_RESULTS:
            self.map_updates.labels(result)
        self.delivery_errors = _counter(DELIVERY_ERRORS, r)
        self.tracked = _gauge(TRACKED, r)
        self.watermark_lag = _gauge(WATERMARK_LAG, r)
        self.consumer_lag = _gauge(CONSUMER_LAG, r)
        self.open_sessions = _gauge(OPEN_SESSIONS, r)
        self.session_slots = _gauge(SESSION_SLOTS, r)
        self.open_windows = _gauge(OPEN_WINDOWS, r)
        self.channel_events = _gauge(CHANNEL_EVENTS, r)
        self.channel_ctr = _gauge(CHANNEL_CTR, r)
        self.channel_response = _gauge(CHANNEL_RESPONSE, r)
        self.channel_conversions = _gauge(CHANNEL_CONVERSIONS, r)
        self.build_info = _gauge(BUILD_INFO, r)
        self.batch_seconds = Histogram(BATCH_SECONDS.name, BATCH_SECONDS.help, registry=r,
                                       buckets=BATCH_SECONDS_BUCKETS)
        self.batch_events = Histogram(BATCH_EVENTS.name, BATCH_EVENTS.help, registry=r,
                                      buckets=BATCH_EVENTS_BUCKETS)
        self.latency = BulkHistogram(LATENCY, LATENCY_BUCKETS, r)
        self.read_delay = BulkHistogram(READ_DELAY, LATENCY_BUCKETS, r)  # the same buckets: comparable
        self.census = StageCensus(r)
        self.state_bytes = StateBytes(r)
        if process_collectors:  # CPU, memory, file descriptors, GC: the same collectors as default
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                r.register(collector)

    def count_from_zero(self, reasons: Iterable[str], stages: Sequence[str], outputs: Iterable[str]) -> None:
        """Start the counters whose labels are known in advance at 0.

        Their series exist from the first scrape, so ``rate()`` and ``increase()`` see the
        first dead letter or the first move to a stage, and the series count depends on
        the map, not on which events happened to come. ``stages`` in funnel order:
        ``BEFORE_ENTRY``, the map's stages, ``DORMANT``.
        """
        for reason in reasons:
            self.rejected.labels(reason)
        for before in stages:
            for after in stages[1:]:
                if after != before:
                    self.transitions.labels(before, after)
        for topic in outputs:
            self.output.labels(topic)

    def describe_run(self, version: str, journey_map: str) -> None:
        """``journey_build_info``: which release runs which map (a short hash of it); one series."""
        self.build_info.clear()
        self.build_info.labels(version, journey_map).set(1)
        self.release = version

    def map_applied(self, journey_map: str) -> None:
        """A map applied live: counted, and ``journey_build_info`` names it from now on."""
        self.map_updates.labels("applied").inc()
        self.describe_run(self.release, journey_map)

    def handled(self) -> int:
        """Input messages scored, dropped as re-deliveries or sent to the dead-letter topic so far.

        Read from those counters alone: collecting the whole registry would take the stage
        census, a pass over every customer, each time a progress line asks.
        """
        counted = sum(sample.value for counter in (self.duplicates, self.rejected)
                      for family in counter.collect() for sample in family.samples)
        return int(sum(int(part.sum()) for part in self.events.parts) + counted)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample, as a test or a tool in the same process reads it."""
        got = self.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample ``name`` whose labels include ``labels`` (e.g. all channels)."""
        wanted = labels.items()
        return sum(s.value for family in self.registry.collect() for s in family.samples
                   if s.name == name and wanted <= s.labels.items())
