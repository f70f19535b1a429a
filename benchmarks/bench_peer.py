"""Whole-process throughput against a peer: ``journey run --until-end`` beside Pathway, in one run.

    python -m benchmarks.bench_peer [--events 1000000] [--customers 100000] [--days 54] [--runs 3]

Produces the simulated history once (with 1% re-delivered events, no malformed ones and
integer times only: the peer has no dead-letter topic and parses no RFC 3339), then
alternates, ``--runs`` times: ``journey run --until-end`` with windows on, the same with
``--no-windows``, and the score part of the job done by Pathway
(``benchmarks/peer_pathway.py``, the ``bench`` extra). Each is a process of its own,
timed from its start until it exited with everything written, to fresh output topics:
start-up, connecting and compiling or loading kernels count, as they do for a user.
Prints events/s, CPU seconds and peak memory per run, the medians and the ratios, and
checks that the peer did the same job: every customer's final score from Pathway against
ours (largest relative difference).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
from confluent_kafka import Producer

from benchmarks.latency.__main__ import ROOT, config_for, engine_command, read_all, wait_measured
from config.model import DEFAULT_PATH, Topics, load_settings
from journey.broker import EmbeddedBroker
from journey.kafka_io import ensure_topics
from journey.simulate import SimOptions, messages, produce

PARTITIONS = 4
SYSTEMS = ("windows", "no-windows", "pathway")
END_MARK = "end-of-history"


@dataclass
class Run:
    """One process: how long it took, what it cost, what it wrote."""

    seconds: float
    cpu: float
    peak_mb: float
    output: str  # its score topic


def mark_ends(brokers: str, inputs: tuple[str, ...]) -> None:
    """One more event at the end of every input partition, each sent alone.

    Pathway's static mode reads a partition up to the end the broker reports, and the
    embedded broker reports the first offset of the partition's last produced batch
    (FIELD-NOTES): a batch of its own per partition keeps the history whole for the peer.
    """
    producer = Producer({"bootstrap.servers": brokers})
    for topic in inputs:
        for part in range(PARTITIONS):
            event = {"event_id": f"end-{topic}-{part}", "customer_id": END_MARK,
                     "ts": int(time.time() * 1000), "type": "page_view"}
            producer.produce(topic, orjson.dumps(event), END_MARK.encode(), partition=part)
            producer.flush(10)


def run_system(system: str, brokers: str, inputs: tuple[str, ...], directory: Path) -> Run:
    """Start ``system`` as its own process over ``inputs``, wait until it exits, measure it."""
    tag = f"peer{uuid.uuid4().hex[:8]}"
    config = config_for(brokers, tag, directory, inputs)
    output = f"{tag}.scores"
    settings = load_settings(config)
    if system == "pathway":
        ensure_topics(settings.kafka, [output], PARTITIONS)
        cmd = [sys.executable, "-P", str(ROOT / "benchmarks" / "peer_pathway.py"), str(config), brokers,
               ",".join(inputs), output]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PATHWAY_THREADS": "1"}
    else:
        cmd = engine_command(config, "--until-end", *(["--no-windows"] if system == "no-windows" else []))
        env = dict(os.environ)
    log = directory / f"{tag}.log"  # a file, not a pipe: a full pipe would stall the system
    started = time.perf_counter()
    with log.open("wb") as err:
        exited = wait_measured(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env))
    seconds = time.perf_counter() - started
    if exited.code != 0:
        msg = f"{system} exited with {exited.code}:\n{log.read_text(errors='replace')[-6000:]}"
        raise SystemExit(msg)
    return Run(seconds, exited.cpu, exited.peak_mb, output)


def final_scores(brokers: str, topic: str) -> dict[str, float]:
    """Each customer's score in its last record on ``topic``."""
    out: dict[str, tuple[int, float]] = {}
    for value, _ in read_all(brokers, topic):
        rec = orjson.loads(value)
        if rec.get("diff", 1) != 1:  # Pathway also writes the rows it retracts
            continue
        cid, n = rec["customer_id"], rec["events"]
        if cid not in out or n >= out[cid][0]:
            out[cid] = (n, rec["score"])
    return {cid: score for cid, (_, score) in out.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--days", type=float, default=54.0)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    try:
        import pathway  # noqa: F401
    except ImportError:
        print("the peer needs Pathway: pip install -e '.[bench]'", file=sys.stderr)
        return 3
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        inputs = ("peer.clickstream", "peer.touchpoints")
        base = replace(load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap),
                       topics=Topics(inputs=inputs))
        produced = messages(base, SimOptions(customers=args.customers, events=args.events, seed=7,
                                             duplicates=0.01, rfc3339=0.0,
                                             span_ms=round(args.days * 86_400_000)))
        produce(base, produced, progress=sys.stderr, partitions=PARTITIONS)
        mark_ends(broker.bootstrap, inputs)
        n = len(produced)
        runs: dict[str, list[Run]] = {s: [] for s in SYSTEMS}
        for r in range(args.runs):
            for system in SYSTEMS:
                run = run_system(system, broker.bootstrap, inputs, Path(tmp))
                runs[system].append(run)
                print(f"run {r + 1} {system:>10}: {n:,} messages in {run.seconds:6.2f} s = "
                      f"{n / run.seconds:>9,.0f} events/s, CPU {run.cpu:6.2f} s, peak {run.peak_mb:5.0f} MB",
                      flush=True)
        median = {s: statistics.median(n / run.seconds for run in rs) for s, rs in runs.items()}
        for s, rate in median.items():
            cpu = statistics.median(run.cpu for run in runs[s])
            peak = statistics.median(run.peak_mb for run in runs[s])
            print(f"median {s:>10}: {rate:>9,.0f} events/s, CPU {cpu:6.2f} s, peak {peak:5.0f} MB")
        print(f"ratio windows / pathway    : {median['windows'] / median['pathway']:.2f}x")
        print(f"ratio no-windows / pathway : {median['no-windows'] / median['pathway']:.2f}x")
        ours = final_scores(broker.bootstrap, runs["windows"][0].output)
        theirs = final_scores(broker.bootstrap, runs["pathway"][0].output)
        both = ours.keys() & theirs.keys() - {END_MARK}
        worst = max((abs(ours[c] - theirs[c]) / max(1.0, abs(ours[c])) for c in both), default=0.0)
        print(f"same job: {len(ours) - 1:,} customers scored by us, {len(theirs):,} by Pathway, "
              f"{len(both):,} by both; largest relative difference of a final score: {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
