"""Staff view of a participant's messages: history (intended, sent, delivered, failed) and the
two things staff may do to one: cancel it while pending, or send a failed one again.

Staff never see a message's bearer secrets (activation codes, survey links): its text is shown as
`outbox.shown_body`, with markers in their place. Sending one again never re-sends an old secret
(it is dead, and the outbox has forgotten it): an activation code is re-issued (a new code, the
earlier ones stop working), a questionnaire reminder is rendered again with its survey link while
the questionnaire's window is open, and anything else that carried a secret is refused (409)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from notifications import outbox
from notifications.messages import MessageKind, Sms
from notifications.models import MessageLog, MessageStatus, OutboxMessage
from server import audit
from server.errors import Conflict, NotFound, field_error
from server.participants.models import Participant
from server.schedules.models import PENDING_STATUSES, ScheduleEvent
from server.schedules.rules import defer_out_of_quiet_hours

RESENDABLE = frozenset(
    {
        MessageStatus.FAILED,
        MessageStatus.UNDELIVERED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELLED,
    }
)


def history(
    *, session: Session, participant: Participant
) -> list[tuple[OutboxMessage, list[MessageLog]]]:
    """The participant's messages, newest first, each with its status trail."""
    messages = list(
        session.exec(
            select(OutboxMessage)
            .where(OutboxMessage.participant_id == participant.id)
            .order_by(col(OutboxMessage.intended_at).desc(), col(OutboxMessage.id).desc())
        ).all()
    )
    ids = [m.id for m in messages]
    trail: dict[int | None, list[MessageLog]] = {i: [] for i in ids}
    if ids:
        for entry in session.exec(
            select(MessageLog)
            .where(col(MessageLog.message_id).in_(ids))
            .order_by(col(MessageLog.id))
        ):
            trail[entry.message_id].append(entry)
    return [(m, trail[m.id]) for m in messages]


def get_message(*, session: Session, participant: Participant, message_id: int) -> OutboxMessage:
    """One of the participant's messages, or NotFound."""
    message = session.get(OutboxMessage, message_id)
    if message is None or message.participant_id != participant.id:
        raise NotFound("message not found")
    return message


def cancel(
    *,
    session: Session,
    participant: Participant,
    message: OutboxMessage,
    reason: str,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
) -> OutboxMessage:
    """Cancel a pending message (one already handed to the provider cannot be called back)."""
    if message.status != MessageStatus.PENDING:
        raise Conflict(f"the message is {message.status.value}; only pending ones can be cancelled")
    if not reason.strip():
        raise field_error("reason", "required")
    outbox.advance(session, message, MessageStatus.CANCELLED, source="staff", now=now, note=reason)
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="message.cancel",
        entity="outbox_message",
        entity_id=message.id,
        site_id=participant.site_id,
        now=now,
        before={"status": MessageStatus.PENDING.value},
        after={"status": MessageStatus.CANCELLED.value},
        reason=reason,
    )
    return message


def resend(
    *,
    session: Session,
    participant: Participant,
    message: OutboxMessage,
    reason: str,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
) -> OutboxMessage:
    """Queue a failed, undelivered, expired or cancelled message again, as a new row (an
    activation code is re-issued; a questionnaire reminder gets its survey link again)."""
    if message.status not in RESENDABLE:
        raise Conflict(f"the message is {message.status.value}; it cannot be sent again")
    if not reason.strip():
        raise field_error("reason", "required")
    if message.staff_user_id is not None:
        # A notice about the participant to a staff member: it must not go to the participant.
        raise Conflict("this message went to a staff member; it cannot be sent again from here")
    if not (participant.has_sms_consent and participant.phone_e164):
        raise Conflict("the participant does not accept SMS (no consent or no phone)")
    if message.kind == MessageKind.ACTIVATION_CODE.value:
        return _reissue_activation(
            session=session,
            participant=participant,
            message=message,
            reason=reason,
            now=now,
            actor=actor,
            actor_user_id=actor_user_id,
        )
    text, expires_at = _text_again(
        session=session, participant=participant, message=message, now=now
    )
    zone = ZoneInfo(participant.timezone)
    due = defer_out_of_quiet_hours(
        now, zone, participant.quiet_hours_start, participant.quiet_hours_end
    )
    copy, _ = outbox.enqueue(
        session,
        dedupe_key=f"{message.dedupe_key}:resend:{int(now.timestamp())}"[:200],
        category=message.category,
        kind=message.kind,
        to=participant.phone_e164,
        locale=message.locale,
        body=text,
        priority=message.priority,
        intended_at=now,
        not_before_at=due,
        expires_at=expires_at,
        participant_id=participant.id,
        ref=message.ref,
        now=now,
    )
    _audit_resend(
        session=session,
        participant=participant,
        message=message,
        copy=copy,
        after={"not_before_at": copy.not_before_at},
        reason=reason,
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
    )
    return copy


def _audit_resend(
    *,
    session: Session,
    participant: Participant,
    message: OutboxMessage,
    copy: OutboxMessage,
    after: dict[str, Any],
    reason: str,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
) -> None:
    """The audit row of a 'send again': the original message, and the copy now queued."""
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="message.resend",
        entity="outbox_message",
        entity_id=copy.id,
        site_id=participant.site_id,
        now=now,
        before={"original_id": message.id, "status": message.status.value},
        after={"status": copy.status.value, **after},
        reason=reason,
    )


def _text_again(
    *, session: Session, participant: Participant, message: OutboxMessage, now: datetime
) -> tuple[Sms, datetime | None]:
    """The text to send again (and when it stops making sense): the stored one when it carried
    no secret; a questionnaire reminder rendered afresh; otherwise Conflict."""
    if message.redacted_body is None:
        return Sms(message.body), None
    event = _event_of(session, participant, message)
    if message.kind == MessageKind.REMINDER_QUESTIONNAIRE.value and event is not None:
        from server.schedules.reminders import reminder_text

        if event.status not in PENDING_STATUSES or event.window_close_at <= now:
            raise Conflict(
                "the questionnaire's window has closed: its survey link would not open, so the "
                "reminder is not sent again"
            )
        return reminder_text(participant, event, MessageKind.REMINDER_QUESTIONNAIRE), (
            event.window_close_at
        )
    raise Conflict(
        "this message carried a code or a link that is no longer valid, so it is not sent again: "
        "send what the participant needs afresh (e.g. a new activation code)"
    )


def _event_of(
    session: Session, participant: Participant, message: OutboxMessage
) -> ScheduleEvent | None:
    ref = message.ref or ""
    if not ref.startswith("event:") or not ref[6:].isdigit():
        return None
    event = session.get(ScheduleEvent, int(ref[6:]))
    return event if event is not None and event.participant_id == participant.id else None


def _reissue_activation(
    *,
    session: Session,
    participant: Participant,
    message: OutboxMessage,
    reason: str,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
) -> OutboxMessage:
    """'Send again' of an activation code: a new code (earlier ones stop), never the old one."""
    from server.participants.mobile import send_activation_code

    copy = send_activation_code(session=session, participant=participant, now=now, actor=actor)
    _audit_resend(
        session=session,
        participant=participant,
        message=message,
        copy=copy,
        after={"reissued": "activation_code"},
        reason=reason,
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
    )
    return copy
