"""Wiring between the domain and notifications/: the dispatcher built from configuration, and what
the domain does when the SMS provider reports a participant unreachable or a send failed.

notifications/ never knows clinical data; these hooks receive its rows and act on the domain.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import Flask
from sqlmodel import Session, col, select

from notifications import outbox
from notifications.dispatcher import Dispatcher, Lane
from notifications.messages import MessageKind, render
from notifications.models import (
    PRIORITY_STAFF_NOTICE,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from notifications.providers import provider_from_config
from notifications.ratelimit import SendRate, rate_store
from server import audit
from server.auth.models import Role, SiteMembership, StaffUser
from server.db import get_db
from server.participants.models import Participant

log = logging.getLogger("stepdown.messaging")

# Who hears that a participant can no longer be reached by SMS.
CARE_TEAM_ROLES = (Role.COORDINATOR, Role.NURSE)


def care_team(
    session: Session, site_id: int, roles: tuple[Role, ...] = CARE_TEAM_ROLES
) -> list[StaffUser]:
    """Active staff of a site with the given roles and a verified phone."""
    return list(
        session.exec(
            select(StaffUser)
            .join(SiteMembership, col(SiteMembership.user_id) == col(StaffUser.id))
            .where(
                SiteMembership.site_id == site_id,
                col(StaffUser.role).in_(list(roles)),
                col(StaffUser.is_active).is_(True),
                col(StaffUser.is_phone_verified).is_(True),
                col(StaffUser.phone_e164).is_not(None),
            )
            .order_by(col(StaffUser.id))
        ).all()
    )


def set_sms_consent(
    *,
    session: Session,
    participant: Participant,
    consent: bool,
    now: datetime,
    actor: str,
    reason: str,
    link: str,
) -> bool:
    """Record an SMS consent change (STOP/START or the provider's 21610); True if it changed.
    Withdrawing cancels pending participant messages and tells the site's care team."""
    if participant.has_sms_consent == consent:
        return False
    participant.has_sms_consent = consent
    participant.sms_consent_changed_at = now
    participant.updated_at = now
    session.add(participant)
    audit.record(
        session=session,
        actor=actor,
        action="participant.sms_consent",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        before={"has_sms_consent": not consent},
        after={"has_sms_consent": consent},
        reason=reason,
    )
    if consent:
        # Reminders of the next hours come back at once (new keys: the consent epoch changed).
        from server.schedules import reminders

        reminders.materialize(session=session, now=now, participant_id=participant.id)
        return True
    outbox.cancel_where(
        session,
        participant_id=participant.id,
        now=now,
        reason="participant opted out of SMS",
        status=MessageStatus.OPTED_OUT,
        categories=[MessageCategory.REMINDER, MessageCategory.WELCOME],
    )
    day = now.date().isoformat()
    for staff in care_team(session, participant.site_id):
        outbox.enqueue(
            session,
            dedupe_key=f"unreachable:{participant.id}:{day}:{staff.id}",
            category=MessageCategory.STAFF_NOTICE,
            kind=MessageKind.PARTICIPANT_UNREACHABLE.value,
            to=staff.phone_e164,  # type: ignore[arg-type]
            locale="en",
            body=render(
                MessageKind.PARTICIPANT_UNREACHABLE, "en", code=participant.study_code, link=link
            ),
            priority=PRIORITY_STAFF_NOTICE,
            staff_user_id=staff.id,
            participant_id=participant.id,
            now=now,
        )
    return True


def participants_with_phone(session: Session, phone: str) -> list[Participant]:
    """Participants whose SMS number is this one."""
    return list(session.exec(select(Participant).where(Participant.phone_e164 == phone)).all())


def make_unsubscribed_hook(link: str) -> Callable[[Session, OutboxMessage, datetime], None]:
    """What 21610 (the recipient replied STOP at some point) does to the domain."""

    def on_unsubscribed(session: Session, message: OutboxMessage, now: datetime) -> None:
        if message.participant_id is None or message.staff_user_id is not None:
            return
        participant = session.get(Participant, message.participant_id)
        if participant is not None:
            set_sms_consent(
                session=session,
                participant=participant,
                consent=False,
                now=now,
                actor="system:sms-provider",
                reason="provider error 21610: recipient unsubscribed",
                link=link,
            )

    return on_unsubscribed


def on_send_failed(session: Session, message: OutboxMessage, now: datetime) -> None:
    """A message that failed for good: an alert SMS (or a bundle carrying alerts) moves each of
    its alerts to the next tier at once."""
    from server.alerts.service import on_delivery_failed

    for row in [message, *outbox.followers(session, message)]:
        on_delivery_failed(session, row, now)


def quiet_hours_hold(
    session: Session, messages: list[OutboxMessage], now: datetime
) -> dict[int, datetime]:
    """Participant messages that must wait for the end of their quiet hours (a backlog after an
    outage must not go out at night); staff messages never wait. One query per batch."""
    from zoneinfo import ZoneInfo

    from server.schedules.rules import defer_out_of_quiet_hours

    held_kinds = (MessageCategory.REMINDER, MessageCategory.WELCOME, MessageCategory.ACTIVATION)
    wanted = {
        m.participant_id
        for m in messages
        if m.participant_id is not None and m.staff_user_id is None and m.category in held_kinds
    }
    if not wanted:
        return {}
    people = {
        p.id: p
        for p in session.exec(select(Participant).where(col(Participant.id).in_(wanted))).all()
    }
    holds: dict[int, datetime] = {}
    for m in messages:
        participant = people.get(m.participant_id) if m.category in held_kinds else None
        if participant is None or m.staff_user_id is not None or m.id is None:
            continue
        resume = defer_out_of_quiet_hours(
            now,
            ZoneInfo(participant.timezone),
            participant.quiet_hours_start,
            participant.quiet_hours_end,
        )
        if resume > now:
            holds[m.id] = resume
    return holds


def send_rates(app: Flask) -> SendRate:
    """The app's store of send slots, one per process (both lanes share it): Redis when
    REDIS_URL is set, else PostgreSQL, else this process's memory (SQLite)."""
    store = app.extensions.get("stepdown_send_rates")
    if store is None:
        store = rate_store(
            redis_url=app.config.get("REDIS_URL"),
            engine=get_db(app).engine,
            prefix=app.config.get("RATELIMIT_KEY_PREFIX") or "stepdown",
        )
        app.extensions["stepdown_send_rates"] = store
    return store  # type: ignore[no-any-return]


# How long a participant's message waits, each time, for their welcome to be handed over first.
WELCOME_FIRST_WAIT = timedelta(seconds=5)


def welcome_first_hold(
    session: Session, messages: list[OutboxMessage], now: datetime
) -> dict[int, datetime]:
    """A participant's reminders and activation codes wait while their welcome has not gone:
    the welcome is the first message a participant receives, even when a reminder was queued
    before it or is claimed in the same batch. One query per batch."""
    waiting_kinds = (MessageCategory.REMINDER, MessageCategory.ACTIVATION)
    wanted = {
        m.participant_id
        for m in messages
        if m.participant_id is not None and m.staff_user_id is None and m.category in waiting_kinds
    }
    if not wanted:
        return {}
    welcomes = session.exec(
        select(OutboxMessage.participant_id, OutboxMessage.not_before_at).where(
            OutboxMessage.category == MessageCategory.WELCOME,
            col(OutboxMessage.participant_id).in_(wanted),
            col(OutboxMessage.status).in_([MessageStatus.PENDING, MessageStatus.SENDING]),
            sa.or_(col(OutboxMessage.expires_at).is_(None), col(OutboxMessage.expires_at) > now),
        )
    ).all()
    until = {pid: max(due, now) + WELCOME_FIRST_WAIT for pid, due in welcomes}
    return {
        m.id: until[m.participant_id]
        for m in messages
        if m.id is not None
        and m.participant_id in until
        and m.staff_user_id is None
        and m.category in waiting_kinds
    }


# Staff SMS of alerts that may wait for the morning: urgent alerts (unless the site pages them
# 24/7) and routine tasks. Critical alerts and the fail-safe never wait, and never cost a query.
MAY_WAIT_FOR_MORNING = frozenset(
    {
        MessageKind.ALERT_URGENT.value,
        MessageKind.ALERT_URGENT_ESCALATED.value,
        MessageKind.ALERT_TASK.value,
        MessageKind.RESULT_OVERDUE.value,
        MessageKind.MISSED_WINDOW.value,
        MessageKind.REDRAW_NEEDED.value,
    }
)


def staff_night_hold(
    session: Session, messages: list[OutboxMessage], now: datetime
) -> dict[int, datetime]:
    """Staff SMS that may not go at night, found due at night (the dispatcher was down at the
    morning digest, or the scheduler opened the alert late): a routine task waits for the next
    morning digest, an urgent alert for the end of the site's night, as when they were queued
    (server/alerts/rules.send_moment). One query per batch, only when such a row is in it."""
    from zoneinfo import ZoneInfo

    from server.alerts import rules as alert_rules
    from server.alerts.models import Alert, Level
    from server.participants.models import Site

    waiting = {
        m.id: int(ref[1])
        for m in messages
        if m.id is not None
        and m.category == MessageCategory.STAFF_ALERT
        and m.kind in MAY_WAIT_FOR_MORNING
        and len(ref := (m.ref or "").split(":")) > 1
        and ref[0] == "alert"
        and ref[1].isdigit()
    }
    if not waiting:
        return {}
    found = session.exec(
        select(Alert, Site)
        .join(Site, col(Site.id) == col(Alert.site_id))
        .where(col(Alert.id).in_(set(waiting.values())))
    ).all()
    alerts = {alert.id: (alert, site) for alert, site in found}
    holds: dict[int, datetime] = {}
    for message_id, alert_id in waiting.items():
        if alert_id not in alerts:
            continue
        alert, site = alerts[alert_id]
        if alert_rules.pages_at_night(alert.kind, alert.level, alert.policy):
            continue
        zone = ZoneInfo(site.timezone)
        night = alert_rules.setting(alert.policy, "night")
        if not alert_rules.is_night(now, zone, night):
            continue
        if alert.level is Level.ROUTINE:
            holds[message_id] = alert_rules.next_digest(now, zone, alert.policy)
        else:
            holds[message_id] = alert_rules.night_end(now, zone, night)
    return holds


def participant_holds(
    session: Session, messages: list[OutboxMessage], now: datetime
) -> dict[int, datetime]:
    """The dispatcher's hold: quiet hours, and the welcome first (the later of the two); staff
    SMS that may not go at night wait for the morning."""
    holds = quiet_hours_hold(session, messages, now)
    for message_id, until in welcome_first_hold(session, messages, now).items():
        holds[message_id] = max(until, holds.get(message_id, until))
    holds.update(staff_night_hold(session, messages, now))
    return holds


def build_dispatcher(app: Flask, **overrides: object) -> Dispatcher:
    """A dispatcher configured from the app (provider, callback URL, senders and their rates,
    the shared send-rate store)."""
    database = get_db(app)
    config = app.config
    base = config["PUBLIC_BASE_URL"]
    timeout = float(config.get("TWILIO_TIMEOUT_SECONDS") or 10)
    alert_rate = config.get("SMS_ALERT_RATE_PER_SECOND")
    params: dict[str, object] = {
        "session_factory": database.session,
        "provider": provider_from_config(config),
        "callback_base_url": base,
        "sender": config.get("TWILIO_MESSAGING_SERVICE_SID")
        or config.get("TWILIO_FROM_NUMBER")
        or "default",
        "rate_per_second": float(config.get("SMS_RATE_PER_SECOND", 1.0)),
        "alert_sender": config.get("TWILIO_ALERT_MESSAGING_SERVICE_SID")
        or config.get("TWILIO_ALERT_FROM_NUMBER")
        or None,
        "alert_rate_per_second": None if alert_rate is None else float(alert_rate),
        "rates": send_rates(app),
        # A provider call may take the client's whole timeout; it must end inside its lease.
        "send_margin_seconds": timeout + 2,
        # Long enough to start the call (its turn at the sender, counted on top of this) with the
        # margin still ahead: 15 s at the default timeout, so a dead dispatcher's alert is re-sent
        # (after the provider's log is asked) within about 17 s.
        "urgent_lease_seconds": max(15, int(timeout) + 5),
        "on_unsubscribed": make_unsubscribed_hook(f"{base}/"),
        "on_failed": on_send_failed,
        "hold": participant_holds,
    }
    params.update(overrides)
    return Dispatcher(**params)  # type: ignore[arg-type]


def make_waiter(
    app: Flask, stop: threading.Event, *, poll_seconds: float = 0.5
) -> Callable[[float], None]:
    """How the dispatcher waits: LISTEN/NOTIFY on PostgreSQL (woken at once), polling on SQLite
    (every `poll_seconds` at most)."""
    database = get_db(app)
    if not database.is_postgresql:

        def poll(seconds: float) -> None:
            stop.wait(min(seconds, poll_seconds))

        return poll
    import psycopg

    url = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"LISTEN {outbox.WAKE_CHANNEL}")

    def wait(seconds: float) -> None:
        for _ in conn.notifies(timeout=seconds, stop_after=1):
            break

    return wait


def start_dispatcher_thread(app: Flask, stop: threading.Event) -> threading.Thread:
    """Run the dispatcher's two lanes in daemon threads of this process: staff alerts in one
    (woken at once, a lease of seconds), everything else in the other, paced by its sender.
    Returns the routine lane's thread, which outlives the urgent one's."""
    urgent = build_dispatcher(app, lane=Lane.URGENT)
    routine = build_dispatcher(app, lane=Lane.ROUTINE)
    if urgent.alert_sender is None:
        log.warning(
            "staff alerts share the participant sender (%s/s): set TWILIO_ALERT_FROM_NUMBER or "
            "TWILIO_ALERT_MESSAGING_SERVICE_SID so that no reminder can delay one",
            urgent.rate_per_second,
        )
    urgent.warm()
    routine.warm()
    # SQLite: the urgent lane polls often (a claim is a short write transaction).
    urgent_wait = make_waiter(app, stop, poll_seconds=0.1)
    routine_wait = make_waiter(app, stop)

    def run_urgent() -> None:
        with app.app_context():
            urgent.run_forever(stop, urgent_wait)

    def run_routine() -> None:
        lane = threading.Thread(target=run_urgent, name="dispatcher-urgent", daemon=True)
        lane.start()
        with app.app_context():
            routine.run_forever(stop, routine_wait)
        lane.join(timeout=10)  # it hands back claimed rows it has not tried

    thread = threading.Thread(target=run_routine, name="dispatcher", daemon=True)
    thread.start()
    return thread


def expire_stale(*, session: Session, now: datetime) -> int:
    """Mark pending messages past their expiry (the dispatcher also does it when it claims)."""
    rows = session.exec(
        select(OutboxMessage)
        .where(
            OutboxMessage.status == MessageStatus.PENDING,
            col(OutboxMessage.expires_at) <= now,
        )
        .limit(1000)
    ).all()
    for row in rows:
        outbox.advance(
            session,
            row,
            MessageStatus.EXPIRED,
            source="job",
            now=now,
            note="expired before it could be sent",
        )
    return len(rows)
