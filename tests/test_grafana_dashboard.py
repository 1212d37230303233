"""helm/dashboards/switchyard.json is a Grafana dashboard: it decodes with Grafana's own dashboard types (the
Grafana Foundation SDK, generated from Grafana's schema) without losing or changing a field, each panel's
options as its plugin's, each query as Prometheus's; and every query is valid PromQL. That the series it reads
exist is checked on a served app (tests/test_cluster.py)."""

from __future__ import annotations

import json

import pytest

from grafana_dashboard import label_names, load, metric_names, queries

sdk = pytest.importorskip("grafana_foundation_sdk")
pytest.importorskip("promql_parser")


def lost_or_changed(original, decoded, path: str = "") -> list[str]:
    """Where `decoded` lacks a key of `original` or holds another value (Grafana would drop or alter it)."""
    if isinstance(original, dict):
        return [p for key in original for p in ([f"{path}/{key}: lost"] if key not in decoded else
                                                 lost_or_changed(original[key], decoded[key], f"{path}/{key}"))]
    if isinstance(original, list):
        if len(original) != len(decoded):
            return [f"{path}: {len(original)} items, {len(decoded)} decoded"]
        return [p for i, (a, b) in enumerate(zip(original, decoded)) for p in lost_or_changed(a, b, f"{path}[{i}]")]
    return [] if original == decoded else [f"{path}: {original!r} -> {decoded!r}"]


def test_it_decodes_as_a_grafana_dashboard_without_losing_a_field():
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import dashboard, prometheus, stat, timeseries

    register_default_plugins()  # panel options and queries decode as their plugin's types
    doc = load()
    decoded = dashboard.Dashboard.from_json(doc)
    again = json.loads(json.dumps(decoded.to_json(), default=lambda o: o.to_json()))
    assert lost_or_changed(doc, again) == []
    options = {"timeseries": timeseries.Options, "stat": stat.Options}
    for panel in decoded.panels:
        if isinstance(panel, dashboard.RowPanel):
            continue
        assert isinstance(panel.options, options[panel.type_val]), panel.title
        assert panel.targets and all(isinstance(t, prometheus.Dataquery) for t in panel.targets), panel.title


def test_panels_are_laid_out_once_and_cover_what_an_operator_watches():
    doc = load()
    panels = doc["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [(x, y) for p in panels for g in [p["gridPos"]]
             for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])]
    assert len(cells) == len(set(cells)), "panels overlap"
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
    titles = {p["title"] for p in panels}
    assert {"Request rate", "Time to first token", "Inter-token latency", "KV-cache use", "Per-group load",
            "Replicas", "Dispatch time", "Cost per million tokens"} <= titles
    assert {v["name"] for v in doc["templating"]["list"]} == {"datasource", "app"}


def test_every_query_is_promql_on_switchyards_metrics():
    checked = queries(load())
    for title, expr in checked:
        names = metric_names(expr)  # parses, or raises naming the error
        assert names and all(n.startswith(("switchyard_", "gen_ai_server_")) for n in names), (title, expr)
        assert "app" in label_names(expr), (title, "every query keeps to the dashboard's $app")


def test_the_metric_name_parser_sees_through_functions_and_binary_operators():
    expr = 'histogram_quantile(0.9, sum by (le) (rate(a_bucket{app=~".*"}[1m]))) / on() group_left max(b{x="1"})'
    assert metric_names(expr) == {"a_bucket", "b"}
    assert label_names(expr) == {"le", "app", "x"}
