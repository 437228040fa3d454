"""Inbound SMS: opt-out keywords set consent; everything else gets a short generic answer.

Nothing clinical is stored from an inbound message: not the body, not the number of someone we do
not know. Replies are outbox rows like every other message (nothing is sent inside a request).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlmodel import Session

from notifications import outbox
from notifications.messages import MessageKind, render
from notifications.models import PRIORITY_PARTICIPANT, PRIORITY_STAFF_ALERT, MessageCategory
from server.alerts.rules import looks_like_ack, parse_ack
from server.alerts.service import acknowledge_by_sms
from server.messaging import participants_with_phone, set_sms_consent

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
    """A nurse's "ACK 4821": acknowledge that alert (once). A wrong code changes nothing and gets
    a short answer. None when the number is not a staff member's."""
    code = parse_ack(body)
    alert, user = (
        acknowledge_by_sms(session=session, from_number=from_number, code=code, now=now)
        if code
        else (None, None)
    )
    if alert is not None:
        return Keyword.ACK
    if user is None and code:
        return None  # not staff: treat as any other inbound message
    if user is None:
        from sqlmodel import col, select

        from server.auth.models import StaffUser

        known = session.exec(
            select(StaffUser.id).where(
                StaffUser.phone_e164 == from_number, col(StaffUser.is_active).is_(True)
            )
        ).first()
        if known is None:
            return None
    outbox.enqueue(
        session,
        dedupe_key=f"reply:{message_sid}",
        category=MessageCategory.STAFF_NOTICE,
        kind=MessageKind.ACK_CODE_UNKNOWN.value,
        to=from_number,
        locale="en",
        body=render(MessageKind.ACK_CODE_UNKNOWN, "en"),
        priority=PRIORITY_STAFF_ALERT,
        now=now,
    )
    return Keyword.ACK_UNKNOWN


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
