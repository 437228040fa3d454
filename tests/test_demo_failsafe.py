"""The demo's fail-safe story (issue 16): FH-002's ctDNA came back positive half an hour before
the seed and nobody answered. Played as history through the real escalation, call and delivery
functions, the alert reached Boston's fail-safe (the operator desk's number) once, about five
minutes before now; `make run`'s jobs find nothing of it left to send; every Boston staff page
shows the red banner until someone acknowledges, no Paris page does; the acknowledgement report
counts it as reaching the fail-safe."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import time_machine
from sqlmodel import Session, col, select

from notifications.models import MessageStatus, OutboxMessage
from notifications.providers import RecordingProvider
from server.alerts import service as alerts
from server.alerts import voice
from server.alerts.models import Alert, AlertKind, AlertLog, AlertState, VoiceCall
from server.audit import AuditEvent
from server.auth.models import StaffUser
from server.demo import DEMO_PASSWORD
from server.messaging import build_dispatcher
from server.participants.models import Participant, Site
from tests import factories
from tests.clock import NOW
from tests.conftest import Web

BANNER = 'class="failsafe-banner"'
DESK = "+16175550190"


def _seed(app: Any) -> None:
    with time_machine.travel(NOW, tick=False):
        result = app.test_cli_runner().invoke(args=["seed-demo", "--if-empty"])
    assert result.exit_code == 0, result.output


def _fh_002(db: Session) -> tuple[Participant, Alert]:
    db.expire_all()
    participant = db.exec(select(Participant).where(Participant.study_code == "FH-002")).one()
    alert = db.exec(
        select(Alert).where(
            Alert.participant_id == participant.id, Alert.kind == AlertKind.CTDNA_POSITIVE
        )
    ).one()
    return participant, alert


def _web(app: Any, who: str) -> Web:
    web = Web(app.test_client())
    assert web.login(f"{who}@demo.stepdown.test", DEMO_PASSWORD).status_code == 302
    return web


def test_the_demo_alert_nobody_answered_reached_the_failsafe_once(app, db):
    _seed(app)
    participant, alert = _fh_002(db)
    boston = db.get(Site, participant.site_id)
    assert boston.code == "BOSTON-01" and boston.failsafe_phone_e164 == DESK
    # Half an hour ago, critical, still open; the fail-safe fired about five minutes ago.
    assert alert.opened_at == NOW - timedelta(minutes=31) and alert.state == AlertState.OPEN
    assert NOW - timedelta(minutes=6) <= alert.failsafe_at <= NOW - timedelta(minutes=4)
    assert alert.next_tier_at is None

    timeline = db.exec(
        select(AlertLog).where(AlertLog.alert_id == alert.id).order_by(col(AlertLog.id))
    ).all()
    whats = [(e.what, e.tier) for e in timeline]
    assert whats.count(("failsafe_fired", 3)) == 1
    assert [w for w in whats if w[0] in ("tier_notified", "call_no_answer")] == [
        ("tier_notified", 1),
        ("call_no_answer", 1),
        ("tier_notified", 2),
        ("tier_notified", 3),
        ("call_no_answer", 3),
    ]
    audited = db.exec(select(AuditEvent).where(AuditEvent.action == "alert.failsafe_fired")).all()
    assert [a.entity_id for a in audited] == [str(alert.id)]

    # What the dispatcher and the fake Twilio did is history: every SMS delivered (the last
    # to the operator desk, without an ACK code), every call rang out; nothing waits.
    sms = db.exec(
        select(OutboxMessage)
        .where(OutboxMessage.ref == f"alert:{alert.id}")
        .order_by(col(OutboxMessage.id))
    ).all()
    assert len(sms) == 5 and all(m.status == MessageStatus.DELIVERED for m in sms)
    assert all(m.provider_sid and m.provider_sid.startswith("SM") for m in sms)
    assert sms[-1].to_e164 == DESK and sms[-1].kind == "alert_failsafe_number"
    assert alert.ack_code not in sms[-1].body and "FH-002" in sms[-1].body
    calls = db.exec(select(VoiceCall).where(VoiceCall.alert_id == alert.id)).all()
    assert [c.status for c in calls] == ["no_answer", "no_answer"]

    # `make run` starts: its escalation, call and dispatch jobs send nothing more for FH-002.
    with time_machine.travel(NOW + timedelta(minutes=3), tick=False):
        now = NOW + timedelta(minutes=3)
        assert alerts.escalate_due(session=db, now=now) == {"advanced": 0, "exhausted": 0}
        provider = RecordingProvider()
        assert (
            voice.place_due_calls(session=db, now=now, provider=provider, base_url="")["placed"]
            == 0
        )
        build_dispatcher(app, provider=provider, rate_per_second=0).run_once()
    assert provider.sent and not [s for s in provider.sent if "FH-002" in s.body]
    assert not [s for s in provider.sent if s.to == DESK]
    _, alert = _fh_002(db)
    assert alert.failsafe_at is not None and len(
        db.exec(select(OutboxMessage).where(OutboxMessage.ref == f"alert:{alert.id}")).all()
    ) == len(sms)


def test_boston_pages_show_the_banner_until_someone_acknowledges_and_paris_pages_never(app, db):
    _seed(app)
    participant, alert = _fh_002(db)
    her_002 = db.exec(select(Participant).where(Participant.study_code == "HER-002")).one()
    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        boston_pages = ("/", f"/alerts/{alert.id}", f"/participants/{participant.id}", "/alerts")
        users = {who: _web(app, who) for who in ("coordinator.boston", "nurse.boston", "admin")}
        for who, web in users.items():
            for path in boston_pages:
                html = web.text(path)
                assert BANNER in html and "FH-002" in html, (who, path)
                assert f'href="/alerts/{alert.id}"' in html, (who, path)
        # The alert page tells the escalation in words, down to the fail-safe.
        page = users["nurse.boston"].text(f"/alerts/{alert.id}")
        assert "Call not answered" in page
        assert "No further tier: the site&#39;s fail-safe is called" in page
        assert "Fail-safe called (every tier unanswered)" in page
        for who in ("nurse.paris", "coordinator.paris", "investigator.paris"):
            web = _web(app, who)
            for path in ("/", f"/participants/{her_002.id}", "/alerts"):
                assert BANNER not in web.text(path), (who, path)
            # Boston's alert is not theirs to see.
            assert web.get(f"/alerts/{alert.id}").status_code == 404

        # The acknowledgement report: both demo alerts, FH-002's as reaching the fail-safe.
        report = users["coordinator.boston"].text("/reports/ack-times")
        assert 'data-measure="failsafe" data-label="Reached the fail-safe">1<' in report
        admin = db.exec(select(StaffUser).where(StaffUser.email == "admin@demo.stepdown.test"))
        token = {"Authorization": f"Bearer {factories.token_for(db, admin.one())}"}
        answer = app.test_client().get("/api/v1/reports/acknowledgement", headers=token)
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        rows = {r["study_code"]: r for r in body["alerts"]}
        assert rows["FH-002"]["failsafe_at"] is not None and rows["HER-002"]["failsafe_at"] is None
        by_site = {r["site_code"]: r for r in body["by_site_month"]}
        assert by_site["BOSTON-01"]["reached_failsafe"] == 1
        assert by_site["PARIS-01"]["reached_failsafe"] == 0

        # The coordinator acknowledges on the alert page: the banner goes, for everyone.
        coordinator = users["coordinator.boston"]
        done = coordinator.post(f"/alerts/{alert.id}/acknowledge", data={"note": "Called her"})
        assert done.status_code in (302, 303), done.get_data(as_text=True)
        for web in users.values():
            assert BANNER not in web.text("/")
    _, alert = _fh_002(db)
    assert alert.state == AlertState.ACKNOWLEDGED and alert.failsafe_at is not None
