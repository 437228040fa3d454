"""Inbound SMS: opt-out keywords set consent; everything else gets a short generic answer.

Nothing clinical is stored from an inbound message: not the body, not the number of someone we do
not know. Replies are outbox rows like every other message (nothing is sent inside a request).
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime

from sqlmodel import Session, col, select

from notifications import outbox
from notifications.messages import MessageKind, render
from notifications.models import (
    PRIORITY_PARTICIPANT,
    PRIORITY_STAFF_ALERT,
    MessageCategory,
    OutboxMessage,
)
from server.alerts.rules import ACK_UNKNOWN_REPLIES_PER_DAY, looks_like_ack, parse_ack
from server.alerts.service import SmsAckOutcome, acknowledge_by_sms
from server.messaging import participants_with_phone, set_sms_consent

log = logging.getLogger("stepdown.inbound")

# Twilio's default opt-out and opt-in keywords (whole body, case-insensitive), plus common French
# and Chinese ones so participants can answer in their language.
STOP_WORDS = frozenset(
    {
        "stop",
        "stopall",
        "unsubscribe",
        "cancel",
        "end",
        "quit",
        "revoke",
        "optout",
        "arret",
        "arrêt",
        "arreter",
        "arrêter",
        "退订",
        "停止",
    }
)
START_WORDS = frozenset({"start", "unstop", "yes", "demarrer", "démarrer", "订阅", "开始"})
HELP_WORDS = frozenset({"help", "info", "aide", "帮助"})


class Keyword(enum.StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"
    ACK = "ack"
    ACK_UNKNOWN = "ack_unknown"
    OTHER = "other"


def _staff_ack(
    session: Session, message_sid: str, from_number: str, body: str, now: datetime
) -> Keyword | None:
    """A nurse's "ACK 482113": acknowledge that alert if its code was sent to this phone. Anything
    else from a staff phone changes nothing and gets the answer an unknown code gets (it must not
    tell that the alert exists). None when the number is no staff member's."""
    done = acknowledge_by_sms(
        session=session,
        from_number=from_number,
        code=parse_ack(body),
        now=now,
        message_sid=message_sid,
    )
    if done.outcome == SmsAckOutcome.NOT_STAFF:
        return None  # treat as any other inbound message
    if done.outcome in (SmsAckOutcome.ACKNOWLEDGED, SmsAckOutcome.ALREADY_ACKNOWLEDGED):
        return Keyword.ACK
    if done.outcome == SmsAckOutcome.REFUSED:
        _answer_unknown_code(session, from_number, now)
    return Keyword.ACK_UNKNOWN


def _answer_unknown_code(session: Session, to: str, now: datetime) -> None:
    """The neutral answer, at most ACK_UNKNOWN_REPLIES_PER_DAY a day per phone (numbered keys:
    two replies racing for the same number are one row), so nobody can make us send SMS."""
    prefix = f"ack-unknown:{to}:{now.date().isoformat()}:"
    sent = len(
        session.exec(
            select(OutboxMessage.id).where(
                col(OutboxMessage.dedupe_key).startswith(prefix, autoescape=True)
            )
        ).all()
    )
    if sent >= ACK_UNKNOWN_REPLIES_PER_DAY:
        log.warning("refused ACK not answered: %s answers to this phone today already", sent)
        return
    outbox.enqueue(
        session,
        dedupe_key=f"{prefix}{sent + 1}",
        category=MessageCategory.STAFF_NOTICE,
        kind=MessageKind.ACK_CODE_UNKNOWN.value,
        to=to,
        locale="en",
        body=render(MessageKind.ACK_CODE_UNKNOWN, "en"),
        priority=PRIORITY_STAFF_ALERT,
        now=now,
    )


def classify(body: str, opt_out_type: str | None) -> Keyword:
    """What an inbound SMS asks for; Twilio's OptOutType wins when present."""
    if opt_out_type:
        try:
            return Keyword(opt_out_type.strip().lower())
        except ValueError:
            pass
    word = body.strip().strip(".!").lower()
    if word in STOP_WORDS:
        return Keyword.STOP
    if word in START_WORDS:
        return Keyword.START
    if word in HELP_WORDS:
        return Keyword.HELP
    return Keyword.OTHER


def handle_inbound(
    *,
    session: Session,
    message_sid: str,
    from_number: str,
    body: str,
    opt_out_type: str | None,
    now: datetime,
    link: str,
) -> Keyword:
    """Apply an inbound SMS to consent and queue any reply. Idempotent on the MessageSid."""
    if not opt_out_type and (parse_ack(body) or looks_like_ack(body)):
        handled = _staff_ack(session, message_sid, from_number, body, now)
        if handled is not None:
            return handled
    keyword = classify(body, opt_out_type)
    participants = participants_with_phone(session, from_number)
    if keyword in (Keyword.STOP, Keyword.START):
        for participant in participants:
            set_sms_consent(
                session=session,
                participant=participant,
                consent=keyword == Keyword.START,
                now=now,
                actor="participant:sms",
                reason=f"inbound SMS keyword {keyword.value.upper()}",
                link=link,
            )
        # With Twilio's opt-out handling (OptOutType present) Twilio already answered.
        if opt_out_type or not participants:
            return keyword
        reply = (
            MessageKind.OPT_OUT_CONFIRMATION
            if keyword == Keyword.STOP
            else MessageKind.OPT_IN_CONFIRMATION
        )
    elif keyword == Keyword.HELP:
        if opt_out_type:
            return keyword
        reply = MessageKind.HELP
    elif participants:
        reply = MessageKind.HELP  # a participant wrote something: tell them how to reach the team
    else:
        reply = MessageKind.UNKNOWN_SENDER
    locale = participants[0].locale.value if participants else "en"
    # One reply per number per kind per day for strangers: no SMS pumping through us.
    key = (
        f"reply:{message_sid}"
        if participants
        else f"reply-unknown:{from_number}:{now.date().isoformat()}"
    )
    outbox.enqueue(
        session,
        dedupe_key=key,
        category=MessageCategory.REPLY,
        kind=reply.value,
        to=from_number,
        locale=locale,
        body=render(reply, locale),
        priority=PRIORITY_PARTICIPANT,
        participant_id=participants[0].id if participants else None,
        now=now,
    )
    return keyword
