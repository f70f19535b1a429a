"""A back-test of the bundled map against a candidate on simulated history, as a user runs it.

    python -m benchmarks.bench_backtest [--events 1000000] [--customers 100000] [--days 60]
                                        [--html FILE] [--screenshot FILE.png]

Produces the history once into an embedded broker, writes a candidate map (the
consideration threshold 3 → 2.5, advocacy's ``min_sentiment`` 0.2 → 0.1), then runs
``journey backtest`` as a process of its own, timed from its start to its exit, and prints
its run time, CPU, peak memory and the report's table. ``--screenshot`` renders the HTML
report in headless Chromium (Debian's ``chromium``) into a PNG: the README's example.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import orjson

from benchmarks.latency.__main__ import config_for, wait_measured
from config.model import DEFAULT_PATH, Topics, load_settings
from journey.broker import EmbeddedBroker
from journey.simulate import SimOptions, messages, produce

CANDIDATE = (("[stages.consideration]\nthreshold = 3.0", "[stages.consideration]\nthreshold = 2.5"),
             ("min_sentiment = 0.2", "min_sentiment = 0.1"))
"""What the candidate changes in the bundled map."""


def candidate_of(baseline: Path) -> Path:
    """The candidate map beside ``baseline`` (``candidate.toml``): its edits made, the rest the same."""
    text = baseline.read_text()
    for old, new in CANDIDATE:
        if old not in text:
            msg = f"the bundled map no longer holds {old!r}: update CANDIDATE"
            raise SystemExit(msg)
        text = text.replace(old, new, 1)
    path = baseline.with_name("candidate.toml")
    path.write_text(text)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--days", type=float, default=60.0)
    p.add_argument("--html", type=Path, help="keep the HTML report here")
    p.add_argument("--screenshot", type=Path, help="render the HTML report into this PNG")
    args = p.parse_args()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        inputs = ("history.clickstream", "history.touchpoints")
        base = replace(load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap),
                       topics=Topics(inputs=inputs))
        produced = messages(base, SimOptions(customers=args.customers, events=args.events, seed=17,
                                             duplicates=0.01, out_of_order=0.01, malformed=0.001,
                                             span_ms=round(args.days * 86_400_000)))
        produce(base, produced, progress=sys.stderr)
        baseline = config_for(broker.bootstrap, "current", Path(tmp), inputs)
        candidate = candidate_of(baseline)
        report, html = Path(tmp) / "report.json", (args.html or Path(tmp) / "report.html").resolve()
        # run where the maps are, naming them as a user would: the report shows the names
        cmd = [sys.executable, "-P", "-m", "journey.cli", "backtest", "--baseline", baseline.name,
               "--candidate", candidate.name, "--json", str(report), "--html", str(html)]
        out, err = Path(tmp) / "stdout.txt", Path(tmp) / "stderr.txt"
        started = time.perf_counter()
        with out.open("wb") as stdout, err.open("wb") as stderr:
            exited = wait_measured(subprocess.Popen(cmd, stdout=stdout, stderr=stderr, cwd=tmp))
        seconds = time.perf_counter() - started
        if exited.code != 0:
            msg = f"journey backtest exited with {exited.code}:\n{err.read_text(errors='replace')[-6000:]}"
            raise SystemExit(msg)
        figures = orjson.loads(report.read_bytes())
        print(out.read_text(), end="")
        print(f"\n{len(produced):,} messages, {figures['customers']:,} customers: "
              f"back-test in {seconds:.1f} s "
              f"({len(produced) / seconds:,.0f} messages/s for both maps), CPU {exited.cpu:.1f} s, "
              f"peak {exited.peak_mb:.0f} MB; {figures['differing_customers']:,} customers differ")
        if args.screenshot:
            subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1100,1500", f"--screenshot={args.screenshot.resolve()}",
                            html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
            print(f"report rendered to {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
