"""Alertmanager: POST {url}/api/v2/alerts; an outage fires an alert, its end resolves it.

Alertmanager forgets an alert that is not re-sent (it resolves it after its
``endsAt``), so firing alerts carry ``endsAt`` a few resend periods ahead, as
Prometheus does, and are re-sent every ``resend_every``. The alert that fired
is remembered so that its resolution carries the very same labels even when
the severity changed meanwhile (labels are an alert's identity).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import aiohttp

from probed.core.events import Event, EventKind
from probed.core.times import iso
from probed.hooks.base import Envelope, HookConfig, HookType, HttpUrl, post_json
from probes.base import Duration

# Names of their own: the Prometheus rules' alerts (ProbedServiceDown, ...) page, these
# feed tickets with what the rules cannot carry (reasons, outage id). One vocabulary:
# severity is "ticket" as in the rules; probed's P1/P2/P3 is the "priority" label.
_ALERTNAMES: dict[EventKind, str] = {
    "outage_opened": "ProbedEventCheckDown",
    "outage_extended": "ProbedEventCheckDown",
    "outage_closed": "ProbedEventCheckDown",
    "service_down": "ProbedEventServiceDown",
    "service_up": "ProbedEventServiceDown",
    "budget_threshold": "ProbedEventBudgetUsed",
    "objective_missed": "ProbedEventObjectiveMissed",
    "location_outage_opened": "ProbedEventLocationCheckDown",
    "location_outage_closed": "ProbedEventLocationCheckDown",
}
SEVERITY = "ticket"
SOURCE = "probed"
_FIRING = frozenset({"outage_opened", "outage_extended", "service_down", "location_outage_opened"})
_RESOLVING = frozenset({"outage_closed", "service_up", "location_outage_closed"})
RESEND_HORIZON = 4  # firing alerts expire after this many missed resends
Key: TypeAlias = tuple[str, str, str]  # alertname, service, check
Alert: TypeAlias = dict[str, Any]


class AlertmanagerConfig(HookConfig):
    type: Literal["alertmanager"]
    url: HttpUrl  # the base URL, e.g. http://127.0.0.1:9093
    resend_every: Duration = 60.0
    generator_url: HttpUrl | None = None


class Alertmanager:
    def __init__(self, config: AlertmanagerConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.resend_every = config.resend_every
        self.endpoint = config.url.rstrip("/") + "/api/v2/alerts"
        self.active: dict[Key, Alert] = {}  # firing alerts as last sent, without endsAt

    async def send(self, envelope: Envelope) -> None:
        key, alert = self._alert(envelope.event)
        await self._post([alert])
        self._track(envelope.event.kind, key, alert)

    def restore(self, delivered: Sequence[Envelope]) -> None:
        for envelope in delivered:
            key, alert = self._alert(envelope.event)
            self._track(envelope.event.kind, key, alert)

    async def resend(self) -> None:
        if self.active:
            await self._post([{**a, "endsAt": self._horizon()} for a in self.active.values()])

    def _alert(self, event: Event) -> tuple[Key, Alert]:
        name = _ALERTNAMES[event.kind]
        location = event.extra.get("location")
        # one alert per location for a location's own outage, one for the check otherwise
        where = f"{event.check or ''}@{location}" if location else event.check or ""
        key: Key = (name, event.service, where)
        remembered = self.active.get(key)
        labels = {
            "alertname": name,
            "service": event.service,
            "severity": SEVERITY,
            "priority": event.severity,
            "source": SOURCE,
        }
        if event.check:
            labels["check"] = event.check
        if location and event.kind.startswith("location_"):
            labels["location"] = str(location)
        if event.kind == "budget_threshold":
            labels["threshold"] = str(event.extra.get("threshold_percent"))
        if remembered is not None:
            labels = remembered["labels"]
        start = (
            remembered["startsAt"] if remembered else iso(min(event.start or event.at, event.at))
        )
        alert: Alert = {
            "labels": labels,
            "annotations": _annotations(event),
            "startsAt": start,
            "endsAt": self._ends_at(event),
        }
        if self.config.generator_url:
            alert["generatorURL"] = self.config.generator_url
        return key, alert

    def _ends_at(self, event: Event) -> str | None:
        if event.kind in _RESOLVING:
            return iso(event.at)
        if event.kind in _FIRING:
            return self._horizon()
        month_end = event.extra.get("month_end")  # budget events hold until the month ends
        return month_end if isinstance(month_end, str) else None

    def _horizon(self) -> str | None:
        return iso(time.time() + RESEND_HORIZON * self.resend_every)

    def _track(self, kind: EventKind, key: Key, alert: Alert) -> None:
        if kind in _FIRING:
            self.active[key] = {k: v for k, v in alert.items() if k != "endsAt"}
        elif kind in _RESOLVING:
            self.active.pop(key, None)

    async def _post(self, alerts: list[Alert]) -> None:
        body = json.dumps([{k: v for k, v in a.items() if v is not None} for a in alerts])
        await post_json(self.session, self.endpoint, body.encode(), {})


def _annotations(event: Event) -> dict[str, str]:
    notes = {"summary": event.summary or f"{event.kind} {event.service}", "event": event.kind}
    if event.reasons:
        notes["description"] = "; ".join(dict.fromkeys(event.reasons))
    if event.outage_id is not None:
        notes["outage_id"] = str(event.outage_id)
    return notes


HOOK = HookType(name="alertmanager", config=AlertmanagerConfig, build=Alertmanager)
