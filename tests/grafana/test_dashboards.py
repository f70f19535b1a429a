"""The dashboards: committed as generated, well-formed, every query filtered and naming real metrics."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import grafana.__main__ as cli
from config.model import DEFAULT_PATH, load_settings
from grafana.alerts import rules
from grafana.dashboards import DASHBOARDS
from grafana.panels import DATASOURCE, GRID_COLUMNS, panel_queries
from grafana.promql import PROCESS_METRICS, metric_names, selectors
from grafana.render import ROOT, outputs
from operators.metrics import CUSTOMERS, ENGINE_METRICS, SENTIMENT, EngineMetrics
from tests.grafana.conftest import Promtool

BOARDS = {name: build() for name, build in DASHBOARDS.items()}
PANELS = [(name, p) for name, board in BOARDS.items() for p in board["panels"] if p["type"] != "row"]
EXPRS = [(name, p["title"], t["expr"]) for name, p in PANELS for t in p["targets"]]


def _exported() -> tuple[set[str], set[str]]:
    """Every sample name a process with the standard collectors can export, and the histograms'."""
    families = list(EngineMetrics(process_collectors=True).registry.collect())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = {f.name + s for f in families for s in suffixes.get(f.type, ("",))}
    return names, {f.name for f in families if f.type == "histogram"}


EXPORTED, HISTOGRAMS = _exported()


@pytest.mark.parametrize("path", sorted(outputs()), ids=lambda p: p.name)
def test_committed_file_is_what_the_generator_writes(path: Path) -> None:
    assert path.exists(), f"{path} missing: run python -m grafana"
    assert path.read_text(encoding="utf-8") == outputs()[path], f"{path} is stale: run python -m grafana"


def test_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "dashboards" / "x.json"
    monkeypatch.setattr(cli, "outputs", lambda: {target: "{}\n"})
    monkeypatch.setattr(cli, "ROOT", tmp_path / "grafana")
    assert cli.main(["--check"]) == 1 and not target.exists()
    assert "dashboards/x.json: stale" in capsys.readouterr().err
    assert cli.main([]) == 0 and target.read_text() == "{}\n"
    assert cli.main(["--check"]) == 0


def test_dashboards_have_their_stable_uids() -> None:
    assert {name: board["uid"] for name, board in BOARDS.items()} == {
        "engine.json": "journey-engine", "customer-journey.json": "journey-customers"}


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_settings(name: str) -> None:
    board = BOARDS[name]
    assert board["schemaVersion"] >= 39 and "journey-stream" in board["tags"]
    assert board["refresh"] and board["time"] == {"from": "now-1h", "to": "now"}


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_variables(name: str) -> None:
    datasource, job, instance = BOARDS[name]["templating"]["list"]
    assert [datasource[k] for k in ("name", "type", "query")] == ["datasource", "datasource", "prometheus"]
    for var in (job, instance):
        assert var["type"] == "query" and var["datasource"] == DATASOURCE
        assert var["multi"] and var["includeAll"] and var["allValue"] == ".*"
        assert var["current"]["value"] == ["$__all"]
    assert (job["name"], instance["name"]) == ("job", "instance")
    assert "$job" in instance["query"]["query"] and "$job" not in job["query"]["query"]


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=[f"{n}:{p['title']}" for n, p in PANELS])
def test_panel_reads_the_templated_datasource(name: str, panel: dict[str, Any]) -> None:
    assert panel["datasource"] == DATASOURCE == {"type": "prometheus", "uid": "${datasource}"}
    assert panel["targets"], "a panel without a query"
    assert all(t["datasource"] == DATASOURCE for t in panel["targets"])
    ref_ids = [t["refId"] for t in panel["targets"]]
    assert len(set(ref_ids)) == len(ref_ids)
    assert panel["type"] in {"timeseries", "stat", "bargauge", "table"}
    assert panel["fieldConfig"]["defaults"]["unit"] and panel["description"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_have_unique_ids_and_do_not_overlap(name: str) -> None:
    panels = BOARDS[name]["panels"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    taken: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= GRID_COLUMNS
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])):
            assert cell not in taken, f"{p['title']} overlaps {taken[cell]}"
            taken[cell] = p["title"]


@pytest.mark.parametrize(("name", "title", "expr"), EXPRS, ids=[f"{n}:{t}" for n, t, _ in EXPRS])
def test_every_selector_filters_on_job_and_instance(name: str, title: str, expr: str) -> None:
    found = selectors(expr)
    assert found, "a query reading no metric"
    for metric, matchers in found:
        assert re.search(r'(^|, )job=~"\$job"(,|$)', matchers) and re.search(
            r'(^|, )instance=~"\$instance"(,|$)', matchers), f"{metric}{{{matchers}}} is not filtered"


def test_every_metric_used_is_declared_or_a_process_collector() -> None:
    declared = {m.name for m in ENGINE_METRICS}
    allowed = declared | set(PROCESS_METRICS) | {h + s for h in HISTOGRAMS & declared
                                                 for s in ("_bucket", "_sum", "_count")}
    used = {m for _, _, expr in EXPRS for m in metric_names(expr)} | {
        m for r in rules() for m in metric_names(r["expr"])}
    assert sorted(used - allowed) == []


def test_the_process_metrics_named_literally_exist() -> None:
    assert sorted(set(PROCESS_METRICS) - EXPORTED) == []


def test_every_engine_metric_has_a_panel() -> None:
    used = {m for _, _, expr in EXPRS for m in metric_names(expr)}
    shown = {m.name for m in ENGINE_METRICS if m.name in used or m.bucket in used}
    assert sorted({m.name for m in ENGINE_METRICS} - shown) == [], "give it a panel in grafana/dashboards.py"


def test_funnel_follows_the_journey_maps_stage_order() -> None:
    funnel = next(p for _, p in PANELS if p["title"].startswith("Funnel"))
    stages = load_settings(DEFAULT_PATH).journey.stage_names
    assert [t["legendFormat"] for t in funnel["targets"]] == list(stages)


def test_panel_queries_are_valid_promql_once_variables_are_set(tmp_path: Path, promtool: Promtool) -> None:
    queries = [q for board in BOARDS.values() for q in panel_queries(board)]
    assert len(queries) == len(EXPRS) and not any("$" in expr for _, expr in queries)
    # promtool parses every expression of a rule file: the queries as recording rules
    checked = tmp_path / "queries.yml"
    checked.write_text(json.dumps({"groups": [{"name": "panels", "rules": [
        {"record": f"panel_query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]}]}))
    assert f"SUCCESS: {len(queries)} rules found" in promtool("check", "rules", checked).stdout


def _query(board: str, title: str) -> str:
    (expr,) = {expr for t, expr in panel_queries(BOARDS[board]) if t == title}
    return expr


def test_stage_means_weigh_processes_by_population_and_leave_out_undefined_ones(
        tmp_path: Path, promtool: Promtool) -> None:
    # (instance, stage): customers, mean sentiment; b has nobody dormant, so no mean there (NaN)
    census = {("a", "awareness"): ("100", "0.5"), ("b", "awareness"): ("300", "-0.5"),
              ("a", "dormant"): ("10", "0.2"), ("b", "dormant"): ("0", "NaN")}
    series = [{"series": f'{metric}{{instance="{instance}", stage="{stage}"}}', "values": value}
              for (instance, stage), values in census.items()
              for metric, value in zip((CUSTOMERS.name, SENTIMENT.name), values, strict=True)]
    funnel = [expr for title, expr in panel_queries(BOARDS["customer-journey.json"]) if "Funnel" in title]
    cases = [{"expr": _query("customer-journey.json", "Sentiment by stage"), "eval_time": "0m",
              "exp_samples": [{"labels": '{stage="awareness"}', "value": -0.25},
                              {"labels": '{stage="dormant"}', "value": 0.2}]},
             {"expr": funnel[-1], "eval_time": "0m", "exp_samples": [{"labels": "{}", "value": 0}]}]
    unit_tests = tmp_path / "means.test.yml"
    unit_tests.write_text(json.dumps({"tests": [{"interval": "1m", "input_series": series,
                                                 "promql_expr_test": cases}]}))
    promtool("test", "rules", unit_tests)


def test_datasource_provisioning() -> None:
    config = yaml.safe_load((ROOT / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = config["datasources"]
    assert config["apiVersion"] == 1
    assert (source["type"], source["url"]) == ("prometheus", "${PROMETHEUS_URL}")


def test_dashboard_provisioning_points_where_the_readme_mounts_the_dashboards() -> None:
    config = yaml.safe_load((ROOT / "provisioning" / "dashboards" / "journey.yaml").read_text())
    (provider,) = config["providers"]
    assert (provider["type"], provider["folder"]) == ("file", "journey-stream")
    assert f'/grafana/dashboards:{provider["options"]["path"]}:ro"' in (ROOT / "README.md").read_text()
