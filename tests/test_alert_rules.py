"""deploy/prometheus/alerts.yml: every rule names metrics and labels that /metrics really
reports (core.metrics.metric_labels: the counters, histograms and registered gauges), points
at a runbook heading that exists in docs/OPERATIONS.md, and every runbook has an alert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from core.metrics import metric_labels

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
_SELECTOR = re.compile(r"\b(clearhouse_[a-z_]+)\s*(\{([^}]*)\})?")


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def _anchors() -> dict[str, str]:
    """GitHub's heading anchors of docs/OPERATIONS.md → the heading's level."""
    anchors = {}
    for line in (ROOT / "docs" / "OPERATIONS.md").read_text().splitlines():
        if heading := re.match(r"(#+)\s+(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", heading.group(2).lower()).replace(" ", "-")
            anchors[slug] = heading.group(1)
    return anchors


def test_every_rule_names_metrics_and_labels_our_registry_reports():
    known = metric_labels()
    assert "clearhouse_provider_calls_total" in known  # the worker's counter, summed by web
    assert "clearhouse_provider_breaker_open" in known  # a gauge registered by an app
    rules = _rules()
    assert len(rules) >= 10
    for rule in rules:
        selectors = _SELECTOR.findall(rule["expr"])
        assert selectors, rule["alert"]
        for name, _, matchers in selectors:
            assert name in known, (rule["alert"], name)
            for label in re.findall(r"(\w+)\s*=~?", matchers):
                assert label in known[name], (rule["alert"], name, label, known[name])


def test_a_misspelt_metric_or_label_would_be_caught():
    known = metric_labels()
    assert "clearhouse_provider_call_total" not in known
    assert "queue_name" not in known["clearhouse_queue_depth"]


def test_every_rule_points_at_a_runbook_and_every_runbook_has_an_alert():
    anchors = _anchors()
    covered = set()
    for rule in _rules():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "docs/OPERATIONS.md" and anchor in anchors, rule["alert"]
        covered.add(anchor)
    text = (ROOT / "docs" / "OPERATIONS.md").read_text()
    runbooks = text[text.index("## Runbooks"):]
    for heading in re.findall(r"^### (.*)$", runbooks, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        assert slug in covered, f"runbook {heading!r} has no alert"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
