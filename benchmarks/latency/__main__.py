"""Live latency of ``journey run`` against the floor of a pass-through loop, on the same broker.

    python -m benchmarks.latency [--rates 2000,5000,10000,20000] [--seconds 20] [--modes busy,quiet]
                                 [--repeat 1] [--runtime] [--sustain] [--cold-start] [--memory]
                                 [--engine-args "--shards 8"]

For every mode and rate, each system (the floor, then the engine) runs on an embedded
broker of its own, started fresh (an in-memory broker slows down as it fills: on one
broker for every point, the floor's own p50 tripled within a run), while the open-loop
driver sends events for ``--seconds``. Latency is the output message's timestamp (set
when our sink, or the loop, produced it) minus the moment the event was due to be sent;
score records are matched to events by ``customer_id`` and ``last_event_ts`` (an event
whose customer had a later event in the same batch has no record of its own and is not
counted). ``busy`` sends to both input topics in turn; ``quiet`` to ``clickstream``
only, ``touchpoints`` staying empty. Also reported: CPU of the system and of the broker
while the driver ran, the system's peak memory, the share of that time its main thread
was ready to run but waiting for a core, and how idle the machine's cores were: a
system that falls behind while it waits for a core is short of CPU, not of work done.
``--runtime`` runs a third system at every point, between the two: the runtime floor
(``runtime.py``), ``journey run``'s own source and sink with no work between them, which
says how much of the engine's latency is Bytewax's rounds and our reading and writing,
and how much the scoring. ``LATENCY_TIMELINE=1`` prints the latencies per half second
of each run; ``LATENCY_ENGINE_TREE=DIR`` runs the engine (and the runtime floor's source
and sink, which needs a tree with this one's source and sink interfaces) of another
checkout (an older revision, say) against the same floor.

``--sustain`` raises the rate until the engine no longer keeps up (Karimov et al., ICDE
2018: the output falls behind, or p99 grows past a second) and reports the highest rate
it sustained. ``--cold-start`` times a fresh ``journey run`` from its start to its first
score record, with the kernels cached as setup leaves them and with nothing cached.
``--memory`` runs the engine without windows, live, over one event each of 10k and then
1M customers and reports memory per tracked customer, from the difference: the bytes
its state holds (its own ``journey_state_bytes``, room reserved included), its resident
memory once it holds them all, and its peak.
"""

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from config.model import DEFAULT_PATH, OUTPUT_ROLES, load_settings
from journey.broker import EmbeddedBroker, free_port
from journey.kafka_io import cluster_metadata, ensure_topics
from operators.metrics import STATE_BYTES, TRACKED

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PARTITIONS = 4
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Point:
    """One system at one rate: latencies (ms) and what it cost."""

    system: str
    mode: str
    rate: int
    latencies: np.ndarray
    after_ack: np.ndarray  # per event answered, ms from the broker's acknowledgement of it to the answer
    acked: np.ndarray  # per event sent, ms from its due time until the broker acknowledged it
    sent: int
    costs: "Rates"  # while the driver sent
    peak_mb: float
    driver_lag_ms: float
    kept_up: bool  # the events of the last second were all answered

    def pct(self, q: float, of: Literal["latencies", "after_ack", "acked"] = "latencies") -> float:
        """Percentile ``q`` (ms) of the latencies, the times after acknowledgement, or those until it."""
        values = getattr(self, of)
        return float(np.percentile(values, q)) if values.size else float("nan")


@dataclass(frozen=True)
class Rates:
    """What a run cost while the driver sent, per second of it."""

    cpu: float  # cores the system used
    broker_cpu: float  # cores the broker used
    waiting: float  # share of the time the system's main thread was ready to run, waiting for a core
    machine_idle: float  # share of the machine's core time left idle


@dataclass(frozen=True)
class Costs:
    """Counters of the system, the broker and the machine at one moment."""

    wall: float
    cpu: float
    broker_cpu: float
    queued: float
    idle_ticks: int
    total_ticks: int

    @classmethod
    def now(cls, pid: int, broker_pid: int) -> "Costs":
        """The counters of process ``pid``, of the broker and of the machine now."""
        idle, total = machine_ticks()
        return cls(time.monotonic(), cpu_seconds(pid), cpu_seconds(broker_pid), run_queue_seconds(pid),
                   idle, total)

    def to(self, later: "Costs") -> Rates:
        """The rates between this moment and ``later``."""
        wall = later.wall - self.wall
        return Rates((later.cpu - self.cpu) / wall, (later.broker_cpu - self.broker_cpu) / wall,
                     (later.queued - self.queued) / wall,
                     (later.idle_ticks - self.idle_ticks) / max(1, later.total_ticks - self.total_ticks))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run_queue_seconds(pid: int) -> float:
    """Seconds the process's main thread has waited, runnable, for a core (the scheduler's count).

    With one worker, as here, Bytewax runs the dataflow on the main thread.
    """
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def machine_ticks() -> tuple[int, int]:
    """The machine's idle (with I/O wait) and total core time so far, in ticks."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[3] + fields[4], sum(fields)  # guest time is counted in user time already


def status_bytes(pid: int, field: str) -> float:
    """A memory figure of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``: the peak), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return float("nan")


def peak_mb(pid: int) -> float:
    """Peak resident memory of ``pid``, MB."""
    return status_bytes(pid, "VmHWM") / 2**20


def engine_command(config: Path, *options: str) -> list[str]:
    """``journey run`` in a fresh interpreter, the working directory kept off its import path (``-P``)."""
    return [sys.executable, "-P", "-m", "journey.cli", "run", "--config", str(config), *options]


@dataclass
class Exited:
    """A finished process: how it ended and what it cost."""

    code: int
    cpu: float  # seconds, user and system
    peak_mb: float


def wait_measured(proc: subprocess.Popen[bytes]) -> Exited:
    """Wait for ``proc`` to exit, sampling its peak memory as it runs.

    Sampled because a child's own ``ru_maxrss`` counts the memory of the parent it was
    forked from.
    """
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return Exited(proc.returncode, usage.ru_utime + usage.ru_stime, peak)
        with contextlib.suppress(OSError):
            peak = max(peak, peak_mb(proc.pid))
        time.sleep(0.05)


def config_for(brokers: str, tag: str, directory: Path, inputs: tuple[str, ...] = ()) -> Path:
    """The default map with output topics named by ``tag``; inputs ``inputs`` or named by ``tag`` too."""
    path = directory / f"{tag}.toml"
    text = DEFAULT_PATH.read_text() + f'\n[kafka]\nbrokers = "{brokers}"\n\n[topics]\n'
    names = inputs or (f"{tag}.clickstream", f"{tag}.touchpoints")
    text += f"inputs = {orjson.dumps(list(names)).decode()}\n"
    for name in OUTPUT_ROLES:
        text += f'{name} = "{tag}.{name}"\n'
    path.write_text(text)
    return path


def read_all(brokers: str, topic: str) -> list[tuple[bytes, int]]:
    """Every message of ``topic``: value and timestamp (ms)."""
    parts = list(
        cluster_metadata(load_settings(DEFAULT_PATH).with_brokers(brokers).kafka).topics[topic].partitions
    )
    c = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "latency-read",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[tuple[bytes, int]] = []
    done: set[int | None] = set()
    while len(done) < len(parts):
        for m in c.consume(10_000, 0.5):
            err = m.error()
            if err is None:
                out.append((m.value() or b"", m.timestamp()[1]))
            elif err.code() == KafkaError._PARTITION_EOF:
                done.add(m.partition())
    c.close()
    return out


def wait_until_answering(brokers: str, inputs: list[str], output: str, proc: subprocess.Popen[bytes]) -> None:
    """Send warm-up events until the system answers one (it has started and caught up)."""
    kafka = load_settings(DEFAULT_PATH).with_brokers(brokers).kafka
    producer = Producer({"bootstrap.servers": brokers})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"the system under test exited with {proc.returncode}"
            raise SystemExit(msg)
        for topic in inputs:
            producer.produce(
                topic,
                orjson.dumps(
                    {
                        "event_id": f"warm-{uuid.uuid4().hex}",
                        "customer_id": "warm",
                        "ts": int(time.time() * 1000),
                        "type": "page_view",
                    }
                ),
                b"warm",
            )
        producer.flush(10)
        time.sleep(1)
        if output in cluster_metadata(kafka).topics and read_all(brokers, output):
            return
    msg = "the system under test did not answer within 120 s"
    raise SystemExit(msg)


def run_point(
    system: str, mode: str, rate: int, seconds: float, directory: Path, engine_args: list[str]
) -> Point:
    """One system at one rate, on a broker of its own (an in-memory broker slows down as it fills)."""
    with EmbeddedBroker() as broker:
        return _run_point(broker, system, mode, rate, seconds, directory, engine_args)


def _run_point(
    broker: EmbeddedBroker, system: str, mode: str, rate: int, seconds: float, directory: Path,
    engine_args: list[str],
) -> Point:
    brokers = broker.bootstrap
    tag = f"lat{uuid.uuid4().hex[:8]}"
    inputs = [f"{tag}.clickstream", f"{tag}.touchpoints"]
    settings = load_settings(DEFAULT_PATH).with_brokers(brokers)
    ensure_topics(settings.kafka, inputs, PARTITIONS)
    env = {**os.environ, "PYTHONPATH": os.environ.get("LATENCY_ENGINE_TREE", "")}
    if system == "engine":
        output = f"{tag}.scores"
        cmd = engine_command(config_for(brokers, tag, directory), *engine_args)
    elif system == "runtime":
        output = f"{tag}.scores"
        ensure_topics(settings.kafka, [output], PARTITIONS)
        cmd = [sys.executable, "-P", str(HERE / "runtime.py"), str(config_for(brokers, tag, directory))]
    else:
        output = f"{tag}.passthrough"
        ensure_topics(settings.kafka, [output], PARTITIONS)
        cmd = [sys.executable, str(HERE / "floor.py"), brokers, ",".join(inputs), output]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            preexec_fn=interruptible)
    try:
        wait_until_answering(brokers, inputs, output, proc)
        start_ms = int(time.time() * 1000) + 1_000
        record = directory / f"{tag}.npz"
        send = inputs if mode == "busy" else inputs[:1]
        driver = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "driver.py"),
                brokers,
                ",".join(send),
                str(rate),
                str(seconds),
                str(start_ms),
                str(record),
            ],
        )
        time.sleep(max(0.0, start_ms / 1000 - time.time()))  # costs count from the first event sent ...
        before = Costs.now(proc.pid, broker.pid)
        if driver.wait() != 0:
            msg = f"the driver exited with {driver.returncode}"
            raise SystemExit(msg)
        after = Costs.now(proc.pid, broker.pid)  # ... to the last
        time.sleep(3)  # what was sent last gets its answer
        peak = peak_mb(proc.pid)
    finally:
        stop(proc, signal.SIGTERM if system == "floor" else signal.SIGINT)
    sent = np.load(record)
    event = {
        (f"lat-{c:06d}", int(t)): i
        for i, (c, t) in enumerate(zip(sent["customer"].tolist(), sent["due"].tolist(), strict=True))
    }
    matched, out_times = [], []
    for value, out_ts in read_all(brokers, output):
        rec = orjson.loads(value)
        i = event.get((rec.get("customer_id"), rec.get("last_event_ts", rec.get("ts"))))
        if i is not None:
            matched.append(i)
            out_times.append(out_ts)
    index, out_at = np.array(matched, dtype=np.int64), np.array(out_times, dtype=np.int64)
    due_at = sent["due"][index]
    latencies = out_at - due_at
    last_second = start_ms + seconds * 1000 - 1000
    answered_last = int(np.count_nonzero(due_at >= last_second))
    acked = sent["acked"] - sent["due"]
    if os.environ.get("LATENCY_TIMELINE"):
        lat, at, sent_at = latencies, (due_at - start_ms) // 500, (sent["due"] - start_ms) // 500
        for slot in np.unique(at):
            sel = lat[at == slot]
            print(f"  {system} t={slot / 2:5.1f}s n={sel.size:5} p50={np.percentile(sel, 50):6.0f} "
                  f"max={sel.max():6.0f}  acknowledged p50={np.percentile(acked[sent_at == slot], 50):6.0f}")
    # kept up: the last second's events were answered about as often as all the others
    share = latencies.size / max(1, len(event))
    n_last = int(np.count_nonzero(sent["due"] >= last_second))
    return Point(
        system,
        mode,
        rate,
        latencies=latencies,
        after_ack=out_at - sent["acked"][index],
        acked=acked,
        sent=len(event),
        costs=before.to(after),
        peak_mb=peak,
        driver_lag_ms=float(sent["worst_lag_s"][0]) * 1000,
        kept_up=answered_last >= 0.9 * share * n_last,
    )


def interruptible() -> None:
    """In the child before it starts: Ctrl-C as by default, even under ``nohup`` or ``&``.

    A shell without job control starts a background command with SIGINT ignored, and a
    child inherits that: the system under test would never hear the stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(proc: subprocess.Popen[bytes], how: int = signal.SIGINT) -> None:
    """Stop the system under test; kill it (and say so) if it has not exited within a minute."""
    proc.send_signal(how)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        print(f"warning: {proc.args!r} did not stop within 60 s of signal {how}: killed", file=sys.stderr)
        proc.kill()
        proc.wait()


def line(p: Point) -> str:
    c = p.costs
    return (
        f"{p.system:>7} {p.mode:>5} {p.rate:>6,} ev/s: p50 {p.pct(50):6.0f}  p90 {p.pct(90):6.0f}  "
        f"p99 {p.pct(99):6.0f}  max {p.latencies.max() if p.latencies.size else 0:6.0f} ms  "
        f"({p.latencies.size:,} of {p.sent:,} events matched)  input acknowledged p99 "
        f"{p.pct(99, 'acked'):5.0f} ms, answered after that p50 {p.pct(50, 'after_ack'):5.0f} "
        f"p99 {p.pct(99, 'after_ack'):5.0f} ms  cpu {c.cpu:4.2f}  waiting for a core {c.waiting:4.0%}  "
        f"broker {c.broker_cpu:4.2f}  machine idle {c.machine_idle:4.0%}  peak {p.peak_mb:5.0f} MB  "
        f"driver lag {p.driver_lag_ms:4.0f} ms"
    )


def ratio(ours: float, floor: float) -> str:
    """``ours / floor`` to two places, or a dash when the floor measured zero."""
    return f"{ours / floor:.2f}" if floor else "-"


def print_tables(results: dict[tuple[str, str, int], list[Point]]) -> None:
    """Medians over the runs of each point: latency against the floor, then what it is made of."""

    def med(ps: list[Point], q: float, of: Literal["latencies", "after_ack", "acked"] = "latencies") -> float:
        return statistics.median(x.pct(q, of) for x in ps)

    def mx(ps: list[Point]) -> float:
        return statistics.median(float(x.latencies.max()) for x in ps)

    def cost(ps: list[Point], of: str) -> float:
        return float(statistics.median(getattr(x.costs, of) for x in ps))

    points = [(mode, rate, results["floor", mode, rate], engine)
              for (system, mode, rate), engine in results.items() if system == "engine"]
    print("\n| mode | rate (ev/s) | floor p50 / p90 / p99 / max (ms) "
          "| journey-stream p50 / p90 / p99 / max (ms) | ÷ floor (p50, p99) |")
    print("|---|---|---|---|---|")
    for mode, rate, floor, engine in points:
        print(f"| {mode} | {rate:,} | {med(floor, 50):.0f} / {med(floor, 90):.0f} / {med(floor, 99):.0f} / "
              f"{mx(floor):.0f} | {med(engine, 50):.0f} / {med(engine, 90):.0f} / {med(engine, 99):.0f} / "
              f"{mx(engine):.0f} | {ratio(med(engine, 50), med(floor, 50))}, "
              f"{ratio(med(engine, 99), med(floor, 99))} |")
    print("\n| mode | rate (ev/s) | input acknowledged p99, floor / journey-stream (ms) "
          "| after that p50 / p99, floor (ms) | after that p50 / p99, journey-stream (ms) "
          "| ÷ floor (p50, p99) | engine CPU (cores) | waiting for a core | broker CPU | machine idle "
          "| engine peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, rate, floor, engine in points:
        after = [(med(ps, 50, "after_ack"), med(ps, 99, "after_ack")) for ps in (floor, engine)]
        print(f"| {mode} | {rate:,} | {med(floor, 99, 'acked'):.0f} / {med(engine, 99, 'acked'):.0f} | "
              f"{after[0][0]:.0f} / {after[0][1]:.0f} | {after[1][0]:.0f} / {after[1][1]:.0f} | "
              f"{ratio(after[1][0], after[0][0])}, {ratio(after[1][1], after[0][1])} | "
              f"{cost(engine, 'cpu'):.2f} | {cost(engine, 'waiting'):.0%} | "
              f"{cost(engine, 'broker_cpu'):.2f} | "
              f"{cost(engine, 'machine_idle'):.0%} | {statistics.median(x.peak_mb for x in engine):.0f} |")
    runtime = [(mode, rate, floor, results[key], engine) for mode, rate, floor, engine in points
               if (key := ("runtime", mode, rate)) in results]
    if not runtime:
        return
    print("\n| mode | rate (ev/s) | floor p50 / p99 (ms) | runtime floor p50 / p99 (ms) | ÷ floor (p50, p99) "
          "| runtime floor CPU (cores) | journey-stream p50 / p99 (ms) | ÷ runtime floor (p50, p99) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, rate, floor, bare, engine in runtime:
        print(f"| {mode} | {rate:,} | {med(floor, 50):.0f} / {med(floor, 99):.0f} | "
              f"{med(bare, 50):.0f} / {med(bare, 99):.0f} | {ratio(med(bare, 50), med(floor, 50))}, "
              f"{ratio(med(bare, 99), med(floor, 99))} | {cost(bare, 'cpu'):.2f} | "
              f"{med(engine, 50):.0f} / {med(engine, 99):.0f} | {ratio(med(engine, 50), med(bare, 50))}, "
              f"{ratio(med(engine, 99), med(bare, 99))} |")


def cold_start(directory: Path, numba_cache: str | None) -> float:
    """Seconds from starting ``journey run`` until its first score record is on its topic."""
    with EmbeddedBroker() as broker:
        tag = f"cold{uuid.uuid4().hex[:8]}"
        inputs = [f"{tag}.clickstream", f"{tag}.touchpoints"]
        ensure_topics(load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap).kafka, inputs, PARTITIONS)
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        now = int(time.time() * 1000)
        event = {"event_id": "cold", "customer_id": "cold", "ts": now, "type": "page_view"}
        producer.produce(inputs[0], orjson.dumps(event), b"cold")
        producer.flush(10)
        env = {**os.environ, **({"NUMBA_CACHE_DIR": numba_cache} if numba_cache else {})}
        config = config_for(broker.bootstrap, tag, directory)
        started = time.monotonic()
        proc = subprocess.Popen(engine_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, preexec_fn=interruptible)
        kafka = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap).kafka
        try:
            while time.monotonic() - started < 180:
                scores = f"{tag}.scores"
                if scores in cluster_metadata(kafka).topics and read_all(broker.bootstrap, scores):
                    return time.monotonic() - started
                time.sleep(0.05)
            return float("nan")
        finally:
            stop(proc)


def memory_per_customer(broker: EmbeddedBroker, directory: Path) -> None:
    """Memory of ``journey run --no-windows`` holding 1M customers against 10k, read from the flow itself.

    The engine runs live with ``--metrics-port``; once it tracks every customer, its own
    ``journey_state_bytes`` and resident memory are read, and then its peak.
    """
    from journey.simulate import SimMessage, produce

    settings = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
    seen: dict[int, dict[str, float]] = {}
    for customers in (10_000, 1_000_000):
        tag = f"mem{uuid.uuid4().hex[:8]}"
        now = int(time.time() * 1000)
        msgs = [
            SimMessage(
                f"{tag}.clickstream",
                f"m-{i}".encode(),
                orjson.dumps(
                    {
                        "event_id": f"m{i}",
                        "customer_id": f"m-{i}",
                        "ts": now - customers + i,
                        "type": "page_view",
                    }
                ),
                "event",
            )
            for i in range(customers)
        ]
        ensure_topics(settings.kafka, [f"{tag}.touchpoints"], PARTITIONS)
        produce(settings.with_brokers(broker.bootstrap), msgs, progress=None, partitions=PARTITIONS)
        port = free_port()
        proc = subprocess.Popen(
            engine_command(config_for(broker.bootstrap, tag, directory), "--no-windows",
                           "--metrics-port", str(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            seen[customers] = holding(proc, port, customers)
        finally:
            stop(proc)
    low, high = seen[10_000], seen[1_000_000]
    per = {name: (high[name] - low[name]) / 990_000 for name in high}
    print(
        f"memory: holding 10k customers, then 1M: state {low['state'] / 2**20:.0f} / "
        f"{high['state'] / 2**20:.0f} MB, resident {low['rss'] / 2**20:.0f} / {high['rss'] / 2**20:.0f} MB, "
        f"peak {low['peak'] / 2**20:.0f} / {high['peak'] / 2**20:.0f} MB; per tracked customer: "
        f"state {per['state']:.0f} bytes, resident {per['rss']:.0f}, peak {per['peak']:.0f}"
    )


def holding(proc: subprocess.Popen[bytes], port: int, customers: int) -> dict[str, float]:
    """Bytes of state, resident and peak memory of ``proc`` once its metrics say it tracks ``customers``."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"the engine exited ({proc.returncode}) before it tracked {customers:,} customers"
            raise RuntimeError(msg)
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                values = {sample.name: sample.value
                          for family in text_string_to_metric_families(response.read().decode())
                          for sample in family.samples}
            if values.get(TRACKED.name, 0) >= customers:
                return {"state": values[STATE_BYTES.name], "rss": status_bytes(proc.pid, "VmRSS"),
                        "peak": status_bytes(proc.pid, "VmHWM")}
        time.sleep(0.2)
    msg = f"the engine did not track {customers:,} customers within 10 minutes"
    raise RuntimeError(msg)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="2000,5000,10000,20000")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--modes", default="busy,quiet")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--runtime", action="store_true", help="also run the runtime floor (runtime.py)")
    p.add_argument("--sustain", action="store_true")
    p.add_argument("--memory", action="store_true")
    p.add_argument("--cold-start", action="store_true")
    p.add_argument("--engine-args", default="", help="more `journey run` options, e.g. '--shards 8'")
    args = p.parse_args()
    engine_args = args.engine_args.split()
    systems = ("floor", "runtime", "engine") if args.runtime else ("floor", "engine")
    results: dict[tuple[str, str, int], list[Point]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for mode in filter(None, args.modes.split(",")):  # --modes '': no latency points
            for rate in (int(r) for r in args.rates.split(",")):
                for _ in range(args.repeat):
                    for system in systems:
                        point = run_point(system, mode, rate, args.seconds, directory, engine_args)
                        results.setdefault((system, mode, rate), []).append(point)
                        print(line(point), flush=True)
        if results:
            print_tables(results)
        if args.sustain:
            best = 0
            for rate in (5_000, 10_000, 20_000, 30_000, 40_000, 60_000, 80_000):
                point = run_point("engine", "busy", rate, args.seconds, directory, engine_args)
                print(line(point), flush=True)
                if not point.kept_up or point.pct(99) > 1_000:
                    break
                best = rate
            print(f"highest rate sustained (output kept up, p99 under 1 s): {best:,} events/s")
        if args.cold_start:
            warm = [cold_start(directory, None) for _ in range(3)]
            empty = cold_start(directory, str(directory / "empty-numba-cache"))
            print(f"cold start (process start to first score): {statistics.median(warm):.1f} s after setup "
                  f"(median of 3: {', '.join(f'{w:.1f}' for w in warm)}), {empty:.1f} s with nothing cached")
        if args.memory:
            with EmbeddedBroker() as broker:
                memory_per_customer(broker, directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
