"""Reading metric names back out of PromQL, and putting Grafana's variables in."""

import pytest

from grafana.promql import metric_names, selector, selectors, substitute


@pytest.mark.parametrize(("expr", "names"), [
    ("up", {"up"}),
    ('a{job=~"$job", instance=~"x"}', {"a"}),
    ("sum by (job, instance) (rate(a_total[5m])) > 0 unless sum by (job, instance) (rate(b_total[5m])) > 0",
     {"a_total", "b_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(lat_bucket{le!=\"+Inf\"}[1m])))", {"lat_bucket"}),
    ("a > 20000\nand\nderiv(a[10m]) > 0.9", {"a"}),
    ("sum(a * b) / sum(b and on (job, stage) a)", {"a", "b"}),
    ("a / ignoring(reason) group_left b", {"a", "b"}),
    ("max_over_time(a[1h:5m] offset 1d) > bool 1e3", {"a"}),
    ('label_replace(a{x="}"}, "dst", "$1", "src", "(.*)")', {"a"}),
    ("1 - avg without (cpu) (rate(cpu_seconds_total[5m]))", {"cpu_seconds_total"}),
    ("count(a) by (le) + Inf + NaN", {"a"}),
    ("ns:recorded:rate5m", {"ns:recorded:rate5m"}),
    ('avg by (channel) ((ctr{job=~"$job"} > -Inf)) or vector(0)', {"ctr"}),
])
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_selectors_keep_what_the_braces_hold() -> None:
    assert selectors('rate(a{x="1", y=~"2"}[1m]) + b') == [("a", 'x="1", y=~"2"'), ("b", "")]


def test_selector_puts_the_dashboard_filter_first() -> None:
    assert selector("m", 'stage="x"') == 'm{job=~"$job", instance=~"$instance", stage="x"}'


def test_substitute_replaces_every_variable_form() -> None:
    expr = 'rate(m{job=~"$job", instance=~"${instance}"}[$__rate_interval]) [$__range] $__interval'
    assert substitute(expr) == 'rate(m{job=~".*", instance=~".*"}[1m]) [1h] 1m'


def test_substitute_refuses_an_unknown_variable() -> None:
    with pytest.raises(KeyError, match="cluster"):
        substitute('m{cluster="$cluster"}')
