"""The voice tier (issue 16 item 2): phone calls of an alert's tier through Twilio Programmable
Voice. The call speaks in the site's language with the participant's code and nothing else
("Stepdown alert for participant HER-002. Press 1 to acknowledge."), gathers one key, and 1
acknowledges for the person called. No answer, busy, voicemail or a failed call move the alert to
its next tier at once, like an undelivered SMS.

A tier chooses `channel` sms (default), call or both; an SMS tier may also call its people when
still unacknowledged `call_after_minutes` after its SMS (the default critical tier 1: 10 minutes).
Calls are rows (`voice_call`) placed by the `alerts.calls` job, so the escalation's transaction
never waits on the provider; a call whose alert was acknowledged before it was placed is
canceled."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, has_app_context
from sqlmodel import Session, col, select

from notifications.providers.base import SmsSendError, TransientSendError
from server import audit
from server.alerts.models import Alert, AlertState, VoiceCall
from server.auth.models import StaffUser
from server.auth.service import actor_of

log = logging.getLogger("stepdown.alerts.voice")

# What the call says (no health information: the participant's code only), and Twilio's
# <Say> language of each staff locale.
SPOKEN = {
    "en": (
        "Stepdown alert for participant {code}. Press 1 to acknowledge.",
        "Acknowledged. Thank you.",
        "Not acknowledged. Goodbye.",
    ),
    "fr": (
        "Alerte Stepdown pour le participant {code}. Appuyez sur 1 pour accuser réception.",
        "Alerte prise en compte. Merci.",
        "Alerte non prise en compte. Au revoir.",
    ),
    "zh": (
        "Stepdown 警报，参与者 {code}。请按 1 确认。",
        "已确认，谢谢。",
        "未确认，再见。",
    ),
}
SAY_LANGUAGE = {"en": "en-US", "fr": "fr-FR", "zh": "cmn-CN"}
# A call the provider could not take (a transient error) is retried until this long after due.
RETRY_FOR = timedelta(minutes=5)
# Outcomes that move the alert on like an undelivered SMS.
MOVES_ON = frozenset({"no_answer", "busy", "voicemail", "failed"})
STATUS_OF_TWILIO = {
    "no-answer": "no_answer",
    "busy": "busy",
    "failed": "failed",
    "canceled": "failed",
}


def spoken_code(code: str) -> str:
    """A participant code read out character by character ("H E R 0 0 2")."""
    return " ".join(c for c in code if c.isalnum())


def queue_calls(
    session: Session,
    alert: Alert,
    tier: int,
    people: list[StaffUser],
    due_at: datetime,
    locale: str,
    now: datetime,
    *,
    kind: str = "tier",
) -> list[VoiceCall]:
    """One call per person (idempotent on alert, tier, repeat and person)."""
    out = []
    for person in people:
        key = f"call:{alert.id}:tier:{tier}:rep:{alert.repeats_done}:{kind}:{person.id}"
        row = session.exec(select(VoiceCall).where(VoiceCall.dedupe_key == key)).first()
        if row is None:
            row = VoiceCall(
                dedupe_key=key,
                alert_id=alert.id,  # type: ignore[arg-type]
                staff_user_id=person.id,
                to_e164=person.phone_e164,  # type: ignore[arg-type]
                locale=locale,
                tier=tier,
                due_at=due_at,
                created_at=now,
            )
            session.add(row)
        out.append(row)
    session.flush()
    return out


def _provider() -> Any:
    from notifications.providers import provider_from_config

    ext = current_app.extensions
    if "stepdown_voice_provider" not in ext:
        ext["stepdown_voice_provider"] = provider_from_config(current_app.config)
    return ext["stepdown_voice_provider"]


def place_due_calls(
    *, session: Session, now: datetime, provider: Any = None, base_url: str | None = None
) -> dict[str, int]:
    """The `alerts.calls` job: place every call that is due (each committed before and after
    the provider is asked), cancel those whose alert no longer waits."""
    from server.alerts import service

    if base_url is None:
        base_url = str(current_app.config["PUBLIC_BASE_URL"]) if has_app_context() else ""
    placed = canceled = failed = 0
    rows = session.exec(
        select(VoiceCall)
        .where(VoiceCall.status == "queued", col(VoiceCall.due_at) <= now)
        .order_by(col(VoiceCall.due_at), col(VoiceCall.id))
        .limit(50)
    ).all()
    for call in rows:
        alert = session.get(Alert, call.alert_id)
        if alert is None or alert.state != AlertState.OPEN:
            call.status = "canceled"
            session.add(call)
            session.commit()
            canceled += 1
            continue
        provider = provider or _provider()
        try:
            sid = provider.place_call(
                to=call.to_e164,
                url=f"{base_url}/twilio/voice/{call.id}/twiml",
                status_callback=f"{base_url}/twilio/voice/{call.id}/status",
            )
        except TransientSendError as exc:
            if exc.may_have_been_accepted is False and now - _aware(call.due_at) < RETRY_FOR:
                log.warning("call %s: provider busy (%s), retrying", call.id, exc)
                continue
            finish(session, call, "failed", now, detail=str(exc))
            failed += 1
            session.commit()
            continue
        except SmsSendError as exc:
            finish(session, call, "failed", now, detail=str(exc))
            failed += 1
            session.commit()
            continue
        call.status, call.call_sid, call.placed_at = "calling", sid, now
        session.add(call)
        service.log(session, alert, "call_placed", now, tier=call.tier, detail={"call_id": call.id})
        session.commit()
        placed += 1
    return {"placed": placed, "canceled": canceled, "failed": failed}


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def finish(
    session: Session, call: VoiceCall, status: str, now: datetime, *, detail: str | None = None
) -> None:
    """Record a call's outcome once; no answer, busy, voicemail and failure move the alert on."""
    from server.alerts import service

    if call.status not in ("queued", "calling", "answered"):
        return  # an outcome is final (Twilio may post it twice)
    call.status, call.ended_at = status, now
    session.add(call)
    alert = session.get(Alert, call.alert_id)
    if alert is None:
        return
    service.log(
        session,
        alert,
        f"call_{status}",
        now,
        tier=call.tier,
        detail={"call_id": call.id, **({"error": detail[:200]} if detail else {})},
    )
    if status in MOVES_ON and alert.state == AlertState.OPEN and call.tier == alert.tier:
        service.escalate(session=session, alert=alert, now=now, expected_tier=call.tier)


def on_status(
    session: Session, call: VoiceCall, call_status: str, answered_by: str, now: datetime
) -> None:
    """Twilio's final status of the call."""
    if call_status == "completed":
        if answered_by.startswith("machine") or answered_by == "fax":
            finish(session, call, "voicemail", now)
        elif call.status in ("calling", "queued"):
            finish(session, call, "answered", now)  # heard, no key: the tier's timeout runs on
        return
    status = STATUS_OF_TWILIO.get(call_status)
    if status is not None:
        finish(session, call, status, now)


def on_keypress(session: Session, call: VoiceCall, digits: str, now: datetime) -> bool:
    """The key pressed during the call: 1 acknowledges for the person called (if their role
    may); anything else changes nothing. True when the alert is acknowledged by this call."""
    from server.alerts import service
    from server.auth.rules import Permission, has_permission

    alert = session.get(Alert, call.alert_id)
    user = session.get(StaffUser, call.staff_user_id) if call.staff_user_id else None
    if alert is None or user is None or digits.strip() != "1":
        return False
    if not user.is_active or not has_permission(user.role, Permission.ALERT_ACK):
        return False
    if alert.state == AlertState.OPEN:
        service.acknowledge(session=session, alert=alert, user=user, channel="call", now=now)
    call.status, call.ended_at = "acknowledged", now
    session.add(call)
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="alert.call_keypress",
        entity="alert",
        entity_id=alert.id,
        site_id=alert.site_id,
        now=now,
        after={"call_id": call.id, "digits": "1"},
    )
    return True
