"""Prometheus alert rules for the engine: when something is wrong enough to wake somebody.

Each rule says what it watches in its summary and description; its ``runbook``
annotation points at the section of ``grafana/README.md`` that says what to do. The
thresholds follow the engine: a partition more than ``BEHIND_LAG`` messages behind
replays instead of reading live, and a watermark normally trails the wall clock by
``allowed_lateness`` (of the default journey map) plus a batch.
"""

from config.model import DEFAULT_PATH, load_settings
from grafana.panels import Json
from grafana.promql import dead_letter_ratio, quantile, summed
from operators.metrics import CONSUMER_LAG, DELIVERY_ERRORS, EVENTS, LATENCY, OUTPUT, REJECTED, WATERMARK_LAG
from operators.reading import BEHIND_LAG

GROUP = "journey-stream"
RUNBOOK = "grafana/README.md"
PROCESS = "job, instance"
"""Rules judge each engine process on its own: every process serves its own metrics."""
DEAD_LETTER_RATIO = 0.05
LATENCY_P99_SECONDS = 5
STALL_SECONDS = 600
"""How far past its usual lag a watermark must fall to count as stalled."""


def rule(name: str, expr: str, wait: str, severity: str, summary: str, description: str) -> Json:
    """An alerting rule firing once ``expr`` held for ``wait``; its runbook: ``name``'s README section."""
    return {"alert": name, "expr": expr, "for": wait, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description,
                            "runbook": f"{RUNBOOK}#{name.lower()}"}}


def rules() -> list[Json]:
    """Every alert of the ``journey-stream`` group."""
    lag, watermark = CONSUMER_LAG.name, WATERMARK_LAG.name
    stalled = load_settings(DEFAULT_PATH).journey.allowed_lateness_ms // 1000 + STALL_SECONDS
    where = "{{ $labels.instance }} ({{ $labels.job }})"
    return [
        rule("ConsumerLagGrowing", f"{lag} > {BEHIND_LAG}\nand\nderiv({lag}[10m]) > 0", "10m", "warning",
             f"Input partition {{{{ $labels.topic }}}}/{{{{ $labels.partition }}}} falls behind on {where}",
             f"{{{{ $value | humanize }}}} messages behind the head of the log (over {BEHIND_LAG:,}: it "
             "replays aligned instead of reading live) and still growing after 10 minutes."),
        rule("NoOutputWhileInputFlows",
             f"{summed('rate', EVENTS.name, PROCESS, '5m')} > 0\n"
             f"unless\n{summed('rate', OUTPUT.name, PROCESS, '5m')} > 0", "5m", "critical",
             f"{where} scores events but produces nothing",
             "Valid events come in at {{ $value | humanize }}/s, yet no message reached any output "
             "topic for 5 minutes."),
        rule("DeadLetterRateHigh",  # per job: rejected where read, but scored where its shard is
             f"{dead_letter_ratio(EVENTS.name, REJECTED.name, 'job', '10m')}\n> {DEAD_LETTER_RATIO:g}",
             "10m", "warning", "Many input messages are dead letters in {{ $labels.job }}",
             f"{{{{ $value | humanizePercentage }}}} of the messages read in 10 minutes went to the "
             f"dead-letter topic (alert above {DEAD_LETTER_RATIO:.0%})."),
        rule("DeliveryErrors", f"{summed('increase', DELIVERY_ERRORS.name, PROCESS, '5m')} > 0", "0s",
             "warning", f"The broker refused output messages of {where}",
             "{{ $value | humanize }} output messages were not delivered in 5 minutes: they are "
             "re-sent, or the flow stops (exit 4) before committing their input."),
        rule("WatermarkStalled", f"{watermark} > {stalled}\nand\nderiv({watermark}[10m]) > 0.9", "5m",
             "warning", f"The event-time watermark of {where} stands still",
             f"The watermark trails the wall clock by {{{{ $value | humanizeDuration }}}} (over {stalled} s) "
             "and has fallen behind at about 1 s per s for 10 minutes: sessions and windows do not close."),
        rule("EndToEndLatencyHigh",
             f"{quantile(0.99, LATENCY.bucket, PROCESS, '5m')}\n> {LATENCY_P99_SECONDS}", "10m", "warning",
             f"Scores of {where} arrive late",
             f"99th percentile from an input's Kafka timestamp to its score's delivery: "
             f"{{{{ $value | humanizeDuration }}}} (alert above {LATENCY_P99_SECONDS} s) for 10 minutes."),
    ]


def rule_file() -> Json:
    """The rule file's content: one group."""
    return {"groups": [{"name": GROUP, "rules": rules()}]}
