"""Throughput of this checkout against another git revision, side by side on one broker and input.

    python -m benchmarks.bench_revisions --base REV [--runs 5] [--days 30] [--modes windows,no-windows]

For a change that must be "no slower": the revision ``REV`` is checked out into a
temporary worktree; both trees run the end-to-end flow of ``bench_e2e`` (with and
without windows) on the same 200,000 produced events, alternately and in alternating
order, each run in a fresh interpreter that imports only its own tree (``python -P``).
Each tree runs with its own ``bench_e2e`` harness (timing, counting sink), so a change
to the harness is measured along with the engine. Prints events/s and CPU seconds per
run, the medians and the ratio after / before.
The machine is shared: the ratio of medians of runs taken side by side is the figure to
trust, not the absolutes.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from config.model import DEFAULT_PATH, Topics, load_settings
from journey.broker import EmbeddedBroker
from journey.simulate import SimOptions, messages, produce

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ("bench.clickstream", "bench.touchpoints")

ONE_RUN = """
import resource, sys
tree, brokers, tag, mode = sys.argv[1:5]
sys.path.insert(0, tree)
from dataclasses import replace
from config.model import DEFAULT_PATH, Topics, load_settings
from benchmarks.bench_e2e import CountingSink, ours, outputs, timed
from journey.runner import settle_heap
from operators.shard import warm_up
base = load_settings(DEFAULT_PATH).with_brokers(brokers)
base = replace(base, topics=Topics(inputs=tuple(sys.argv[5:])))
warm_up(base.journey, base.topics)
settle_heap()
settings = outputs(base, tag)
sink = CountingSink(settings)
before = resource.getrusage(resource.RUSAGE_SELF)
seconds = timed(ours(settings, windows=mode == "windows", sink=sink))
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(seconds, cpu, sink.written)
"""


def one_run(tree: Path, brokers: str, tag: str, mode: str) -> tuple[float, float, int]:
    """Seconds, CPU seconds and messages written by one timed run of ``tree``'s flow."""
    done = subprocess.run([sys.executable, "-P", "-c", ONE_RUN, str(tree), brokers, tag, mode, *INPUTS],
                          capture_output=True, text=True, cwd=tempfile.gettempdir(), check=False)
    if done.returncode:
        msg = f"a run of {tree} failed:\n{done.stderr[-3000:]}"
        raise SystemExit(msg)
    seconds, cpu, written = done.stdout.split()
    return float(seconds), float(cpu), int(written)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the git revision to compare with")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--days", type=float, default=30.0, help="event-time span of the history")
    p.add_argument("--modes", default="windows,no-windows")
    args = p.parse_args()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory(prefix="journey-base-") as tmp, EmbeddedBroker() as broker:
        base_tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base],
                       check=True, capture_output=True)
        try:
            trees = {"before": base_tree, "after": ROOT}
            settings = load_settings(DEFAULT_PATH).with_brokers(broker.bootstrap)
            settings = replace(settings, topics=Topics(inputs=INPUTS))
            produced = messages(settings, SimOptions(customers=20_000, events=200_000, seed=42,
                                                     duplicates=0.01, malformed=0.001,
                                                     span_ms=round(args.days * 86_400_000)))
            produce(settings, produced, progress=sys.stderr)
            n = len(produced)
            rates: dict[tuple[str, str], list[float]] = {}
            cpus: dict[tuple[str, str], list[float]] = {}
            for run in range(args.runs):
                for mode in modes:
                    order = list(trees.items()) if run % 2 == 0 else list(reversed(trees.items()))
                    for name, tree in order:
                        seconds, cpu, written = one_run(tree, broker.bootstrap, f"rev-{name}-{mode}-{run}",
                                                        mode)
                        rates.setdefault((name, mode), []).append(n / seconds)
                        cpus.setdefault((name, mode), []).append(cpu)
                        print(f"run {run + 1} {mode:>10} {name:>6}: {n / seconds:>9,.0f} events/s, "
                              f"{cpu:5.2f} s CPU, {written:,} messages out", flush=True)
            for mode in modes:
                r = {name: statistics.median(rates[name, mode]) for name in trees}
                c = {name: statistics.median(cpus[name, mode]) for name in trees}
                print(f"median {mode:>10}: before {r['before']:,.0f} events/s ({c['before']:.2f} s CPU),"
                      f" after {r['after']:,.0f} ({c['after']:.2f} s CPU); after/before: "
                      f"{r['after'] / r['before']:.3f} in events/s, {c['before'] / c['after']:.3f} in CPU")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
                           check=False, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
