"""Participant operations: enrol, update, withdraw, list. Every change is audited."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from notifications import outbox
from notifications.messages import MessageKind, compose
from notifications.models import PRIORITY_PARTICIPANT, MessageCategory, MessageStatus
from server import audit
from server.adherence import service as adherence
from server.alerts.models import Alert, AlertState
from server.auth.models import StaffUser
from server.auth.scoping import can_see_site, participants_query
from server.auth.service import actor_of
from server.clock import utcnow
from server.errors import Conflict, DomainError, ValidationFailed, field_error
from server.participants import entry_gate, rules
from server.participants.models import Locale, Participant, ParticipantStatus, Site
from server.protocols.definition import STOP_DATE_FACT, GateProvenance, Protocol
from server.protocols.models import Study
from server.protocols.service import protocol_of_study
from server.schedules import reminders
from server.schedules import service as schedules
from server.schedules.models import PENDING_STATUSES, ScheduleEvent
from server.schedules.rules import defer_out_of_quiet_hours

AUDIT_FIELDS = (
    "study_id",
    "site_id",
    "study_code",
    "cohort",
    "anchor_date",
    "status",
    "timezone",
    "locale",
    "phone_e164",
    "has_sms_consent",
    "quiet_hours_start",
    "quiet_hours_end",
)


# What a participant's reminders depend on beyond the schedule (a new time zone re-plans it,
# which writes them too).
REMINDER_INPUTS = frozenset({"phone_e164", "quiet_hours_start", "quiet_hours_end"})

# Statuses an entry gate decides the way out of (withdrawal stays a person's action).
GATED_STATUSES = frozenset({ParticipantStatus.SCREENING, ParticipantStatus.CONTINUES_MAINTENANCE})


@dataclass(frozen=True)
class Page:
    items: list[Participant]
    total: int
    page: int
    page_size: int


def _site_for(*, session: Session, user: StaffUser, site_id: int) -> Site:
    site = session.get(Site, site_id)
    # Same message whether the site exists or not: another site's existence does not leak.
    if site is None or not can_see_site(session=session, user=user, site_id=site_id):
        raise field_error("site_id", "no such site among your sites")
    return site


def _study_by_key(session: Session, key: str) -> Study:
    study = session.exec(select(Study).where(Study.key == key)).first()
    if study is None:
        raise field_error("study", "no such study")
    return study


def _check_timezone(tz: str) -> None:
    if not rules.is_valid_timezone(tz):
        raise field_error("timezone", "not a known IANA time zone (e.g. Europe/Paris)")


def _phone(raw: str | None, site: Site) -> str | None:
    if raw is None or raw == "":
        return None
    try:
        return rules.normalise_phone(raw, site.country)
    except ValueError as exc:
        raise field_error("phone", str(exc)) from None


def _check_study_code(code: str) -> None:
    problem = rules.study_code_problem(code) if code else None
    if problem:
        raise field_error("study_code", problem)


def _ensure_code_free(session: Session, study_id: int, code: str, exclude_id: int | None) -> None:
    q = select(Participant.id).where(
        Participant.study_id == study_id, Participant.study_code == code
    )
    if exclude_id is not None:
        q = q.where(Participant.id != exclude_id)
    if session.exec(q).first() is not None:
        raise Conflict(
            "study_code: already used in this study",
            {"study_code": ["already used in this study"]},
        )


def enroll(
    *,
    session: Session,
    user: StaffUser,
    study: str,
    site_id: int,
    study_code: str,
    timezone: str | None,
    now: datetime,
    cohort: str | None = None,
    anchor_date: date | None = None,
    status: ParticipantStatus = ParticipantStatus.SCREENING,
    locale: Locale = Locale.EN,
    phone: str | None = None,
    has_sms_consent: bool = False,
    eligibility: dict[str, dict[str, Any]] | None = None,
) -> Participant:
    """Enrol a participant at one of the user's sites (checked by `check_enrollment`, the same
    checks the enrolment form's dry run shows). In a protocol with an entry gate, the facts a
    person attests come in `eligibility` ({fact: {"value", "observed_on"}}); the gate then
    decides, on its own, when the participant enters monitoring."""
    checked = check_enrollment(
        session=session,
        user=user,
        study=study,
        site_id=site_id,
        study_code=study_code,
        timezone=timezone,
        cohort=cohort,
        anchor_date=anchor_date,
        status=status,
        phone=phone,
        has_sms_consent=has_sms_consent,
        eligibility=eligibility,
        now=now,
    )
    site, study_row, tz = checked.site, checked.study, checked.timezone
    phone_e164, cohort = checked.phone_e164, checked.cohort
    participant = Participant(
        study_id=study_row.id,  # type: ignore[arg-type]
        site_id=site.id,  # type: ignore[arg-type]
        study_code=study_code,
        cohort=cohort,
        anchor_date=anchor_date,
        status=status,
        timezone=tz,
        locale=locale,
        phone_e164=phone_e164,
        has_sms_consent=has_sms_consent,
        sms_consent_changed_at=now if has_sms_consent else None,
        created_at=now,
        updated_at=now,
    )
    session.add(participant)
    session.flush()
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="participant.create",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        after=audit.snapshot(participant, AUDIT_FIELDS),
    )
    if checked.attested:
        entry_gate.record_enrolment_attestations(
            session=session, participant=participant, user=user, attested=checked.attested, now=now
        )
    schedules.on_participant_changed(
        session=session,
        participant=participant,
        changed={"created"},
        now=now,
        actor=actor_of(user),
        actor_user_id=user.id,
        reason="enrolment",
    )
    entry_gate.evaluate(
        session=session,
        participant=participant,
        now=now,
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    queue_welcome(session=session, participant=participant, now=now)
    if participant.has_sms_consent and participant.phone_e164:
        from server.participants.mobile import quiet_hours_until, send_activation_code

        # The app's one-time code goes at enrolment (it expires; staff can send a new one), unless
        # it is the participant's night: it would expire before it could go.
        if quiet_hours_until(participant, now) is None:
            send_activation_code(
                session=session, participant=participant, now=now, actor=actor_of(user)
            )
    return participant


WELCOME_VALID_FOR = timedelta(days=3)


def queue_welcome(*, session: Session, participant: Participant, now: datetime) -> None:
    """The one welcome SMS (outside quiet hours) once a participant consents to SMS."""
    if not (participant.has_sms_consent and participant.phone_e164):
        return
    due = defer_out_of_quiet_hours(
        now,
        ZoneInfo(participant.timezone),
        participant.quiet_hours_start,
        participant.quiet_hours_end,
    )
    outbox.enqueue(
        session,
        dedupe_key=f"welcome:{participant.id}",
        category=MessageCategory.WELCOME,
        kind=MessageKind.WELCOME.value,
        to=participant.phone_e164,
        locale=participant.locale.value,
        # Composed (not a plain string): it carries no link, so staff see its text as it is.
        body=compose(MessageKind.WELCOME, participant.locale.value, code=participant.study_code),
        priority=PRIORITY_PARTICIPANT,
        intended_at=now,
        not_before_at=due,
        # A welcome that could not go out within days (an outage) is stale: never send it late.
        expires_at=due + WELCOME_VALID_FOR,
        participant_id=participant.id,
        now=now,
    )


def update(
    *,
    session: Session,
    user: StaffUser,
    participant: Participant,
    changes: dict[str, Any],
    reason: str | None,
    now: datetime,
) -> Participant:
    """Apply changes; trial-data changes need a reason. Nothing changed → nothing audited."""
    before = audit.snapshot(participant, AUDIT_FIELDS)
    new_values: dict[str, Any] = {}
    site = session.get(Site, participant.site_id)
    assert site is not None
    if "site_id" in changes and changes["site_id"] != participant.site_id:
        site = _site_for(session=session, user=user, site_id=changes["site_id"])
        new_values["site_id"] = site.id
    for key in (
        "study_code",
        "cohort",
        "anchor_date",
        "has_sms_consent",
        "quiet_hours_start",
        "quiet_hours_end",
    ):
        if key in changes:
            new_values[key] = changes[key]
    if "locale" in changes:
        new_values["locale"] = Locale(changes["locale"])
    if "timezone" in changes:
        _check_timezone(changes["timezone"])
        new_values["timezone"] = changes["timezone"]
    if "phone" in changes:
        new_values["phone_e164"] = _phone(changes["phone"], site)
    if "status" in changes:
        new_status = ParticipantStatus(changes["status"])
        if new_status == ParticipantStatus.WITHDRAWN:
            raise field_error("status", "use the withdraw action to withdraw a participant")
        if not rules.can_transition(participant.status, new_status):
            raise field_error(
                "status", f"cannot change from {participant.status.value} to {new_status.value}"
            )
        if new_status != participant.status and participant.status in GATED_STATUSES:
            _, protocol = protocol_of_study(session, participant.study_id)
            if protocol.entry_gate is not None:
                # Not a person's memory: the gate's facts move the participant (issue 17).
                raise Conflict(
                    f"{protocol.study}'s entry gate decides when a participant leaves "
                    f"{participant.status.value}: record its facts, or the investigator "
                    "overrides it with a reason (POST .../entry-gate/override)",
                    {"status": ["decided by the entry gate"]},
                )
        new_values["status"] = new_status
    changed = {k: v for k, v in new_values.items() if getattr(participant, k) != v}
    if not changed:
        return participant
    if participant.status in (ParticipantStatus.WITHDRAWN, ParticipantStatus.COMPLETED):
        raise Conflict(f"participant is {participant.status.value}; the record is closed")
    if rules.TRIAL_DATA_FIELDS & changed.keys() and not (reason and reason.strip()):
        fields = sorted(rules.TRIAL_DATA_FIELDS & changed.keys())
        raise ValidationFailed(
            f"reason: required when changing trial data ({', '.join(fields)})",
            {"reason": [f"required when changing {', '.join(fields)}"]},
        )
    if "study_code" in changed:
        _check_study_code(changed["study_code"])
        _ensure_code_free(session, participant.study_id, changed["study_code"], participant.id)
    has_consent = changed.get("has_sms_consent", participant.has_sms_consent)
    phone_after = changed.get("phone_e164", participant.phone_e164)
    if has_consent and not phone_after:
        raise field_error("phone", "SMS consent needs a phone number")
    if "cohort" in changed or "status" in changed:
        _, protocol = protocol_of_study(session, participant.study_id)
        status_after = changed.get("status", participant.status)
        resolved = schedules.resolve_cohort(
            protocol,
            changed.get("cohort", participant.cohort),
            required=status_after in schedules.PLANNING_STATUSES,
        )
        if resolved != participant.cohort:
            changed["cohort"] = resolved
    anchor_after = changed.get("anchor_date", participant.anchor_date)
    if changed.get("status", participant.status) in schedules.PLANNING_STATUSES and (
        anchor_after is None
    ):
        raise field_error("anchor_date", "required before the schedule can be planned")
    for key, value in changed.items():
        setattr(participant, key, value)
    if "has_sms_consent" in changed:
        participant.sms_consent_changed_at = now
    participant.updated_at = now
    session.add(participant)
    session.flush()
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="participant.update",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        before={k: before[k] for k in changed},
        after={k: audit.jsonable(v) for k, v in changed.items()},
        reason=reason,
    )
    schedules.on_participant_changed(
        session=session,
        participant=participant,
        changed=set(changed),
        now=now,
        actor=actor_of(user),
        actor_user_id=user.id,
        reason=reason,
    )
    if changed.get("has_sms_consent") is True:
        queue_welcome(session=session, participant=participant, now=now)
        reminders.materialize(session=session, now=now, participant_id=participant.id)
    elif changed.get("has_sms_consent") is False:
        outbox.cancel_where(
            session,
            participant_id=participant.id,
            now=now,
            reason="SMS consent withdrawn",
            status=MessageStatus.OPTED_OUT,
            categories=[MessageCategory.REMINDER, MessageCategory.WELCOME],
        )
    elif changed.keys() & REMINDER_INPUTS and participant.has_sms_consent:
        # The coming reminders' moments moved (quiet hours) or a phone came: every pending
        # event is looked at again (each keeps when its next reminder is due).
        reminders.materialize(session=session, now=now, participant_id=participant.id)
    return participant


def change_preferences(
    *, session: Session, participant: Participant, changes: dict[str, Any], now: datetime
) -> Participant:
    """The participant's own change of quiet hours or language (from the app), audited; new
    quiet hours re-plan the coming reminders as a staff change does."""
    before = {k: audit.jsonable(getattr(participant, k)) for k in changes}
    for key, value in changes.items():
        setattr(participant, key, Locale(value) if key == "locale" else value)
    if (
        participant.quiet_hours_start == participant.quiet_hours_end
        and ("quiet_hours_start" in changes or "quiet_hours_end" in changes)
        and participant.quiet_hours_start.hour != 0
    ):
        raise field_error("quiet_hours_end", "must differ from the start")
    participant.updated_at = now
    session.add(participant)
    audit.record(
        session=session,
        actor=f"participant:{participant.id}",
        action="participant.preferences",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        before=before,
        after={k: audit.jsonable(v) for k, v in changes.items()},
    )
    if changes.keys() & REMINDER_INPUTS and participant.has_sms_consent:
        session.flush()
        reminders.materialize(session=session, now=now, participant_id=participant.id)
    return participant


def withdraw(
    *, session: Session, user: StaffUser, participant: Participant, reason: str, now: datetime
) -> Participant:
    """Withdraw a participant (final); the reason is kept in the audit trail."""
    if not reason.strip():
        raise field_error("reason", "required")
    if participant.status == ParticipantStatus.WITHDRAWN:
        raise Conflict("participant is already withdrawn")
    if not rules.can_transition(participant.status, ParticipantStatus.WITHDRAWN):
        raise Conflict(f"participant is {participant.status.value}; cannot withdraw")
    before = {"status": participant.status.value, "withdrawn_at": None}
    participant.status = ParticipantStatus.WITHDRAWN
    participant.withdrawn_at = now
    participant.updated_at = now
    session.add(participant)
    session.flush()
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="participant.withdraw",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        before=before,
        after={"status": participant.status.value, "withdrawn_at": now},
        reason=reason,
    )
    schedules.on_participant_changed(
        session=session,
        participant=participant,
        changed={"status"},
        now=now,
        actor=actor_of(user),
        actor_user_id=user.id,
        reason=reason,
    )
    return participant


# The list's orders: enrolment order (the API's), or by study code (the page's).
LIST_ORDERS = ("id", "study_code")


def list_participants(
    *,
    session: Session,
    user: StaffUser,
    page: int,
    page_size: int,
    study: str | None = None,
    site_id: int | None = None,
    status: ParticipantStatus | None = None,
    cohort: str | None = None,
    search: str | None = None,
    adherence_below: int | None = None,
    now: datetime | None = None,
    order: str = "id",
) -> Page:
    """A page of the user's participants, filtered.

    `search` is a case-insensitive part of the study code. `adherence_below` (0–100, needs
    `now`) keeps the participants whose in-window % is under it, in SQL so that totals and
    pages are right; a participant with nothing due yet has no % and is never under."""
    if order not in LIST_ORDERS:
        raise ValueError(f"order must be one of {', '.join(LIST_ORDERS)}")
    q = participants_query(user)
    if study is not None:
        q = q.join(Study, Study.id == Participant.study_id).where(Study.key == study)  # type: ignore[arg-type]
    if site_id is not None:
        q = q.where(Participant.site_id == site_id)
    if status is not None:
        q = q.where(Participant.status == status)
    if cohort is not None:
        q = q.where(Participant.cohort == cohort)
    if search:
        q = q.where(col(Participant.study_code).icontains(search, autoescape=True))
    if adherence_below is not None:
        if now is None:
            raise ValueError("adherence_below needs now")
        # Counted only over the participants the other filters leave (the user's sites at
        # most), not over every event of every site.
        candidates = q.with_only_columns(col(Participant.id)).order_by(None)
        q = q.where(col(Participant.id).in_(_adherence_below(now, adherence_below, candidates)))
    total = session.exec(select(func.count()).select_from(q.subquery())).one()
    ordering = (
        [col(Participant.study_code), col(Participant.id)]
        if order == "study_code"
        else [col(Participant.id)]
    )
    items = session.exec(
        q.order_by(*ordering).offset((page - 1) * page_size).limit(page_size)
    ).all()
    return Page(items=list(items), total=int(total), page=page, page_size=page_size)


def _adherence_below(now: datetime, percent: int, candidates: Any) -> Any:
    """SELECT the ids of participants (among `candidates`, a SELECT of ids) whose in-window %
    is under `percent`.

    The counts are the adherence module's own SQL measures; the comparison stays in integers
    (100 × in window < percent × due) so no rounding decides who is listed."""
    figures = (
        sa.select(adherence.BY_PARTICIPANT.label("participant_id"), *adherence.measures(now))
        .select_from(ScheduleEvent)
        .where(adherence.BY_PARTICIPANT.in_(candidates))
        .group_by(adherence.BY_PARTICIPANT)
        .subquery()
    )
    return sa.select(figures.c.participant_id).where(
        figures.c.due > 0, figures.c.in_window * 100 < figures.c.due * percent
    )


@dataclass(frozen=True)
class ListDetails:
    """What the participants list shows next to each participant besides its own columns."""

    figures: adherence.Figures | None
    next_event: ScheduleEvent | None
    open_alerts: int
    unacknowledged_alerts: int


def list_details(
    *, session: Session, participants: list[Participant], now: datetime
) -> dict[int, ListDetails]:
    """Adherence, next event and unresolved alerts of a page of participants (three queries)."""
    ids = [p.id for p in participants if p.id is not None]
    if not ids:
        return {}
    figures = {
        int(key[0]): f
        for key, f in adherence.grouped(
            session=session,
            now=now,
            where=[col(Participant.id).in_(ids)],
            by=[adherence.BY_PARTICIPANT],
        )
    }
    # The next event: the earliest pending one whose window has not closed yet.
    rank = (
        sa.func.row_number()
        .over(
            partition_by=col(ScheduleEvent.participant_id),
            order_by=(col(ScheduleEvent.target_at), col(ScheduleEvent.id)),
        )
        .label("rank")
    )
    pending = (
        sa.select(col(ScheduleEvent.id).label("event_id"), rank)
        .where(
            col(ScheduleEvent.participant_id).in_(ids),
            col(ScheduleEvent.status).in_(PENDING_STATUSES),
            col(ScheduleEvent.window_close_at) > now,
        )
        .subquery()
    )
    next_events = {
        e.participant_id: e
        for e in session.exec(
            select(ScheduleEvent).where(
                col(ScheduleEvent.id).in_(sa.select(pending.c.event_id).where(pending.c.rank == 1))
            )
        )
    }
    alerts: dict[int, tuple[int, int]] = {}
    rows = session.execute(
        sa.select(
            col(Alert.participant_id),
            sa.func.count(),
            sa.func.coalesce(
                sa.func.sum(sa.case((col(Alert.state) == AlertState.OPEN, 1), else_=0)), 0
            ),
        )
        .where(col(Alert.participant_id).in_(ids), col(Alert.state) != AlertState.RESOLVED)
        .group_by(col(Alert.participant_id))
    ).all()
    for pid, unresolved, unacknowledged in rows:
        alerts[int(pid)] = (int(unresolved), int(unacknowledged))
    return {
        pid: ListDetails(
            figures=figures.get(pid),
            next_event=next_events.get(pid),
            open_alerts=alerts.get(pid, (0, 0))[0],
            unacknowledged_alerts=alerts.get(pid, (0, 0))[1],
        )
        for pid in ids
    }


@dataclass(frozen=True)
class EnrollmentCheck:
    """Enrolment values as `enroll` would store them: the site's zone filled in, the phone in
    E.164, the cohort resolved against the study's current protocol."""

    study: Study
    site: Site
    protocol: Protocol
    timezone: str
    phone_e164: str | None
    cohort: str | None
    # Gate facts (and the confirmed stop date) attested at enrolment: key -> (value, date).
    attested: dict[str, tuple[str, date]] = field(default_factory=dict)


def check_enrollment(
    *,
    session: Session,
    user: StaffUser,
    study: str,
    site_id: int,
    study_code: str,
    timezone: str | None,
    cohort: str | None,
    anchor_date: date | None,
    status: ParticipantStatus,
    phone: str | None,
    has_sms_consent: bool,
    eligibility: dict[str, dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> EnrollmentCheck:
    """Run the checks `enroll` runs, with its helpers, and save nothing (the dry run before
    an enrolment). Raises ValidationFailed naming every field at fault, not just the first."""
    errors: dict[str, list[str]] = {}
    conflicts: list[Conflict] = []

    def attempt(check: Any) -> Any:
        try:
            return check()
        except DomainError as exc:
            if isinstance(exc, Conflict):
                conflicts.append(exc)
            for name, messages in (exc.fields or {"_form": [exc.message]}).items():
                errors.setdefault(name, []).extend(messages)
            return None

    site = attempt(lambda: _site_for(session=session, user=user, site_id=site_id))
    attempt(lambda: _check_study_code(study_code))
    if site is not None and not site.failsafe_role and not site.failsafe_phone_e164:
        # Joint Commission NPSG 2C: nobody is enrolled where an unanswered alert reaches nobody.
        errors.setdefault("site_id", []).append(
            "this site has no fail-safe yet (whom an alert nobody acknowledges reaches): an "
            "admin sets failsafe_role or failsafe_phone_e164 (PATCH /api/v1/sites/{id})"
        )
    study_row = attempt(lambda: _study_by_key(session, study))
    tz = timezone or (site.timezone if site is not None else None)
    if tz is not None:
        attempt(lambda: _check_timezone(tz))
    phone_e164 = attempt(lambda: _phone(phone, site)) if site is not None else None
    if has_sms_consent and not phone and "phone" not in errors:
        errors["phone"] = ["SMS consent needs a phone number"]
    protocol = None
    resolved = None
    if study_row is not None:
        attempt(lambda: _ensure_code_free(session, study_row.id, study_code, None))
        try:
            _, protocol = protocol_of_study(session, study_row.id)
        except DomainError as exc:
            errors.setdefault("study", []).append(exc.message)
        else:
            resolved = attempt(
                lambda: schedules.resolve_cohort(
                    protocol, cohort, required=status in schedules.PLANNING_STATUSES
                )
            )
    if status in schedules.PLANNING_STATUSES and anchor_date is None:
        errors.setdefault("anchor_date", []).append(f"required when the status is {status.value}")
    attested: dict[str, tuple[str, date]] = {}
    if protocol is not None:
        tz_now = tz if tz is not None and rules.is_valid_timezone(tz) else "UTC"
        today = (now or utcnow()).astimezone(ZoneInfo(tz_now)).date()
        attested = _check_gate(
            protocol,
            status,
            cohort=resolved,
            anchor_date=anchor_date,
            eligibility=eligibility or {},
            today=today,
            errors=errors,
        )
    if errors:
        summary = " | ".join(f"{k}: {'; '.join(v)}" for k, v in sorted(errors.items()))
        # A study code already taken is a conflict (409), whatever else is wrong with the form.
        raise (Conflict if conflicts else ValidationFailed)(summary, errors)
    assert site is not None and study_row is not None and protocol is not None and tz is not None
    return EnrollmentCheck(
        study=study_row,
        site=site,
        protocol=protocol,
        timezone=tz,
        phone_e164=phone_e164,
        cohort=resolved,
        attested=attested,
    )


def _check_gate(
    protocol: Protocol,
    status: ParticipantStatus,
    *,
    cohort: str | None,
    anchor_date: date | None,
    eligibility: dict[str, dict[str, Any]],
    today: date,
    errors: dict[str, list[str]],
) -> dict[str, tuple[str, date]]:
    """The entry gate's enrolment rules; the attested facts, checked (problems go in `errors`).

    In screening, the gate's events are planned from the planned stop date (`anchor_date`; none
    yet: nothing is planned until it is set), and
    a person may attest the facts the protocol says a person attests, and the stop date. Past
    screening (a participant whose gate was passed before Stepdown), every fact must be attested
    with a passing value, and the anchor is the confirmed stop date."""
    gate = protocol.entry_gate
    if gate is None:
        if eligibility:
            errors.setdefault("eligibility", []).append(f"{protocol.study} has no entry gate")
        return {}
    if gate.on_pass.cohort is None and cohort is None and len(protocol.cohort_keys()) > 1:
        errors.setdefault("cohort", []).append(
            f"required for {protocol.study}: one of {', '.join(protocol.cohort_keys())}"
        )
    attested: dict[str, tuple[str, date]] = {}
    past_screening = status != ParticipantStatus.SCREENING
    for key, given in eligibility.items():
        name = f"eligibility.{key}"
        if not isinstance(given, dict):
            errors.setdefault(name, []).append("give value and observed_on")
            continue
        if key != STOP_DATE_FACT and not past_screening:
            try:
                fact = gate.fact(key)
            except KeyError:
                fact = None
            if fact is not None and fact.provenance != GateProvenance.ATTESTATION:
                errors.setdefault(name, []).append(
                    f"comes from a {fact.provenance.value}: the gate reads it on its own"
                )
                continue
        try:
            attested[key] = entry_gate.check_attestation(
                protocol,
                key,
                str(given.get("value") or ""),
                given.get("observed_on"),
                today,
                field=name,
            )
        except DomainError as exc:
            for fname, msgs in exc.fields.items():
                errors.setdefault(fname, []).extend(msgs)
    if past_screening:
        for fact in gate.facts:
            value = attested.get(fact.key, (None,))[0]
            if value is None or value not in fact.passes:
                errors.setdefault(f"eligibility.{fact.key}", []).append(
                    f"{fact.label}: attest {' or '.join(fact.passes)} (with its date) to enrol "
                    f"past screening, or enrol in screening and let the entry gate decide"
                )
        if isinstance(anchor_date, date):
            stop = attested.get(STOP_DATE_FACT)
            if stop is not None and stop[1] != anchor_date:
                errors.setdefault(f"eligibility.{STOP_DATE_FACT}", []).append(
                    "past screening, the anchor date is the confirmed stop date"
                )
            attested[STOP_DATE_FACT] = (anchor_date.isoformat(), anchor_date)
    return attested


def audit_history(
    *, session: Session, participant: Participant, include_related: bool = False
) -> list[audit.AuditEvent]:
    """The audit events about one participant, oldest first; with `include_related`, also
    those about its events, decisions, results, alerts, messages and questionnaire answers."""
    from notifications.models import OutboxMessage
    from server.results.models import LabResult
    from server.schedules.models import Decision
    from server.surveys.models import SurveyResponse

    e = audit.AuditEvent
    about = [sa.and_(col(e.entity) == "participant", col(e.entity_id) == str(participant.id))]
    if include_related:
        for entity, model in (
            ("schedule_event", ScheduleEvent),
            ("decision", Decision),
            ("lab_result", LabResult),
            ("alert", Alert),
            ("outbox_message", OutboxMessage),
            ("survey_response", SurveyResponse),
        ):
            table: Any = model
            ids = sa.select(sa.cast(table.id, sa.String)).where(
                table.participant_id == participant.id
            )
            about.append(sa.and_(col(e.entity) == entity, col(e.entity_id).in_(ids)))
    q = select(e).where(sa.or_(*about)).order_by(col(e.id))
    return list(session.exec(q).all())
