"""Staff view of a participant's messages: history (intended, sent, delivered, failed) and the
two things staff may do to one: cancel it while pending, or send a failed one again."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from notifications import outbox
from notifications.models import MessageLog, MessageStatus, OutboxMessage
from server import audit
from server.errors import Conflict, NotFound, field_error
from server.participants.models import Participant
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
    """Queue a failed, undelivered, expired or cancelled message again, as a new row."""
    if message.status not in RESENDABLE:
        raise Conflict(f"the message is {message.status.value}; it cannot be sent again")
    if not reason.strip():
        raise field_error("reason", "required")
    if not (participant.has_sms_consent and participant.phone_e164):
        raise Conflict("the participant does not accept SMS (no consent or no phone)")
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
        body=message.body,
        priority=message.priority,
        intended_at=now,
        not_before_at=due,
        participant_id=participant.id,
        ref=message.ref,
        now=now,
    )
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
        after={"status": copy.status.value, "not_before_at": copy.not_before_at},
        reason=reason,
    )
    return copy
