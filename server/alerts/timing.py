"""Acknowledgement times, measured (issue 16 item 4): pure figures, no database.

For each alert that asks for an acknowledgement (critical and urgent; a routine task asks for
none), four moments:

- received: when the result that raised it reached Stepdown (a lab result's `received_at`); an
  alert with no result (a critical answer, a missed window) starts when it opened;
- first notification: the first tier notified (its SMS queued for the recipients);
- acknowledged: the first acknowledgement (by SMS reply, the page, the API, a keypad press; a
  resolution without an earlier acknowledgement acknowledges at that moment);
- resolved.

Each is measured in minutes from `received`, the clock the norms run on (CLSI GP47: a
critical-risk result reaches a responsible clinician within 1 hour; CAP Q-Probes: 15-30 minutes as
a goal). Per site and month (the month of `received` in the site's time zone):

- alerts: how many; acknowledged, resolved: how many of them were;
- to_notify / to_ack / to_resolve: p50, p90 and max over the alerts that reached that moment.
  Percentiles are nearest-rank: the smallest value with at least p % of the values at or below
  it (p50 of 1..10 is 5, p90 is 9), so every figure is a time some alert actually took;
- ack_within_30_pct / ack_within_60_pct: the share of ALL the month's alerts acknowledged within
  30 / 60 minutes of received (an alert never acknowledged counts against it);
- failsafe: alerts whose every tier was notified in vain and that reached the site's fail-safe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

# Minutes within which an acknowledgement counts (CAP's 30-minute goal, GP47's hour).
ACK_TARGETS_MINUTES = (30, 60)


@dataclass(frozen=True)
class AlertTimes:
    """The moments of one alert (UTC); None: not reached (yet)."""

    alert_id: int
    site_id: int
    kind: str
    level: str
    study_code: str | None
    received_at: datetime
    opened_at: datetime
    first_notified_at: datetime | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    failsafe_at: datetime | None = None

    def _minutes(self, moment: datetime | None) -> float | None:
        if moment is None:
            return None
        return round(max(0.0, (moment - self.received_at).total_seconds() / 60), 1)

    @property
    def to_notify(self) -> float | None:
        return self._minutes(self.first_notified_at)

    @property
    def to_ack(self) -> float | None:
        return self._minutes(self.acknowledged_at)

    @property
    def to_resolve(self) -> float | None:
        return self._minutes(self.resolved_at)

    def month(self, zone: ZoneInfo) -> str:
        """The month (YYYY-MM) of `received` at the site."""
        return f"{self.received_at.astimezone(zone):%Y-%m}"


def percentile(values: list[float], p: int) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p % of values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Spread:
    """p50, p90 and max of a duration in minutes (None when no alert reached it), and over how
    many alerts."""

    count: int
    p50: float | None
    p90: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        top = max(values) if values else None
        return cls(len(values), percentile(values, 50), percentile(values, 90), top)

    def as_dict(self) -> dict[str, float | int | None]:
        return {"count": self.count, "p50": self.p50, "p90": self.p90, "max": self.max}


@dataclass(frozen=True)
class Figures:
    """The figures of a set of alerts (one site's month, or any set)."""

    alerts: int
    acknowledged: int
    resolved: int
    to_notify: Spread
    to_ack: Spread
    to_resolve: Spread
    ack_within_30: int
    ack_within_60: int
    failsafe: int
    alert_ids: list[int] = field(default_factory=list)

    @property
    def ack_within_30_pct(self) -> float | None:
        return _pct(self.ack_within_30, self.alerts)

    @property
    def ack_within_60_pct(self) -> float | None:
        return _pct(self.ack_within_60, self.alerts)

    def as_dict(self) -> dict[str, object]:
        return {
            "alerts": self.alerts,
            "acknowledged": self.acknowledged,
            "resolved": self.resolved,
            "minutes_to_first_notification": self.to_notify.as_dict(),
            "minutes_to_acknowledgement": self.to_ack.as_dict(),
            "minutes_to_resolution": self.to_resolve.as_dict(),
            "acknowledged_within_30_min": self.ack_within_30,
            "acknowledged_within_30_min_pct": self.ack_within_30_pct,
            "acknowledged_within_60_min": self.ack_within_60,
            "acknowledged_within_60_min_pct": self.ack_within_60_pct,
            "reached_failsafe": self.failsafe,
        }


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def figures(alerts: Iterable[AlertTimes]) -> Figures:
    """The figures of a set of alerts."""
    rows = list(alerts)
    acks = [a.to_ack for a in rows if a.to_ack is not None]
    return Figures(
        alerts=len(rows),
        acknowledged=len(acks),
        resolved=sum(1 for a in rows if a.resolved_at is not None),
        to_notify=Spread.of([a.to_notify for a in rows if a.to_notify is not None]),
        to_ack=Spread.of(acks),
        to_resolve=Spread.of([a.to_resolve for a in rows if a.to_resolve is not None]),
        ack_within_30=sum(1 for m in acks if m <= ACK_TARGETS_MINUTES[0]),
        ack_within_60=sum(1 for m in acks if m <= ACK_TARGETS_MINUTES[1]),
        failsafe=sum(1 for a in rows if a.failsafe_at is not None),
        alert_ids=[a.alert_id for a in rows],
    )


def by_site_month(
    alerts: Iterable[AlertTimes], zones: dict[int, ZoneInfo]
) -> dict[tuple[int, str], Figures]:
    """Figures per (site id, month of received in the site's zone), sorted by site then month."""
    groups: dict[tuple[int, str], list[AlertTimes]] = {}
    for a in alerts:
        groups.setdefault((a.site_id, a.month(zones[a.site_id])), []).append(a)
    return {key: figures(groups[key]) for key in sorted(groups)}
