"""Participant reminders: planned from the protocol's reminder plans, written to the outbox.

A job writes the reminders whose moment falls in the next 48 hours (HORIZON), so the outbox holds
only near-term rows whatever the size of the study. Each reminder has one dedupe key (participant,
event and its target day, reminder kind, channel, consent epoch): running the job again, or twice at
once, writes nothing new. Which reminders go, and when, is decided by `rules.reminder_verdicts`:
each at its moment or not at all (nothing whose moment has passed: a back-dated enrolment, an event
moved late, consent back), only while its text is still true, and one reminder rather than several
of the same event at once.

The job is incremental: each pending event carries `next_reminder_at`, the send moment of its next
reminder not yet written (None: none left, or the participant cannot be texted), and a tick reads
only the events whose moment has come within the horizon (an index on status and that column), so
a tick with nothing due costs the same at 1,000 or 100,000 participants. Whatever changes an event
(moved, re-planned, completed, cancelled: `cancel_for_events`) or a participant's reachability
(consent back, a new plan: `materialize(participant_id=...)`) sets it again.
Reminders follow their event: completing, cancelling or moving it cancels its pending reminders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from notifications import outbox
from notifications.messages import MessageKind, Sms, compose
from notifications.models import (
    PRIORITY_REMINDER,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from server.participants.models import Participant
from server.protocols.definition import Protocol, Reminder
from server.schedules import rules
from server.schedules.jobs import yield_to_writers
from server.schedules.models import PENDING_STATUSES, EventType, ScheduleEvent

HORIZON = timedelta(hours=48)
# Events a job tick reads and writes per transaction: a busy tick (thousands of 09:00 reminders
# coming due) commits every few hundred milliseconds, never holding SQLite's one writer long.
CHUNK = 100

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

    @property
    def slot(self) -> rules.ReminderSlot:
        """What the send decision reads of it."""
        return rules.ReminderSlot(self.kind, self.intended_at, self.not_before_at, self.expires_at)


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
        message = (
            MessageKind.REMINDER_OVERDUE
            if spec.kind == "overdue"
            else MESSAGE_FOR_TYPE[event.event_type]
        )
        expires = rules.reminder_expiry(
            intended_at=intended,
            target_at=event.target_at,
            window_close_at=event.window_close_at,
            # A questionnaire's reminder states the window's close, not the target day.
            until_window_close=message == MessageKind.REMINDER_QUESTIONNAIRE,
        )
        planned.append(PlannedReminder(spec.kind, message, intended, not_before, expires))
    return planned


def owed_from(participant: Participant) -> datetime:
    """From when the participant may be texted: their SMS consent (at enrolment or since)."""
    return participant.sms_consent_changed_at or participant.created_at


@dataclass(frozen=True)
class EventDecision:
    """What the reminder job does with one event at `now`."""

    # The reminders to write now, each with its send moment (within the horizon).
    due: list[tuple[PlannedReminder, datetime]]
    # When the job must look at the event again: the send moment of its next reminder beyond
    # the horizon (None: no reminder left).
    next_at: datetime | None
    # Every planned reminder's verdict (for tests and for reading why one did not go).
    verdicts: list[rules.ReminderVerdict] = field(default_factory=list)


def decide(
    protocol: Protocol,
    participant: Participant,
    event: ScheduleEvent,
    *,
    now: datetime,
    horizon: timedelta = HORIZON,
    available_from: datetime | None = None,
) -> EventDecision:
    """Which of the event's reminders go within the horizon, when, and when to look again
    (pure given its inputs). `available_from`: a questionnaire offered only from then (its text
    in the participant's language was loaded then): a reminder planned before waits until then."""
    planned = plan_event(protocol, participant, event)
    if available_from is not None:
        held = rules.defer_out_of_quiet_hours(
            available_from,
            ZoneInfo(participant.timezone),
            participant.quiet_hours_start,
            participant.quiet_hours_end,
        )
        planned = [
            dataclasses.replace(p, not_before_at=held) if p.not_before_at < held else p
            for p in planned
        ]
    verdicts = rules.reminder_verdicts(
        [p.slot for p in planned], now=now, owed_from=owed_from(participant)
    )
    due: list[tuple[PlannedReminder, datetime]] = []
    later: list[datetime] = []
    for reminder, verdict in zip(planned, verdicts, strict=True):
        if verdict.send_at is None:
            continue
        if verdict.send_at <= now + horizon:
            due.append((reminder, verdict.send_at))
        else:
            later.append(verdict.send_at)
    return EventDecision(due, min(later) if later else None, verdicts)


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
    """The text of one reminder of an event, rendered now. An appointment's states its moment;
    a questionnaire's states its deadline, the last day of the window, and carries a signed
    survey link (a bearer secret, hidden from staff), made afresh on each call."""
    params: dict[str, Any] = {"code": participant.study_code}
    if message == MessageKind.REMINDER_QUESTIONNAIRE:
        from server.surveys.service import survey_link

        params["deadline"] = event.window_close_date
        params["link"] = survey_link(participant, event)
    else:
        params["when"] = event.target_at
        params["tz"] = participant.timezone
    return compose(message, participant.locale.value, **params)


def is_reachable(participant: Participant) -> bool:
    """Whether reminders may be written for the participant at all."""
    from server.schedules.service import PLANNING_STATUSES

    return bool(
        participant.has_sms_consent
        and participant.phone_e164
        and participant.status in PLANNING_STATUSES
    )


def event_messages(
    session: Session,
    *,
    protocol: Protocol,
    participant: Participant,
    event: ScheduleEvent,
    now: datetime,
    horizon: timedelta = HORIZON,
    known_keys: set[str] | None = None,
    offered_cache: dict[tuple[str | None, str], Any] | None = None,
) -> tuple[list[dict[str, Any]], datetime | None]:
    """The event's reminders to write now, as `outbox.enqueue` arguments (`known_keys`: dedupe
    keys already in the outbox, skipped without rendering; `offered_cache`: questionnaires'
    availability by instrument and language, for one run), and when to look at it again."""
    if not (participant.has_sms_consent and participant.phone_e164):
        return [], None
    available_from = None
    if event.event_type == EventType.QUESTIONNAIRE:
        from server.surveys.texts import availability

        cache = {} if offered_cache is None else offered_cache
        which = (event.instrument, participant.locale.value)
        if which not in cache:
            cache[which] = availability(session, event=event, locale=participant.locale.value)
        offered = cache[which]
        if offered.waits:
            # No text in the participant's language (a licensed instrument the site has not
            # loaded): nothing is written and the job stops looking; loading the text looks
            # again (server.surveys.texts.replan_waiting), and Today says what waits.
            return [], None
        available_from = offered.since
    decision = decide(
        protocol, participant, event, now=now, horizon=horizon, available_from=available_from
    )
    messages = []
    for reminder, send_at in decision.due:
        key = _dedupe_key(participant, event, reminder.kind)
        if known_keys is not None and key in known_keys:
            continue
        messages.append(
            {
                "dedupe_key": key,
                "category": MessageCategory.REMINDER,
                "kind": reminder.message.value,
                "to": participant.phone_e164,
                "locale": participant.locale.value,
                "body": reminder_text(participant, event, reminder.message),
                "priority": PRIORITY_REMINDER,
                "intended_at": reminder.intended_at,
                "not_before_at": send_at,
                "expires_at": reminder.expires_at,
                "participant_id": participant.id,
                "ref": event_ref(event.id),
            }
        )
    return messages, decision.next_at


def _same(message: dict[str, Any]) -> tuple[Any, ...]:
    # What the participant would see twice: the same text at the same moment.
    body = message["body"]
    text = body.text if isinstance(body, Sms) else body
    return (message["participant_id"], message["kind"], message["not_before_at"], text)


def write_messages(
    session: Session,
    messages: Sequence[dict[str, Any]],
    *,
    now: datetime,
    written: dict[tuple[Any, ...], int] | None = None,
) -> int:
    """Write reminders to the outbox in one statement; the number of rows created. `written`:
    the reminders this run wrote, by participant, text and moment: two events of one visit (a
    tumour-marker and a research blood draw at 09:00) make the same text for the same moment,
    and the participant gets it once (the second row is kept, cancelled, so that its dedupe key
    stays taken)."""
    seen = written if written is not None else {}
    fresh: list[dict[str, Any]] = []
    twins: list[dict[str, Any]] = []
    batch: set[tuple[Any, ...]] = set()
    for m in messages:
        same = _same(m)
        if written is not None and (same in seen or same in batch):
            twins.append(m)
        else:
            fresh.append(m)
            batch.add(same)
    ids = outbox.enqueue_many(session, fresh, now=now)
    for m in fresh:
        if m["dedupe_key"] in ids:
            seen.setdefault(_same(m), ids[m["dedupe_key"]])
    created = len(ids)
    for m in twins:
        twin = seen.get(_same(m))
        row, was_created = outbox.enqueue(session, **m, now=now)
        if not was_created:
            continue
        if twin is None:
            seen[_same(m)] = row.id  # type: ignore[assignment]
            created += 1
            continue
        outbox.advance(
            session,
            row,
            MessageStatus.CANCELLED,
            source="reminders",
            now=now,
            note=f"the same text goes at the same moment in message {twin}",
        )
    return created


def write_event_reminders(
    session: Session,
    *,
    protocol: Protocol,
    participant: Participant,
    event: ScheduleEvent,
    now: datetime,
    horizon: timedelta = HORIZON,
    known_keys: set[str] | None = None,
    written: dict[tuple[Any, ...], int] | None = None,
) -> tuple[int, datetime | None]:
    """Write the event's reminders due within the horizon (see `event_messages` and
    `write_messages`); (rows created, when to look at the event again)."""
    messages, next_at = event_messages(
        session,
        protocol=protocol,
        participant=participant,
        event=event,
        now=now,
        horizon=horizon,
        known_keys=known_keys,
    )
    return write_messages(session, messages, now=now, written=written), next_at


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
    """Write the event's reminders due within the horizon; the number of rows created."""
    created, _ = write_event_reminders(
        session,
        protocol=protocol,
        participant=participant,
        event=event,
        now=now,
        horizon=horizon,
        known_keys=known_keys,
    )
    return created


def due_events_statement(now: datetime, horizon: timedelta = HORIZON) -> Any:
    """The job's query: pending events whose next reminder falls within the horizon (an index
    range on status and next_reminder_at: nothing else is read)."""
    return (
        select(ScheduleEvent.id)
        .where(
            col(ScheduleEvent.status).in_(list(PENDING_STATUSES)),
            col(ScheduleEvent.next_reminder_at) <= now + horizon,
        )
        .order_by(col(ScheduleEvent.id))
    )


def _participant_events_statement(participant_id: int, now: datetime) -> Any:
    # All of one participant's events still ahead, whatever their next_reminder_at: after a
    # change to the participant (consent back, a new plan) every one is looked at again.
    return (
        select(ScheduleEvent.id)
        .where(
            ScheduleEvent.participant_id == participant_id,
            col(ScheduleEvent.status).in_(list(PENDING_STATUSES)),
            col(ScheduleEvent.window_close_at) > now,
        )
        .order_by(col(ScheduleEvent.id))
    )


_EVENTS: sa.Table = ScheduleEvent.__table__  # type: ignore[attr-defined]
# Set next_reminder_at only if nobody changed it since it was read (an event moved meanwhile
# gets its new value from whoever moved it; the job's stale one must not overwrite it).
_SET_NEXT = (
    sa.update(_EVENTS)
    .where(
        _EVENTS.c.id == sa.bindparam("b_id"),
        _EVENTS.c.next_reminder_at.is_not_distinct_from(sa.bindparam("b_seen")),
    )
    .values(next_reminder_at=sa.bindparam("b_next"))
)


def _set_next(session: Session, changes: Sequence[tuple[ScheduleEvent, datetime | None]]) -> None:
    if not changes:
        return
    session.execute(
        _SET_NEXT,
        [{"b_id": e.id, "b_seen": e.next_reminder_at, "b_next": nxt} for e, nxt in changes],
    )
    for event, _ in changes:
        session.expire(event, ["next_reminder_at"])


def materialize(
    *,
    session: Session,
    now: datetime,
    horizon: timedelta = HORIZON,
    participant_id: int | None = None,
    commit_every: int | None = None,
) -> dict[str, int]:
    """Write reminders due in the next `horizon`: of the events whose next reminder has come
    within it (the job), or of every pending event of one participant (after a change to them).

    Works in chunks of events; the job commits after each (`commit_every`) so a large catch-up
    never holds the database's write lock for the whole run (SQLite has one writer at a time).
    """
    from server.schedules.service import participant_protocol

    q = (
        due_events_statement(now, horizon)
        if participant_id is None
        else _participant_events_statement(participant_id, now)
    )
    ids = list(session.exec(q).all())
    created = 0
    protocols: dict[tuple[int, str | None], Protocol] = {}
    written_now: dict[tuple[Any, ...], int] = {}
    # A questionnaire's text in a language does not come or go within a run: asked once.
    offered: dict[tuple[str | None, str], Any] = {}
    chunk = commit_every or CHUNK
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        pairs = session.exec(
            select(ScheduleEvent, Participant)
            .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
            .where(col(ScheduleEvent.id).in_(part))
            .order_by(col(ScheduleEvent.id))
        ).all()
        # Reminders already written are skipped without rendering.
        known = set(
            session.exec(
                select(OutboxMessage.dedupe_key).where(
                    col(OutboxMessage.ref).in_([event_ref(i) for i in part])
                )
            ).all()
        )
        changes: list[tuple[ScheduleEvent, datetime | None]] = []
        messages: list[dict[str, Any]] = []
        for event, participant in pairs:
            next_at: datetime | None = None
            if is_reachable(participant):
                key = (participant.study_id, participant.protocol_version)
                if key not in protocols:
                    protocols[key] = participant_protocol(
                        session=session, participant=participant, now=now
                    )
                found, next_at = event_messages(
                    session,
                    protocol=protocols[key],
                    participant=participant,
                    event=event,
                    now=now,
                    horizon=horizon,
                    known_keys=known,
                    offered_cache=offered,
                )
                messages += found
            if next_at != event.next_reminder_at:
                changes.append((event, next_at))
        # The chunk's reminders in one statement (a busy tick writes thousands).
        created += write_messages(session, messages, now=now, written=written_now)
        _set_next(session, changes)
        if commit_every:
            session.commit()
            yield_to_writers(session)
    return {"events": len(ids), "created": created}


def materialize_job(*, session: Session, now: datetime) -> dict[str, int]:
    """The scheduler's reminder job: the events whose next reminder is due, committing every
    CHUNK events."""
    return materialize(session=session, now=now, commit_every=CHUNK)


def look_again(session: Session, event_ids: Sequence[int | None], *, now: datetime) -> None:
    """Have the job look at these events again at its next tick (they changed)."""
    ids = [i for i in event_ids if i is not None]
    if not ids:
        return
    session.execute(sa.update(_EVENTS).where(_EVENTS.c.id.in_(ids)).values(next_reminder_at=now))
    for event in session.identity_map.values():
        if isinstance(event, ScheduleEvent) and event.id in ids:
            session.expire(event, ["next_reminder_at"])


def cancel_for_events(
    session: Session, event_ids: list[int | None], *, now: datetime, reason: str
) -> int:
    """Cancel the pending reminders of events that completed, moved or ended, and have the job
    look at them again (a moved event's reminders are planned afresh)."""
    look_again(session, event_ids, now=now)
    return outbox.cancel_where(
        session, refs=[event_ref(i) for i in event_ids if i is not None], now=now, reason=reason
    )
