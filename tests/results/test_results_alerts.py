"""Results in → rules → alerts → escalation → acknowledgement, through the API, under a frozen
clock; quarantine; the CSV import."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from sqlmodel import select

from notifications.models import MessageCategory, MessageStatus, OutboxMessage
from server.alerts import service as alerts
from server.alerts.models import Alert, AlertState
from server.auth.models import SiteMembership
from server.results.models import LabResult, PfsEvent, ResultStatus
from server.schedules.models import EventStatus, ScheduleEvent

T0 = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)
P = "/api/v1/participants"


def at(moment):
    return time_machine.travel(moment, tick=False)


@pytest.fixture
def care_team(world, db):
    """Site A staff with verified phones; the nurse is on call."""
    phones = {
        "nurse": "+33610000001",
        "coordinator": "+33610000002",
        "investigator": "+33610000003",
        "admin": "+33610000004",
    }
    for role, phone in phones.items():
        user = world.staff[(role, "A")]
        user.phone_e164, user.is_phone_verified = phone, True
        db.add(user)
    nurse = world.staff[("nurse", "A")]
    membership = db.exec(select(SiteMembership).where(SiteMembership.user_id == nurse.id)).one()
    membership.is_on_call = True
    db.add(membership)
    db.commit()
    return phones


def ctdna(
    code="A-001", accession="ACC-1", call="positive", collected="2027-03-29T09:00:00+02:00", **kw
):
    return {
        "lab": "natera",
        "study": "HEROES",
        "study_code": code,
        "accession_id": accession,
        "collected_at": collected,
        "call": call,
        "mtm_per_ml": 0.42,
        **kw,
    }


def staff_sms(db, alert_id=None):
    q = select(OutboxMessage).where(OutboxMessage.category == MessageCategory.STAFF_ALERT)
    if alert_id is not None:
        q = q.where(OutboxMessage.ref == f"alert:{alert_id}")
    db.expire_all()
    return db.exec(q.order_by(OutboxMessage.id)).all()


def send_staff_sms(app, provider=None):
    """One dispatcher pass against a recording provider (inside the test's transaction): the
    alert SMS due now are handed over and recorded as sent. Returns what the phones received in
    this pass (give the same provider to every pass of a test: its message ids are its own)."""
    from notifications.providers import RecordingProvider
    from server.messaging import build_dispatcher

    provider = provider or RecordingProvider()
    before = len(provider.sent)
    build_dispatcher(app, provider=provider, rate_per_second=0).run_once()
    return provider.sent[before:]


def post_negative_baseline(api):
    r = api.post(
        "/api/v1/results/ctdna",
        json=ctdna(accession="BASE-1", call="negative", collected="2026-12-14T09:00:00+01:00"),
    )
    assert r.status_code == 201, r.get_json()


def test_turns_positive_opens_one_alert_with_tier_1_sms_in_the_same_transaction(
    world, db, api_as, care_team
):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        r = lab.post("/api/v1/results/ctdna", json=ctdna())
        assert r.status_code == 201, r.get_json()
        body = r.get_json()
        assert body["status"] == "accepted" and body["alert_id"]
        # The lab retries: the same accession is the same result, no second alert.
        again = lab.post("/api/v1/results/ctdna", json=ctdna())
        assert again.status_code == 200 and again.get_json()["id"] == body["id"]
        changed = lab.post("/api/v1/results/ctdna", json=ctdna(call="negative"))
        assert changed.status_code == 409
    assert len(db.exec(select(Alert)).all()) == 1
    alert = db.get(Alert, body["alert_id"])
    assert alert.kind.value == "ctdna_positive" and alert.tier == 1
    assert alert.next_tier_at == T0 + timedelta(minutes=15)
    sms = staff_sms(db, alert.id)
    assert [m.to_e164 for m in sms] == [care_team["nurse"]]
    assert sms[0].priority == 0 and sms[0].status == MessageStatus.PENDING
    # Code and link only: no result, no diagnosis.
    assert "A-001" in sms[0].body and alert.ack_code in sms[0].body
    assert "positive" not in sms[0].body.lower() and "ctdna" not in sms[0].body.lower()
    # The result completed the ctDNA draw it fulfils, with its outcome.
    event = db.get(ScheduleEvent, body["event_id"])
    assert event.key == "ctdna:1" and event.status == EventStatus.COMPLETED
    assert event.outcome == {"ctdna": "positive"}


def test_tiers_escalate_exactly_at_their_timeouts(world, db, api_as, care_team):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
    with at(T0 + timedelta(minutes=14, seconds=59)):
        assert alerts.escalate_due(session=db, now=datetime.now(UTC))["advanced"] == 0
    with at(T0 + timedelta(minutes=15)):
        assert alerts.escalate_due(session=db, now=datetime.now(UTC))["advanced"] == 1
        db.commit()
    tier2 = {m.to_e164 for m in staff_sms(db, alert_id) if ":tier:2:" in m.dedupe_key}
    assert tier2 == {care_team["nurse"], care_team["coordinator"]}
    with at(T0 + timedelta(minutes=29, seconds=59)):
        assert alerts.escalate_due(session=db, now=datetime.now(UTC))["advanced"] == 0
    with at(T0 + timedelta(minutes=30)):
        alerts.escalate_due(session=db, now=datetime.now(UTC))
        db.commit()
    tier3 = {m.to_e164 for m in staff_sms(db, alert_id) if ":tier:3:" in m.dedupe_key}
    assert tier3 == {care_team["investigator"]}
    # Running the job again at the same moment sends nothing more.
    with at(T0 + timedelta(minutes=30)):
        alerts.escalate_due(session=db, now=datetime.now(UTC))
    assert len(staff_sms(db, alert_id)) == 4


def test_acknowledged_at_14_59_means_no_tier_2(world, db, api_as, care_team):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
    nurse = api_as("nurse", "A")
    with at(T0 + timedelta(minutes=14, seconds=59)):
        r = nurse.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "calling her"})
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["state"] == "acknowledged"
        twice = nurse.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={})
        assert twice.status_code == 200
    with at(T0 + timedelta(minutes=15)):
        alerts.escalate_due(session=db, now=datetime.now(UTC))
    assert [m.dedupe_key.split(":tier:")[1][0] for m in staff_sms(db, alert_id)] == ["1"]
    timeline = nurse.get(f"/api/v1/alerts/{alert_id}").get_json()["timeline"]
    whats = [e["what"] for e in timeline]
    assert whats.count("acknowledged") == 1 and "ack_repeated" in whats


def test_sms_reply_with_the_code_acknowledges_and_a_wrong_code_changes_nothing(
    app, world, db, api_as, care_team
):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
        alert = db.get(Alert, alert_id)
        # Not yet handed to the provider: the nurse's phone has not received the code.
        early = alerts.acknowledge_by_sms(
            session=db, from_number=care_team["nurse"], code=alert.ack_code, now=datetime.now(UTC)
        )
        assert early.outcome == alerts.SmsAckOutcome.REFUSED and early.alert is None
        assert early.reason == "not_a_recipient"
        [sms] = send_staff_sms(app)
        assert sms.to == care_team["nurse"] and f"ACK {alert.ack_code}" in sms.body
        wrong = "100000" if alert.ack_code != "100000" else "100001"
        refused = alerts.acknowledge_by_sms(
            session=db, from_number=care_team["nurse"], code=wrong, now=datetime.now(UTC)
        )
        assert refused.outcome == alerts.SmsAckOutcome.REFUSED and refused.alert is None
        assert refused.user is not None and refused.reason == "unknown_code"
        db.expire_all()
        assert db.get(Alert, alert_id).state == AlertState.OPEN
        # A stranger's number with the right code changes nothing either.
        stranger = alerts.acknowledge_by_sms(
            session=db, from_number="+33699999999", code=alert.ack_code, now=datetime.now(UTC)
        )
        assert stranger.outcome == alerts.SmsAckOutcome.NOT_STAFF and stranger.user is None
        done = alerts.acknowledge_by_sms(
            session=db, from_number=care_team["nurse"], code=alert.ack_code, now=datetime.now(UTC)
        )
        db.commit()
    assert done.outcome == alerts.SmsAckOutcome.ACKNOWLEDGED and done.alert.id == alert_id
    db.expire_all()
    acked = db.get(Alert, alert_id)
    assert acked.state == AlertState.ACKNOWLEDGED and acked.ack_channel == "sms"


def test_a_failed_delivery_moves_to_the_next_tier_at_once(world, db, api_as, care_team):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
    first = staff_sms(db, alert_id)[0]
    with at(T0 + timedelta(minutes=1)):
        first.status, first.error_code = MessageStatus.UNDELIVERED, 30003
        db.add(first)
        alerts.on_delivery_failed(db, first, datetime.now(UTC))
        db.commit()
    db.expire_all()
    alert = db.get(Alert, alert_id)
    assert alert.tier == 2
    assert alert.next_tier_at == T0 + timedelta(minutes=1) + timedelta(minutes=15)


def test_resolve_with_resumed_treatment_replans_and_needs_participant_write(
    world, db, api_as, care_team
):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
        nurse = api_as("nurse", "A")
        assert nurse.post(f"/api/v1/alerts/{alert_id}/resolve", json={}).status_code == 422
        # The note becomes the audit reason: too long is a 422, not a database error.
        long_note = nurse.post(f"/api/v1/alerts/{alert_id}/resolve", json={"note": "x" * 1001})
        assert long_note.status_code == 422 and "note" in long_note.get_json()["error"]["fields"]
        # Resuming treatment changes the participant's status: a nurse may resolve, not that.
        refused = nurse.post(
            f"/api/v1/alerts/{alert_id}/resolve",
            json={"note": "anti-HER2 resumed", "resume_treatment": True},
        )
        assert refused.status_code == 403
        assert db.get(Alert, alert_id).state != AlertState.RESOLVED
        coordinator = api_as("coordinator", "A")
        r = coordinator.post(
            f"/api/v1/alerts/{alert_id}/resolve",
            json={
                "note": "anti-HER2 resumed",
                "resume_treatment": True,
                "resumed_on": "2027-03-30",
            },
        )
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["state"] == "resolved"
        participant = lab.get(f"{P}/{world.participants['A1'].id}").get_json()
    assert participant["status"] == "resumed_treatment"
    pending = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == world.participants["A1"].id,
            ScheduleEvent.status == EventStatus.PLANNED,
        )
    ).all()
    assert pending == []


def test_unknown_participant_and_ambiguous_call_are_quarantined(world, db, api_as, care_team):
    lab = api_as("coordinator", "A")
    with at(T0):
        r = lab.post("/api/v1/results/ctdna", json=ctdna(code="NOBODY-9", accession="Q-1"))
        assert r.status_code == 201
        assert r.get_json()["status"] == "quarantined"
        assert r.get_json()["participant_id"] is None and r.get_json()["alert_id"] is None
        # Another site's participant looks exactly like an unknown one.
        other = lab.post("/api/v1/results/ctdna", json=ctdna(code="B-001", accession="Q-2"))
        assert other.get_json()["status"] == "quarantined"
        fuzzy = lab.post("/api/v1/results/ctdna", json=ctdna(accession="Q-3", call="weak pos?"))
        assert fuzzy.get_json()["status"] == "quarantined"
        assert "ambiguous" in fuzzy.get_json()["quarantine_reason"]
    assert db.exec(select(Alert)).all() == []
    events = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == world.participants["A1"].id,
            ScheduleEvent.status == EventStatus.COMPLETED,
        )
    ).all()
    assert events == []  # nothing attached, nothing read as negative
    listed = api_as("admin", "A").get("/api/v1/results/quarantine").get_json()
    assert {r["accession_id"] for r in listed} == {"Q-1", "Q-2", "Q-3"}


def test_progression_opens_alert_and_pfs_event(world, db, api_as, care_team):
    lab = api_as("coordinator", "A")
    with at(T0):
        r = lab.post(
            "/api/v1/results/imaging",
            json={
                "lab": "radiology",
                "study": "HEROES",
                "study_code": "A-001",
                "accession_id": "IMG-1",
                "modality": "ct",
                "performed_on": "2027-03-29",
                "recist": "PD",
                "is_confirmed": True,
            },
        )
        assert r.status_code == 201, r.get_json()
    assert db.get(Alert, r.get_json()["alert_id"]).kind.value == "progression"
    pfs = db.exec(select(PfsEvent)).one()
    assert pfs.days_from_anchor == (datetime(2027, 3, 29) - datetime(2027, 1, 4)).days
    timeline = lab.get(f"{P}/{world.participants['A1'].id}/results").get_json()
    assert timeline["imaging"][0]["recist"] == "PD"
    assert timeline["progression"][0]["progression_on"] == "2027-03-29"


def test_failed_test_plans_a_redraw_and_tells_the_coordinator(world, db, api_as, care_team):
    lab = api_as("coordinator", "A")
    with at(T0):
        r = lab.post("/api/v1/results/ctdna", json=ctdna(call="insufficient_sample"))
        assert r.status_code == 201, r.get_json()
    alert = db.get(Alert, r.get_json()["alert_id"])
    assert alert.kind.value == "redraw_needed"
    redraw = db.exec(select(ScheduleEvent).where(ScheduleEvent.key.contains("redraw"))).one()
    assert redraw.status == EventStatus.OPEN and redraw.event_type.value == "ctdna_draw"


def test_fhir_observation(world, db, api_as, care_team):
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:natera:accession", "value": "FHIR-1"}],
        "code": {"text": "Signatera ctDNA"},
        "subject": {"identifier": {"system": "urn:stepdown:study:HEROES", "value": "A-001"}},
        "effectiveDateTime": "2027-03-29T09:00:00+02:00",
        # value[x] is a single choice: the call is the interpretation, MTM/mL the quantity.
        "interpretation": [{"coding": [{"code": "POS", "display": "positive"}]}],
        "valueQuantity": {"value": 1.3, "unit": "MTM/mL"},
    }
    lab = api_as("coordinator", "A")
    with at(T0):
        r = lab.post("/api/v1/results/fhir/Observation", json=obs)
        assert r.status_code == 201, r.get_json()
        assert r.get_json()["call"] == "positive" and r.get_json()["mtm_per_ml"] == 1.3
        bad = lab.post("/api/v1/results/fhir/Observation", json={"resourceType": "Patient"})
        assert bad.status_code == 422


def test_results_routes_are_scoped_and_gated(world, db, api_as, care_team):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
    b = api_as("nurse", "B")
    assert b.get(f"/api/v1/alerts/{alert_id}").status_code == 404
    assert b.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={}).status_code == 404
    assert b.get(f"{P}/{world.participants['A1'].id}/results").status_code == 404
    assert b.get("/api/v1/alerts").get_json() == []
    assert (
        api_as("monitor", "A").post(f"/api/v1/alerts/{alert_id}/acknowledge", json={}).status_code
        == 403
    )
    assert api_as("nurse", "A").post("/api/v1/results/ctdna", json=ctdna()).status_code == 403
    bad = lab.post("/api/v1/results/ctdna", json={"study_code": "A-001"})
    assert bad.status_code == 422
    assert {"accession_id", "collected_at", "call"} <= bad.get_json()["error"]["fields"].keys()


def test_dead_route_is_flagged_before_it_matters(world, db, api_as):
    # No staff of site A has a verified phone: every tier is dead.
    body = api_as("coordinator", "A").get(f"/api/v1/sites/{world.sites['A'].id}/escalation")
    body = body.get_json()
    assert body["has_dead_route"] is True
    assert all(t["is_dead"] for t in body["tiers"])
    with at(T0):
        result = alerts.check_routes(session=db, now=datetime.now(UTC))
    assert result["dead_tiers"] >= 3
    kinds = {a.kind.value for a in db.exec(select(Alert)).all()}
    assert kinds == {"dead_route"}


def test_watchdog_pages_operators_when_escalation_stalls(app, world, db, api_as, care_team):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        lab.post("/api/v1/results/ctdna", json=ctdna())
        send_staff_sms(app)  # tier 1 went out; only the escalation job stalls
    with at(T0 + timedelta(minutes=20)):  # next tier due at +15: 5 minutes late, not more
        assert alerts.watchdog(session=db, now=datetime.now(UTC)) == {
            "stalled": 0,
            "unsent_sms": 0,
        }
    with at(T0 + timedelta(minutes=20, seconds=1)):
        assert alerts.watchdog(session=db, now=datetime.now(UTC)) == {
            "stalled": 1,
            "unsent_sms": 0,
        }
    operator = db.exec(select(Alert).where(Alert.kind == "operator")).one()
    assert [m.to_e164 for m in staff_sms(db, operator.id)] == [care_team["admin"]]


def test_csv_import_with_one_bad_row_imports_nothing(world, db, app, tmp_path, care_team):
    good = tmp_path / "batch.csv"
    good.write_text(
        "study,study_code,accession_id,collected_at,call,mtm_per_ml\n"
        "HEROES,A-001,CSV-1,2026-12-14T09:00:00+01:00,negative,0\n"
        "HEROES,A-002,CSV-2,2026-12-14T09:00:00+01:00,negative,0\n"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "study,study_code,accession_id,collected_at,call,mtm_per_ml\n"
        "HEROES,A-001,CSV-3,2026-12-14T09:00:00+01:00,negative,0\n"
        "HEROES,A-002,CSV-4,yesterday,negative,-1\n"
    )
    runner = app.test_cli_runner()
    with at(T0):
        result = runner.invoke(args=["results", "import", str(bad), "--lab", "natera"])
    assert result.exit_code != 0
    assert "row 3" in result.output and "collected_at" in result.output
    assert db.exec(select(LabResult)).all() == []
    with at(T0):
        result = runner.invoke(args=["results", "import", str(good), "--lab", "natera"])
        assert result.exit_code == 0, result.output
        again = runner.invoke(args=["results", "import", str(good), "--lab", "natera"])
    assert "'duplicates': 2" in again.output
    rows = db.exec(select(LabResult)).all()
    assert {r.accession_id for r in rows} == {"CSV-1", "CSV-2"}
    assert all(r.status == ResultStatus.ACCEPTED for r in rows)


def test_a_tumour_marker_result_joins_the_draw_done_that_day_not_the_research_blood(
    world, db, api_as
):
    """Both draws share their windows (STOP-HER2); the marker draw was recorded done late: its
    result must complete nothing else."""
    from server.participants import service as participants
    from server.participants.models import ParticipantStatus
    from server.schedules import service as schedules
    from tests.factories import make_study

    make_study(db, "STOP-HER2", "stop-her2")
    with at(T0):
        p = participants.enroll(
            session=db,
            user=world.staff[("coordinator", "A")],
            study="STOP-HER2",
            site_id=world.sites["A"].id,
            study_code="SH-900",
            timezone="Europe/Paris",
            cohort="stop",
            anchor_date=date(2027, 1, 4),
            status=ParticipantStatus.OFF_TREATMENT_MONITORING,
            # Past screening: the entry gate's scans were within 30 days before the stop date.
            eligibility={
                "baseline_scans_recent": {"value": "within", "observed_on": date(2026, 12, 20)}
            },
            now=T0,
        )
        db.commit()
        events = {
            e.key: e
            for e in db.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == p.id))
        }
        markers = next(e for k, e in sorted(events.items()) if k.startswith("tumor_markers"))
        research = next(
            e
            for e in events.values()
            if e.key.startswith("research_blood") and e.target_date == markers.target_date
        )
        late_day = markers.window_close_date + timedelta(days=2)
    with at(datetime.combine(late_day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=15)):
        schedules.complete_event(
            session=db,
            participant=p,
            event=markers,
            completed_on=late_day,
            reason="came in two days late",
            now=datetime.now(UTC),
            actor="test",
        )
        db.commit()
        r = api_as("coordinator", "A").post(
            "/api/v1/results/tumor-markers",
            json={
                "lab": "cerba",
                "study": "STOP-HER2",
                "study_code": "SH-900",
                "accession_id": "TM-1",
                "collected_at": f"{late_day.isoformat()}T09:00:00+01:00",
                "marker": "CA15-3",
                "value": 21.0,
                "unit": "U/mL",
            },
        )
        assert r.status_code == 201, r.get_json()
    db.expire_all()
    result = db.exec(select(LabResult).where(LabResult.accession_id == "TM-1")).one()
    assert result.event_id == markers.id
    assert db.get(ScheduleEvent, research.id).status != EventStatus.COMPLETED
