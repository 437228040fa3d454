"""The acknowledgement-time report: reads each alert's moments (server/alerts/timing.py says what
they are and how the figures are counted) for the sites a user sees, and audits its exports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server import audit
from server.alerts import rules, timing
from server.alerts.models import Alert, AlertLog, Level
from server.auth.models import StaffUser
from server.auth.service import actor_of
from server.participants.models import Participant, Site
from server.results.models import LabResult

# The alert-log entries that mark a first notification and the fail-safe.
NOTIFIED = "tier_notified"
FAILSAFE = "failsafe_fired"
# Levels that ask for an acknowledgement (routine tasks ask for none: not measured).
MEASURED_LEVELS = (Level.CRITICAL, Level.URGENT)


@dataclass(frozen=True)
class Report:
    """The measured alerts of some sites over some months and their figures."""

    sites: dict[int, Site]
    months: list[str]
    alerts: list[timing.AlertTimes]
    by_site_month: dict[tuple[int, str], timing.Figures]
    total: timing.Figures

    def month_figures(self, site_id: int | None = None) -> list[tuple[str, timing.Figures]]:
        """Each month of the range with the figures of one site, or of every site together."""
        out = []
        for month in self.months:
            rows = [
                a
                for a in self.alerts
                if (site_id is None or a.site_id == site_id)
                and a.month(_zone(self.sites[a.site_id])) == month
            ]
            out.append((month, timing.figures(rows)))
        return out


def _zone(site: Site) -> ZoneInfo:
    return ZoneInfo(site.timezone)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def month_range(first: tuple[int, int], last: tuple[int, int]) -> list[str]:
    """The months from `first` to `last` (inclusive) as YYYY-MM."""
    out, (y, m) = [], first
    while (y, m) <= last:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def report(
    *, session: Session, sites: list[Site], first: tuple[int, int], last: tuple[int, int]
) -> Report:
    """The acknowledgement times of the given sites' alerts received from month `first` to
    `last` (site time)."""
    by_id = {s.id: s for s in sites if s.id is not None}
    months = month_range(first, last)
    # A day of margin each side: the months are the sites' own, the query's bounds are UTC.
    start = datetime(first[0], first[1], 1, tzinfo=UTC) - timedelta(days=1)
    end_y, end_m = (last[0] + 1, 1) if last[1] == 12 else (last[0], last[1] + 1)
    end = datetime(end_y, end_m, 1, tzinfo=UTC) + timedelta(days=1)
    received = sa.func.coalesce(col(LabResult.received_at), col(Alert.opened_at))
    notified = (
        select(AlertLog.alert_id, sa.func.min(AlertLog.at).label("at"))
        .where(AlertLog.what == NOTIFIED)
        .group_by(col(AlertLog.alert_id))
        .subquery()
    )
    failsafe = (
        select(AlertLog.alert_id, sa.func.min(AlertLog.at).label("at"))
        .where(AlertLog.what == FAILSAFE)
        .group_by(col(AlertLog.alert_id))
        .subquery()
    )
    q = (
        sa.select(Alert, received, notified.c.at, failsafe.c.at, col(Participant.study_code))
        .outerjoin(LabResult, col(LabResult.id) == col(Alert.result_id))
        .outerjoin(notified, notified.c.alert_id == col(Alert.id))
        .outerjoin(failsafe, failsafe.c.alert_id == col(Alert.id))
        .outerjoin(Participant, col(Participant.id) == col(Alert.participant_id))
        .where(
            col(Alert.site_id).in_(list(by_id)),
            col(Alert.level).in_(list(MEASURED_LEVELS)),
            col(Alert.kind).not_in(list(rules.SYSTEM_KINDS)),
            received >= start,
            received < end,
        )
        .order_by(received, col(Alert.id))
    )
    wanted = set(months)
    alerts: list[timing.AlertTimes] = []
    for alert, received_at, notified_at, failsafe_at, study_code in session.execute(q).all():
        acked = alert.acknowledged_at or alert.resolved_at
        times = timing.AlertTimes(
            alert_id=alert.id,
            site_id=alert.site_id,
            kind=alert.kind.value,
            level=alert.level.value,
            study_code=study_code,
            received_at=_utc(received_at),  # type: ignore[arg-type]
            opened_at=_utc(alert.opened_at),  # type: ignore[arg-type]
            first_notified_at=_utc(notified_at),
            acknowledged_at=_utc(acked),
            resolved_at=_utc(alert.resolved_at),
            failsafe_at=_utc(failsafe_at),
        )
        if times.month(_zone(by_id[alert.site_id])) in wanted:
            alerts.append(times)
    zones = {sid: _zone(s) for sid, s in by_id.items()}
    return Report(
        sites=by_id,
        months=months,
        alerts=alerts,
        by_site_month=timing.by_site_month(alerts, zones),
        total=timing.figures(alerts),
    )


def alert_row(a: timing.AlertTimes, site: Site) -> dict[str, Any]:
    """One alert's moments and minutes (the CSV's and the API's per-alert row)."""

    def iso(m: datetime | None) -> str | None:
        return m.isoformat() if m else None

    return {
        "alert_id": a.alert_id,
        "site_id": site.id,
        "site_code": site.code,
        "month": a.month(_zone(site)),
        "kind": a.kind,
        "level": a.level,
        "study_code": a.study_code,
        "received_at": iso(a.received_at),
        "first_notified_at": iso(a.first_notified_at),
        "acknowledged_at": iso(a.acknowledged_at),
        "resolved_at": iso(a.resolved_at),
        "failsafe_at": iso(a.failsafe_at),
        "minutes_to_first_notification": a.to_notify,
        "minutes_to_acknowledgement": a.to_ack,
        "minutes_to_resolution": a.to_resolve,
    }


def as_json(result: Report) -> dict[str, Any]:
    """The report as the API returns it."""
    return {
        "months": result.months,
        "ack_targets_minutes": list(timing.ACK_TARGETS_MINUTES),
        "total": result.total.as_dict(),
        "by_site_month": [
            {
                "site_id": site_id,
                "site_code": result.sites[site_id].code,
                "month": month,
                **figures.as_dict(),
            }
            for (site_id, month), figures in result.by_site_month.items()
        ],
        "alerts": [alert_row(a, result.sites[a.site_id]) for a in result.alerts],
    }


def record_export(
    *,
    session: Session,
    user: StaffUser,
    view: str,
    filters: dict[str, Any],
    row_count: int,
    site_ids: list[int],
    now: datetime,
) -> audit.AuditEvent:
    """Audit one CSV export of the report (`ack_report.export`)."""
    return audit.record_export(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        entity="ack_report",
        view=view,
        filters=filters,
        row_count=row_count,
        site_ids=site_ids,
        now=now,
    )


def this_month(now: datetime) -> tuple[int, int]:
    today: date = now.date()
    return today.year, today.month
