"""The read queries behind the Today page: what needs the care team now, at the user's sites.

Every query is scoped by the user's site memberships (optionally one of their sites), bounded
(`limit` rows plus a count of the rest), and does its joins in SQL rather than per row. Nothing
here writes: acting on a row goes through the domain services.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, func, select

from notifications.models import MessageStatus, OutboxMessage
from server.alerts import service as alerts
from server.alerts.models import Alert, AlertState, Level
from server.auth.models import Role, SiteMembership, StaffUser
from server.clock import local_date
from server.errors import NotFound
from server.participants.models import Participant, ParticipantStatus, Site
from server.protocols import service as protocols
from server.protocols.definition import Protocol
from server.protocols.models import Study
from server.results import service as results
from server.schedules import service as schedules
from server.schedules.models import (
    Decision,
    DecisionStatus,
    EventStatus,
    EventType,
    ScheduleEvent,
)

T = TypeVar("T")

LIMIT = 100
# A window that closed longer ago than this has left the worklist (adherence reports keep it).
OVERDUE_EVENT_DAYS = 30
# How far back a participant's last SMS is looked for (reminders come at least every 12 weeks).
LAST_SMS_DAYS = 120
FOLLOWED = (ParticipantStatus.ACTIVE, ParticipantStatus.OFF_TREATMENT_MONITORING)
# Messages the provider took: their outcome says whether the number works.
ATTEMPTED = (
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.UNDELIVERED,
    MessageStatus.FAILED,
)
NOT_DELIVERED = (MessageStatus.UNDELIVERED, MessageStatus.FAILED)


@dataclass
class Section(Generic[T]):
    """Up to `limit` rows of a worklist section and how many there are in all."""

    rows: list[T]
    total: int

    @property
    def more(self) -> int:
        """How many rows are not shown."""
        return self.total - len(self.rows)


@dataclass
class AlertRow:
    alert: Alert
    site: Site
    study_code: str | None
    acknowledged_by: str | None = None


@dataclass
class EventRow:
    event: ScheduleEvent
    participant: Participant
    days_overdue: int


@dataclass
class ResultRow:
    event: ScheduleEvent
    participant: Participant
    turnaround_days: int
    days_waiting: int


@dataclass
class UnreachableRow:
    participant: Participant
    reasons: list[str]


@dataclass
class DecisionRow:
    decision: Decision
    event: ScheduleEvent
    participant: Participant
    recommendation: str


@dataclass
class RouteRow:
    site: Site
    route: str
    tier: int
    recipients: str
    is_dead: bool
    warning: str
    admins: list[StaffUser] = field(default_factory=list)


def site_scope(user: StaffUser, site_id: int | None = None) -> Any:
    """A subquery of the site ids to show: the user's sites, or the one given if it is theirs."""
    q = select(SiteMembership.site_id).where(SiteMembership.user_id == user.id)
    if site_id is not None:
        q = q.where(SiteMembership.site_id == site_id)
    return q


def _limit(limit: int | None) -> int:
    return limit if limit is not None else LIMIT


def _section(session: Session, q: Any, limit: int | None) -> tuple[list[Any], int]:
    limit = _limit(limit)
    rows = list(session.exec(q.limit(limit)).all())
    if len(rows) < limit:
        return rows, len(rows)
    total = session.exec(select(func.count()).select_from(q.order_by(None).subquery())).one()
    return rows, int(total)


def _slice(items: list[T], limit: int | None) -> Section[T]:
    return Section(items[: _limit(limit)], len(items))


# --- alerts --------------------------------------------------------------------------------------

LEVEL_RANK = sa.case(
    (col(Alert.level) == Level.CRITICAL, 0),
    (col(Alert.level) == Level.URGENT, 1),
    else_=2,
)


def alerts_in_state(
    *,
    session: Session,
    user: StaffUser,
    state: AlertState,
    site_id: int | None = None,
    limit: int | None = None,
) -> Section[AlertRow]:
    """Alerts of one state at my sites, most urgent level first, then the oldest."""
    acker = aliased(StaffUser)
    since = Alert.opened_at if state == AlertState.OPEN else Alert.acknowledged_at
    q = (
        select(Alert, Site, Participant.study_code, acker.full_name)
        .join(Site, col(Site.id) == col(Alert.site_id))
        .join(Participant, col(Participant.id) == col(Alert.participant_id), isouter=True)
        .join(acker, col(acker.id) == col(Alert.acknowledged_by_user_id), isouter=True)
        .where(
            col(Alert.site_id).in_(site_scope(user, site_id)),
            col(Alert.state) == state,
        )
        .order_by(LEVEL_RANK, col(since), col(Alert.id))
    )
    rows, total = _section(session, q, limit)
    return Section([AlertRow(a, s, code, by) for a, s, code, by in rows], total)


# --- schedule ------------------------------------------------------------------------------------


def overdue_events(
    *,
    session: Session,
    user: StaffUser,
    now: datetime,
    site_id: int | None = None,
    limit: int | None = None,
) -> Section[EventRow]:
    """Events of followed participants whose window closed in the last 30 days without
    completion (missed, or still planned/open because the job has not run yet)."""
    q = (
        select(ScheduleEvent, Participant)
        .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
        .where(
            col(Participant.site_id).in_(site_scope(user, site_id)),
            col(Participant.status).in_(FOLLOWED),
            col(ScheduleEvent.status).in_(
                [EventStatus.MISSED, EventStatus.PLANNED, EventStatus.OPEN]
            ),
            col(ScheduleEvent.window_close_at) <= now,
            col(ScheduleEvent.window_close_at) > now - timedelta(days=OVERDUE_EVENT_DAYS),
        )
        .order_by(col(ScheduleEvent.window_close_at), col(ScheduleEvent.id))
    )
    rows, total = _section(session, q, limit)
    return Section(
        [
            EventRow(e, p, (schedules.local_today(p, now) - e.window_close_date).days)
            for e, p in rows
        ],
        total,
    )


def overdue_results(
    *,
    session: Session,
    user: StaffUser,
    now: datetime,
    site_id: int | None = None,
    limit: int | None = None,
) -> Section[ResultRow]:
    """Completed draws and scans still without a result after the assay's turnaround (the
    result watchdog's rule), longest waiting first."""
    found = results.results_overdue(session=session, now=now, site_ids=site_scope(user, site_id))
    found.sort(key=lambda r: (-r.days_waiting, r.event.id or 0))
    return _slice(
        [ResultRow(r.event, r.participant, r.turnaround_days, r.days_waiting) for r in found],
        limit,
    )


# How far ahead the "coming up" list looks (the week coordinators book in).
COMING_UP_DAYS = 7
# Decision points have their own section (Decisions due) and are not booked.
NOT_BOOKED = (EventType.DECISION_POINT,)


@dataclass
class ComingRow:
    event: ScheduleEvent
    participant: Participant
    site_code: str
    local_today: date

    @property
    def opens_ahead(self) -> bool:
        """The window has not opened yet (it opens within the coming days)."""
        return self.event.window_open_date > self.local_today

    @property
    def days_to_open(self) -> int:
        return (self.event.window_open_date - self.local_today).days

    @property
    def days_left(self) -> int:
        """Days after today still in the window (0: today is its last day)."""
        return (self.event.window_close_date - self.local_today).days

    @property
    def when(self) -> str:
        """What happens next to the window, in words ("opens in 3 days", "last day today")."""
        if self.opens_ahead:
            n = self.days_to_open
            return "opens tomorrow" if n == 1 else f"opens in {n} days"
        n = self.days_left
        if n <= 0:
            return "open, last day today"
        return "open, last day tomorrow" if n == 1 else f"open, last day in {n} days"


def coming_up_query(user: StaffUser, now: datetime, site_id: int | None = None) -> Any:
    """Pending events of followed participants at my sites whose window opens or closes in the
    next COMING_UP_DAYS days, the next change first (an opening, else the closing)."""
    horizon = now + timedelta(days=COMING_UP_DAYS)
    next_change = sa.case(
        (col(ScheduleEvent.window_open_at) > now, col(ScheduleEvent.window_open_at)),
        else_=col(ScheduleEvent.window_close_at),
    )
    return (
        select(ScheduleEvent, Participant, Site.code)
        .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
        .join(Site, col(Site.id) == col(Participant.site_id))
        .where(
            col(Participant.site_id).in_(site_scope(user, site_id)),
            col(Participant.status).in_(FOLLOWED),
            col(ScheduleEvent.status).in_([EventStatus.PLANNED, EventStatus.OPEN]),
            col(ScheduleEvent.event_type).not_in(NOT_BOOKED),
            sa.or_(
                sa.and_(
                    col(ScheduleEvent.window_open_at) > now,
                    col(ScheduleEvent.window_open_at) <= horizon,
                ),
                sa.and_(
                    col(ScheduleEvent.window_close_at) > now,
                    col(ScheduleEvent.window_close_at) <= horizon,
                ),
            ),
        )
        .order_by(next_change, col(Participant.study_code), col(ScheduleEvent.id))
    )


def coming_up(
    *,
    session: Session,
    user: StaffUser,
    now: datetime,
    site_id: int | None = None,
    limit: int | None = None,
) -> Section[ComingRow]:
    """Windows opening or closing in the coming week at my sites (the list coordinators book
    from), in one statement (the count rides along as a window function); `limit=0` means every
    row (the CSV export)."""
    q = coming_up_query(user, now, site_id)
    if limit == 0:
        found = [(e, p, code) for e, p, code in session.exec(q).all()]
        total = len(found)
    else:
        counted = session.exec(q.add_columns(func.count().over()).limit(_limit(limit))).all()
        found = [(e, p, code) for e, p, code, _ in counted]
        total = int(counted[0][-1]) if counted else 0
    out = [ComingRow(e, p, code, schedules.local_today(p, now)) for e, p, code in found]
    return Section(out, total)


# --- SMS reach -----------------------------------------------------------------------------------


def unreachable_participants(
    *,
    session: Session,
    user: StaffUser,
    now: datetime,
    site_id: int | None = None,
    limit: int | None = None,
) -> Section[UnreachableRow]:
    """Followed participants SMS cannot reach: no phone, no SMS consent (never given, or
    withdrawn by STOP), or the last SMS the provider took for their current number failed."""
    scope = site_scope(user, site_id)
    attempted_at = func.coalesce(OutboxMessage.last_attempt_at, OutboxMessage.created_at)
    ranked = (
        sa.select(
            col(OutboxMessage.participant_id).label("participant_id"),
            col(OutboxMessage.status).label("status"),
            col(OutboxMessage.error_code).label("error_code"),
            attempted_at.label("at"),
            func.row_number()
            .over(
                partition_by=col(OutboxMessage.participant_id),
                order_by=(attempted_at.desc(), col(OutboxMessage.id).desc()),
            )
            .label("rank"),
        )
        .join(Participant, col(Participant.id) == col(OutboxMessage.participant_id))
        .where(
            col(Participant.site_id).in_(scope),
            col(Participant.status).in_(FOLLOWED),
            # A failure to an old number says nothing about the number now on file.
            col(OutboxMessage.to_e164) == col(Participant.phone_e164),
            col(OutboxMessage.staff_user_id).is_(None),
            col(OutboxMessage.status).in_(ATTEMPTED),
            col(OutboxMessage.created_at) >= now - timedelta(days=LAST_SMS_DAYS),
        )
        .subquery()
    )
    # Only the participants whose last SMS failed, computed once (MATERIALIZED): joined as a
    # plain subquery, both databases re-scanned it for every participant (participants x
    # messages: 15 s for a 5,000-participant site on SQLite, bench/pages.py).
    last = (
        sa.select(ranked)
        .where(ranked.c.rank == 1, ranked.c.status.in_(NOT_DELIVERED))
        .cte("last_sms_failed")
        .prefix_with("MATERIALIZED")
    )
    last_failed = last.c.participant_id.is_not(None)
    q = (
        select(Participant, last.c.status, last.c.error_code, last.c.at)
        .join(last, last.c.participant_id == col(Participant.id), isouter=True)
        .where(
            col(Participant.site_id).in_(scope),
            col(Participant.status).in_(FOLLOWED),
            sa.or_(
                col(Participant.phone_e164).is_(None),
                col(Participant.has_sms_consent).is_(False),
                last_failed,
            ),
        )
        .order_by(col(Participant.study_code), col(Participant.id))
    )
    rows, total = _section(session, q, limit)
    out = []
    for participant, status, error_code, at in rows:
        reasons = []
        if not participant.phone_e164:
            reasons.append("no phone number")
        elif not participant.has_sms_consent:
            since = local_date(participant.sms_consent_changed_at, participant.timezone)
            reasons.append(f"SMS consent withdrawn on {since}" if since else "no SMS consent")
        if status is not None and MessageStatus(status) in NOT_DELIVERED:
            code = f", error {error_code}" if error_code else ""
            reasons.append(
                f"last SMS {MessageStatus(status).value}{code} "
                f"on {local_date(at, participant.timezone)}"
            )
        out.append(UnreachableRow(participant, reasons))
    return Section(out, total)


# --- decisions -----------------------------------------------------------------------------------


def decisions_due(
    *,
    session: Session,
    user: StaffUser,
    site_id: int | None = None,
    limit: int | None = None,
) -> Section[DecisionRow]:
    """Adaptive-arm decisions waiting for the care team, the earliest decision point first."""
    q = (
        select(Decision, ScheduleEvent, Participant, Study.protocol_key)
        .join(ScheduleEvent, col(ScheduleEvent.id) == col(Decision.event_id))
        .join(Participant, col(Participant.id) == col(Decision.participant_id))
        .join(Study, col(Study.id) == col(Participant.study_id))
        .where(
            col(Participant.site_id).in_(site_scope(user, site_id)),
            col(Participant.status).in_(FOLLOWED),
            col(Decision.status) == DecisionStatus.DUE,
        )
        .order_by(col(ScheduleEvent.target_at), col(Decision.id))
    )
    rows, total = _section(session, q, limit)
    cache: dict[tuple[str, str | None], Protocol | None] = {}
    out = []
    for decision, event, participant, protocol_key in rows:
        key = (protocol_key, participant.protocol_version)
        if key not in cache:
            cache[key] = _protocol(session, protocol_key, participant.protocol_version)
        out.append(DecisionRow(decision, event, participant, _recommendation(cache[key], decision)))
    return Section(out, total)


def _protocol(session: Session, protocol_key: str, version: str | None) -> Protocol | None:
    if version is None:
        return protocols.current_protocols().get(protocol_key)
    try:
        return protocols.protocol_version(
            session=session, protocol_key=protocol_key, version=version
        )
    except NotFound:
        return None


def _regimen_label(protocol: Protocol | None, key: str) -> str:
    if protocol is None or protocol.treatment is None:
        return key
    try:
        return protocol.treatment.regimen(key).label
    except KeyError:
        return key


def _recommendation(protocol: Protocol | None, decision: Decision) -> str:
    """The rule's recommendation in words, or the options it leaves to the team."""
    if decision.recommended_regimen:
        cycles = f" × {decision.recommended_cycles}" if decision.recommended_cycles else ""
        return _regimen_label(protocol, decision.recommended_regimen) + cycles
    options = schedules.decision_options(protocol, decision) if protocol else []
    if options:
        return "choose from: " + "; ".join(_regimen_label(protocol, o) for o in options)
    reason = schedules.decision_team_reason(protocol, decision) if protocol else None
    if reason:
        return f"the protocol leaves it to the care team: {reason}"
    return "no rule matched — care team decides"


# --- escalation routes ---------------------------------------------------------------------------


def route_problems(
    *, session: Session, user: StaffUser, site_id: int | None = None
) -> list[RouteRow]:
    """Escalation tiers of my sites that reach nobody (dead) or page every nurse because nobody
    is on call, with the sites' administrators to contact."""
    sites = session.exec(
        select(Site)
        .where(col(Site.id).in_(site_scope(user, site_id)), col(Site.is_active).is_(True))
        .order_by(col(Site.code))
    ).all()
    out = [
        RouteRow(
            site=site,
            route=tier["route"],
            tier=tier["tier"],
            recipients=tier["recipients"],
            is_dead=tier["is_dead"],
            warning=tier["warning"],
        )
        for site in sites
        for tier in alerts.route_health(session, site)
        if tier["is_dead"] or tier["warning"]
    ]
    if out:
        admins: dict[int, list[StaffUser]] = {}
        for admin, admin_site in session.exec(
            select(StaffUser, SiteMembership.site_id)
            .join(SiteMembership, col(SiteMembership.user_id) == col(StaffUser.id))
            .where(
                col(SiteMembership.site_id).in_({r.site.id for r in out}),
                StaffUser.role == Role.ADMIN,
                col(StaffUser.is_active).is_(True),
            )
            .order_by(col(StaffUser.full_name))
        ).all():
            admins.setdefault(admin_site, []).append(admin)
        for row in out:
            row.admins = admins.get(row.site.id, [])  # type: ignore[arg-type]
    return out


# --- the alerts list -----------------------------------------------------------------------------

ALERT_LIST_STATES = ("open", "acknowledged", "resolved", "all")


def alert_list(
    *,
    session: Session,
    user: StaffUser,
    state: str | None = None,
    site_id: int | None = None,
    page: int = 1,
    limit: int | None = None,
) -> Section[AlertRow]:
    """Alerts of my sites for the alerts page: by default those not resolved (open first, most
    severe, oldest); `resolved` newest first; `all` newest opened first. One page of `limit`."""
    acker = aliased(StaffUser)
    q = (
        select(Alert, Site, Participant.study_code, acker.full_name)
        .join(Site, col(Site.id) == col(Alert.site_id))
        .join(Participant, col(Participant.id) == col(Alert.participant_id), isouter=True)
        .join(acker, col(acker.id) == col(Alert.acknowledged_by_user_id), isouter=True)
        .where(col(Alert.site_id).in_(site_scope(user, site_id)))
    )
    if state in (None, "open", "acknowledged"):
        states = [AlertState(state)] if state else [AlertState.OPEN, AlertState.ACKNOWLEDGED]
        open_first = sa.case((col(Alert.state) == AlertState.OPEN, 0), else_=1)
        q = q.where(col(Alert.state).in_(states)).order_by(
            open_first, LEVEL_RANK, col(Alert.opened_at), col(Alert.id)
        )
    elif state == "resolved":
        q = q.where(col(Alert.state) == AlertState.RESOLVED).order_by(
            col(Alert.resolved_at).desc(), col(Alert.id).desc()
        )
    else:
        q = q.order_by(col(Alert.opened_at).desc(), col(Alert.id).desc())
    limit = _limit(limit)
    total = session.exec(select(func.count()).select_from(q.order_by(None).subquery())).one()
    rows = session.exec(q.offset((page - 1) * limit).limit(limit)).all()
    return Section([AlertRow(a, s, code, by) for a, s, code, by in rows], int(total))


def staff_names(session: Session, user_ids: set[int | None]) -> dict[int, str]:
    """Full names of staff users by id (for timelines); None ids are ignored."""
    wanted = [i for i in user_ids if i is not None]
    if not wanted:
        return {}
    rows = session.exec(
        select(StaffUser.id, StaffUser.full_name).where(col(StaffUser.id).in_(wanted))
    ).all()
    return {uid: name for uid, name in rows if uid is not None}
