"""Twilio webhooks: delivery status callbacks and inbound SMS. They fail closed: a missing or
wrong X-Twilio-Signature gets 403 and changes nothing."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from notifications import outbox
from notifications.models import MessageStatus
from notifications.providers.twilio import validate_signature
from server.clock import utcnow
from server.db import get_session
from server.inbound import handle_inbound
from server.messaging import on_send_failed

log = logging.getLogger("stepdown.twilio")
bp = Blueprint("twilio", __name__, url_prefix="/twilio")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _public_url() -> str:
    # Behind TLS termination request.url is the internal URL; Twilio signed the public one.
    path = request.full_path[:-1] if request.full_path.endswith("?") else request.full_path
    return current_app.config["PUBLIC_BASE_URL"] + path


def _signed() -> bool:
    token = current_app.config.get("TWILIO_AUTH_TOKEN")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        return False
    return validate_signature(token, _public_url(), request.form, signature)


def _forbidden() -> Response:
    log.warning("rejected unsigned or forged webhook on %s", request.path)
    return Response(
        '{"error": {"code": "forbidden", "message": "invalid signature", "fields": {}}}',
        status=403,
        mimetype="application/json",
    )


@bp.post("/status/<int:message_id>")
def status_callback(message_id: int) -> Response:
    """A delivery status for one outbox message (forward-only; repeats are harmless)."""
    if not _signed():
        return _forbidden()
    # Twilio's codes are five digits; anything else ("²" passes isdigit) is no code at all.
    error = request.form.get("ErrorCode", "")
    session = get_session()
    now = utcnow()
    message = outbox.apply_callback(
        session,
        message_id=message_id,
        sid=request.form.get("MessageSid") or request.form.get("SmsSid"),
        provider_status=request.form.get("MessageStatus") or request.form.get("SmsStatus") or "",
        error_code=int(error) if error.isascii() and error.isdigit() and len(error) < 10 else None,
        now=now,
    )
    if message is not None and message.status in (
        MessageStatus.FAILED,
        MessageStatus.UNDELIVERED,
    ):
        # An alert SMS that did not reach its nurse escalates at once.
        on_send_failed(session, message, now)
    session.commit()
    return Response(status=204)


@bp.post("/inbound")
def inbound() -> Response:
    """An SMS sent to our number: STOP / START / HELP set consent; others get a generic reply."""
    if not _signed():
        return _forbidden()
    session = get_session()
    handle_inbound(
        session=session,
        message_sid=request.form.get("MessageSid", "")[:64],
        from_number=request.form.get("From", "")[:20],
        body=request.form.get("Body", "")[:1600],
        opt_out_type=request.form.get("OptOutType"),
        now=utcnow(),
        link=current_app.config["PUBLIC_BASE_URL"] + "/",
    )
    session.commit()
    return Response(EMPTY_TWIML, mimetype="text/xml")
