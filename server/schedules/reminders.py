"""Participant reminders: planned from the protocol's reminder plans, written to the outbox.

A job materialises the reminders whose moment falls in the next 48 hours (and catches up on any
whose moment passed but that still make sense), so the outbox holds only near-term rows whatever
the size of the study. Each reminder has one dedupe key (participant, event and its target day,
reminder kind, channel): running the job again, or twice at once, writes nothing new.
Reminders follow their event: completing, cancelling or moving it cancels its pending reminders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from notifications import outbox
from notifications.messages import MessageKind, Sms, compose
from notifications.models import PRIORITY_REMINDER, MessageCategory, OutboxMessage
from server.participants.models import Participant
from server.protocols.definition import Protocol, Reminder
from server.schedules import rules
from server.schedules.models import PENDING_STATUSES, EventType, ScheduleEvent

HORIZON = timedelta(hours=48)
# Reminders start at most this long before a window opens (window_soon: 3 days; kept generous).
LEAD = timedelta(days=7)

MESSAGE_FOR_TYPE = {
    EventType.CTDNA_DRAW: MessageKind.REMINDER_BLOOD_DRAW,
    EventType.BLOOD_WORK: MessageKind.REMINDER_BLOOD_DRAW,
    EventType.TUMOR_MARKERS: MessageKind.REMINDER_BLOOD_DRAW,
    EventType.IMAGING: MessageKind.REMINDER_SCAN,
    EventType.CLINIC_VISIT: MessageKind.REMINDER_VISIT,
    EventType.TREATMENT_CYCLE: MessageKind.REMINDER_VISIT,
    EventType.QUESTIONNAIRE: MessageKind.REMINDER_QUESTIONNAIRE,
}


@dataclass(frozen=True)
class PlannedReminder:
    """One reminder of one event."""

    kind: str
    message: MessageKind
    intended_at: datetime
    not_before_at: datetime
    expires_at: datetime


def event_ref(event_id: int | None) -> str:
    """The outbox reference of an event's messages."""
    return f"event:{event_id}"


def specs_for(protocol: Protocol, event: ScheduleEvent) -> list[Reminder]:
    """The reminder plan of an event: its item's own, else its event type's."""
    try:
        item = protocol.item(event.item_id)
        own = item.reminders
    except (KeyError, ValueError):
        own = None
    if own is not None:
        return list(own)
    return list(protocol.reminders.get(event.event_type.value, []))  # type: ignore[call-overload]


def plan_event(
    protocol: Protocol, participant: Participant, event: ScheduleEvent
) -> list[PlannedReminder]:
    """Every reminder of an event, with quiet hours applied (pure given its inputs)."""
    if event.event_type not in MESSAGE_FOR_TYPE:
        return []
    zone = ZoneInfo(participant.timezone)
    default_at = event.target_at.astimezone(zone).time().replace(tzinfo=None)
    planned = []
    for spec in specs_for(protocol, event):
        intended = rules.reminder_moment(
            relative_to=spec.relative_to,
            offset_days=spec.offset.delta().days if not spec.offset.is_calendar else 0,
            at=spec.at or default_at,
            target_date=event.target_date,
            window_open_date=event.window_open_date,
            window_close_date=event.window_close_date,
            zone=zone,
        )
        not_before = rules.defer_out_of_quiet_hours(
            intended, zone, participant.quiet_hours_start, participant.quiet_hours_end
        )
        expires = rules.reminder_expiry(
            intended_local_day=intended.astimezone(zone).date(),
            target_date=event.target_date,
            window_close_at=event.window_close_at,
            zone=zone,
        )
        message = (
            MessageKind.REMINDER_OVERDUE
            if spec.kind == "overdue"
            else MESSAGE_FOR_TYPE[event.event_type]
        )
        planned.append(PlannedReminder(spec.kind, message, intended, not_before, expires))
    return planned


def _dedupe_key(participant: Participant, event: ScheduleEvent, kind: str) -> str:
    # One reminder per (participant, event on its target day, kind, channel). The consent epoch
    # is part of it: reminders withdrawn at STOP come back after START, never twice before.
    epoch = (
        int(participant.sms_consent_changed_at.timestamp())
        if participant.sms_consent_changed_at
        else 0
    )
    return (
        f"reminder:{participant.id}:{event.key}:{event.target_date.isoformat()}:{kind}:sms:c{epoch}"
    )


def reminder_text(participant: Participant, event: ScheduleEvent, message: MessageKind) -> Sms:
    """The text of one reminder of an event, rendered now: a questionnaire's carries a signed
    survey link (a bearer secret, hidden from staff), made afresh on each call."""
    params: dict[str, Any] = {
        "code": participant.study_code,
        "when": event.target_at,
        "tz": participant.timezone,
    }
    if message == MessageKind.REMINDER_QUESTIONNAIRE:
        from server.surveys.service import survey_link

        params["link"] = survey_link(participant, event)
    return compose(message, participant.locale.value, **params)


def enqueue_event_reminders(
    session: Session,
    *,
    protocol: Protocol,
    participant: Participant,
    event: ScheduleEvent,
    now: datetime,
    horizon: timedelta = HORIZON,
    known_keys: set[str] | None = None,
) -> int:
    """Write the event's reminders that are due within the horizon and not yet expired
    (`known_keys`: dedupe keys already in the outbox, skipped without rendering)."""
    if not (participant.has_sms_consent and participant.phone_e164):
        return 0
    created = 0
    zone = ZoneInfo(participant.timezone)
    for r in plan_event(protocol, participant, event):
        not_before = r.not_before_at
        if not_before < now:
            # Catching up on a reminder whose moment passed (late enrolment, consent back, the
            # job was down): it is due at once, but quiet hours hold for when it really goes.
            resume = rules.defer_out_of_quiet_hours(
                now, zone, participant.quiet_hours_start, participant.quiet_hours_end
            )
            if resume > now:
                not_before = resume
        if not_before > now + horizon or r.expires_at <= now or not_before >= r.expires_at:
            continue
        if known_keys is not None and _dedupe_key(participant, event, r.kind) in known_keys:
            continue
        body = reminder_text(participant, event, r.message)
        _, was_created = outbox.enqueue(
            session,
            dedupe_key=_dedupe_key(participant, event, r.kind),
            category=MessageCategory.REMINDER,
            kind=r.message.value,
            to=participant.phone_e164,
            locale=participant.locale.value,
            body=body,
            priority=PRIORITY_REMINDER,
            intended_at=r.intended_at,
            not_before_at=not_before,
            expires_at=r.expires_at,
            participant_id=participant.id,
            ref=event_ref(event.id),
            now=now,
        )
        created += int(was_created)
    return created


def materialize(
    *,
    session: Session,
    now: datetime,
    horizon: timedelta = HORIZON,
    participant_id: int | None = None,
    commit_every: int | None = None,
) -> dict[str, int]:
    """Write reminders due in the next `horizon` (indexed on status and window opening).

    Works in chunks of events; the job commits after each (`commit_every`) so a large study never
    holds the database's write lock for the whole run (SQLite has one writer at a time).
    """
    from server.schedules.service import PLANNING_STATUSES, participant_protocol

    q = (
        select(ScheduleEvent.id)
        .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
        .where(
            col(ScheduleEvent.status).in_(list(PENDING_STATUSES)),
            col(ScheduleEvent.window_open_at) <= now + horizon + LEAD,
            col(ScheduleEvent.window_close_at) > now,
            col(Participant.has_sms_consent).is_(True),
            col(Participant.phone_e164).is_not(None),
            col(Participant.status).in_(list(PLANNING_STATUSES)),
        )
        .order_by(col(ScheduleEvent.id))
    )
    if participant_id is not None:
        q = q.where(col(ScheduleEvent.participant_id) == participant_id)
    ids = list(session.exec(q).all())
    created = 0
    protocols: dict[tuple[int, str | None], Protocol] = {}
    chunk = commit_every or 500
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        pairs = session.exec(
            select(ScheduleEvent, Participant)
            .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
            .where(col(ScheduleEvent.id).in_(part))
            .order_by(col(ScheduleEvent.id))
        ).all()
        # Reminders already written are skipped without rendering: most runs add only a few.
        known = set(
            session.exec(
                select(OutboxMessage.dedupe_key).where(
                    col(OutboxMessage.ref).in_([event_ref(i) for i in part])
                )
            ).all()
        )
        for event, participant in pairs:
            key = (participant.study_id, participant.protocol_version)
            if key not in protocols:
                protocols[key] = participant_protocol(
                    session=session, participant=participant, now=now
                )
            created += enqueue_event_reminders(
                session,
                protocol=protocols[key],
                participant=participant,
                event=event,
                now=now,
                horizon=horizon,
                known_keys=known,
            )
        if commit_every:
            session.commit()
    return {"events": len(ids), "created": created}


def materialize_job(*, session: Session, now: datetime) -> dict[str, int]:
    """The scheduler's reminder job: every study, committing every 500 events."""
    return materialize(session=session, now=now, commit_every=500)


def cancel_for_events(
    session: Session, event_ids: list[int | None], *, now: datetime, reason: str
) -> int:
    """Cancel the pending reminders of events that completed, moved or ended."""
    return outbox.cancel_where(
        session, refs=[event_ref(i) for i in event_ids if i is not None], now=now, reason=reason
    )
