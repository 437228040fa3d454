"""The fail-safe (issue 16 item 3) under the frozen clock: a critical alert nobody acknowledges
through every tier reaches the site's designated fail-safe exactly once (its SMS, a red banner on
every staff page of the site until someone acknowledges, the audit); a route reaching nobody calls
it at once; a site without one cannot enrol and the dead-route check names it."""

from __future__ import annotations

from datetime import UTC, timedelta

from sqlmodel import col, select

from server.alerts import service as alerts
from server.alerts.models import Alert, AlertKind, AlertLog, VoiceCall
from server.audit import AuditEvent
from server.auth.models import StaffUser
from server.clock import utcnow
from tests.api.test_participants import _new
from tests.results.test_results_alerts import (
    T0,
    at,
    care_team,
    ctdna,
    post_negative_baseline,
    staff_sms,
)

__all__ = ["care_team"]


def _failsafe_sms(db, alert_id):
    return [m for m in staff_sms(db, alert_id) if ":failsafe:" in m.dedupe_key]


def _run(db, minutes):
    with at(T0 + timedelta(minutes=minutes)):
        out = alerts.escalate_due(session=db, now=utcnow())
        db.commit()
    return out


def test_the_failsafe_fires_once_when_the_last_tier_goes_unanswered(
    world, db, api_as, web_as, care_team
):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
    # Critical: tier 1 now, tier 2 at +15, tier 3 at +30 (timeouts 15, no repeats).
    for minutes in (15, 30):
        assert _run(db, minutes)["advanced"] == 1, minutes
    assert _failsafe_sms(db, alert_id) == []
    _run(db, 44)
    assert _failsafe_sms(db, alert_id) == [] and db.get(Alert, alert_id).failsafe_at is None
    # The last tier's timeout passes unanswered: the fail-safe (site A's: its investigators).
    assert _run(db, 45) == {"advanced": 0, "exhausted": 1}
    sms = _failsafe_sms(db, alert_id)
    assert [m.to_e164 for m in sms] == [care_team["investigator"]]
    alert = db.get(Alert, alert_id)
    assert alert.failsafe_at == T0 + timedelta(minutes=45)
    # In the site's language (Paris: French), with the code to reply with.
    assert sms[0].kind == "alert_failsafe" and alert.ack_code in sms[0].body
    assert sms[0].body.startswith("FILET DE SÉCURITÉ - Stepdown")
    assert "A-001" in sms[0].body
    for word in ("positive", "ctdna", "heroes", "cancer"):
        assert word not in sms[0].body.lower()
    # Exactly once: the job again, later, and a failed SMS of the fail-safe change nothing.
    _run(db, 45)
    _run(db, 300)
    assert len(_failsafe_sms(db, alert_id)) == 1
    fired = db.exec(
        select(AlertLog).where(AlertLog.alert_id == alert_id, AlertLog.what == "failsafe_fired")
    ).all()
    assert len(fired) == 1
    audited = db.exec(select(AuditEvent).where(AuditEvent.action == "alert.failsafe_fired")).all()
    assert [(str(a.entity_id), a.site_id) for a in audited] == [
        (str(alert_id), world.sites["A"].id)
    ]
    # A red banner on every staff page of site A (not of site B) until someone acknowledges.
    with at(T0 + timedelta(minutes=140)):
        monitor = web_as("monitor", "A")
        for path in ("/", "/participants", "/adherence", "/reports/ack-times"):
            html = monitor.text(path)
            assert 'class="failsafe-banner"' in html and "A-001" in html, path
        assert "failsafe-banner" not in web_as("nurse", "B").text("/")
        nurse = api_as("nurse", "A")
        assert nurse.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={}).status_code == 200
        assert "failsafe-banner" not in monitor.text("/")
    # The acknowledgement report counts it.
    body = api_as("investigator", "A").get(
        "/api/v1/reports/acknowledgement?from=2027-03&to=2027-03"
    )
    june = body.get_json()["by_site_month"][0]
    assert june["reached_failsafe"] == 1 and june["acknowledged"] == 1
    assert june["minutes_to_acknowledgement"]["max"] == 140.0


def test_the_default_critical_route_reaches_the_failsafe_at_45_minutes_not_before_and_once(
    world, db, api_as, care_team
):
    """CLSI GP47's hour: unanswered, the default critical route reaches the site's fail-safe 45
    minutes after the first SMS (tiers at 0, 15 and 30 min, 15 minutes each, no repeats),
    with the escalation job run every 15 seconds as the scheduler does."""
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]

    def every_15_s(start, end):
        out = {}
        for seconds in range(start, end, 15):
            with at(T0 + timedelta(seconds=seconds)):
                out[seconds] = alerts.escalate_due(session=db, now=utcnow())
                db.commit()
        return out

    runs = every_15_s(15, 45 * 60)
    # Tier 2 at 15:00 and tier 3 at 30:00, each exactly once; nothing else moves.
    assert {s for s, out in runs.items() if out["advanced"]} == {15 * 60, 30 * 60}
    assert not any(out["exhausted"] for out in runs.values())
    with at(T0 + timedelta(minutes=44, seconds=59)):
        assert alerts.escalate_due(session=db, now=utcnow()) == {
            "advanced": 0,
            "exhausted": 0,
        }
    assert _failsafe_sms(db, alert_id) == [] and db.get(Alert, alert_id).failsafe_at is None
    sent = {
        tier: {m.to_e164 for m in staff_sms(db, alert_id) if f":tier:{tier}:" in m.dedupe_key}
        for tier in (1, 2, 3)
    }
    assert sent == {
        1: {care_team["nurse"]},
        2: {care_team["nurse"], care_team["coordinator"]},
        3: {care_team["investigator"]},
    }
    notified = db.exec(
        select(AlertLog.at, AlertLog.tier)
        .where(AlertLog.alert_id == alert_id, AlertLog.what == "tier_notified")
        .order_by(col(AlertLog.id))
    ).all()
    assert [(at_.replace(tzinfo=UTC) - T0, tier) for at_, tier in notified] == [
        (timedelta(0), 1),
        (timedelta(minutes=15), 2),
        (timedelta(minutes=30), 3),
    ]
    # The on-call nurse is called 10 minutes after her SMS, the investigators with theirs.
    calls = db.exec(
        select(VoiceCall).where(VoiceCall.alert_id == alert_id).order_by(col(VoiceCall.id))
    ).all()
    assert [(c.to_e164, c.tier, c.due_at.replace(tzinfo=UTC) - T0) for c in calls] == [
        (care_team["nurse"], 1, timedelta(minutes=10)),
        (care_team["investigator"], 3, timedelta(minutes=30)),
    ]

    # 45:00: the investigators' 15 minutes are up, nobody acknowledged: the fail-safe.
    with at(T0 + timedelta(minutes=45)):
        assert alerts.escalate_due(session=db, now=utcnow()) == {
            "advanced": 0,
            "exhausted": 1,
        }
        db.commit()
    alert = db.get(Alert, alert_id)
    assert alert.failsafe_at == T0 + timedelta(minutes=45) and alert.next_tier_at is None
    assert [m.to_e164 for m in _failsafe_sms(db, alert_id)] == [care_team["investigator"]]

    # Once only: the job keeps running for another hour and changes nothing.
    later = every_15_s(45 * 60, 105 * 60)
    assert all(out == {"advanced": 0, "exhausted": 0} for out in later.values())
    assert len(_failsafe_sms(db, alert_id)) == 1
    assert len(staff_sms(db, alert_id)) == 5  # 1 + 2 + 1 tier SMS and the fail-safe's
    fired = db.exec(
        select(AlertLog).where(AlertLog.alert_id == alert_id, AlertLog.what == "failsafe_fired")
    ).all()
    assert len(fired) == 1
    audited = db.exec(select(AuditEvent).where(AuditEvent.action == "alert.failsafe_fired")).all()
    assert [str(a.entity_id) for a in audited] == [str(alert_id)]
    assert db.get(Alert, alert_id).failsafe_at == T0 + timedelta(minutes=45)


def test_a_route_that_reaches_nobody_calls_the_site_number_at_once(world, db, api_as):
    admin = api_as("admin", "A")
    site_a = world.sites["A"].id
    r = admin.patch(
        f"/api/v1/sites/{site_a}",
        json={"failsafe_role": None, "failsafe_phone_e164": "+33142345678"},
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["failsafe_phone_e164"] == "+33142345678"
    changed = db.exec(
        select(AuditEvent).where(AuditEvent.action == "site.update").order_by(col(AuditEvent.id))
    ).all()[-1]
    assert changed.after["failsafe_phone_e164"] == "+33142345678"
    assert (
        admin.patch(f"/api/v1/sites/{site_a}", json={"failsafe_phone_e164": "12"}).status_code
        == 422
    )
    assert (
        admin.patch(f"/api/v1/sites/{site_a}", json={"failsafe_role": "monitor"}).status_code == 422
    )
    # Nobody at site A has a verified phone: the route is exhausted when the alert opens.
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
    sms = _failsafe_sms(db, alert_id)
    assert [m.to_e164 for m in sms] == ["+33142345678"]
    # A number is nobody's: its SMS names no ACK code (a reply from it would count for nothing).
    alert = db.get(Alert, alert_id)
    assert alert.ack_code not in sms[0].body and "/alerts/" in sms[0].body
    assert alert.failsafe_at == T0
    _run(db, 60)
    assert len(_failsafe_sms(db, alert_id)) == 1


def test_a_site_without_a_failsafe_cannot_enrol_and_its_route_is_dead(world, db, api_as):
    site = world.sites["A"]
    site.failsafe_role = None
    db.add(site)
    db.commit()
    r = api_as("coordinator", "A").post("/api/v1/participants", json=_new(site.id))
    assert r.status_code == 422
    assert "fail-safe" in " ".join(r.get_json()["error"]["fields"]["site_id"])
    health = api_as("admin", "A").get(f"/api/v1/sites/{site.id}/escalation").get_json()
    failsafe = [t for t in health["tiers"] if t["route"] == "failsafe"]
    assert failsafe[0]["is_dead"] and "cannot enrol" in failsafe[0]["warning"]
    assert health["has_dead_route"]
    with at(T0):
        alerts.check_routes(session=db, now=utcnow())
        db.commit()
    dead = db.exec(select(Alert).where(Alert.kind == AlertKind.DEAD_ROUTE)).all()
    assert any(a.site_id == site.id and "failsafe" in a.summary for a in dead)
    # Once an admin names a role, enrolment goes through (site B never lost its fail-safe).
    admin = api_as("admin", "A")
    assert (
        admin.patch(f"/api/v1/sites/{site.id}", json={"failsafe_role": "investigator"}).status_code
        == 200
    )
    investigator = world.staff[("investigator", "A")]
    investigator.phone_e164, investigator.is_phone_verified = "+33610000003", True
    db.add(investigator)
    db.commit()
    assert db.get(StaffUser, investigator.id).is_phone_verified
    health = admin.get(f"/api/v1/sites/{site.id}/escalation").get_json()
    assert not next(t for t in health["tiers"] if t["route"] == "failsafe")["is_dead"]
    r = api_as("coordinator", "A").post("/api/v1/participants", json=_new(site.id))
    assert r.status_code == 201, r.get_json()
