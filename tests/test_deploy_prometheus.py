"""deploy/prometheus: the rules parse, their unit tests pass, the examples load.

Also home of two helpers other tests use: ``CONTRACT_METRICS`` with
``metric_names()`` (which metric names a PromQL expression reads), and
``promtool_check_metrics()`` (lint a /metrics text the way Prometheus would).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "probed.rules.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))

# docs/contract.md "Metrics", name -> type. probed_mailflow_delivery_seconds is
# not in the contract's list but the dashboard's mail round-trip panel needs it;
# probed_service_down_seconds_total is what the burn-rate rules read.
CONTRACT_METRICS: dict[str, str] = {
    "probed_probe_success": "gauge",
    "probed_probe_duration_seconds": "histogram",
    "probed_probes_total": "counter",
    "probed_check_up": "gauge",
    "probed_service_up": "gauge",
    "probed_service_availability_ratio": "gauge",
    "probed_service_downtime_seconds": "gauge",
    "probed_service_excluded_seconds": "gauge",
    "probed_service_objective_ratio": "gauge",
    "probed_service_error_budget_remaining_seconds": "gauge",
    "probed_schedule_lag_seconds": "histogram",
    "probed_config_last_reload_successful": "gauge",
    "probed_build_info": "gauge",
    "probed_mailflow_delivery_seconds": "histogram",
    "probed_service_exclusion_active": "gauge",
    "probed_tls_certificate_expiry_timestamp_seconds": "gauge",
    "probed_service_down_seconds_total": "counter",
}


def contract_series_names() -> set[str]:
    """Every series name a scrape may show: histograms add _bucket, _sum and _count."""
    names = set(CONTRACT_METRICS)
    for name, kind in CONTRACT_METRICS.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}
_KEYWORDS |= {"group_left", "group_right", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, keywords or label names)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def promtool_check_metrics(text: str) -> str:
    """Run ``promtool check metrics`` on a /metrics text; return its complaints ("" = clean).

    promtool exits 0 when clean, 3 for lint problems (a counter without
    _total, a missing HELP, ...), 1 when the text does not parse.
    """
    result = subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode == 0:
        return ""
    return (result.stdout + result.stderr).strip() or f"promtool exited {result.returncode}"


# A /metrics text with every contract metric, shaped as prometheus_client
# writes it. The lead runs promtool_check_metrics() on the real daemon's.
SAMPLE_METRICS = """\
# HELP probed_probe_success 1 if the latest test of the check passed, else 0
# TYPE probed_probe_success gauge
probed_probe_success{check="smtp-in",service="mail",type="smtp"} 1.0
# HELP probed_probe_duration_seconds How long tests took
# TYPE probed_probe_duration_seconds histogram
probed_probe_duration_seconds_bucket{check="smtp-in",le="0.5",service="mail",type="smtp"} 3.0
probed_probe_duration_seconds_bucket{check="smtp-in",le="+Inf",service="mail",type="smtp"} 4.0
probed_probe_duration_seconds_count{check="smtp-in",service="mail",type="smtp"} 4.0
probed_probe_duration_seconds_sum{check="smtp-in",service="mail",type="smtp"} 1.25
# HELP probed_probes_total Tests run, by verdict
# TYPE probed_probes_total counter
probed_probes_total{check="smtp-in",result="pass",service="mail",type="smtp"} 3.0
probed_probes_total{check="smtp-in",result="fail",service="mail",type="smtp"} 1.0
# HELP probed_service_exclusion_active 1 while a live exclusion or maintenance window of this kind covers now
# TYPE probed_service_exclusion_active gauge
probed_service_exclusion_active{kind="maintenance",service="mail"} 0.0
probed_service_exclusion_active{kind="dos",service="mail"} 1.0
# HELP probed_tls_certificate_expiry_timestamp_seconds The server certificate's notAfter (Unix time), for checks that use TLS
# TYPE probed_tls_certificate_expiry_timestamp_seconds gauge
probed_tls_certificate_expiry_timestamp_seconds{check="smtp-in",service="mail",type="smtp"} 1.7989344e+09
# HELP probed_service_down_seconds_total Seconds this daemon has seen the service in an outage since it started
# TYPE probed_service_down_seconds_total counter
probed_service_down_seconds_total{service="mail"} 42.5
# HELP probed_check_up 0 while the check is in an outage, else 1
# TYPE probed_check_up gauge
probed_check_up{check="smtp-in",service="mail",type="smtp"} 1.0
# HELP probed_service_up 0 while any check of the service is in an outage
# TYPE probed_service_up gauge
probed_service_up{service="mail"} 1.0
# HELP probed_service_availability_ratio Availability by SLA rules
# TYPE probed_service_availability_ratio gauge
probed_service_availability_ratio{service="mail",window="month_to_date"} 0.9999
probed_service_availability_ratio{service="mail",window="previous_month"} 0.998
# HELP probed_service_downtime_seconds Counted downtime
# TYPE probed_service_downtime_seconds gauge
probed_service_downtime_seconds{service="mail",window="month_to_date"} 180.0
probed_service_downtime_seconds{service="mail",window="previous_month"} 5400.0
# HELP probed_service_excluded_seconds Outage time removed by exclusions
# TYPE probed_service_excluded_seconds gauge
probed_service_excluded_seconds{service="mail",window="month_to_date"} 600.0
probed_service_excluded_seconds{service="mail",window="previous_month"} 0.0
# HELP probed_service_objective_ratio The service's SLA objective
# TYPE probed_service_objective_ratio gauge
probed_service_objective_ratio{service="mail"} 0.995
# HELP probed_service_error_budget_remaining_seconds This month's error budget left
# TYPE probed_service_error_budget_remaining_seconds gauge
probed_service_error_budget_remaining_seconds{service="mail"} 13212.0
# HELP probed_schedule_lag_seconds How late tests start compared to their schedule
# TYPE probed_schedule_lag_seconds histogram
probed_schedule_lag_seconds_bucket{le="0.1"} 4.0
probed_schedule_lag_seconds_bucket{le="+Inf"} 4.0
probed_schedule_lag_seconds_count 4.0
probed_schedule_lag_seconds_sum 0.02
# HELP probed_mailflow_delivery_seconds Mail round trip: submission to mailbox
# TYPE probed_mailflow_delivery_seconds histogram
probed_mailflow_delivery_seconds_bucket{check="roundtrip",le="30.0",service="mail",type="mailflow"} 1.0
probed_mailflow_delivery_seconds_bucket{check="roundtrip",le="+Inf",service="mail",type="mailflow"} 1.0
probed_mailflow_delivery_seconds_count{check="roundtrip",service="mail",type="mailflow"} 1.0
probed_mailflow_delivery_seconds_sum{check="roundtrip",service="mail",type="mailflow"} 12.5
# HELP probed_config_last_reload_successful 1 if the last config (re)load was applied
# TYPE probed_config_last_reload_successful gauge
probed_config_last_reload_successful 1.0
# HELP probed_build_info probed's version
# TYPE probed_build_info gauge
probed_build_info{version="0.1.0"} 1.0
"""


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=300)


def test_rules_pass_promtool_check_rules() -> None:
    result = run(require_tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("unit_tests", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(unit_tests: Path) -> None:
    result = run(require_tool("promtool"), "test", "rules", str(unit_tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_both_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


def test_every_alert_has_a_severity_summary_and_description() -> None:
    for rule in alerts():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert "{{ $labels." in rule["annotations"]["description"], rule["alert"]


def test_required_alerts_exist() -> None:
    assert {rule["alert"] for rule in alerts()} >= {
        "ProbedDown",
        "ProbedStale",
        "ProbedReloadFailed",
        "ProbedCheckDown",
        "ProbedServiceDown",
        "ProbedErrorBudgetBurn",
        "ProbedObjectiveAtRisk",
        "ProbedObjectiveMissed",
    }


def test_burn_rate_alerts_page_and_ticket() -> None:
    burn = [rule for rule in alerts() if rule["alert"] == "ProbedErrorBudgetBurn"]
    assert sorted(rule["labels"]["severity"] for rule in burn) == ["page", "ticket"]


def test_rules_read_only_contract_metrics() -> None:
    recorded = {rule["record"] for rule in load_rules() if "record" in rule}
    allowed = contract_series_names() | recorded | {"up"}
    for rule in load_rules():
        unknown = metric_names(rule["expr"]) - allowed
        assert not unknown, f"{rule.get('alert') or rule.get('record')} reads {unknown}"


def test_metric_names_finds_selectors_only() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (service, le) ("
        'rate(probed_probe_duration_seconds_bucket{service=~"$service"}[5m])))'
        " / ignoring(window) (1 - probed_service_objective_ratio)"
        " > 1e3 and on(job) up offset 5m"
    )
    assert metric_names(expr) == {
        "probed_probe_duration_seconds_bucket",
        "probed_service_objective_ratio",
        "up",
    }


def scrape_jobs() -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = yaml.safe_load((PROMETHEUS / "scrape.yml").read_text())[
        "scrape_configs"
    ]
    return jobs


def test_scrape_example_loads_in_a_prometheus_config(tmp_path: Path) -> None:
    # Debian 12's Prometheus (2.42) predates scrape_config_files (2.43), so the
    # job is pasted into a whole config, the way README tells operators.
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
                "rule_files": [str(RULES)],
                "scrape_configs": scrape_jobs(),
            }
        )
    )
    result = run(require_tool("promtool"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", result.stdout + result.stderr)


def test_scrape_job_is_the_one_the_alerts_select() -> None:
    assert [job["job_name"] for job in scrape_jobs()] == ["probed"]
    down = next(rule for rule in alerts() if rule["alert"] == "ProbedDown")
    assert 'job="probed"' in down["expr"]


def test_alertmanager_example_passes_amtool() -> None:
    result = run(
        require_tool("amtool"), "check-config", str(PROMETHEUS / "alertmanager.example.yml")
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_example_names_real_alerts() -> None:
    example = yaml.safe_load((PROMETHEUS / "alertmanager.example.yml").read_text())
    matchers = [
        matcher
        for rule in example["inhibit_rules"]
        for matcher in rule["source_matchers"] + rule["target_matchers"]
    ]
    named = {
        name
        for m in matchers
        if m.startswith("alertname=")
        for name in m.split("=", 1)[1].lstrip("~").strip('"').split("|")
    }
    assert named and named <= {rule["alert"] for rule in alerts()}


def test_sample_metrics_cover_the_contract() -> None:
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", SAMPLE_METRICS, re.MULTILINE))
    # prometheus_client announces a counter by its family name, without _total
    types = {("probed_probes_total" if n == "probed_probes" else n): t for n, t in types.items()}
    assert types == CONTRACT_METRICS


def test_sample_metrics_pass_promtool_check_metrics() -> None:
    assert promtool_check_metrics(SAMPLE_METRICS) == ""


def test_promtool_check_metrics_reports_lint_problems() -> None:
    problems = promtool_check_metrics("# TYPE probed_probes counter\nprobed_probes 1\n")
    assert '"_total" suffix' in problems
    assert "no help text" in problems
