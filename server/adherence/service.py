"""Adherence: how well a participant, a site or a study keeps to the schedule.

Computed with one SQL aggregate grouped by event type; no event is loaded into Python.

Definitions (documented in the API too):
- due: events whose window has closed, plus events already completed (early or on time);
  cancelled and not-applicable events are never due;
- completed in window / early / late: completed on a local date inside / before / after the window;
- missed: marked missed, or still planned/open although the window has closed (the job may not have
  run yet);
- open: the window is open now and the event is not done;
- in-window %: completed in window / due;
- questionnaire compliance: questionnaires received (completed at any time) / questionnaires due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from server.adherence.rules import percentage
from server.participants.models import Participant
from server.schedules.models import EventStatus, EventType, ScheduleEvent


@dataclass(frozen=True)
class Figures:
    """Adherence counts for one event type (or all)."""

    event_type: str
    due: int
    completed_in_window: int
    completed_early: int
    completed_late: int
    missed: int
    open: int
    in_window_pct: float | None
    received: int
    compliance_pct: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for the API."""
        return dict(self.__dict__)


def _count(cond: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)


def _measures(now: datetime) -> list[Any]:
    """The adherence counts as labelled SQL aggregates (see the module docstring)."""
    e = ScheduleEvent
    status = col(e.status)
    closed = col(e.window_close_at) <= now
    completed = status == EventStatus.COMPLETED
    counted = status.notin_([EventStatus.CANCELLED, EventStatus.NOT_APPLICABLE])
    pending = status.in_([EventStatus.PLANNED, EventStatus.OPEN])
    in_window = sa.and_(
        completed,
        col(e.completed_on) >= col(e.window_open_date),
        col(e.completed_on) <= col(e.window_close_date),
    )
    early = sa.and_(completed, col(e.completed_on) < col(e.window_open_date))
    late = sa.and_(completed, col(e.completed_on) > col(e.window_close_date))
    missed = sa.or_(status == EventStatus.MISSED, sa.and_(pending, closed))
    open_now = sa.and_(pending, col(e.window_open_at) <= now, col(e.window_close_at) > now)
    due = sa.and_(counted, sa.or_(completed, status == EventStatus.MISSED, closed))
    return [
        _count(due).label("due"),
        _count(in_window).label("in_window"),
        _count(early).label("early"),
        _count(late).label("late"),
        _count(missed).label("missed"),
        _count(open_now).label("open"),
        _count(completed).label("received"),
    ]


# Group keys for `grouped`: the event's type, its participant, and the month its window closes
# (the month it fell due).
BY_EVENT_TYPE = col(ScheduleEvent.event_type)
BY_PARTICIPANT = col(ScheduleEvent.participant_id)
BY_YEAR = sa.extract("year", col(ScheduleEvent.window_close_date))
BY_MONTH = sa.extract("month", col(ScheduleEvent.window_close_date))


def grouped(
    *,
    session: Session,
    now: datetime,
    where: list[Any],
    by: list[Any],
    event_type: str | None = None,
) -> list[tuple[tuple[Any, ...], Figures]]:
    """Adherence figures per group (`by`: BY_EVENT_TYPE, BY_PARTICIPANT, BY_YEAR/BY_MONTH...),
    in one SQL aggregate over the events matching `where` (Participant is joined).

    `event_type` labels the figures (it decides whether questionnaire compliance applies)."""
    q = (
        sa.select(*by, *_measures(now))
        .select_from(ScheduleEvent)
        .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
        .where(*where)
        .group_by(*by)
        .order_by(*by)
    )
    out = []
    for row in session.execute(q).all():
        key = tuple(getattr(k, "value", k) for k in row[: len(by)])
        label = event_type or (str(key[0]) if by and by[0] is BY_EVENT_TYPE else "all")
        out.append((key, _figures(label, row[len(by) :])))
    return out


def aggregate(
    *, session: Session, now: datetime, where: list[Any]
) -> tuple[Figures, list[Figures]]:
    """Adherence figures (total, per event type) for the events matching `where`."""
    rows = grouped(session=session, now=now, where=where, by=[BY_EVENT_TYPE])
    per_type = [f for _, f in rows]
    totals = [
        sum(getattr(f, name) for f in per_type)
        for name in (
            "due",
            "completed_in_window",
            "completed_early",
            "completed_late",
            "missed",
            "open",
            "received",
        )
    ]
    total = _figures("all", totals)
    return total, per_type


def _figures(event_type: str, values: Any) -> Figures:
    due, in_window, early, late, missed, open_, received = (int(v) for v in values)
    is_questionnaire = event_type in (EventType.QUESTIONNAIRE.value, "all")
    q_due = due if event_type == EventType.QUESTIONNAIRE.value else None
    return Figures(
        event_type=event_type,
        due=due,
        completed_in_window=in_window,
        completed_early=early,
        completed_late=late,
        missed=missed,
        open=open_,
        in_window_pct=percentage(in_window, due),
        received=received,
        compliance_pct=percentage(received, q_due)
        if q_due is not None and is_questionnaire
        else None,
    )


def for_participant(*, session: Session, participant_id: int, now: datetime) -> dict[str, Any]:
    """Adherence of one participant."""
    return _result(session, now, [col(Participant.id) == participant_id])


def for_site(
    *, session: Session, site_id: int, now: datetime, study_id: int | None = None
) -> dict[str, Any]:
    """Adherence of one site (optionally one study there)."""
    where = [col(Participant.site_id) == site_id]
    if study_id is not None:
        where.append(col(Participant.study_id) == study_id)
    return _result(session, now, where)


def for_study(*, session: Session, study_id: int, site_ids: Any, now: datetime) -> dict[str, Any]:
    """Adherence of one study, across the given sites (the caller's)."""
    return _result(
        session,
        now,
        [col(Participant.study_id) == study_id, col(Participant.site_id).in_(site_ids)],
    )


def _result(session: Session, now: datetime, where: list[Any]) -> dict[str, Any]:
    total, per_type = aggregate(session=session, now=now, where=where)
    questionnaires = next((f for f in per_type if f.event_type == "questionnaire"), None)
    return {
        "as_of": now.isoformat(),
        "total": total.as_dict() | {"compliance_pct": None},
        "by_event_type": [f.as_dict() for f in per_type],
        "questionnaire_compliance": {
            "expected": questionnaires.due if questionnaires else 0,
            "received": questionnaires.received if questionnaires else 0,
            "pct": questionnaires.compliance_pct if questionnaires else None,
        },
    }
