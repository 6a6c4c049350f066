"""``GET /badge/{service}.svg``: this month's availability, shields.io style (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from probed.core.accounting import ServiceFigures
from probed.reports.html import environment

# Verdana 11px advance widths (what shields.io measures with), coarse by class.
_NARROW = set("fijlrtI!.,:;'| ")
_WIDE = set("mwMW%@")
COLORS = {"met": "#3c8527", "missed": "#b35c00", "below": "#c02e22", "nodata": "#6b6f76"}


def text_width(text: str) -> int:
    width = 0.0
    for ch in text:
        width += 3.9 if ch in _NARROW else 10.0 if ch in _WIDE else 7.0
    return round(width)


@dataclass(frozen=True, slots=True)
class Badge:
    label: str
    message: str
    color: str

    @property
    def label_width(self) -> int:
        return text_width(self.label) + 12

    @property
    def message_width(self) -> int:
        return text_width(self.message) + 12


def service_badge(name: str, figures: ServiceFigures | None) -> Badge:
    """Green when the month meets its objective, orange when it misses it, red below
    the minimum, grey before the first test."""
    if figures is None or figures.period_seconds <= 0 or figures.availability is None:
        return Badge(name, "no data", COLORS["nodata"])
    shown = f"{_floor_percent(figures.availability)} %"
    state = "below" if figures.below_minimum else "met" if figures.met else "missed"
    return Badge(name, shown, COLORS[state])


def _floor_percent(ratio: float) -> str:
    # rounded down: a badge must never round a 99.4999 % miss up to "99.50 %"
    percent = Decimal(repr(ratio)) * 100
    return str(percent.quantize(Decimal("0.01"), rounding=ROUND_FLOOR))


def render_badge(badge: Badge) -> str:
    return environment().get_template("badge.svg.j2").render(b=badge)
