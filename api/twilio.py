"""Twilio webhooks: delivery status callbacks and inbound SMS. They fail closed: a missing or
wrong X-Twilio-Signature gets 403 and changes nothing."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from notifications import outbox
from notifications.models import MessageStatus
from notifications.providers.twilio import gather_twiml, say_twiml, validate_signature
from server.alerts import voice
from server.alerts.models import Alert, VoiceCall
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


# --- the voice tier (issue 16 item 2) -------------------------------------------------------------


def _twiml(body: str) -> Response:
    return Response(body, mimetype="text/xml")


def _call(call_id: int) -> VoiceCall | None:
    return get_session().get(VoiceCall, call_id)


@bp.post("/voice/<int:call_id>/twiml")
def voice_twiml(call_id: int) -> Response:
    """What an alert call says when answered: the participant's code in the site's language,
    then one key gathered (1 acknowledges). A voicemail gets nothing."""
    if not _signed():
        return _forbidden()
    call = _call(call_id)
    if call is None:
        return _twiml(say_twiml(None, "en-US"))
    language = voice.SAY_LANGUAGE.get(call.locale, "en-US")
    if request.form.get("AnsweredBy", "").startswith("machine"):
        return _twiml(say_twiml(None, language))  # leave nothing on a voicemail
    session = get_session()
    alert = session.get(Alert, call.alert_id)
    from server.participants.models import Participant

    participant = (
        session.get(Participant, alert.participant_id) if alert and alert.participant_id else None
    )
    code = voice.spoken_code(
        participant.study_code if participant else f"SITE {alert.site_id if alert else ''}"
    )
    text = voice.SPOKEN.get(call.locale, voice.SPOKEN["en"])[0].format(code=code)
    action = current_app.config["PUBLIC_BASE_URL"] + f"/twilio/voice/{call.id}/gather"
    return _twiml(gather_twiml(text, language, action))


@bp.post("/voice/<int:call_id>/gather")
def voice_gather(call_id: int) -> Response:
    """The key pressed: 1 acknowledges the alert for the person called."""
    if not _signed():
        return _forbidden()
    call = _call(call_id)
    if call is None:
        return _twiml(say_twiml(None, "en-US"))
    session = get_session()
    done = voice.on_keypress(session, call, request.form.get("Digits", "")[:4], utcnow())
    session.commit()
    spoken = voice.SPOKEN.get(call.locale, voice.SPOKEN["en"])
    language = voice.SAY_LANGUAGE.get(call.locale, "en-US")
    return _twiml(say_twiml(spoken[1] if done else spoken[2], language))


@bp.post("/voice/<int:call_id>/status")
def voice_status(call_id: int) -> Response:
    """The call's final status: no answer, busy, voicemail or failure move the alert on."""
    if not _signed():
        return _forbidden()
    call = _call(call_id)
    if call is not None:
        session = get_session()
        voice.on_status(
            session,
            call,
            request.form.get("CallStatus", "")[:20],
            request.form.get("AnsweredBy", "")[:30],
            utcnow(),
        )
        session.commit()
    return Response(status=204)
