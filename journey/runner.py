"""``journey run``: check Kafka, prepare topics and recovery, then hand the flow to Bytewax."""

import gc
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main
from prometheus_client import start_http_server

from config.errors import ClusterError, ConfigError, JourneyError
from config.model import Settings
from flows.journey_flow import build_flow
from journey import __version__
from journey.control import RUN, ControlSource, in_force, publish, who
from journey.kafka_io import (
    PART_SEP,
    KafkaBatchSink,
    KafkaBatchSource,
    StallWatch,
    check_client_settings,
    cluster_metadata,
    ensure_topics,
    misfit_offsets,
    partition_counts,
)
from journey.recovery import check_layout, ensure_store, resume_point, saved_layout
from operators.metrics import EngineMetrics
from operators.reading import Readers
from operators.routing import DEFAULT_SHARDS
from operators.shard import state_layout, warm_up

log = logging.getLogger(__name__)
E = TypeVar("E", bound=BaseException)

STOP_DELIVERY_S = 30.0
"""How long a stopped run waits for output it had produced but not yet seen delivered."""


@dataclass(frozen=True)
class RunOptions:
    """How one process of the flow runs."""

    until_end: bool = False
    workers: int = 1
    process_id: int | None = None
    addresses: list[str] | None = None
    recovery_dir: Path | None = None
    snapshot_interval_s: float = 10.0
    metrics_port: int | None = None  # see metrics_port_of
    metrics_addr: str = "127.0.0.1"
    shards: int | None = None  # None: the recovery store's, else DEFAULT_SHARDS per worker of the cluster
    windows: bool = True


def settle_heap() -> None:
    """Collect once, then exempt everything start-up made from later collections.

    Start-up leaves long-lived objects by the hundred thousand (modules, compiled
    kernels, a benchmark's input); otherwise every full collection while the flow runs
    walks them all again, for nothing.
    """
    gc.collect()
    gc.freeze()


def compile_kernels(settings: Settings) -> tuple[int, float]:
    """Compile (or load from Numba's cache) every kernel: how many had to compile, and the seconds."""
    started = time.perf_counter()
    compiled = warm_up(settings.journey, settings.topics)
    return compiled, time.perf_counter() - started


def _warm(settings: Settings) -> None:
    """Kernels ready before any event arrives; a run that has to compile says so, and how long.

    The first run of a fresh installation or container image pays that once, unless
    ``journey compile`` did at setup or image build.
    """
    compiled, seconds = compile_kernels(settings)
    if compiled:
        log.info("compiled %d kernel signatures in %.1f s: nothing was cached for them yet "
                 "(`journey compile` at setup or image build does this once)", compiled, seconds)
    else:
        log.debug("kernels loaded from the cache in %.2f s", seconds)


def run(settings: Settings, options: RunOptions, metrics: EngineMetrics | None = None) -> None:
    """Run the flow until the input ends (``until_end``) or the process is stopped."""
    shards, recovery = prepare_store(settings, options)
    if recovery is None:
        log.info("no --recovery-dir: nothing is kept for a restart, which reads the input topics from "
                 "their beginning again")
    metadata = cluster_metadata(settings.kafka)
    partitions = partition_counts(metadata, settings.topics.inputs)
    topics = settings.topics
    created = ensure_topics(settings.kafka, topics.outputs, max(partitions.values()), metadata,
                            replication=topics.replication_factor, configs=topics.creation())
    if created:
        log.info("created output topics: %s", ", ".join(created))
    if options.recovery_dir is not None:
        say_where_it_resumes(settings, options.recovery_dir, partitions)
    start = None  # the map a live run starts with, and where it follows the control topic from
    if not options.until_end:  # a bounded run (a replay, a backfill) runs --config's map, as given
        start = in_force(settings)
        if start.publish and not options.process_id:  # the trail says which map flows started with
            offset = publish(settings, start.journey, f"{who()} (journey run --config {settings.path})", RUN)
            start = replace(start, follow_from=offset)
        settings = replace(settings, journey=start.journey)
    _warm(settings)
    settle_heap()
    metrics = metrics or EngineMetrics(process_collectors=True)
    metrics.describe_run(__version__, settings.journey.version)
    if options.metrics_port is not None:
        serve_metrics(metrics, options.metrics_addr, metrics_port_of(options))
    source = KafkaBatchSource(settings.kafka, partitions, Readers(settings.journey, settings.topics),
                              bounded=options.until_end, metrics=metrics)
    sink = KafkaBatchSink(settings.kafka, process=options.process_id or 0, metrics=metrics)
    flow = build_flow(settings, source, len(source.list_parts()), sink,
                      metrics=metrics, shards=shards, windows=options.windows,
                      recoverable=recovery is not None,
                      control=None if start is None else ControlSource(settings, start, metrics,
                                                                       source.stopping))
    try:
        with _stops_gracefully(source.stopping), StallWatch(settings.kafka, topics.inputs[0]):
            cli_main(
                flow,
                workers_per_process=options.workers,
                process_id=options.process_id,
                addresses=options.addresses,
                epoch_interval=timedelta(seconds=options.snapshot_interval_s),
                recovery_config=recovery,
            )
        if source.stopping.is_set():
            log.info("stopped: every output of what was read is delivered%s",
                     "; the recovery store resumes after it" if recovery is not None else "")
    except JourneyError:
        raise
    except KeyboardInterrupt:
        sink.deliver_rest(STOP_DELIVERY_S)
        raise
    except Exception as err:
        cause = find_cause(err, JourneyError)
        if cause is not None:
            raise cause from err
        if find_cause(err, KeyboardInterrupt) is not None:  # Ctrl-C, wrapped by Bytewax
            sink.deliver_rest(STOP_DELIVERY_S)
            raise KeyboardInterrupt from err
        raise
    except BaseException as err:
        if type(err).__name__ != "PanicException" or options.addresses is None:
            raise
        # Bytewax's cluster panics in every process when one of them stops
        log.debug("Bytewax stopped with: %s", err)
        msg = (f"process {options.process_id} lost contact with the cluster: another process "
               "stopped, or this one failed (the lines above say so if it did). Restart all of them "
               "(from the recovery store, nothing is lost); `journey run --processes N` supervises a "
               "cluster on one machine and does that")
        raise ClusterError(msg) from None


def say_where_it_resumes(settings: Settings, directory: Path, partitions: dict[str, int]) -> None:
    """One line: a fresh start, or the epoch and offsets the store resumes from, once they fit the topics."""
    point = resume_point(directory, PART_SEP)
    if point is None:
        log.info("recovery store %s: fresh start; the input topics are read from their beginning", directory)
        return
    misfit = misfit_offsets(settings.kafka, point.offsets, partitions)
    if misfit:
        msg = (f"--recovery-dir {directory} does not fit the input topics at {settings.kafka.brokers}: "
               f"{'; '.join(misfit)}. It was written against other topics (an emptied broker, another "
               "cluster, topics made anew): resuming would skip input or count it twice. Point --brokers "
               "at the cluster it was written against, or start with a new --recovery-dir")
        raise ConfigError(msg)
    log.info("recovery store %s: %s", directory, point.describe())


def prepare_store(settings: Settings, options: RunOptions,
                  processes: int | None = None) -> tuple[int, RecoveryConfig | None]:
    """Client settings checked, the shard count, the recovery store made or checked (when one is used).

    ``processes``: the cluster's size when ``options`` has no addresses yet (a supervisor
    prepares the store before it picks them).
    """
    check_client_settings(settings.kafka)
    store = None if options.recovery_dir is None else ensure_store(options.recovery_dir)
    shards = shard_count(options, processes or len(options.addresses or [""]))
    if options.recovery_dir is not None:
        check_layout(options.recovery_dir, state_layout(settings.journey, shards))
    return shards, store


@contextmanager
def _stops_gracefully(stopping: threading.Event) -> Iterator[None]:
    """SIGTERM or Ctrl-C: stop reading, let the flow finish and deliver what it read, exit 0.

    The input partitions end at their next call, so the flow drains like a bounded run:
    the last batches are scored, every output is delivered, the last epoch is snapshotted.
    A second signal stops at once (as Ctrl-C did before: what was produced is flushed).
    """
    def stop(signum: int, _frame: object) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()
        log.info("%s: stopping; finishing the batches read, delivering their output (again to stop at once)",
                 signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_metrics(metrics: EngineMetrics, addr: str, port: int) -> None:
    """Serve ``/metrics`` from a thread of this process; says where, or why it cannot."""
    try:
        start_http_server(port, addr=addr, registry=metrics.registry)
    except OSError as err:
        msg = (f"cannot serve metrics on {addr}:{port} ({err.strerror}); pick another --metrics-port "
               "(process i of a cluster on one host uses the port plus i) or --metrics-addr")
        raise ConfigError(msg) from err
    log.info("metrics at http://%s:%d/metrics", addr, port)


def metrics_port_of(options: RunOptions) -> int:
    """``--metrics-port``, plus the process id when the cluster's processes share one host.

    Processes on one machine (the same host in every address, as ``--processes`` starts
    them) cannot share a port; pods of a StatefulSet each have their own address, and
    serve on the same port.
    """
    port = options.metrics_port or 0
    hosts = {address.rpartition(":")[0] for address in options.addresses or []}
    return port + (options.process_id or 0) if len(hosts) == 1 else port


def shard_count(options: RunOptions, processes: int) -> int:
    """``--shards``; else the count the recovery store was written with; else per worker.

    Each process of a cluster decides alone: give a cluster whose store was written with
    a count of its own ``--shards`` outright, as a process that holds no shard's snapshot
    cannot read the count from its store.
    """
    if options.shards is not None:
        return options.shards
    saved = None
    if options.recovery_dir is not None and options.recovery_dir.is_dir():
        saved = saved_layout(options.recovery_dir)
    shards = saved.get("shards") if saved is not None else None
    if isinstance(shards, int):
        log.info("%d customer shards, as the recovery store was written", shards)
        return shards
    return DEFAULT_SHARDS * options.workers * processes


def find_cause(err: BaseException, kind: type[E]) -> E | None:
    """The first exception of ``kind`` in the chain Bytewax wraps around a failed step."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
