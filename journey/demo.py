"""``journey demo``: broker, simulator, flow and a live terminal view on one machine.

The view reads the flow's real output topics (transitions, scores, dead letters), so
what it shows is what a personalization service would see.
"""

import signal
import subprocess
import sys
import threading
import time

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from config.model import DEFAULT_PATH, DORMANT, Settings, load_settings
from journey.broker import EmbeddedBroker
from journey.kafka_io import client_config, cluster_metadata, ensure_topics
from journey.simulate import SimOptions, produce, stream


def _simulate_forever(settings: Settings, rate: float, customers: int, stop: threading.Event) -> None:
    opts = SimOptions(customers=customers, events=customers * 10, seed=1, duplicates=0.02,
                      out_of_order=0.02, malformed=0.005, span_ms=3_600_000)
    for msgs in stream(settings, opts):
        if stop.is_set():
            return
        produce(settings, msgs, rate=rate, progress=None)


def _view_consumer(settings: Settings) -> Consumer:
    t = settings.topics
    wanted = (t.transitions, t.scores, t.dlq)
    deadline = time.monotonic() + 30
    while True:
        meta = cluster_metadata(settings.kafka)
        if all(name in meta.topics for name in wanted):
            break
        if time.monotonic() > deadline:
            msg = "demo: the flow did not create its output topics within 30 s"
            raise RuntimeError(msg)
        time.sleep(0.2)
    c = Consumer(client_config(settings.kafka, **{"group.id": "journey-demo-view",
                                                  "enable.auto.commit": False}))
    c.assign([TopicPartition(name, p, OFFSET_BEGINNING)
              for name in wanted for p in meta.topics[name].partitions])
    return c


def _render(settings: Settings, stages: dict[str, str], scores: int, rate: float, dead: int,
            started: float, metrics_url: str) -> str:
    names = [*settings.journey.stage_names, DORMANT]
    counts = {n: 0 for n in names}
    for stage in stages.values():
        counts[stage] = counts.get(stage, 0) + 1
    top = max(counts.values()) or 1
    lines = [f"journey-stream demo — {time.monotonic() - started:5.0f} s   (Ctrl-C stops)",
             f"Prometheus metrics at {metrics_url}", "", "stage populations"]
    for n in names:
        bar = "█" * round(40 * counts[n] / top)
        lines.append(f"  {n:<14} {counts[n]:>8,}  {bar}")
    lines += ["", f"customers tracked  {len(stages):>10,}",
              f"score updates      {scores:>10,}   ({rate:,.0f}/s)",
              f"dead letters       {dead:>10,}"]
    return "\x1b[H\x1b[2J" + "\n".join(lines) + "\n"


def demo(rate: float, customers: int, metrics_port: int) -> int:
    """Run everything until Ctrl-C; return the exit code."""
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    print(f"journey demo: the flow serves Prometheus metrics at {metrics_url}", flush=True)
    with EmbeddedBroker() as broker:
        settings = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
        ensure_topics(settings.kafka, settings.topics.inputs, 4)
        stop = threading.Event()
        sim = threading.Thread(target=_simulate_forever, args=(settings, rate, customers, stop),
                               daemon=True)
        sim.start()
        # -P: the working directory's own packages (a `config/`, say) must not shadow ours
        flow = subprocess.Popen([sys.executable, "-P", "-m", "journey.cli", "run", "--brokers",
                                 broker.bootstrap, "--snapshot-interval", "1",
                                 "--metrics-port", str(metrics_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Ctrl-C sets a flag the view loop checks: librdkafka calls must not be interrupted.
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            return _watch(settings, flow, stop, metrics_url)
        finally:
            signal.signal(signal.SIGINT, previous)
            stop.set()
            flow.terminate()
            try:
                flow.wait(timeout=10)
            except subprocess.TimeoutExpired:
                flow.kill()
            print("demo stopped: flow, simulator and broker shut down.")


def _watch(settings: Settings, flow: "subprocess.Popen[bytes]", stop: threading.Event,
           metrics_url: str) -> int:
    view = _view_consumer(settings)
    t = settings.topics
    stages: dict[str, str] = {}
    scores = dead = 0
    started = last = time.monotonic()
    last_scores = 0
    while not stop.is_set():
        if flow.poll() is not None:
            err = flow.stderr.read().decode(errors="replace") if flow.stderr else ""
            print(f"demo: the flow exited with code {flow.returncode}:\n{err[-2000:]}")
            return 1
        for m in view.consume(10_000, 0.2):
            if m.error() is not None:
                continue
            topic, value = m.topic(), m.value()
            if topic == t.transitions and value is not None:
                rec = orjson.loads(value)
                stages[rec["customer_id"]] = rec["to"]
            elif topic == t.scores:
                scores += 1
            else:
                dead += 1
        now = time.monotonic()
        if now - last >= 1.0:
            rate = (scores - last_scores) / (now - last)
            last, last_scores = now, scores
            sys.stdout.write(_render(settings, stages, scores, rate, dead, started, metrics_url))
            sys.stdout.flush()
    view.close()
    return 0
