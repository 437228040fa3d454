"""A participant's messages for staff: history, cancel a pending one, resend a failed one."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from api.common import commit
from api.schemas import MessageSchema, ReasonSchema
from notifications import outbox
from notifications.models import MessageLog, OutboxMessage
from server.auth.models import StaffUser
from server.auth.rules import Permission, has_permission
from server.auth.scoping import get_participant
from server.auth.service import actor_of
from server.auth.web import require
from server.clock import utcnow
from server.db import get_session
from server.participants import messages as service
from server.participants.rules import mask_phone

blp = Blueprint("messages", __name__, url_prefix="/api/v1", description="Messages")


def _dict(user: StaffUser, message: OutboxMessage, trail: list[MessageLog]) -> dict[str, Any]:
    d = message.model_dump(exclude={"body", "redacted_body", "bundle_item"})
    # Never the clear text: activation codes and survey links are the participant's alone.
    d["body"] = outbox.shown_body(message)
    d["category"] = message.category.value
    d["status"] = message.status.value
    see_phone = has_permission(user.role, Permission.SEE_PHONE_NUMBERS)
    d["to"] = message.to_e164 if see_phone else mask_phone(message.to_e164)
    d["log"] = [{**e.model_dump(), "status": e.status.value} for e in trail]
    return d


@blp.route("/participants/<int:participant_id>/messages")
@blp.response(200, MessageSchema(many=True))
def history(participant_id: int) -> list[dict[str, Any]]:
    """Every message meant for the participant, newest first: intended, sent, delivered, failed."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    return [_dict(user, m, t) for m, t in service.history(session=session, participant=participant)]


def _act(participant_id: int, message_id: int) -> tuple[StaffUser, Any, OutboxMessage]:
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    require(Permission.SCHEDULE_WRITE)
    message = service.get_message(session=session, participant=participant, message_id=message_id)
    return user, participant, message


@blp.route("/participants/<int:participant_id>/messages/<int:message_id>/cancel", methods=["POST"])
@blp.arguments(ReasonSchema)
@blp.response(200, MessageSchema)
def cancel(args: dict[str, Any], participant_id: int, message_id: int) -> dict[str, Any]:
    """Cancel a pending message (audited)."""
    user, participant, message = _act(participant_id, message_id)
    service.cancel(
        session=get_session(),
        participant=participant,
        message=message,
        reason=args["reason"],
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    commit()
    return _dict(user, message, [])


@blp.route("/participants/<int:participant_id>/messages/<int:message_id>/resend", methods=["POST"])
@blp.arguments(ReasonSchema)
@blp.response(201, MessageSchema)
def resend(args: dict[str, Any], participant_id: int, message_id: int) -> dict[str, Any]:
    """Send a failed, undelivered, expired or cancelled message again (a new row; audited).
    An activation code is re-issued (a new code; earlier ones stop working); a questionnaire
    reminder is rendered again with its survey link while its window is open (409 once closed);
    any other message that carried a code or link, or went to a staff member, is 409."""
    user, participant, message = _act(participant_id, message_id)
    copy = service.resend(
        session=get_session(),
        participant=participant,
        message=message,
        reason=args["reason"],
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    commit()
    return _dict(user, copy, [])


@blp.route("/participants/<int:participant_id>/activation", methods=["POST"])
@blp.response(202)
def send_activation(participant_id: int) -> dict[str, Any]:
    """Send the participant a new one-time app activation code by SMS (earlier codes stop)."""
    from server.participants.mobile import CODE_MINUTES, send_activation_code

    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    require(Permission.SCHEDULE_WRITE)
    send_activation_code(
        session=session, participant=participant, now=utcnow(), actor=actor_of(user)
    )
    commit()
    return {"sent": True, "valid_minutes": CODE_MINUTES}
