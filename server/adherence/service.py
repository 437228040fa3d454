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

The care-team pages group the same counts by site × study, event type and month (the month the
window closes, i.e. the month the event fell due), list the participants behind any count, and
record every CSV export in the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from server import audit
from server.adherence.rules import percentage
from server.auth.models import StaffUser
from server.auth.service import actor_of
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


def measures(now: datetime) -> list[Any]:
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
    having: str | None = None,
) -> list[tuple[tuple[Any, ...], Figures]]:
    """Adherence figures per group (`by`: BY_EVENT_TYPE, BY_PARTICIPANT, BY_YEAR/BY_MONTH...),
    in one SQL aggregate over the events matching `where` (Participant is joined).

    `event_type` labels the figures (it decides whether questionnaire compliance applies);
    `having` (a measure: due, in_window, early, late, missed, open, received) keeps only the
    groups where that count is above zero."""
    measured = measures(now)
    q = (
        sa.select(*by, *measured)
        .select_from(ScheduleEvent)
        .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
        .where(*where)
        .group_by(*by)
        .order_by(*by)
    )
    if having is not None:
        # HAVING repeats the aggregate: PostgreSQL does not accept an output alias there.
        q = q.having(next(m for m in measured if m.name == having).element > 0)
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


# --- the care-team pages ----------------------------------------------------------------------

# The counts a page can link to (name in the URL → attribute of Figures).
MEASURES: dict[str, str] = {
    "due": "due",
    "in_window": "completed_in_window",
    "early": "completed_early",
    "late": "completed_late",
    "missed": "missed",
    "open": "open",
    "received": "received",
}

# "How we count", in the words of the pages (the module docstring is the reference).
DEFINITIONS: tuple[tuple[str, str], ...] = (
    (
        "Due",
        "events whose window has closed, plus events already completed (early or on time); "
        "cancelled and not-applicable events are never due.",
    ),
    (
        "In window / early / late",
        "completed on a local date inside / before / after the event's window.",
    ),
    (
        "Missed",
        "marked missed, or still planned or open although the window has closed.",
    ),
    ("Open", "the window is open now and the event is not done yet."),
    ("In-window %", "completed in window ÷ due."),
    (
        "Questionnaire compliance",
        "questionnaires received (completed at any time) ÷ questionnaires due.",
    ),
    (
        "Month",
        "the month the event's window closes, i.e. the month it fell due (an event open now "
        "counts in the month its window will close).",
    ),
)


@dataclass(frozen=True)
class Tally:
    """Adherence counts of one group over every event type, with questionnaire compliance.

    Counts add up, so the pages' totals are sums of the groups (as `aggregate` does)."""

    due: int = 0
    in_window: int = 0
    early: int = 0
    late: int = 0
    missed: int = 0
    open: int = 0
    received: int = 0
    questionnaires_due: int = 0
    questionnaires_received: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @classmethod
    def of(cls, figures: Figures, event_type: str) -> Tally:
        """The tally of one event type's figures."""
        is_questionnaire = event_type == EventType.QUESTIONNAIRE.value
        return cls(
            **{name: getattr(figures, attr) for name, attr in MEASURES.items()},
            questionnaires_due=figures.due if is_questionnaire else 0,
            questionnaires_received=figures.received if is_questionnaire else 0,
        )

    def count(self, measure: str) -> int:
        """The count of a measure (a key of MEASURES)."""
        return int(getattr(self, measure))

    @property
    def in_window_pct(self) -> float | None:
        return percentage(self.in_window, self.due)

    @property
    def compliance_pct(self) -> float | None:
        return percentage(self.questionnaires_received, self.questionnaires_due)


@dataclass(frozen=True)
class Report:
    """Adherence of a selection of events, by site × study, by event type and by month."""

    total: Tally
    by_site_study: dict[tuple[int, int], Tally]
    by_event_type: dict[str, Tally]
    by_month: dict[tuple[int, int], Tally]


def page_filters(
    *,
    site_ids: Any,
    site_id: int | None = None,
    study_id: int | None = None,
    event_type: str | None = None,
    closes_from: date | None = None,
    closes_before: date | None = None,
) -> list[Any]:
    """The `where` of a page's selection: the user's sites (`site_ids`, a subquery), then
    optionally one site, one study, one event type, windows closing in [from, before)."""
    where: list[Any] = [col(Participant.site_id).in_(site_ids)]
    if site_id is not None:
        where.append(col(Participant.site_id) == site_id)
    if study_id is not None:
        where.append(col(Participant.study_id) == study_id)
    if event_type is not None:
        where.append(col(ScheduleEvent.event_type) == EventType(event_type))
    if closes_from is not None:
        where.append(col(ScheduleEvent.window_close_date) >= closes_from)
    if closes_before is not None:
        where.append(col(ScheduleEvent.window_close_date) < closes_before)
    return where


def report(*, session: Session, now: datetime, where: list[Any]) -> Report:
    """Adherence by site × study, event type and month, from ONE SQL aggregate grouped by all
    four; the tables are sums of its rows, so they always agree with each other."""
    by = [col(Participant.site_id), col(Participant.study_id), BY_YEAR, BY_MONTH, BY_EVENT_TYPE]
    total = Tally()
    by_site_study: dict[tuple[int, int], Tally] = {}
    by_event_type: dict[str, Tally] = {}
    by_month: dict[tuple[int, int], Tally] = {}
    for key, figures in grouped(session=session, now=now, where=where, by=by):
        site_id, study_id, year, month, event_type = key
        tally = Tally.of(figures, str(event_type))
        total += tally
        _add(by_site_study, (int(site_id), int(study_id)), tally)
        _add(by_event_type, str(event_type), tally)
        _add(by_month, (int(year), int(month)), tally)
    return Report(
        total=total,
        by_site_study=dict(sorted(by_site_study.items())),
        by_event_type=dict(sorted(by_event_type.items(), key=lambda kv: _type_order(kv[0]))),
        by_month=dict(sorted(by_month.items())),
    )


def _add(table: dict[Any, Tally], key: Any, tally: Tally) -> None:
    table[key] = table.get(key, Tally()) + tally


def _type_order(event_type: str) -> int:
    order = [t.value for t in EventType]
    return order.index(event_type) if event_type in order else len(order)


@dataclass(frozen=True)
class ParticipantCount:
    """One participant behind a count: their count for the measure, and their figures."""

    participant_id: int
    study_code: str
    site_id: int
    study_id: int
    count: int
    figures: Figures


def participants_behind(
    *, session: Session, now: datetime, where: list[Any], measure: str
) -> list[ParticipantCount]:
    """The participants whose count for `measure` is above zero among the events matching
    `where` (one SQL aggregate per participant, HAVING count > 0), largest count first.

    Their counts add up to the same measure's total over `where`."""
    attr = MEASURES[measure]
    by = [
        BY_PARTICIPANT,
        col(Participant.study_code),
        col(Participant.site_id),
        col(Participant.study_id),
    ]
    rows = [
        ParticipantCount(
            participant_id=int(pid),
            study_code=str(code),
            site_id=int(site_id),
            study_id=int(study_id),
            count=int(getattr(figures, attr)),
            figures=figures,
        )
        for (pid, code, site_id, study_id), figures in grouped(
            session=session, now=now, where=where, by=by, having=measure
        )
    ]
    return sorted(rows, key=lambda r: (-r.count, r.study_code))


def record_export(
    *,
    session: Session,
    user: StaffUser,
    view: str,
    filters: dict[str, Any],
    row_count: int,
    now: datetime,
    site_ids: Iterable[int] = (),
) -> audit.AuditEvent:
    """Audit one adherence CSV export: who, which view with which filters, how many rows."""
    sites = sorted(set(site_ids))
    return audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="adherence.export",
        entity="adherence",
        entity_id=view,
        site_id=sites[0] if len(sites) == 1 else None,
        now=now,
        after={"view": view, "filters": filters, "rows": row_count, "site_ids": sites},
    )
