"""/metrics: per-check series rendered from slotted records, valid Prometheus text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from probed.daemon.metrics import Metrics, Snapshot


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render(list(metrics.checks.values())).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


def test_check_series_follow_tests_and_outages() -> None:
    m = Metrics(CollectorRegistry(), Snapshot)
    m.init_check("mail", "pop3", "pop3", up=True)
    before = samples(m)
    assert ("probed_probe_success", labels(service="mail", check="pop3", type="pop3")) not in before
    m.observe_test("mail", "pop3", "pop3", True, 0.25)
    m.observe_test("mail", "pop3", "pop3", False, 1.5)
    m.set_check_up("mail", "pop3", "pop3", False)
    got = samples(m)
    check = labels(service="mail", check="pop3", type="pop3")
    assert got[("probed_probe_success", check)] == 0.0
    assert got[("probed_probe_last_duration_seconds", check)] == 1.5
    for result in ("pass", "fail"):
        by_result = labels(service="mail", check="pop3", type="pop3", result=result)
        assert got[("probed_probes_total", by_result)] == 1.0
    assert got[("probed_check_up", check)] == 0.0
    per_type = labels(service="mail", type="pop3")
    assert got[("probed_probe_duration_seconds_count", per_type)] == 2.0
    le = labels(service="mail", type="pop3", le="0.25")
    assert got[("probed_probe_duration_seconds_bucket", le)] == 1.0


def test_per_check_histograms_are_opt_in_and_removed_with_the_check() -> None:
    m = Metrics(CollectorRegistry(), Snapshot, per_check_histograms=True)
    m.init_check("web", "home", "http", up=True)
    m.observe_test("web", "home", "http", True, 0.01)
    check = labels(service="web", check="home", type="http")
    assert samples(m)[("probed_probe_duration_seconds_count", check)] == 1.0
    m.remove_check("web", "home", "http")
    assert not [key for key in samples(m) if dict(key[1]).get("check") == "home"]


def test_label_values_are_escaped() -> None:
    m = Metrics(CollectorRegistry(), Snapshot)
    m.init_check('we"b', "a\\b\nc", "http", up=True)
    assert ("probed_check_up", labels(service='we"b', check="a\\b\nc", type="http")) in samples(m)
