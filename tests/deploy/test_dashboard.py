"""The Grafana dashboard and the alert rules query metrics the worker and trainer export,
and the dashboard shows what the issue asks for."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.deploy.support import (
    GRAFANA,
    PROMETHEUS,
    monitor_metric_names,
    promql_metrics,
    trainer_metric_names,
    worker_metric_names,
    yaml_document,
)

DASHBOARD = GRAFANA / "dashboards" / "tagstream-workers.json"
BUILT_IN = {"up"}


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    """Panel queries, and the series behind ``label_values(series, label)`` variables."""
    found = [t["expr"] for p in panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if "definition" in variable:
            (series,) = re.findall(r"^label_values\((.+), *\w+\)$", variable["definition"])
            found.append(series)
    return found


def test_every_metric_the_dashboard_queries_is_exported_by_the_worker() -> None:
    exported = worker_metric_names() | BUILT_IN
    for expr in expressions():
        assert promql_metrics(expr) <= exported, (expr, promql_metrics(expr) - exported)


def test_every_metric_an_alert_queries_is_exported() -> None:
    exported = worker_metric_names() | trainer_metric_names() | monitor_metric_names() | BUILT_IN
    rules = [r for g in yaml_document(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]]
    assert rules
    for rule in rules:
        assert promql_metrics(rule["expr"]) <= exported, rule["alert"]


def queried(fragment: str) -> list[str]:
    return [e for e in expressions() if fragment in e]


def test_the_dashboard_shows_throughput_lag_batching_padding_latency_and_model_version() -> None:
    assert queried("rate(tagstream_worker_predictions_published_total")
    assert queried("tagstream_worker_consumer_lag_messages")
    assert queried("tagstream_worker_batch_articles")
    assert queried("tagstream_worker_padding_ratio")
    assert queried("tagstream_worker_model_version")
    latency = queried("tagstream_worker_end_to_end_seconds_bucket")
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({quantile}," in e for e in latency), quantile


def test_panels_use_the_datasource_variable_and_fit_the_grid() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels():
        assert p["datasource"]["uid"] == "${datasource}"
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
    names = {v["name"] for v in dashboard()["templating"]["list"]}
    assert {"datasource", "instance"} <= names


def test_grafana_provisioning_loads_the_dashboard_directory_compose_mounts() -> None:
    provider = yaml_document(GRAFANA / "provisioning" / "dashboards" / "tagstream.yaml")
    (entry,) = provider["providers"]
    assert entry["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml_document(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
