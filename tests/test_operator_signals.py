"""What operators alert on: the down-time counter, exclusions active now, certificate expiry,
process metrics, exact objectives, and hooks that stay quiet during maintenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from probed import config as config_mod
from probed.core.events import Event
from probed.daemon.downclock import DownClock
from probed.daemon.metrics import Metrics, Snapshot
from probed.hooks.dispatcher import Dispatcher
from probed.hooks.webhook import WebhookConfig
from probed.store.base import open_store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_down_clock_counts_down_time_outside_maintenance_only() -> None:
    clock = Clock()
    down = DownClock(clock)
    down.set_down("mail", False)
    clock.now += 50
    down.set_down("mail", True)  # down at 1050
    clock.now += 30
    assert down.totals(["mail"]) == {"mail": 30.0}
    down.set_paused("mail", True)  # a maintenance window begins at 1080
    clock.now += 100
    down.set_paused("mail", False)
    clock.now += 20
    down.set_down("mail", False)
    clock.now += 500
    assert down.totals(["mail"]) == {"mail": 50.0}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_metrics_export_exclusions_down_seconds_certificates_and_process() -> None:
    registry = CollectorRegistry()
    snap = Snapshot(
        service_up={"mail": False, "web": True},
        down_seconds={"mail": 42.5, "web": 0.0},
        exclusion_active={"mail": frozenset({"maintenance"})},
    )
    metrics = Metrics(registry, lambda: snap)
    metrics.observe_test("mail", "imap", "imap", True, 0.1, cert_not_after=1_798_934_400.0)
    assert sample(registry, "probed_service_down_seconds_total", service="mail") == 42.5
    active = {
        (s, k): sample(registry, "probed_service_exclusion_active", service=s, kind=k)
        for s in ("mail", "web")
        for k in ("dos", "maintenance", "other")
    }
    assert active == {
        ("mail", "dos"): 0.0,
        ("mail", "maintenance"): 1.0,
        ("mail", "other"): 0.0,
        ("web", "dos"): 0.0,  # always exported: an absent series would unmute nothing
        ("web", "maintenance"): 0.0,
        ("web", "other"): 0.0,
    }
    expiry = "probed_tls_certificate_expiry_timestamp_seconds"
    assert sample(registry, expiry, service="mail", check="imap", type="imap") == 1_798_934_400.0
    metrics.remove_check("mail", "imap", "imap")
    assert sample(registry, expiry, service="mail", check="imap", type="imap") is None
    assert (sample(registry, "process_resident_memory_bytes") or 0) > 0
    assert sample(registry, "python_gc_collections_total", generation="0") is not None


def test_objectives_keep_their_decimals(tmp_path: Path) -> None:
    path = tmp_path / "probed.yaml"
    path.write_text(
        "services:\n  web:\n    objective: 99.9\n    minimum: 99.7\n"
        "    credits: [{below: 99.9, percent: 5}]\n"
        '    checks: [{name: a, type: http, url: "http://127.0.0.1:9/"}]\n'
    )
    policy = config_mod.load(path).services["web"].policy
    assert (policy.objective, policy.minimum, policy.credits[0].below) == (0.999, 0.997, 0.999)
    registry = CollectorRegistry()
    from probed.daemon.metrics import ServiceSnapshot

    Metrics(registry, lambda: Snapshot(services={"web": ServiceSnapshot(policy.objective)}))
    from prometheus_client import generate_latest

    assert (
        'probed_service_objective_ratio{service="web"} 0.999\n'
        in generate_latest(registry).decode()
    )


def webhook(name: str, **fields: Any) -> WebhookConfig:
    return WebhookConfig.model_validate(
        {"type": "webhook", "name": name, "url": "http://127.0.0.1:9/", **fields}
    )


def event(kind: str, service: str = "mail") -> Event:
    return Event(kind, service, 1_790_000_000.0, check="imap")  # type: ignore[arg-type]


async def test_hooks_stay_quiet_during_maintenance_but_not_during_dos(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "p.db")
    covering = {"mail": frozenset({"maintenance"}), "web": frozenset({"dos"})}
    hooks = [
        webhook("default"),
        webhook("loud", mute_during=[]),
        webhook("dos", mute_during=["dos"]),
    ]
    dispatcher = Dispatcher(store, hooks, muted=lambda e: covering.get(e.service, frozenset()))
    await dispatcher.submit(event("outage_opened", "mail"))
    assert await dispatcher.outbox.pending() == {"loud": 1, "dos": 1}
    await dispatcher.submit(event("outage_opened", "web"))
    assert await dispatcher.outbox.pending() == {"loud": 2, "dos": 1, "default": 1}
    # good news always goes out, so that nothing a hook opened stays open
    await dispatcher.submit(event("outage_closed", "mail"))
    assert await dispatcher.outbox.pending() == {"loud": 3, "dos": 2, "default": 2}
    await store.close()
