"""PromQL as the dashboards and rules write it, and as tests read it back.

Writing goes through ``selector`` so that every series a dashboard reads is filtered by
the ``job`` and ``instance`` variables; reading (``selectors``) finds the metric names an
expression uses, so tests can check each against the declarations in ``operators.metrics``.
"""

import re

PROCESS_CPU = "process_cpu_seconds_total"
PROCESS_MEMORY = "process_resident_memory_bytes"
PYTHON_GC = "python_gc_collections_total"
PROCESS_METRICS = (PROCESS_CPU, PROCESS_MEMORY, PYTHON_GC)
"""The prometheus_client standard collectors' series the dashboards read (not ours to declare)."""

DASHBOARD_FILTER = 'job=~"$job", instance=~"$instance"'
"""The dashboard variables every selector of a panel carries."""

TEST_VALUES = {"job": ".*", "instance": ".*", "__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
"""What Grafana would put in for each dashboard variable, for running a panel's query elsewhere."""


def selector(metric: str, *matchers: str) -> str:
    """``metric{job=~"$job", instance=~"$instance", ...}``: a series as a panel reads it."""
    return f"{metric}{{{', '.join((DASHBOARD_FILTER, *matchers))}}}"


def aggregate(inner: str, by: str = "", how: str = "sum") -> str:
    """``how by (by) (inner)``; no ``by`` clause when ``by`` is empty."""
    return f"{how}{f' by ({by})' if by else ''} ({inner})"


def defined(series: str) -> str:
    """``series`` without its NaN samples (NaN compares false, so ``> -Inf`` drops them).

    The engine exports an undefined mean as NaN, which would turn any sum or average it
    entered into NaN too.
    """
    return f"({series} > -Inf)"


def summed(func: str, series: str, by: str = "", window: str = "$__rate_interval") -> str:
    """``sum by (by) (func(series[window]))``: a counter's ``rate`` or ``increase``, summed."""
    return aggregate(f"{func}({series}[{window}])", by)


def quantile(q: float, buckets: str, by: str = "", window: str = "$__rate_interval") -> str:
    """The ``q`` quantile of a histogram over ``window`` (``buckets``: its ``_bucket`` series)."""
    rates = summed("rate", buckets, ", ".join(filter(None, (by, "le"))), window)
    return f"histogram_quantile({q:g}, {rates})"


def dead_letter_ratio(events: str, rejected: str, by: str = "", window: str = "$__rate_interval") -> str:
    """Dead letters per message read: ``rejected`` over ``events`` and ``rejected`` together.

    The two counters' series never share a label set (``reason`` against ``topic``, ``type``,
    ``channel``), so ``or`` adds them up, and the ratio is 1 even while no event was valid yet
    (a sum of two sums would have no value then).
    """
    read = aggregate(f"rate({events}[{window}]) or rate({rejected}[{window}])", by)
    return f"{summed('rate', rejected, by, window)} / {read}"


def substitute(expr: str) -> str:
    """``expr`` with every dashboard variable replaced by ``TEST_VALUES`` (an unknown one raises)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: TEST_VALUES[m[1]], expr)


_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<matchers>\{(?:[^}"']|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\})
  | (?P<range>\[[^\]]*\])
  | (?P<grouping>(?<![\w:])(?:by|without)\s*\([^)]*\))
  | (?P<matching>(?<![\w:])(?:on|ignoring|group_left|group_right)\s*\([^)]*\))
  | (?P<number>\d[\w.]*)
  | (?P<name>[a-zA-Z_:][\w:]*)
  | (?P<other>\S)
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}


def selectors(expr: str) -> list[tuple[str, str]]:
    """Every series selector of ``expr``: the metric name and what its braces hold ('' for none).

    A name is a metric unless a ``(`` or a ``by``/``without`` clause follows it (a function
    or an aggregation) or it is a keyword; label names only occur inside braces and
    grouping or matching clauses, which are skipped whole, as are strings, ranges and
    numbers (durations included).
    """
    tokens = [(m.lastgroup, m[0]) for m in _TOKEN.finditer(expr)]
    found = []
    for (kind, text), (next_kind, next_text) in zip(tokens, [*tokens[1:], ("end", "")], strict=True):
        called = next_text == "(" or next_kind == "grouping"  # a function or an aggregation
        if kind == "name" and not called and text.lower() not in _KEYWORDS:
            found.append((text, next_text[1:-1] if next_kind == "matchers" else ""))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` reads."""
    return {name for name, _ in selectors(expr)}
