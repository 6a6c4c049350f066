"""Prometheus metrics.

Per-check series (latest verdict, last duration, test counts, outage state)
are plain slotted records updated when a test ends and rendered by
:func:`render_checks`: with 100 000 checks, prometheus_client's children
(a lock and a value object per sample) would cost ~10 KiB per check and
seconds per scrape. Durations go to one histogram per service and type
(per check only with ``metrics: {per_check_histograms: true}``).
Service-level figures are derived state yielded by a collector from an
in-memory snapshot. ``/metrics`` renders all of it into bytes in a worker
thread (:meth:`Metrics.render`), never on the event loop, and never touches
the database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from probed import __version__
from probed.core.accounting import EXCLUSION_KINDS, ServiceFigures
from probed.store.spool import KINDS as SPOOL_KINDS
from probed.store.spool import Spool

CHECK_LABELS = ("service", "check", "type")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    objective: float
    month_to_date: ServiceFigures | None = None
    previous_month: ServiceFigures | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the collector needs, computed away from the scrape."""

    services: Mapping[str, ServiceSnapshot] = field(default_factory=dict)
    service_up: Mapping[str, bool] = field(default_factory=dict)
    down_seconds: Mapping[str, float] = field(default_factory=dict)  # since start, per service
    exclusion_active: Mapping[str, frozenset[str]] = field(default_factory=dict)  # kinds, now


def _label_value(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value  # every name a config allows: the same string, not a copy
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(slots=True)
class CheckSeries:
    """One check's series: its label values (escaped, which for the names a config allows
    is the config's own string, not a copy) and a few numbers."""

    service: str
    check: str
    type: str
    up: bool = True
    success: float = math.nan  # no sample before the first test
    last_duration: float = math.nan
    passes: int = 0
    fails: int = 0


_CHECK_FAMILIES = (
    ("probed_probe_success", "gauge", "1 if the latest test of the check passed, else 0"),
    ("probed_probe_last_duration_seconds", "gauge", "How long the latest test took"),
    ("probed_probes_total", "counter", "Tests run, by verdict"),
    ("probed_check_up", "gauge", "0 while the check is in an outage, else 1"),
)


def render_checks(series: list[CheckSeries], located: str = "") -> bytes:
    """The per-check families in the Prometheus text format (0.0.4); ``located`` is the
    ``,location="..."`` label of every series, or empty. Each line is appended to one
    buffer as soon as it is made: 100 000 checks' half a million lines never exist as
    objects at once, so a scrape leaves no pages behind that a later object then holds."""
    out = bytearray()
    for name, kind, help_ in _CHECK_FAMILIES:
        out += f"# HELP {name} {help_}\n# TYPE {name} {kind}\n".encode()
        for c in series:
            labels = f'service="{c.service}",check="{c.check}",type="{c.type}"{located}'
            if name == "probed_probe_success":
                if c.success == c.success:  # no sample before the first test
                    out += f"{name}{{{labels}}} {c.success}\n".encode()
            elif name == "probed_probe_last_duration_seconds":
                if c.last_duration == c.last_duration:
                    out += f"{name}{{{labels}}} {c.last_duration}\n".encode()
            elif name == "probed_probes_total":
                out += f'{name}{{{labels},result="pass"}} {c.passes}\n'.encode()
                out += f'{name}{{{labels},result="fail"}} {c.fails}\n'.encode()
            else:
                out += f"{name}{{{labels}}} {1 if c.up else 0}\n".encode()
    return bytes(out)


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        snapshot: Callable[[], Snapshot],
        *,
        per_check_histograms: bool = False,
        location: str = "",
    ) -> None:
        # *_created series add ~12 % to a 10 000-check scrape and nobody graphs them
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        self.registry = registry
        # where this daemon probes from: a label on its per-check state series (several
        # daemons on one store export the same checks, each from its own location)
        self._located = f',location="{_label_value(location)}"' if location else ""
        self.checks: dict[tuple[str, str], CheckSeries] = {}
        self.per_check_histograms = per_check_histograms
        self._durations: set[tuple[str, str]] = set()  # (service, type) histograms made
        # process_* and python_gc_*/python_info, as every Prometheus client exports them
        for collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
            registry.register(collector)
        self.probe_duration = Histogram(
            "probed_probe_duration_seconds",
            "How long tests took",
            CHECK_LABELS if per_check_histograms else ("service", "type"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.schedule_lag = Histogram(
            "probed_schedule_lag_seconds",
            "How late tests start compared to their schedule",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.loop_lag = Histogram(
            "probed_event_loop_lag_seconds",
            "How late each 20 ms heartbeat of the daemon's event loop ran",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self.discarded = Counter(
            "probed_tests_discarded",
            "Tests that are no verdict, e.g. failed while the daemon's loop was stalled",
            ("reason",),
            registry=registry,
        )
        self.discarded.labels("loop_stall")
        self.mailflow_delivery = Histogram(
            "probed_mailflow_delivery_seconds",
            "Mail round trip: submission to mailbox",
            CHECK_LABELS,
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.cert_expiry = Gauge(
            "probed_tls_certificate_expiry_timestamp_seconds",
            "The server certificate's notAfter (Unix time), for checks that use TLS",
            CHECK_LABELS,
            registry=registry,
        )
        self.probe_errors = Counter(
            "probed_probe_errors",
            "Tests discarded because the probe crashed (a bug in probed), by exception type",
            (*CHECK_LABELS, "error"),
            registry=registry,
        )
        self._error_labels: set[tuple[str, str, str, str]] = set()
        self.dead_letters = Counter(
            "probed_hook_dead_letters",
            "Hook events given up: refused for good by the receiver, or older than max_age",
            ("hook",),
            registry=registry,
        )
        self.worker_restarts = Counter(
            "probed_worker_restarts",
            "Worker processes (workers: N) started again after they died: a bug in probed",
            registry=registry,
        )
        self.reload_ok = Gauge(
            "probed_config_last_reload_successful",
            "1 if the last config (re)load was applied",
            registry=registry,
        )
        self.reload_at = Gauge(
            "probed_config_last_reload_success_timestamp_seconds",
            "When the config in use was applied",
            registry=registry,
        )
        self.config_applied()
        self.build_info = Gauge(
            "probed_build_info", "probed's version", ("version",), registry=registry
        )
        self.build_info.labels(__version__).set(1)
        registry.register(SnapshotCollector(snapshot))

    def config_applied(self) -> None:
        self.reload_ok.set(1)
        self.reload_at.set_to_current_time()

    def observe_test(
        self,
        service: str,
        check: str,
        type_: str,
        ok: bool,
        duration: float,
        delivery_seconds: float | None = None,
        cert_not_after: float | None = None,
    ) -> None:
        if cert_not_after is not None:
            self.cert_expiry.labels(service, check, type_).set(cert_not_after)
        series = self.checks.get((service, check)) or self._series(service, check, type_)
        series.success = 1.0 if ok else 0.0
        series.last_duration = duration
        if ok:
            series.passes += 1
        else:
            series.fails += 1
        self._duration(service, check, type_).observe(duration)
        if delivery_seconds is not None:
            self.mailflow_delivery.labels(service, check, type_).observe(delivery_seconds)

    def _duration(self, service: str, check: str, type_: str) -> Histogram:
        if self.per_check_histograms:
            return self.probe_duration.labels(service, check, type_)
        return self.probe_duration.labels(service, type_)

    def count_probe_error(self, service: str, check: str, type_: str, error: str) -> None:
        labels = (service, check, type_, error)
        self._error_labels.add(labels)
        self.probe_errors.labels(*labels).inc()

    def init_check(self, service: str, check: str, type_: str, up: bool) -> None:
        """Export a check from startup on, so absent series never hide it."""
        self._series(service, check, type_).up = up
        if self.per_check_histograms or (service, type_) not in self._durations:
            self._duration(service, check, type_)  # one child per service and type, made once
            self._durations.add((service, type_))

    def _series(self, service: str, check: str, type_: str) -> CheckSeries:
        series = self.checks.get((service, check))
        if series is None or (series.type is not type_ and series.type != _label_value(type_)):
            values = (_label_value(service), _label_value(check), _label_value(type_))
            series = self.checks[(service, check)] = CheckSeries(*values)  # new, or a new type
        return series

    def set_check_up(self, service: str, check: str, type_: str, up: bool) -> None:
        self.checks[(service, check)].up = up

    def remove_check(self, service: str, check: str, type_: str) -> None:
        self.checks.pop((service, check), None)
        labels = (service, check, type_)
        for error_labels in [k for k in self._error_labels if k[:3] == labels]:
            self._error_labels.discard(error_labels)
            self.probe_errors.remove(*error_labels)
        for metric, labels in (
            (self.probe_duration, (service, check, type_)),
            (self.mailflow_delivery, (service, check, type_)),
            (self.cert_expiry, (service, check, type_)),
        ):
            if metric is self.probe_duration and not self.per_check_histograms:
                continue  # shared by the service's other checks of this type
            try:
                metric.remove(*labels)
            except KeyError:
                pass

    def render(self, series: list[CheckSeries]) -> bytes:
        """The whole exposition; runs in a worker thread (``series`` listed on the loop)."""
        return generate_latest(self.registry) + render_checks(series, self._located)


class SnapshotCollector(Collector):
    """Yields service figures from the latest snapshot; never blocks."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # no fixed series; avoids calling collect() at registration

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        up = GaugeMetricFamily(
            "probed_service_up",
            "0 while any check of the service is in an outage",
            labels=["service"],
        )
        objective = GaugeMetricFamily(
            "probed_service_objective_ratio", "The service's SLA objective", labels=["service"]
        )
        avail = GaugeMetricFamily(
            "probed_service_availability_ratio",
            "Availability by SLA rules",
            labels=["service", "window"],
        )
        down = GaugeMetricFamily(
            "probed_service_downtime_seconds", "Counted downtime", labels=["service", "window"]
        )
        excluded = GaugeMetricFamily(
            "probed_service_excluded_seconds",
            "Outage time removed by exclusions",
            labels=["service", "window"],
        )
        unmonitored = GaugeMetricFamily(
            "probed_service_unmonitored_seconds", "Monitoring gaps", labels=["service", "window"]
        )
        budget = GaugeMetricFamily(
            "probed_service_error_budget_remaining_seconds",
            "This month's error budget left",
            labels=["service"],
        )
        budget_total = GaugeMetricFamily(
            "probed_service_error_budget_seconds",
            "This month's whole error budget",
            labels=["service"],
        )
        down_total = CounterMetricFamily(
            "probed_service_down_seconds",
            "Seconds this daemon has seen the service in an outage since it started",
            labels=["service"],
        )
        active = GaugeMetricFamily(
            "probed_service_exclusion_active",
            "1 while a live exclusion or maintenance window of this kind covers now",
            labels=["service", "kind"],
        )
        for name, is_up in snap.service_up.items():
            up.add_metric([name], 1.0 if is_up else 0.0)
            down_total.add_metric([name], snap.down_seconds.get(name, 0.0))
            kinds = snap.exclusion_active.get(name, frozenset())
            for kind in EXCLUSION_KINDS:
                active.add_metric([name, kind], 1.0 if kind in kinds else 0.0)
        for name, svc in snap.services.items():
            objective.add_metric([name], svc.objective)
            for window, fig in (
                ("month_to_date", svc.month_to_date),
                ("previous_month", svc.previous_month),
            ):
                if fig is None:
                    continue
                if fig.availability is not None:  # no test in the window: no sample, never 1
                    avail.add_metric([name, window], fig.availability)
                down.add_metric([name, window], fig.downtime_seconds)
                excluded.add_metric([name, window], fig.excluded_seconds)
                unmonitored.add_metric([name, window], fig.unmonitored_seconds)
            if svc.month_to_date is not None:
                budget.add_metric([name], svc.month_to_date.error_budget_remaining_seconds)
                budget_total.add_metric([name], svc.month_to_date.error_budget_seconds)
        yield from (up, objective, avail, down, excluded, unmonitored, budget, budget_total)
        yield from (down_total, active)


class SpoolCollector(Collector):
    """The write spool's state: what waits for an unwritable store, and what was dropped."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "probed_store_spool_records",
            "Records waiting in memory for the store to take writes again",
            value=self.spool.records,
        )
        dropped = CounterMetricFamily(
            "probed_store_spool_dropped",
            "Records dropped because the spool was full, by kind",
            labels=["kind"],
        )
        for kind in SPOOL_KINDS:
            dropped.add_metric([kind], float(self.spool.dropped[kind]))
        yield dropped
