"""What one live activation of the shard step costs, by how many customers have a session open.

    python -m benchmarks.bench_shard_step [--base REV] [--open 10000,100000,300000] [--runs 3]

A live shard is woken many times a second with a few events each time, and every wake-up
moves the watermark a little; meanwhile it holds an open session for every customer
active in the last ``session_gap`` (30 minutes by default): on a busy site, hundreds of
thousands. The step is driven directly, no Kafka: first one event each for ``--open``
customers, their times spread over ``session_gap + allowed_lateness`` up to the first
live event (every session open, the oldest about to close); then 2,000 activations of
13 events of those customers, the watermark 3 ms further each time. A live event extends
its customer's session, or starts a new one when the last is more than a gap old, and
the oldest sessions close as the watermark passes them (about one in 350 over the run).
Prints the median cost of an activation over the last 1,600.

``--base REV`` runs the same in a worktree of another git revision, alternately, each run
in a fresh interpreter that imports only its own tree (``python -P``), and prints the
ratio of the medians. The machine is shared: that ratio is the figure to trust.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ONE_RUN = """
import statistics, sys, time
tree, n_open = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, tree)
import numpy as np
from config.model import DEFAULT_PATH, load_settings
from operators.base import EventBatch
from operators.metrics import EngineMetrics
from operators.records import RecordBuilder
from operators.routing import ShardInput
from operators.shard import ShardScorer, warm_up
from operators.watermark import Report

settings = load_settings(DEFAULT_PATH)
j = settings.journey
warm_up(j, settings.topics)
step = ShardScorer(j, RecordBuilder(j, settings.topics), EngineMetrics(), 1, None, recoverable=False)
rng = np.random.default_rng(7)
lateness, gap = j.allowed_lateness_ms, j.session_gap_ms
now = int(time.time() * 1000)  # the first live event's time: the watermark is ``now - lateness``

def batch(names, ts):
    n = len(names)
    kinds = rng.integers(0, len(j.type_index), n).astype(np.int32)
    channels = rng.integers(0, len(j.channels) + 1, n).astype(np.int32)
    marks = ts - lateness
    return EventBatch(names, [f"{c}-{t}" for c, t in zip(names, ts.tolist())], ts, kinds, channels,
                      np.full(n, np.nan), np.zeros(n, np.bool_), marks, marks.copy(),
                      np.zeros(n, np.int32), ts.copy())

def wake(names, ts):
    report = Report("in#0", int(ts.max()) - lateness, idle=False)
    step.on_batch([ShardInput(batch(names, ts), report)])

first = now - lateness - gap + 1  # the oldest session: the watermark passes its end + gap first
span = lateness + gap  # ... the newest ends just before ``now``: a live event extends it
for lo in range(0, n_open, 10_000):
    hi = min(n_open, lo + 10_000)
    wake([f"c-{i}" for i in range(lo, hi)], first + np.arange(lo, hi, dtype=np.int64) * span // n_open)
costs = []
for k in range(2_000):
    names = [f"c-{i}" for i in rng.integers(0, n_open, 13).tolist()]
    began = time.perf_counter()
    wake(names, np.full(13, now + 3 * k, dtype=np.int64))
    costs.append(time.perf_counter() - began)
print(statistics.median(costs[400:]) * 1e6)
"""


def one_run(tree: Path, n_open: int) -> float:
    """Median microseconds an activation of ``tree``'s shard step took with ``n_open`` open sessions."""
    done = subprocess.run([sys.executable, "-P", "-c", ONE_RUN, str(tree), str(n_open)],
                          capture_output=True, text=True, cwd=tempfile.gettempdir(), check=False)
    if done.returncode:
        msg = f"a run of {tree} failed:\n{done.stderr[-3000:]}"
        raise SystemExit(msg)
    return float(done.stdout.split()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", help="a git revision to compare with")
    p.add_argument("--open", default="10000,100000,300000", help="open sessions in the shard")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    counts = [int(n) for n in args.open.split(",")]
    with tempfile.TemporaryDirectory(prefix="journey-base-") as tmp:
        trees = {"this": ROOT}
        if args.base:
            trees = {"before": Path(tmp) / "tree", "after": ROOT}
            made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach",
                                   str(trees["before"]), args.base],
                                  capture_output=True, text=True, check=False)
            if made.returncode:
                msg = (f"--base {args.base}: git could not check it out ({made.stderr.strip()}); "
                       "pass a revision of this repository (a commit, tag or branch)")
                raise SystemExit(msg)
        try:
            costs: dict[tuple[str, int], list[float]] = {}
            for run in range(args.runs):
                for n_open in counts:
                    order = list(trees.items()) if run % 2 == 0 else list(reversed(trees.items()))
                    for name, tree in order:
                        us = one_run(tree, n_open)
                        costs.setdefault((name, n_open), []).append(us)
                        print(f"run {run + 1} {n_open:>9,} open {name:>6}: {us:7.0f} us an activation",
                              flush=True)
            for n_open in counts:
                med = {name: statistics.median(costs[name, n_open]) for name in trees}
                line = ", ".join(f"{name} {us:.0f} us" for name, us in med.items())
                if args.base:
                    line += f"; before/after: {med['before'] / med['after']:.2f}"
                print(f"median, {n_open:>9,} sessions open: {line}")
        finally:
            if args.base:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(trees["before"])], check=False, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
