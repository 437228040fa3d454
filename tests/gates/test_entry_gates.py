"""Issue 17: entry gates decided by the protocol. Each protocol's gate with every outcome
(positive, negative, indeterminate -> redraw and wait, missing), the schedule counted from the
confirmed stop date (not from enrolment), no monitoring SMS ever queued for a participant who
did not pass, the investigator's override, the preview; through the API."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
import time_machine
from sqlmodel import select

from notifications.models import MessageCategory, OutboxMessage
from server.alerts.models import Alert, AlertKind
from server.audit import AuditEvent
from server.clock import utcnow
from server.participants.models import EligibilityFact, Participant
from server.schedules import reminders
from tests import clock, factories

P = "/api/v1/participants"
W12 = timedelta(weeks=12)


def today() -> date:
    return clock.today("Europe/Paris")


@pytest.fixture
def coordinator(api_as):
    return api_as("coordinator", "A")


@pytest.fixture
def stop_her2(world, db):
    factories.make_study(db, "STOP-HER2", "stop-her2")
    db.commit()


@pytest.fixture
def free_her(world, db):
    factories.make_study(db, "FREE-HER", "free-her")
    db.commit()


def enrol(api, world, code="G-001", study="HEROES", planned=None, **kw):
    """A screening enrolment with the planned stop date three weeks ahead (the baseline draw's
    window is open today)."""
    body = {
        "study": study,
        "site_id": world.sites["A"].id,
        "study_code": code,
        "anchor_date": (planned or today() + timedelta(days=21)).isoformat(),
        "phone": "+33612349" + code[-3:],
        "has_sms_consent": True,
        **kw,
    }
    resp = api.post(P, json=body)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def events(api, pid):
    resp = api.get(f"{P}/{pid}/schedule")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def pending_keys(api, pid):
    return sorted(e["key"] for e in events(api, pid) if e["status"] in ("planned", "open"))


def ctdna(code, accession, call, collected=None, study="HEROES"):
    return {
        "lab": "natera",
        "study": study,
        "study_code": code,
        "accession_id": accession,
        "collected_at": (collected or utcnow() - timedelta(hours=2)).isoformat(),
        "call": call,
    }


def post_ctdna(api, *args, **kw):
    resp = api.post("/api/v1/results/ctdna", json=ctdna(*args, **kw))
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def gate(api, pid):
    resp = api.get(f"{P}/{pid}/entry-gate")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def confirm_stop(api, pid, day):
    return api.post(
        f"{P}/{pid}/entry-gate/facts",
        json={"fact": "stop_date", "observed_on": day.isoformat()},
    )


def reminders_of(db, pid):
    db.expire_all()
    return db.exec(
        select(OutboxMessage).where(
            OutboxMessage.participant_id == pid,
            OutboxMessage.category == MessageCategory.REMINDER,
        )
    ).all()


def materialize_over(db, start, days, step=3):
    """The reminders job, run every few days over a period (what a scheduler would write)."""
    for n in range(0, days, step):
        moment = start + timedelta(days=n)
        with time_machine.travel(moment, tick=False):
            reminders.materialize(session=db, now=moment)


# --- HEROES ---


def test_heroes_enrols_in_screening_with_only_the_baseline_draw(coordinator, world):
    p = enrol(coordinator, world)
    assert p["status"] == "screening"
    assert pending_keys(coordinator, p["id"]) == ["ctdna_baseline:1"]
    state = gate(coordinator, p["id"])
    assert state["outcome"] == "wait"
    assert state["facts"][0]["key"] == "baseline_ctdna"
    assert state["facts"][0]["value"] is None
    assert any("Baseline Signatera ctDNA" in a for a in state["awaiting"])
    assert {path["outcome"] for path in state["paths"]} == {"pass", "fail", "wait"}


def test_heroes_positive_baseline_continues_maintenance_with_nothing_planned(
    coordinator, world, db
):
    p = enrol(coordinator, world)
    post_ctdna(coordinator, "G-001", "BASE-POS", "positive")
    db.expire_all()
    participant = db.get(Participant, p["id"])
    assert participant.status.value == "continues_maintenance"
    assert participant.cohort == "continue"
    # The baseline draw is done; nothing else exists, nothing is pending.
    rows = events(coordinator, p["id"])
    assert [(e["key"], e["status"]) for e in rows] == [("ctdna_baseline:1", "completed")]
    # The coordinator is told as a routine task, not by a critical alert.
    alerts = db.exec(select(Alert).where(Alert.participant_id == p["id"])).all()
    assert [a.kind for a in alerts] == [AlertKind.ENTRY_GATE]
    assert alerts[0].level.value == "routine"
    assert "continues" in alerts[0].summary
    # The fact is recorded once, with its provenance (the lab's result).
    fact = db.exec(select(EligibilityFact).where(EligibilityFact.participant_id == p["id"])).one()
    assert (fact.fact_key, fact.value, fact.provenance) == ("baseline_ctdna", "positive", "result")
    assert fact.result_id is not None
    # No monitoring SMS now or ever: three years of the reminders job write nothing.
    materialize_over(db, utcnow(), 3 * 365, step=7)
    assert reminders_of(db, p["id"]) == []
    # The status says so on the API.
    assert coordinator.get(f"{P}/{p['id']}").get_json()["status"] == "continues_maintenance"


def test_heroes_negative_baseline_plans_monitoring_from_the_confirmed_stop_date(
    coordinator, world, db
):
    planned = today() + timedelta(days=21)
    p = enrol(coordinator, world, planned=planned)
    post_ctdna(coordinator, "G-001", "BASE-NEG", "negative")
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "screening"
    # Everything is in but the day treatment stops: still only the baseline, and a task.
    assert pending_keys(coordinator, p["id"]) == []
    state = gate(coordinator, p["id"])
    assert state["outcome"] == "wait"
    assert state["awaiting"] == [state["stop_date"]["label"]]
    task = db.exec(select(Alert).where(Alert.participant_id == p["id"])).one()
    assert task.kind == AlertKind.ENTRY_GATE and "confirm the stop date" in task.summary
    assert reminders_of(db, p["id"]) == []
    # The stop date the coordinator confirms is a week later than planned: it counts.
    stop = planned + timedelta(days=7)
    resp = confirm_stop(coordinator, p["id"], stop)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["outcome"] == "pass"
    db.expire_all()
    participant = db.get(Participant, p["id"])
    assert participant.status.value == "off_treatment_monitoring"
    assert participant.cohort == "stop"
    assert participant.anchor_date == stop
    # The task is done: the gate closed it.
    db.refresh(task)
    assert task.state.value == "resolved" and "entry gate passed" in task.resolution_note
    rows = {e["key"]: e for e in events(coordinator, p["id"])}
    assert len(rows) == 35  # the baseline + the 34 monitoring events
    assert rows["ctdna:1"]["target_date"] == (stop + W12).isoformat()
    assert rows["imaging:1"]["target_date"] == (stop + W12).isoformat()
    assert rows["qol:1"]["target_date"] == stop.isoformat()
    # Enrolment was three weeks before the planned date: nothing counts from it.
    assert rows["ctdna:1"]["target_date"] != (planned + W12).isoformat()
    # Monitoring reminders now go (the same job that wrote none for the positive one).
    materialize_over(db, utcnow(), 120, step=2)
    assert reminders_of(db, p["id"]) != []
    # Both facts are recorded with their provenance and attester, and audited.
    facts = {
        f.fact_key: f
        for f in db.exec(select(EligibilityFact).where(EligibilityFact.participant_id == p["id"]))
    }
    assert facts["baseline_ctdna"].provenance == "result"
    assert facts["stop_date"].provenance == "attestation"
    assert facts["stop_date"].attested_by_user_id == world.staff[("coordinator", "A")].id
    actions = [
        a.action
        for a in db.exec(
            select(AuditEvent).where(
                AuditEvent.entity == "participant", AuditEvent.entity_id == str(p["id"])
            )
        )
    ]
    assert "entry_gate.passed" in actions and actions.count("eligibility.record") == 2


@pytest.mark.parametrize("call", ["indeterminate", "insufficient_sample"])
def test_heroes_failed_test_is_redrawn_and_the_gate_waits(coordinator, world, db, call):
    p = enrol(coordinator, world)
    post_ctdna(coordinator, "G-001", "BASE-1", call)
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "screening"
    assert pending_keys(coordinator, p["id"]) == ["ctdna_baseline:1:redraw1"]
    state = gate(coordinator, p["id"])
    assert state["outcome"] == "wait" and state["facts"][0]["value"] == call
    # A failed test is not a fact: nothing is recorded.
    assert (
        db.exec(select(EligibilityFact).where(EligibilityFact.participant_id == p["id"])).all()
        == []
    )
    # The redraw's result decides.
    post_ctdna(coordinator, "G-001", "BASE-2", "positive")
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "continues_maintenance"
    assert pending_keys(coordinator, p["id"]) == []


def test_heroes_missing_result_waits_and_attesting_it_is_refused(coordinator, world, db):
    p = enrol(coordinator, world)
    # A result fact comes from the lab, never from a person after enrolment.
    resp = coordinator.post(
        f"{P}/{p['id']}/entry-gate/facts",
        json={"fact": "baseline_ctdna", "value": "negative", "observed_on": today().isoformat()},
    )
    assert resp.status_code == 422
    assert "result" in resp.get_json()["error"]["fields"]["fact"][0]
    # Confirming the stop date alone decides nothing.
    assert confirm_stop(coordinator, p["id"], today() + timedelta(days=21)).status_code == 200
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "screening"
    assert pending_keys(coordinator, p["id"]) == ["ctdna_baseline:1"]
    # Recorded once: a second stop date is a conflict.
    again = confirm_stop(coordinator, p["id"], today() + timedelta(days=28))
    assert again.status_code == 409
    # The baseline negative then passes the gate at once, from the date already confirmed.
    post_ctdna(coordinator, "G-001", "BASE-NEG", "negative")
    db.expire_all()
    participant = db.get(Participant, p["id"])
    assert participant.status.value == "off_treatment_monitoring"
    assert participant.anchor_date == today() + timedelta(days=21)


def test_heroes_positive_never_opens_a_critical_alert_in_screening(coordinator, world, db):
    p = enrol(coordinator, world)
    post_ctdna(coordinator, "G-001", "BASE-POS", "positive")
    kinds = {a.kind for a in db.exec(select(Alert).where(Alert.participant_id == p["id"]))}
    assert AlertKind.CTDNA_POSITIVE_BASELINE not in kinds
    assert AlertKind.CTDNA_POSITIVE not in kinds
    assert kinds == {AlertKind.ENTRY_GATE}


# --- the investigator's override ---


def test_the_investigator_overrides_a_positive_with_a_reason(coordinator, api_as, world, db):
    p = enrol(coordinator, world)
    post_ctdna(coordinator, "G-001", "BASE-POS", "positive")
    stop = today() + timedelta(days=30)
    body = {"outcome": "pass", "reason": "MTM/mL at the limit; discussed in tumour board"}
    # The coordinator may not; the investigator must give a reason and a stop date.
    refused = coordinator.post(f"{P}/{p['id']}/entry-gate/override", json={**body})
    assert refused.status_code == 403
    investigator = api_as("investigator", "A")
    no_date = investigator.post(f"{P}/{p['id']}/entry-gate/override", json=body)
    assert no_date.status_code == 422 and "stop_date" in no_date.get_json()["error"]["fields"]
    no_reason = investigator.post(
        f"{P}/{p['id']}/entry-gate/override",
        json={"outcome": "pass", "reason": " ", "stop_date": stop.isoformat()},
    )
    assert no_reason.status_code == 422
    ok = investigator.post(
        f"{P}/{p['id']}/entry-gate/override", json={**body, "stop_date": stop.isoformat()}
    )
    assert ok.status_code == 200, ok.get_json()
    db.expire_all()
    participant = db.get(Participant, p["id"])
    assert participant.status.value == "off_treatment_monitoring"
    assert participant.anchor_date == stop and participant.cohort == "stop"
    keys = pending_keys(coordinator, p["id"])
    assert "ctdna:1" in keys and len(keys) == 34
    audit = db.exec(select(AuditEvent).where(AuditEvent.action == "entry_gate.override")).one()
    assert audit.reason == body["reason"]
    assert audit.actor_user_id == world.staff[("investigator", "A")].id


def test_the_investigator_can_fail_the_gate_in_screening(coordinator, api_as, world, db):
    p = enrol(coordinator, world)
    resp = api_as("investigator", "A").post(
        f"{P}/{p['id']}/entry-gate/override",
        json={"outcome": "fail", "reason": "new brain lesion on MRI"},
    )
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "continues_maintenance"
    assert pending_keys(coordinator, p["id"]) == []


# --- enrolment rules ---


def test_enrolling_past_screening_needs_every_fact_attested(coordinator, world, db):
    body = {
        "study": "HEROES",
        "site_id": world.sites["A"].id,
        "study_code": "G-010",
        "cohort": "stop",
        "anchor_date": (today() - timedelta(days=10)).isoformat(),
        "status": "off_treatment_monitoring",
    }
    missing = coordinator.post(P, json=body)
    assert missing.status_code == 422
    assert "eligibility.baseline_ctdna" in missing.get_json()["error"]["fields"]
    positive = coordinator.post(
        P,
        json={
            **body,
            "eligibility": {
                "baseline_ctdna": {"value": "positive", "observed_on": today().isoformat()}
            },
        },
    )
    assert positive.status_code == 422
    ok = coordinator.post(
        P,
        json={
            **body,
            "eligibility": {
                "baseline_ctdna": {
                    "value": "negative",
                    "observed_on": (today() - timedelta(days=30)).isoformat(),
                }
            },
        },
    )
    assert ok.status_code == 201, ok.get_json()
    facts = db.exec(
        select(EligibilityFact).where(EligibilityFact.participant_id == ok.get_json()["id"])
    ).all()
    assert {(f.fact_key, f.provenance) for f in facts} == {
        ("baseline_ctdna", "attestation"),
        ("stop_date", "attestation"),
    }


def test_screening_without_a_planned_stop_date_plans_once_it_is_set(coordinator, world):
    resp = coordinator.post(
        P,
        json={"study": "HEROES", "site_id": world.sites["A"].id, "study_code": "G-011"},
    )
    assert resp.status_code == 201, resp.get_json()
    pid = resp.get_json()["id"]
    assert events(coordinator, pid) == []
    planned = today() + timedelta(days=21)
    patched = coordinator.patch(
        f"{P}/{pid}", json={"anchor_date": planned.isoformat(), "reason": "stop date planned"}
    )
    assert patched.status_code == 200, patched.get_json()
    rows = events(coordinator, pid)
    assert [(e["key"], e["target_date"]) for e in rows] == [
        ("ctdna_baseline:1", (planned - timedelta(days=21)).isoformat())
    ]


# --- Free-HER ---


def test_free_her_needs_no_ctdna_and_a_complete_remission_both_attested(
    coordinator, world, db, free_her
):
    planned = today() + timedelta(days=14)
    ctdna_day = today() - timedelta(days=9)
    p = enrol(
        coordinator,
        world,
        code="F-001",
        study="FREE-HER",
        planned=planned,
        eligibility={
            "screening_ctdna": {"value": "negative", "observed_on": ctdna_day.isoformat()},
        },
    )
    # Seed 001 plans nothing for the screening: no event until the gate passes.
    assert events(coordinator, p["id"]) == []
    state = gate(coordinator, p["id"])
    assert state["outcome"] == "wait"
    assert [f["verdict"] for f in state["facts"]] == ["pass", "wait"]
    resp = coordinator.post(
        f"{P}/{p['id']}/entry-gate/facts",
        json={
            "fact": "complete_radiological_remission",
            "value": "yes",
            "observed_on": (today() - timedelta(days=5)).isoformat(),
            "note": "CT chest-abdomen-pelvis, radiologist's report",
        },
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["outcome"] == "wait"  # the stop date is not confirmed yet
    confirm_stop(coordinator, p["id"], planned)
    db.expire_all()
    participant = db.get(Participant, p["id"])
    assert participant.status.value == "off_treatment_monitoring"
    rows = {e["key"]: e for e in events(coordinator, p["id"])}
    assert rows["ctdna:1"]["target_date"] == (planned + W12).isoformat()
    facts = {
        f.fact_key: f
        for f in db.exec(select(EligibilityFact).where(EligibilityFact.participant_id == p["id"]))
    }
    assert set(facts) == {"screening_ctdna", "complete_radiological_remission", "stop_date"}
    assert all(f.provenance == "attestation" for f in facts.values())
    assert facts["screening_ctdna"].observed_on == ctdna_day
    remission = facts["complete_radiological_remission"]
    assert remission.note == "CT chest-abdomen-pelvis, radiologist's report"
    assert remission.attested_by_user_id == world.staff[("coordinator", "A")].id


def test_free_her_without_complete_remission_continues_maintenance(
    coordinator, world, db, free_her
):
    p = enrol(coordinator, world, code="F-002", study="FREE-HER")
    resp = coordinator.post(
        f"{P}/{p['id']}/entry-gate/facts",
        json={
            "fact": "complete_radiological_remission",
            "value": "no",
            "observed_on": today().isoformat(),
        },
    )
    assert resp.status_code == 200 and resp.get_json()["outcome"] == "fail"
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "continues_maintenance"
    assert events(coordinator, p["id"]) == []
    # Decided: nothing more can be attested; only the investigator can override.
    again = confirm_stop(coordinator, p["id"], today() + timedelta(days=7))
    assert again.status_code == 409


def test_free_her_detectable_ctdna_at_entry_fails_the_gate(coordinator, world, db, free_her):
    p = enrol(
        coordinator,
        world,
        code="F-003",
        study="FREE-HER",
        eligibility={
            "screening_ctdna": {"value": "positive", "observed_on": today().isoformat()},
            "complete_radiological_remission": {
                "value": "yes",
                "observed_on": today().isoformat(),
            },
            "stop_date": {"observed_on": (today() + timedelta(days=7)).isoformat()},
        },
    )
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "continues_maintenance"
    materialize_over(db, utcnow(), 200, step=5)
    assert reminders_of(db, p["id"]) == []


def test_free_her_all_attested_at_enrolment_enters_monitoring_at_once(
    coordinator, world, db, free_her
):
    stop = today() + timedelta(days=7)
    p = enrol(
        coordinator,
        world,
        code="F-004",
        study="FREE-HER",
        planned=stop,
        eligibility={
            "screening_ctdna": {"value": "negative", "observed_on": today().isoformat()},
            "complete_radiological_remission": {
                "value": "yes",
                "observed_on": today().isoformat(),
            },
            "stop_date": {"observed_on": stop.isoformat()},
        },
    )
    assert p["status"] == "off_treatment_monitoring"
    rows = {e["key"]: e for e in events(coordinator, p["id"])}
    assert rows["imaging:1"]["target_date"] == (stop + W12).isoformat()


# --- STOP-HER2 ---


def _scan(api, pid, on):
    scan = next(e for e in events(api, pid) if e["key"] == "baseline_scan:1")
    return api.post(
        f"/api/v1/participants/{pid}/events/{scan['id']}/complete",
        json={"completed_on": on.isoformat(), "reason": "scans done"},
    )


def test_stop_her2_scans_within_30_days_before_the_stop_date(coordinator, world, db, stop_her2):
    planned = today() + timedelta(days=10)
    p = enrol(coordinator, world, code="S-001", study="STOP-HER2", planned=planned, cohort="stop")
    assert pending_keys(coordinator, p["id"]) == ["baseline_scan:1"]
    assert _scan(coordinator, p["id"], today()).status_code == 200
    # Scans done, no stop date yet: waits.
    assert gate(coordinator, p["id"])["outcome"] == "wait"
    confirm_stop(coordinator, p["id"], planned)
    db.expire_all()
    participant = db.get(Participant, p["id"])
    assert participant.status.value == "off_treatment_monitoring"
    rows = {e["key"]: e for e in events(coordinator, p["id"])}
    assert rows["restaging_scan:1"]["target_date"] == (planned + W12).isoformat()
    fact = db.exec(
        select(EligibilityFact).where(
            EligibilityFact.participant_id == p["id"],
            EligibilityFact.fact_key == "baseline_scans_recent",
        )
    ).one()
    assert (fact.value, fact.provenance, fact.observed_on) == ("within", "event", today())


def test_stop_her2_scans_older_than_30_days_wait(coordinator, world, db, stop_her2):
    planned = today() + timedelta(days=10)
    p = enrol(
        coordinator, world, code="S-002", study="STOP-HER2", planned=planned, cohort="continue"
    )
    _scan(coordinator, p["id"], today() - timedelta(days=1))
    # The coordinator confirms a stop date 40 days after the scans: too old, the gate waits.
    resp = confirm_stop(coordinator, p["id"], today() + timedelta(days=39))
    assert resp.status_code == 200
    state = resp.get_json()
    assert state["outcome"] == "wait"
    assert state["facts"][0]["value"] == "outside"
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "screening"
    assert reminders_of(db, p["id"]) == []


def test_stop_her2_needs_a_cohort_at_enrolment(coordinator, world, stop_her2):
    resp = coordinator.post(
        P,
        json={
            "study": "STOP-HER2",
            "site_id": world.sites["A"].id,
            "study_code": "S-003",
            "anchor_date": today().isoformat(),
        },
    )
    assert resp.status_code == 422
    assert "cohort" in resp.get_json()["error"]["fields"]


# --- the preview ---


def test_the_api_preview_shows_the_gate_and_both_paths(coordinator):
    resp = coordinator.post("/api/v1/protocols/heroes/preview", json={"anchor_date": "2027-01-04"})
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["cohort"] == "stop"
    gate_ = data["entry_gate"]
    assert [e["key"] for e in gate_["screening_events"]] == ["ctdna_baseline:1"]
    paths = {p["outcome"]: p for p in gate_["paths"]}
    assert paths["pass"]["events"] == "34" and paths["pass"]["first"] == "2027-01-04"
    assert paths["fail"]["events"] == "0" and paths["fail"]["cohort"] == "continue"


def test_the_cli_preview_shows_the_gate_and_both_paths(app):
    result = app.test_cli_runner().invoke(
        args=["protocol", "preview", "heroes", "--anchor", "2027-01-04"]
    )
    assert result.exit_code == 0, result.output
    assert "entry gate: Baseline Signatera ctDNA decides the path" in result.output
    assert "in screening: Baseline Signatera ctDNA draw Mon 2026-12-14 · week -3" in result.output
    assert "if pass:" in result.output and "[34 events]" in result.output
    assert "if fail:" in result.output and "continues anti-HER2 maintenance" in result.output


def test_protocols_without_a_gate_have_none_in_the_preview(coordinator):
    resp = coordinator.post(
        "/api/v1/protocols/nct07239271/preview",
        json={"anchor_date": "2027-01-04", "cohort": "control"},
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["entry_gate"] is None


def test_a_missed_baseline_in_screening_tells_the_coordinator(coordinator, world, db):
    from server.schedules import jobs

    p = enrol(coordinator, world)
    baseline = next(e for e in events(coordinator, p["id"]) if e["key"] == "ctdna_baseline:1")
    closed = datetime.fromisoformat(baseline["window_close_at"]) + timedelta(minutes=1)
    with time_machine.travel(closed, tick=False):
        jobs.update_event_statuses(session=db, now=closed)
    kinds = [a.kind for a in db.exec(select(Alert).where(Alert.participant_id == p["id"]))]
    assert kinds == [AlertKind.MISSED_WINDOW]
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "screening"
    assert gate(coordinator, p["id"])["outcome"] == "wait"
