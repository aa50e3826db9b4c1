"""Prometheus and Grafana files under deploy/: they parse, and every metric they query exists.

A dashboard or rule that names a metric the monitor does not export fails silently in
production (an empty panel, a rule that never fires); here it fails the build instead.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from alerts.metrics import DEFAULT_PORT, Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_YML = DEPLOY / "prometheus" / "rules.yml"
DATASOURCE_YML = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER_YML = DEPLOY / "grafana" / "provisioning" / "dashboards" / "plantwatch.yml"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "plantwatch.json"

REQUIRED_ALERTS = {
    "PlantwatchAnomaly",
    "PlantwatchMonitorDown",
    "PlantwatchConsumerLagHigh",
    "PlantwatchDLQRate",
    "PlantwatchNoData",
}
#: Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"job", "instance"}
METRIC_NAME = re.compile(r"\bplantwatch_[A-Za-z0-9_]+")
SELECTOR = re.compile(r"\b(plantwatch_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def exported_series() -> dict[str, set[str]]:
    """Every series name the monitor can export, with its label names.

    Each labelled metric of the bundle gets one child so that its samples (and their label
    names) appear in the registry; a metric added to the bundle is covered automatically.
    """
    metrics = Metrics.create(CollectorRegistry())
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            # _labelnames is client_python's record of a metric's declared labels.
            names: tuple[str, ...] = value._labelnames
            if names:
                value.labels(*(["x"] * len(names)))
    series: dict[str, set[str]] = defaultdict(set)
    for family in metrics.registry.collect():
        for sample in family.samples:
            series[sample.name] |= set(sample.labels)
    return dict(series)


def rule_exprs() -> list[tuple[str, str]]:
    rules = load_yaml(RULES_YML)
    return [
        (rule.get("alert") or rule.get("record"), str(rule["expr"]))
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))
    out = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if text:
            out.append((f"variable {variable['name']}", str(text)))
    return out


ALL_EXPRS = [("rule", name, expr) for name, expr in rule_exprs()] + [
    ("panel", name, expr) for name, expr in dashboard_exprs()
]


# -- parsing and required fields -------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [PROMETHEUS_YML, RULES_YML, DATASOURCE_YML, PROVIDER_YML], ids=lambda p: p.name
)
def test_yaml_files_parse(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)


def test_prometheus_scrapes_the_monitor_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS_YML)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["plantwatch"]["static_configs"] for t in sc["targets"]]
    assert targets == [f"monitor:{DEFAULT_PORT}"]
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_YML.parent / rule_file).is_file(), rule_file


def test_rules_have_what_prometheus_requires() -> None:
    rules = load_yaml(RULES_YML)
    assert set(rules) == {"groups"}
    group_names = [group["name"] for group in rules["groups"]]
    assert len(group_names) == len(set(group_names)), "rule group names must be unique"
    alerts = []
    for group in rules["groups"]:
        assert group["rules"], f"group {group['name']} is empty"
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "for" in rule:
                assert DURATION.match(str(rule["for"])), rule["for"]
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts)), "alert names must be unique"
    assert set(alerts) >= REQUIRED_ALERTS


def test_grafana_provisioning_matches_the_dashboard() -> None:
    datasources = load_yaml(DATASOURCE_YML)
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    provider = load_yaml(PROVIDER_YML)
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"]

    dashboard = json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
            assert target["refId"] and target["expr"].strip()


def test_dashboard_has_the_operator_panels() -> None:
    dashboard = json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))
    text = json.dumps([p.get("targets", []) for p in dashboard["panels"]])
    for needed in (
        "plantwatch_messages_total",
        "plantwatch_windows_scored_total",
        "plantwatch_score_seconds_bucket",
        "plantwatch_e2e_latency_seconds_bucket",
        "plantwatch_alerts_open",
        "plantwatch_alerts_total",
        "plantwatch_anomaly_score",
        "plantwatch_threshold",
        "plantwatch_consumer_lag",
        "plantwatch_model_info",
    ):
        assert needed in text, needed


# -- every name and label queried is exported -------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "expr"), ALL_EXPRS, ids=[f"{k}:{n}" for k, n, _ in ALL_EXPRS]
)
def test_queried_metrics_and_labels_exist(kind: str, name: str, expr: str) -> None:
    series = exported_series()
    used = set(METRIC_NAME.findall(expr))
    missing = sorted(used - series.keys())
    assert not missing, (
        f"{kind} {name!r} queries {missing}, which alerts/metrics.py does not export"
    )
    for metric, matchers in SELECTOR.findall(expr):
        for label in MATCHER_LABEL.findall(matchers):
            has = sorted(series[metric])
            assert label in series[metric] | TARGET_LABELS, (
                f"{kind} {name!r} filters {metric} on label {label!r}; it has {has}"
            )
    known = TARGET_LABELS.union(*(series[m] for m in used)) if used else TARGET_LABELS
    for group in GROUPING.findall(expr):
        for label in (part.strip() for part in group.split(",") if part.strip()):
            assert label in known, f"{kind} {name!r} groups by {label!r}, not a label of {used}"


def test_the_name_check_catches_a_typo() -> None:
    series = exported_series()
    assert "plantwatch_messages_total" in series
    assert "plantwatch_message_total" not in series
    assert series["plantwatch_score_seconds_bucket"] == {"le"}
    assert series["plantwatch_consumer_lag"] == {"partition"}


# -- promtool, when installed ------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_rules_and_config() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    for args in (["check", "rules", str(RULES_YML)], ["check", "config", str(PROMETHEUS_YML)]):
        result = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


#: promtool unit tests: synthetic series in, expected firing alerts out (one sample a minute).
#: Annotations are stripped from the rules under test, so these check exprs, ``for`` and labels.
M = {"job": "plantwatch", "instance": "monitor:9108"}


def sel(metric: str, **labels: str) -> str:
    """A series selector as the monitor's scrape would label it."""
    pairs = ",".join(f'{k}="{v}"' for k, v in {**M, **labels}.items())
    return f"{metric}{{{pairs}}}"


RULE_CASES: list[dict[str, Any]] = [
    {
        "name": "PlantwatchAnomaly",
        "series": {
            sel("plantwatch_anomaly_score", asset="pump-1"): "1 1 5 5 5 5 5",
            sel("plantwatch_threshold", asset="pump-1"): "4x6",
            sel("plantwatch_anomaly_score", asset="pump-2"): "1x6",
            sel("plantwatch_threshold", asset="pump-2"): "4x6",
        },
        "quiet_at": "2m",
        "firing_at": "4m",
        "labels": {**M, "asset": "pump-1", "severity": "warning"},
    },
    {
        "name": "PlantwatchMonitorDown",
        "series": {sel("up"): "1 1 0 0 0 0"},
        "quiet_at": "2m",
        "firing_at": "4m",
        "labels": {**M, "severity": "critical"},
    },
    {
        "name": "PlantwatchNoData",
        "series": {sel("plantwatch_messages_total", result="ok"): "0+10x10 100x20"},
        "quiet_at": "12m",
        "firing_at": "20m",
        "labels": {**M, "severity": "warning"},
    },
    {
        "name": "PlantwatchDLQRate",
        "series": {
            sel("plantwatch_messages_total", result="ok"): "0+100x30",
            sel("plantwatch_messages_total", result="not_json"): "0+10x30",
        },
        "quiet_at": "5m",
        "firing_at": "20m",
        "labels": {**M, "severity": "warning"},
    },
    {
        "name": "PlantwatchConsumerLagHigh",
        "series": {
            sel("plantwatch_consumer_lag", partition="0"): "20000x10",
            sel("plantwatch_consumer_lag", partition="1"): "5x10",
        },
        "quiet_at": "3m",
        "firing_at": "8m",
        "labels": {"partition": "0", "severity": "warning"},
    },
    {
        "name": "PlantwatchCommitsFailing",
        "series": {sel("plantwatch_commit_total", result="error"): "0 0 0+1x10"},
        "quiet_at": "1m",
        "firing_at": "10m",
        "labels": {**M, "severity": "critical"},
    },
]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_rules_fire_on_synthetic_series(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    rules = load_yaml(RULES_YML)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    tests = []
    for case in RULE_CASES:
        tests.append(
            {
                "interval": "1m",
                "input_series": [
                    {"series": series, "values": values}
                    for series, values in case["series"].items()
                ],
                "alert_rule_test": [
                    {"eval_time": case["quiet_at"], "alertname": case["name"], "exp_alerts": []},
                    {
                        "eval_time": case["firing_at"],
                        "alertname": case["name"],
                        "exp_alerts": [{"exp_labels": case["labels"]}],
                    },
                ],
            }
        )
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
