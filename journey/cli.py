"""The ``journey`` command line: run, check-config, apply-map, simulate, backtest, compile, broker, demo."""

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from config.durations import format_duration_ms, parse_duration_ms
from config.errors import ConfigError, JourneyError
from config.model import DEFAULT_PATH, TIMINGS, Settings, load_settings
from journey import __version__
from journey.environment import apply_environment, pod_cluster
from journey.redaction import keep_secret, redact
from operators.base import wall_clock_ms
from operators.routing import DEFAULT_SHARDS

log = logging.getLogger("journey")
DEMO_METRICS_PORT = 9464
"""Where the demo's flow serves ``/metrics`` unless ``journey demo --metrics-port`` says otherwise."""


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        msg = f"expected a probability in [0, 1], got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"expected a whole number >= 1, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line; ``environ``'s ``JOURNEY_<FLAG>`` variables are the ``run`` flags' defaults."""
    p = argparse.ArgumentParser(prog="journey", description="Real-time customer journey engine.")
    p.add_argument("--version", action="version", version=f"journey-stream {__version__}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logs, including librdkafka's (its warnings and errors are always logged)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the dataflow", allow_abbrev=False,
                         epilog="Every flag can also be set from the environment: --brokers as "
                                "JOURNEY_BROKERS, --until-end as JOURNEY_UNTIL_END=1, and so on; "
                                "a flag given here wins.")
    run.add_argument("--config", type=Path, default=DEFAULT_PATH, help="journey map / settings TOML")
    run.add_argument("--brokers", help="Kafka bootstrap servers (overrides [kafka].brokers)")
    run.add_argument("--until-end", action="store_true",
                     help="read every input partition to its end, flush, exit 0")
    run.add_argument("--workers", type=_positive_int, default=1, help="workers in this process")
    run.add_argument("--processes", type=_positive_int, metavar="N",
                     help="run a cluster of N processes on this machine and restart all of them from "
                          "--recovery-dir when one dies (instead of --process-id/--addresses)")
    run.add_argument("--process-id", type=int, help="this process's index in --addresses")
    run.add_argument("--addresses", help='all cluster processes, "host:port;host:port"')
    run.add_argument("--recovery-dir", type=Path, help="recovery store (created when missing)")
    run.add_argument("--snapshot-interval", type=float, default=10.0, metavar="S",
                     help="seconds between snapshots (and output flush epochs); default 10")
    run.add_argument("--metrics-port", type=int, metavar="P",
                     help="serve Prometheus /metrics on port P (process i of a cluster whose processes "
                          "share one host: P + i)")
    run.add_argument("--metrics-addr", metavar="ADDR",
                     help="address the metrics endpoint listens on; 0.0.0.0 lets a Prometheus on "
                          "another host (a pod) scrape it; default 127.0.0.1")
    run.add_argument("--shards", type=_positive_int,
                     help=f"customer shards (state keys), fixed for the life of a recovery store; "
                          f"default: what the store was written with, else {DEFAULT_SHARDS} per worker "
                          "of the cluster")
    run.add_argument("--no-windows", action="store_true",
                     help="leave out sessions and channel/funnel windows (scores, transitions, "
                          "dormancy, dead letters and late events stay)")
    apply_environment(run, environ)

    check = sub.add_parser("check-config", help="validate and summarize a journey map")
    check.add_argument("file", type=Path)

    apply = sub.add_parser("apply-map", help="publish a journey map for running flows to take over, "
                                             "without a restart")
    apply.add_argument("file", type=Path, help="the settings file holding the map (checked as "
                                               "check-config checks it)")
    apply.add_argument("--brokers", help="Kafka bootstrap servers (overrides the file's [kafka].brokers)")

    sim = sub.add_parser("simulate", help="produce synthetic journeys to the input topics")
    sim.add_argument("--brokers", required=True)
    sim.add_argument("--config", type=Path, default=DEFAULT_PATH)
    sim.add_argument("--customers", type=_positive_int, default=1_000)
    sim.add_argument("--events", type=_positive_int, default=100_000)
    sim.add_argument("--rate", type=float, help="messages per second (default: as fast as possible)")
    sim.add_argument("--seed", type=int, default=1)
    for fault in ("duplicates", "out-of-order", "late", "malformed"):
        sim.add_argument(f"--{fault}", type=_probability, default=0.0, metavar="P",
                         help=f"probability of a {fault.replace('-', ' ')} message per event")

    back = sub.add_parser("backtest", help="replay the input topics' history through a candidate map "
                                           "beside the current one; writes to no topic")
    back.add_argument("--candidate", type=Path, required=True, help="the journey map to try")
    back.add_argument("--baseline", type=Path, default=DEFAULT_PATH,
                      help="the map it is compared with (and the Kafka settings); default the bundled map")
    back.add_argument("--brokers", help="Kafka bootstrap servers (overrides the baseline's [kafka].brokers)")
    when = back.add_mutually_exclusive_group()
    when.add_argument("--since", metavar="DURATION",
                      help="only messages appended in the last DURATION (7d, 12h; Kafka timestamps)")
    when.add_argument("--from", dest="from_time", metavar="TIME",
                      help="only messages appended at TIME or later (RFC 3339, e.g. 2026-11-01T00:00:00Z)")
    back.add_argument("--to", dest="to_time", metavar="TIME", help="only messages appended at TIME or before")
    back.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE as JSON")
    back.add_argument("--html", type=Path, metavar="FILE",
                      help="write a self-contained report with charts to FILE (opens offline)")

    comp = sub.add_parser("compile", help="compile the Numba kernels into their cache (setup, image build)")
    comp.add_argument("--config", type=Path, default=DEFAULT_PATH, help="journey map / settings TOML")

    broker = sub.add_parser("broker", help="run the embedded Kafka-compatible broker")
    broker.add_argument("--port", type=int, default=9092)

    demo = sub.add_parser("demo", help="broker + simulator + flow + live view, on this machine")
    demo.add_argument("--rate", type=float, default=2_000.0, help="simulated events per second")
    demo.add_argument("--customers", type=_positive_int, default=2_000)
    demo.add_argument("--metrics-port", type=int, default=DEMO_METRICS_PORT, metavar="P",
                      help=f"where the flow serves Prometheus /metrics (on 127.0.0.1); "
                           f"default {DEMO_METRICS_PORT}")
    return p


def _settings(path: Path, brokers: str | None = None) -> Settings:
    settings = load_settings(path).with_brokers(brokers)
    keep_secret(settings.kafka.properties[k] for k in settings.kafka.secret_keys)
    return settings


def _summary(settings: Settings) -> str:
    j = settings.journey
    lines = [f"{settings.path}: OK (map version {j.version}, layout {j.fingerprint})", "stages:"]
    for s in j.stages:
        rule = "entry stage" if s.threshold is None else f"evidence >= {s.threshold:g}"
        for tp, n in s.requires.items():
            rule += f", {tp} >= {n}"
        if s.min_sentiment is not None:
            rule += f", sentiment >= {s.min_sentiment:g}"
        lines.append(f"  {s.name:<14} {rule}")
    lines.append(f"touchpoints: {len(j.touchpoints)} "
                 f"({sum(1 for t in j.touchpoints.values() if t.conversion)} conversion)")
    lines.append("channels: " + ", ".join(f"{c} {m:g}" for c, m in j.channels.items())
                 + " (others 1)")
    lines.append("timings: " + ", ".join(
        f"{t} {format_duration_ms(getattr(j, t + '_ms'))}" for t in TIMINGS))
    lines.append(f"saturation {j.saturation:g}; de-duplication memory {j.dedup_slots} ids per "
                 f"customer; max event {j.max_event_bytes} bytes")
    t = settings.topics
    lines.append(f"kafka: {settings.kafka.brokers}; inputs {', '.join(t.inputs)}; outputs "
                 + ", ".join(t.outputs))
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    from journey.runner import RunOptions, run

    if args.processes is not None:
        return _supervise(args)
    process_id, addresses_text = pod_cluster(args.process_id, args.addresses, os.environ)
    if (process_id is None) != (addresses_text is None):
        msg = "--process-id and --addresses go together (every process gets the same --addresses)"
        raise ConfigError(msg)
    addresses = addresses_text.split(";") if addresses_text else None
    if addresses is not None and not 0 <= (process_id or 0) < len(addresses):
        msg = f"--process-id {process_id} is not an index into the {len(addresses)} --addresses"
        raise ConfigError(msg)
    if args.metrics_addr is not None and args.metrics_port is None:
        msg = "--metrics-addr needs --metrics-port (the port the metrics are served on)"
        raise ConfigError(msg)
    if args.snapshot_interval <= 0:
        msg = "--snapshot-interval must be greater than zero seconds"
        raise ConfigError(msg)
    settings = _settings(args.config, args.brokers)
    run(settings, RunOptions(
        until_end=args.until_end, workers=args.workers, process_id=process_id,
        addresses=addresses, recovery_dir=args.recovery_dir,
        snapshot_interval_s=args.snapshot_interval, metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr or RunOptions.metrics_addr,
        shards=args.shards, windows=not args.no_windows,
    ))
    return 0


def _supervise(args: argparse.Namespace) -> int:
    """``--processes N``: check what every process would check once, make the store, start them."""
    from journey.runner import RunOptions, prepare_store
    from journey.supervisor import supervise

    if args.process_id is not None or args.addresses is not None:
        msg = "--processes starts the cluster's processes itself: leave out --process-id and --addresses"
        raise ConfigError(msg)
    if args.recovery_dir is None:
        msg = ("--processes restarts the cluster from its recovery store when a process dies: "
               "give --recovery-dir (JOURNEY_RECOVERY_DIR)")
        raise ConfigError(msg)
    settings = _settings(args.config, args.brokers)
    prepare_store(settings, RunOptions(workers=args.workers, recovery_dir=args.recovery_dir,
                                       shards=args.shards), processes=args.processes)
    return supervise(args.processes, args.argv)


def _cmd_apply_map(args: argparse.Namespace) -> int:
    from journey.control import apply_map, who

    print(apply_map(_settings(args.file, args.brokers), who()))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from journey.simulate import SimOptions, messages, produce

    settings = _settings(args.config, args.brokers)
    opts = SimOptions(customers=args.customers, events=args.events, seed=args.seed,
                      duplicates=args.duplicates, out_of_order=args.out_of_order, late=args.late,
                      malformed=args.malformed,
                      lateness_ms=settings.journey.allowed_lateness_ms)
    stats = produce(settings, messages(settings, opts), rate=args.rate)
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.kinds.items()))
    print(f"produced {stats.produced:,} messages to {', '.join(settings.topics.inputs)}: {kinds}")
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    import orjson

    from journey.backtest import backtest, table
    from journey.report_html import render

    baseline = _settings(args.baseline, args.brokers)
    candidate = _settings(args.candidate, args.brokers)
    since_ms = (wall_clock_ms() - _duration_ms("--since", args.since) if args.since
                else _time_ms("--from", args.from_time))
    until_ms = _time_ms("--to", args.to_time)
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        msg = "--to is before the start of the range (--from or --since): swap them"
        raise ConfigError(msg)
    for flag, path in (("--json", args.json), ("--html", args.html)):
        if path is not None and not path.resolve().parent.is_dir():
            msg = f"{flag} {path}: its directory does not exist; create it or name a file in another"
            raise ConfigError(msg)
    report = backtest(baseline, candidate, since_ms, until_ms)
    print(table(report))
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if args.html:
        args.html.write_text(render(report, str(args.baseline), str(args.candidate)), encoding="utf-8")
    return 0


def _duration_ms(flag: str, text: str) -> int:
    """A duration flag in milliseconds; a bad one is a ConfigError naming the flag."""
    try:
        return parse_duration_ms(text)
    except ValueError as err:
        msg = f"{flag} {text}: {err}"
        raise ConfigError(msg) from err


def _time_ms(flag: str, text: str | None) -> int | None:
    """An RFC 3339 time with its offset, in epoch milliseconds (None: not given).

    Without an offset a time would mean this machine's zone, which a report read
    elsewhere could not know: it is refused.
    """
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as err:
        moment = None
        reason = str(err)
    if moment is None or moment.tzinfo is None:
        msg = (f"{flag} {text}: expected an RFC 3339 time with its offset, such as 2026-11-01T00:00:00Z"
               f"{'' if moment is not None else f' ({reason})'}")
        raise ConfigError(msg)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _cmd_compile(args: argparse.Namespace) -> int:
    from journey.runner import compile_kernels

    compiled, seconds = compile_kernels(_settings(args.config))
    if compiled:
        print(f"compiled {compiled} kernel signatures in {seconds:.1f} s; runs load them from the cache")
    else:
        print(f"kernels already cached (loaded in {seconds:.2f} s)")
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from journey.broker import EmbeddedBroker

    with EmbeddedBroker(args.port) as broker:
        print(f"embedded broker listening on {broker.bootstrap} (in memory; Ctrl-C stops it)",
              flush=True)
        return broker.wait()


def _cmd_demo(args: argparse.Namespace) -> int:
    from journey.demo import demo

    return demo(rate=args.rate, customers=args.customers, metrics_port=args.metrics_port)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``journey`` console script."""
    try:
        parser = _parser(os.environ)
    except JourneyError as err:
        print(f"journey: error: {err}", file=sys.stderr)
        return err.exit_code
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a supervisor starts its processes with it
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("journey.librdkafka").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        if args.command == "check-config":
            print(_summary(load_settings(args.file)))
            return 0
        handler = {"run": _cmd_run, "apply-map": _cmd_apply_map, "simulate": _cmd_simulate,
                   "backtest": _cmd_backtest, "compile": _cmd_compile, "broker": _cmd_broker,
                   "demo": _cmd_demo}[args.command]
        return handler(args)
    except JourneyError as err:
        print(f"journey {args.command}: error: {redact(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"journey {args.command}: stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
