"""Read what the store holds for a month and hand it to the pure accounting."""

from __future__ import annotations

from probed.config import Config, Service
from probed.core import accounting
from probed.core.maintenance import expand
from probed.store.base import Store


async def service_month(
    store: Store, service: Service, month: str, tz: str, now: float
) -> accounting.ServiceFigures:
    window = accounting.month_period(month, tz)
    return accounting.service_figures(
        service=service.name,
        policy=service.policy,
        month=month,
        tz=tz,
        outages=await store.outages(service.name, window),
        exclusions=await service_exclusions(store, service, tz, window),
        coverage=await store.coverage(service.name, window, now),
        first_test_at=await store.first_test_at(service.name),
        now=now,
    )


async def service_exclusions(
    store: Store, service: Service, tz: str, window: accounting.Interval
) -> list[accounting.ExclusionSpan]:
    """Stored exclusions (live or revoked) and the config's recurring windows touching
    ``window``: config windows count exactly like flagged ones."""
    stored = [e for e in await store.exclusions(window) if e.applies_to(service.name)]
    return stored + expand(service.maintenance, service=service.name, tz=tz, span=window)


async def month_report(
    store: Store, config: Config, month: str, now: float, only: str | None = None
) -> list[accounting.ServiceFigures]:
    """Figures of every configured service (or ``only``) for one month."""
    return [
        await service_month(store, service, month, config.timezone, now)
        for name, service in config.services.items()
        if only is None or name == only
    ]


def previous_month(month: str) -> str:
    year, mon = accounting.parse_month(month)
    return f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"
