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


def aggregate(
    *, session: Session, now: datetime, where: list[Any]
) -> tuple[Figures, list[Figures]]:
    """Adherence figures (total, per event type) for the events matching `where`."""
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
    q = (
        sa.select(
            col(e.event_type),
            _count(due).label("due"),
            _count(in_window).label("in_window"),
            _count(early).label("early"),
            _count(late).label("late"),
            _count(missed).label("missed"),
            _count(open_now).label("open"),
            _count(completed).label("received"),
        )
        .select_from(e)
        .join(Participant, col(Participant.id) == col(e.participant_id))
        .where(*where)
        .group_by(col(e.event_type))
        .order_by(col(e.event_type))
    )
    rows = session.execute(q).all()
    per_type = [_figures(str(getattr(r[0], "value", r[0])), r[1:]) for r in rows]
    totals = [sum(int(r[i]) for r in rows) for i in range(1, 8)]
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
