"""The whole suite in one command: throughput against the peer, live latency, sustain, cold start, memory.

    python -m benchmarks [--quick]

Runs, one after the other (each starts its own embedded brokers):
``benchmarks.bench_peer`` (1M events, 3 runs), ``benchmarks.latency`` at 2k, 5k, 10k and
20k events/s with every input partition busy and with ``touchpoints`` quiet (3 runs of
10 s each, the runtime floor beside the floor and the engine), ``--sustain``,
``--cold-start`` and ``--memory``. ``--quick`` runs each once and smaller, to see that the
suite works. About an hour in full on two cores.
"""

import subprocess
import sys

FULL = [
    ["benchmarks.bench_peer", "--events", "1000000", "--customers", "100000", "--runs", "3"],
    ["benchmarks.latency", "--rates", "2000,5000,10000,20000", "--modes", "busy,quiet", "--seconds", "10",
     "--repeat", "3", "--runtime", "--sustain", "--cold-start", "--memory"],
]
QUICK = [
    ["benchmarks.bench_peer", "--events", "50000", "--customers", "5000", "--runs", "1"],
    ["benchmarks.latency", "--rates", "2000", "--modes", "busy,quiet", "--seconds", "5", "--runtime",
     "--cold-start"],
]


def main() -> int:
    suite = QUICK if "--quick" in sys.argv[1:] else FULL
    for args in suite:
        print(f"\n$ python -m {' '.join(args)}", flush=True)
        code = subprocess.run([sys.executable, "-m", *args], check=False).returncode
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
