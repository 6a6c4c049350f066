"""Read what the store holds for a month and hand it to the pure accounting."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from probed.config import Config, Service
from probed.core import accounting, quorum
from probed.core.maintenance import expand
from probed.store.base import ServiceReads, Store


@dataclass(frozen=True, slots=True)
class MonthInputs:
    """What the store holds for one service-month, read at ``now``: the figures' inputs."""

    service: Service
    month: str
    tz: str
    now: float
    outages: list[accounting.OutageSpan]
    coverage: dict[str, list[accounting.Interval]]
    exclusions: list[accounting.ExclusionSpan]
    first_test_at: float | None

    def figures(self) -> accounting.ServiceFigures:
        """Pure: the month's billed figures from these inputs."""
        return quorum.service_figures(
            service=self.service.name,
            policy=self.service.policy,
            month=self.month,
            tz=self.tz,
            checks=check_records(self.service, self.outages, self.coverage),
            exclusions=self.exclusions,
            first_test_at=self.first_test_at,
            now=self.now,
        )


async def service_month(
    store: Store,
    service: Service,
    month: str,
    tz: str,
    now: float,
    locations: Sequence[str] | None = None,
) -> accounting.ServiceFigures:
    """The month's billed figures: every location's outages and coverage combined by each
    check's quorum (docs/sla-rules.md, "Several locations"); with one location and
    quorum 1 these are exactly the single-location figures.

    ``locations``: every location in the store, when the caller already asked for it.
    """
    return (await month_inputs(store, service, month, tz, now, locations)).figures()


async def month_inputs(
    store: Store,
    service: Service,
    month: str,
    tz: str,
    now: float,
    locations: Sequence[str] | None = None,
    stored: Sequence[accounting.ExclusionSpan] | None = None,
) -> MonthInputs:
    """Read what :func:`service_month` computes the figures from.

    ``stored``: the store's exclusions touching the month, when the caller already
    read them (they are the same for every service)."""
    window = accounting.month_period(month, tz)
    outages = await store.outages(service.name, window)
    names = set(await store.locations() if locations is None else locations)
    names.add(store.location)  # its own tests may not be flushed yet
    coverage = await _coverage(
        store, service.name, window, now, names | {o.location for o in outages}
    )
    return MonthInputs(
        service=service,
        month=month,
        tz=tz,
        now=now,
        outages=outages,
        coverage=coverage,
        exclusions=await service_exclusions(store, service, tz, window, stored),
        first_test_at=await store.first_test_at(service.name),
    )


async def _coverage(
    store: Store, service: str, window: accounting.Interval, now: float, names: Iterable[str]
) -> dict[str, list[accounting.Interval]]:
    """Each location's coverage of the service, as few disjoint intervals; locations that
    never tested the service in the window are left out.

    A location's coverage of a check is its coverage of the service: one daemon tests
    all of a service's checks, so their segments differ by less than one interval.
    """
    found: dict[str, list[accounting.Interval]] = {}
    for name in sorted(names):
        spans = accounting.union(await store.coverage(service, window, now, location=name))
        if spans:
            found[name] = spans
    return found


def check_records(
    service: Service,
    outages: Iterable[accounting.OutageSpan],
    coverage: Mapping[str, Sequence[accounting.Interval]],
) -> list[quorum.CheckRecords]:
    """Per check, every location's outages and coverage, with the check's quorum. Checks
    no longer configured keep the single-location rule (quorum 1)."""
    by_check: defaultdict[tuple[str, str], list[accounting.OutageSpan]] = defaultdict(list)
    for o in outages:
        by_check[o.check, o.location].append(o)
    quorums: dict[str, quorum.Quorum] = {c.name: c.quorum for c in service.checks}
    # A service that lists no check here still had its tests' coverage (quorum 1).
    names = [*quorums, *sorted({check for check, _ in by_check} - set(quorums))] or [""]
    where = sorted(set(coverage) | {loc for _, loc in by_check})
    covered = {loc: tuple(coverage.get(loc, ())) for loc in where}
    none: tuple[accounting.OutageSpan, ...] = ()
    return [
        quorum.CheckRecords(
            name,
            quorums.get(name, 1),
            tuple(
                quorum.LocationRecord(loc, tuple(by_check.get((name, loc), none)), covered[loc])
                for loc in where
            ),
        )
        for name in names
    ]


async def service_exclusions(
    store: Store,
    service: Service,
    tz: str,
    window: accounting.Interval,
    stored: Sequence[accounting.ExclusionSpan] | None = None,
) -> list[accounting.ExclusionSpan]:
    """Stored exclusions (live or revoked) and the config's recurring windows touching
    ``window``: config windows count exactly like flagged ones. ``stored``: the store's
    exclusions touching ``window``, already read."""
    if stored is None:
        stored = await store.exclusions(window)
    own = [e for e in stored if e.applies_to(service.name)]
    return own + expand(service.maintenance, service=service.name, tz=tz, span=window)


async def month_report(
    store: Store, config: Config, month: str, now: float, only: str | None = None
) -> list[accounting.ServiceFigures]:
    """Figures of every configured service (or ``only``) for one month."""
    if only is not None:  # one service: its own rows only
        one = config.services.get(only)
        return [] if one is None else [await service_month(store, one, month, config.timezone, now)]
    return await services_month(store, list(config.services.values()), month, config.timezone, now)


async def services_month(
    store: Store, services: Sequence[Service], month: str, tz: str, now: float
) -> list[accounting.ServiceFigures]:
    """:func:`service_month` of each of ``services``, from one read of the whole store
    (:meth:`~probed.store.base.Store.month_reads`) rather than a few per service."""
    window = accounting.month_period(month, tz)
    stored = await store.exclusions(window)
    reads = await store.month_reads(window, now)
    found = []
    for service in services:
        got = reads.get(service.name, ServiceReads())
        inputs = MonthInputs(
            service=service,
            month=month,
            tz=tz,
            now=now,
            outages=got.outages,
            coverage={
                name: spans
                for name in sorted(got.coverage)
                if (spans := accounting.union(got.coverage[name]))
            },
            exclusions=await service_exclusions(store, service, tz, window, stored),
            first_test_at=got.first_test_at,
        )
        found.append(inputs.figures())
    return found


def previous_month(month: str) -> str:
    year, mon = accounting.parse_month(month)
    return f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"
