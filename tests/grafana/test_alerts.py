"""The alert rules: valid for Prometheus, each tested firing and quiet, each with its runbook section."""

import re
from typing import Any

import yaml

from grafana.alerts import GROUP, rules
from grafana.render import ROOT, RULES
from tests.grafana.conftest import Promtool

ALERTS = ["ConsumerLagGrowing", "NoOutputWhileInputFlows", "DeadLetterRateHigh", "DeliveryErrors",
          "WatermarkStalled", "EndToEndLatencyHigh"]
UNIT_TESTS = RULES.with_name("journey-alerts.test.yml")


def test_the_rule_file_holds_the_alerts() -> None:
    (group,) = yaml.safe_load(RULES.read_text())["groups"]
    assert group["name"] == GROUP == "journey-stream"
    assert [r["alert"] for r in group["rules"]] == [r["alert"] for r in rules()] == ALERTS


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    anchors = {re.sub(r"[^a-z0-9-]", "", h.lower().replace(" ", "-"))
               for h in re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), re.MULTILINE)}
    for r in rules():
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        path, anchor = r["annotations"]["runbook"].split("#")
        assert path == "grafana/README.md" and anchor in anchors, f"{r['alert']}: no README section {anchor}"


def test_promtool_accepts_the_rules(promtool: Promtool) -> None:
    assert f"SUCCESS: {len(ALERTS)} rules found" in promtool("check", "rules", RULES).stdout


def test_promtool_unit_tests_pass(promtool: Promtool) -> None:
    promtool("test", "rules", UNIT_TESTS)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases: list[dict[str, Any]] = [c for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
                                   for c in t["alert_rule_test"]]
    for alert in ALERTS:
        outcomes = [bool(c.get("exp_alerts")) for c in cases if c["alertname"] == alert]
        assert True in outcomes and False in outcomes, f"{alert}: test it firing and not firing"
