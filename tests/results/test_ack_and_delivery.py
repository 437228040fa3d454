"""The alert loop over SMS: a nurse replies "ACK <code>" through the signed inbound webhook; a
wrong code changes nothing; an undelivered alert SMS reported by Twilio's status callback moves
the alert to the next tier at once."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from notifications.models import MessageStatus, OutboxMessage
from server.alerts.models import Alert, AlertState
from tests.notifications.test_webhooks import post_signed, status_params
from tests.results.test_results_alerts import (
    T0,
    at,
    care_team,
    ctdna,
    post_negative_baseline,
    send_staff_sms,
)

__all__ = ["care_team"]  # the fixture, imported for use here


def _inbound(from_, body, sid):
    return {
        "MessageSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "From": from_,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
    }


def _open_alert(api_as):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        return lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]


def test_ack_reply_acknowledges_once_and_stops_tiers(app, client, db, world, api_as, care_team):
    alert_id = _open_alert(api_as)
    alert = db.get(Alert, alert_id)
    with at(T0 + timedelta(minutes=1)):
        send_staff_sms(app)
    with at(T0 + timedelta(minutes=3)):
        r = post_signed(
            app,
            client,
            "/twilio/inbound",
            _inbound(care_team["nurse"], f"ACK {alert.ack_code}", "SMack1"),
        )
        assert r.status_code == 200
        # Twilio retries the webhook; the second delivery changes nothing.
        post_signed(
            app,
            client,
            "/twilio/inbound",
            _inbound(care_team["nurse"], f"ack {alert.ack_code}", "SMack1"),
        )
    db.expire_all()
    alert = db.get(Alert, alert_id)
    assert alert.state == AlertState.ACKNOWLEDGED and alert.ack_channel == "sms"
    assert alert.next_tier_at is None
    confirmations = db.exec(
        select(OutboxMessage).where(OutboxMessage.kind == "alert_ack_confirmed")
    ).all()
    assert len(confirmations) == 1 and confirmations[0].to_e164 == care_team["nurse"]
    # A web acknowledgement afterwards is recorded as a repeat, not a second acknowledgement.
    api_as("nurse", "A").post(f"/api/v1/alerts/{alert_id}/acknowledge", json={})
    timeline = api_as("nurse", "A").get(f"/api/v1/alerts/{alert_id}").get_json()["timeline"]
    assert [e["what"] for e in timeline].count("acknowledged") == 1


def test_wrong_code_changes_nothing_and_says_so(app, client, db, world, api_as, care_team):
    alert_id = _open_alert(api_as)
    alert = db.get(Alert, alert_id)
    with at(T0 + timedelta(minutes=1)):
        send_staff_sms(app)
    wrong = "100000" if alert.ack_code != "100000" else "100001"
    with at(T0 + timedelta(minutes=3)):
        post_signed(
            app, client, "/twilio/inbound", _inbound(care_team["nurse"], f"ACK {wrong}", "SMwrong1")
        )
    db.expire_all()
    assert db.get(Alert, alert_id).state == AlertState.OPEN
    replies = db.exec(select(OutboxMessage).where(OutboxMessage.kind == "ack_code_unknown")).all()
    assert [r.to_e164 for r in replies] == [care_team["nurse"]]


def test_undelivered_alert_sms_escalates_at_once(app, client, db, world, api_as, care_team):
    alert_id = _open_alert(api_as)
    first = db.exec(select(OutboxMessage).where(OutboxMessage.ref == f"alert:{alert_id}")).one()
    first.status, first.provider_sid = MessageStatus.SENT, "SM" + "a" * 32
    db.add(first)
    db.commit()
    with at(T0 + timedelta(minutes=2)):
        r = post_signed(
            app,
            client,
            f"/twilio/status/{first.id}",
            status_params("undelivered", sid=first.provider_sid, error_code=30003),
        )
        assert r.status_code == 204
    db.expire_all()
    alert = db.get(Alert, alert_id)
    assert alert.tier == 2  # not waiting for the 15-minute timeout
    tier2 = db.exec(
        select(OutboxMessage).where(
            OutboxMessage.ref == f"alert:{alert_id}", OutboxMessage.dedupe_key.contains(":tier:2:")
        )
    )
    assert {m.to_e164 for m in tier2} == {care_team["nurse"], care_team["coordinator"]}


def _login(client, email):
    import re

    from tests.factories import PASSWORD

    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
    return token


def test_the_link_in_the_sms_opens_a_page_to_acknowledge_in_one_click(
    app, client, db, world, api_as, care_team
):
    import re

    alert_id = _open_alert(api_as)
    _login(client, "nurse.a@example.test")
    page = client.get(f"/alerts/{alert_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "A-001" in html and "Acknowledge" in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    assert client.post(f"/alerts/{alert_id}/acknowledge", data={}).status_code == 400  # no CSRF
    r = client.post(f"/alerts/{alert_id}/acknowledge", data={"csrf_token": token})
    assert r.status_code == 302
    db.expire_all()
    alert = db.get(Alert, alert_id)
    assert alert.state == AlertState.ACKNOWLEDGED and alert.ack_channel == "web"


def test_another_sites_alert_page_is_404(app, client, db, world, api_as, care_team):
    alert_id = _open_alert(api_as)
    _login(client, "nurse.b@example.test")
    assert client.get(f"/alerts/{alert_id}").status_code == 404
    assert "A-001" not in client.get("/alerts").get_data(as_text=True)
