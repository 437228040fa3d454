"""The voice tier (issue 16 item 2), end to end under the frozen clock: a critical alert's SMS
unacknowledged for 10 minutes becomes a phone call placed through the twilio library at the fake
Twilio, which fetches the TwiML from the app (signed), plays the callee's keypad and posts the
final status (signed). Pressing 1 acknowledges; no answer, busy, voicemail and a failed call move
the alert to its next tier at once; another key or hanging up changes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import col, select

from notifications.fake_twilio import FakeTwilio
from notifications.providers import TwilioSmsProvider
from server.alerts import service as alerts
from server.alerts import voice
from server.alerts.models import Alert, AlertKind, AlertLog, VoiceCall
from server.auth.models import SiteMembership, StaffUser
from server.clock import utcnow
from server.db import get_db
from server.participants.models import Participant
from tests.browser.conftest import served
from tests.results.test_concurrency import fresh_app

__all__ = ["fresh_app", "served"]

NURSE = "+33610000001"
COORDINATOR = "+33610000002"
HEALTH_WORDS = ("positive", "ctdna", "cancer", "heroes", "progress", "result")


def _open_alert(app: Any, ids: dict[str, Any]) -> int:
    """A critical ctDNA alert at site A whose on-call nurse (and coordinator) have phones."""
    with app.app_context(), get_db(app).job_session() as s:
        phones = {"nurse.a@example.test": NURSE, "coordinator.a@example.test": COORDINATOR}
        for email, phone in phones.items():
            user = s.exec(select(StaffUser).where(StaffUser.email == email)).one()
            user.phone_e164, user.is_phone_verified = phone, True
            s.add(user)
            if email.startswith("nurse"):
                m = s.exec(select(SiteMembership).where(SiteMembership.user_id == user.id)).one()
                m.is_on_call = True
                s.add(m)
        s.flush()
        participant = s.get(Participant, ids["A1"])
        alert, _ = alerts.open_alert(
            session=s,
            kind=AlertKind.CTDNA_POSITIVE,
            trigger_key="voice-test",
            participant=participant,
            site_id=ids["site_a"],
            summary="ctDNA positive",
            now=utcnow(),
        )
        return alert.id  # type: ignore[return-value]


def _alert(app: Any, alert_id: int) -> tuple[Alert, list[str], list[VoiceCall]]:
    with app.app_context(), get_db(app).session() as s:
        alert = s.get(Alert, alert_id)
        whats = [
            e.what
            for e in s.exec(
                select(AlertLog).where(AlertLog.alert_id == alert_id).order_by(col(AlertLog.id))
            )
        ]
        calls = list(s.exec(select(VoiceCall).where(VoiceCall.alert_id == alert_id)).all())
        s.expunge_all()
        return alert, whats, calls  # type: ignore[return-value]


def _place(app: Any, fake: FakeTwilio, base: str, minutes: float) -> dict[str, int]:
    provider = TwilioSmsProvider(
        app.config["TWILIO_ACCOUNT_SID"],
        app.config["TWILIO_AUTH_TOKEN"],
        from_number="+15005550006",
        base_url=fake.base_url,
    )
    with app.app_context(), get_db(app).job_session() as s:
        return voice.place_due_calls(
            session=s, now=utcnow() + timedelta(minutes=minutes), provider=provider, base_url=base
        )


@pytest.mark.parametrize(
    ("behaviour", "final", "outcome", "acknowledged", "moved_on"),
    [
        ("press1", "completed", "acknowledged", True, False),
        ("no_answer", "no-answer", "no_answer", False, True),
        ("busy", "busy", "busy", False, True),
        ("voicemail", "completed", "voicemail", False, True),
        ("failed", "failed", "failed", False, True),
        ("press2", "completed", "answered", False, False),
    ],
)
def test_a_call_after_ten_minutes_and_what_the_callee_does(
    served: Any, behaviour: str, final: str, outcome: str, acknowledged: bool, moved_on: bool
) -> None:
    app, base, ids = served
    alert_id = _open_alert(app, ids)
    alert, _, calls = _alert(app, alert_id)
    # The SMS went at once; the call waits 10 minutes for an acknowledgement.
    assert [(c.to_e164, c.status, c.tier) for c in calls] == [(NURSE, "queued", 1)]
    assert calls[0].due_at.replace(tzinfo=None) == (
        alert.opened_at + timedelta(minutes=10)
    ).replace(tzinfo=None)
    with FakeTwilio(
        account_sid=app.config["TWILIO_ACCOUNT_SID"], auth_token=app.config["TWILIO_AUTH_TOKEN"]
    ) as fake:
        fake.set_call_behaviour(NURSE, behaviour)
        assert _place(app, fake, base, 9.9)["placed"] == 0  # not yet due
        assert _place(app, fake, base, 10)["placed"] == 1
        call = fake.wait_for_phone_call(NURSE, final)
        fake.wait_until(lambda: bool(call.callbacks))
        assert call.callbacks == [(final, 204)]  # the signed status callback was taken
        if behaviour not in ("no_answer", "busy", "failed"):
            # The TwiML the app gave: in French (Paris), the code spelled out, one key gathered.
            twiml = call.twiml or ""
            if behaviour == "voicemail":
                assert "<Gather" not in twiml and "<Say" not in twiml  # nothing left on a machine
            else:
                assert '<Gather action="' in twiml and 'numDigits="1"' in twiml
                assert 'language="fr-FR"' in twiml and "A 0 0 1" in twiml
                assert "Appuyez sur 1" in twiml
                for word in HEALTH_WORDS:
                    assert word not in twiml.lower()
    alert, whats, calls = _alert(app, alert_id)
    assert calls[0].status == outcome and calls[0].call_sid == call.sid
    assert (alert.acknowledged_at is not None) is acknowledged
    if acknowledged:
        assert alert.ack_channel == "call"
        assert "Merci" in (call.gather_reply or "")
    # No answer, busy, voicemail, failure: the next tier at once, like an undelivered SMS.
    assert alert.tier == (2 if moved_on else 1)
    assert f"call_{outcome}" in whats or outcome == "acknowledged"
    assert ("tier_notified" in whats[whats.index("call_placed") :]) is moved_on


def test_an_acknowledged_alert_is_never_called(served: Any) -> None:
    app, base, ids = served
    alert_id = _open_alert(app, ids)
    with app.app_context(), get_db(app).job_session() as s:
        alert = s.get(Alert, alert_id)
        nurse = s.exec(select(StaffUser).where(StaffUser.email == "nurse.a@example.test")).one()
        alerts.acknowledge(session=s, alert=alert, user=nurse, channel="web", now=utcnow())  # type: ignore[arg-type]
    with FakeTwilio(
        account_sid=app.config["TWILIO_ACCOUNT_SID"], auth_token=app.config["TWILIO_AUTH_TOKEN"]
    ) as fake:
        assert _place(app, fake, base, 10) == {"placed": 0, "canceled": 1, "failed": 0}
        assert fake.phone_calls() == []


def test_voice_webhooks_refuse_a_missing_or_forged_signature(client: Any) -> None:
    for path in ("/twilio/voice/1/twiml", "/twilio/voice/1/gather", "/twilio/voice/1/status"):
        assert client.post(path, data={"Digits": "1"}).status_code == 403
        forged = client.post(path, data={"Digits": "1"}, headers={"X-Twilio-Signature": "x"})
        assert forged.status_code == 403
