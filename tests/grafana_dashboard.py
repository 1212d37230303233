"""The Grafana dashboard shipped with the chart (helm/dashboards/switchyard.json) and the metric names its
panels' PromQL queries read, parsed with a real PromQL parser (`promql-parser`)."""

from __future__ import annotations

import json
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[1] / "helm" / "dashboards" / "switchyard.json"
# Grafana's own variables and the dashboard's, replaced by what Grafana would put there, so the text parses
VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$app": ".*"}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every panel's targets, Grafana's variables substituted."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (every vector and range-vector selector)."""
    import promql_parser

    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        return None

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def label_names(expr: str) -> set[str]:
    """Labels an expression groups by (`by (...)`) or matches on (`{label=...}`): each must exist on the series."""
    import promql_parser

    labels: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        if isinstance(node, promql_parser.VectorSelector):
            labels.update(m.name for m in node.matchers.matchers if m.name != "__name__")
        return None

    promql_parser.walk(promql_parser.parse(expr), visit)
    return labels
