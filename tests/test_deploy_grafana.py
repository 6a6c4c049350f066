"""deploy/grafana: the dashboard provisions as is and every query is valid PromQL.

No Grafana runs here (it is not packaged by Debian), so the dashboard is
checked for what Grafana needs to load it from a provisioning directory and
for what makes it work against any Prometheus: the ${datasource} variable
everywhere, contract metric names only, and queries promtool can parse.
``panel_queries()`` and ``instantiate()`` are what an end-to-end test uses to
run the same queries against a real Prometheus.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require_tool
from tests.test_deploy_prometheus import CONTRACT_METRICS, contract_series_names, metric_names

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "probed.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of every panel."""
    return [
        (panel.get("title", "?"), target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def instantiate(expr: str, *, rate_interval: str = "1m") -> str:
    """The query as Grafana sends it with "All" selected for service and check.

    ``rate_interval`` stands for $__rate_interval: at least four scrape
    intervals, so 1m suits a 15s scrape.
    """
    expr = re.sub(r"\$\{?(service|check|location)(?::\w+)?\}?", ".*", expr)
    expr = expr.replace("${__rate_interval}", rate_interval)
    expr = expr.replace("$__rate_interval", rate_interval)
    return expr.replace("$__interval", "15s").replace("$__range", "1h")


def test_dashboard_is_a_provisionable_json_model() -> None:
    dashboard = load_dashboard()
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["uid"] == "probed-sla"  # stable: links and provisioning updates use it
    assert dashboard["title"]
    assert dashboard.get("id") is None  # a provisioned dashboard gets its id from Grafana
    assert "__inputs" not in dashboard  # import-only placeholders break file provisioning


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in all_panels(load_dashboard())]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in all_panels(load_dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    for panel in all_panels(load_dashboard()):
        if panel["type"] == "row":
            assert not panel.get("targets"), panel["title"]  # rows only group
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_refids_are_unique_within_each_panel() -> None:
    for panel in all_panels(load_dashboard()):
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def variables() -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in load_dashboard()["templating"]["list"]}


def test_datasource_variable_picks_a_prometheus() -> None:
    var = variables()["datasource"]
    assert var["type"] == "datasource"
    assert var["query"] == "prometheus"


def test_service_and_check_variables_query_label_values() -> None:
    found = variables()
    for name, metric in (
        ("service", "probed_service_up"),
        ("check", "probed_check_up"),
        ("location", "probed_check_up"),
    ):
        var = found[name]
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((\w+)(\{.*\})?, (\w+)\)", query)
        assert match, query
        assert match[1] == metric and match[3] == name
        assert var["includeAll"] and var["multi"]


def test_queries_read_only_contract_metrics() -> None:
    allowed = contract_series_names()
    for title, expr in panel_queries(load_dashboard()):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= allowed, f"{title} reads {names - allowed}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool has no "parse this expression" command, but it parses every
    # recording rule of a rules file: one rule per dashboard query.
    queries = panel_queries(load_dashboard())
    rules = [
        {"record": f"dashboard:query_{n}:check", "expr": instantiate(expr)}
        for n, (_, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [require_tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr


def test_instantiate_leaves_no_grafana_variable() -> None:
    for _, expr in panel_queries(load_dashboard()):
        assert "$" not in instantiate(expr), expr


def panels_reading(metric: str, kind: str | None = None) -> list[str]:
    return [
        panel["title"]
        for panel in all_panels(load_dashboard())
        if (kind is None or panel["type"] == kind)
        and any(metric in target.get("expr", "") for target in panel.get("targets", []))
    ]


def test_dashboard_has_the_views_operators_need() -> None:
    assert panels_reading("probed_service_up", "stat")  # state per service
    assert panels_reading("probed_check_up", "stat")  # state per check
    assert panels_reading("probed_check_up", "state-timeline")  # outage timeline
    assert panels_reading('window="month_to_date"')  # this month's figures
    assert panels_reading("probed_service_objective_ratio")  # ... against the objective
    assert panels_reading("probed_service_error_budget_remaining_seconds")
    # downtime and excluded time side by side, this month and last
    (title,) = panels_reading("probed_service_excluded_seconds")
    exprs = [e for t, e in panel_queries(load_dashboard()) if t == title]
    assert any("probed_service_downtime_seconds" in e for e in exprs), title
    assert all('window=~"month_to_date|previous_month"' in e for e in exprs), title
    for histogram in (
        "probed_probe_duration_seconds_bucket",
        "probed_mailflow_delivery_seconds_bucket",
        "probed_schedule_lag_seconds_bucket",
    ):
        titles = panels_reading(histogram, "timeseries")
        assert titles, histogram
        exprs = [e for t, e in panel_queries(load_dashboard()) if t in titles]
        assert all(e.startswith("histogram_quantile(") for e in exprs), histogram


def test_every_contract_metric_is_on_the_dashboard() -> None:
    used = set().union(*(metric_names(e) for _, e in panel_queries(load_dashboard())))
    for name, kind in CONTRACT_METRICS.items():
        assert name in used or (kind == "histogram" and f"{name}_bucket" in used), name


def test_provisioning_examples_point_at_the_dashboard() -> None:
    provisioning = GRAFANA / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "probed.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    (source,) = yaml.safe_load(
        (provisioning / "datasources" / "probed-prometheus.yml").read_text()
    )["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True  # what the dashboard's datasource variable picks


def test_each_locations_own_state_has_a_panel() -> None:
    titles = panels_reading('location=~"$location"', "stat")
    assert "Check state per location" in titles
