"""Schedules in the database: planning at enrolment, lifecycle, re-anchoring, the scheduler job,
status changes, amendments, NCT07239271 decisions, adherence — through the API where users go."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import time_machine
from sqlmodel import select

from server import scheduler
from server.audit import AuditEvent
from server.participants.models import Locale, Participant, ParticipantStatus
from server.protocols.definition import Protocol
from server.schedules import jobs
from server.schedules.models import Decision, EventStatus, ScheduleEvent
from tests import factories

P = "/api/v1/participants"


def _events(db, participant_id):
    db.expire_all()
    rows = db.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == participant_id))
    return {e.key: e for e in rows}


def _enrol(db, world, study_key, protocol_key, code, site="A", **kw):
    study = db.exec(select(factories.Study).where(factories.Study.key == study_key)).first()
    if study is None:
        study = factories.make_study(db, study_key, protocol_key)
    p = factories.make_participant(
        db, world.staff[("coordinator", site)], world.sites[site], study, code, **kw
    )
    db.commit()
    return p


def at(iso: str):
    """Freeze the clock at an ISO instant (UTC)."""
    return time_machine.travel(datetime.fromisoformat(iso).replace(tzinfo=UTC), tick=False)


# --- planning at enrolment ---------------------------------------------------------------------


def test_enrolment_plans_the_whole_protocol_in_local_time(world, db, api_as):
    a1 = factories.a1_in_scenario(db, world)  # HEROES, stop cohort, anchor 2027-01-04, Europe/Paris
    events = _events(db, a1.id)
    assert len(events) > 30
    baseline = events["ctdna_baseline:1"]
    assert baseline.target_date == date(2026, 12, 14)  # 21 days before the anchor
    assert (baseline.window_open_date, baseline.window_close_date) == (
        date(2026, 12, 7),
        date(2026, 12, 21),
    )
    # 12 weeks after the anchor, at 09:00 Paris (CEST from 2027-03-28: 07:00 UTC).
    assert events["ctdna:1"].target_date == date(2027, 3, 29)
    assert events["ctdna:1"].target_at == datetime(2027, 3, 29, 7, 0, tzinfo=UTC)
    body = api_as("nurse", "A").get(f"{P}/{a1.id}/schedule?type=ctdna_draw").get_json()
    assert [e["key"] for e in body[:3]] == ["ctdna_baseline:1", "ctdna:1", "ctdna:2"]
    assert body[1]["target_local"] == "2027-03-29T09:00:00+02:00"
    assert body[0]["target_local"] == "2026-12-14T09:00:00+01:00"
    assert all(e["status"] == "planned" for e in body)


def test_schedule_filters(world, api_as, db):
    a1 = factories.a1_in_scenario(db, world)
    api = api_as("nurse", "A")
    q = api.get(f"{P}/{a1.id}/schedule?type=questionnaire&from=2027-01-01&to=2027-12-31")
    keys = [e["key"] for e in q.get_json()]
    assert keys == ["qol:1", "qol:2", "qol:3"]  # baseline, 3 and 6 months; 12 is in 2028
    bad = api.get(f"{P}/{a1.id}/schedule?type=bloodletting&from=2027-02-30")
    assert bad.status_code == 422
    assert {"type", "from"} <= bad.get_json()["error"]["fields"].keys()


def test_screening_participant_has_no_schedule_until_active(world, db, api_as):
    p = _enrol(
        db,
        world,
        "NCT07239271",
        "nct07239271",
        "N-010",
        status=ParticipantStatus.SCREENING,
        cohort="control",
    )
    assert _events(db, p.id) == {}
    resp = api_as("coordinator", "A").patch(
        f"{P}/{p.id}", json={"status": "active", "reason": "eligible, randomised"}
    )
    assert resp.status_code == 200, resp.get_json()
    assert "cycle:1" in _events(db, p.id)


def test_a_gated_participant_leaves_screening_only_through_the_gate(world, db, api_as):
    # HEROES: the baseline Signatera result decides, not a status someone sets (issue 17).
    p = _enrol(db, world, "HEROES", "heroes", "A-010", status=ParticipantStatus.SCREENING)
    assert set(_events(db, p.id)) == {"ctdna_baseline:1"}
    resp = api_as("coordinator", "A").patch(
        f"{P}/{p.id}", json={"status": "off_treatment_monitoring", "reason": "eligible, stopped"}
    )
    assert resp.status_code == 409
    assert "entry gate" in resp.get_json()["error"]["message"]
    assert set(_events(db, p.id)) == {"ctdna_baseline:1"}


def test_cohort_must_belong_to_the_protocol(world, api_as):
    resp = api_as("coordinator", "A").post(
        P,
        json={
            "study": "HEROES",
            "site_id": world.sites["A"].id,
            "study_code": "A-011",
            "cohort": "placebo",
            "anchor_date": "2027-01-04",
            "status": "off_treatment_monitoring",
        },
    )
    assert resp.status_code == 422
    assert "cohort" in resp.get_json()["error"]["fields"]


# --- lifecycle ---------------------------------------------------------------------------------


def test_complete_in_and_out_of_window(world, db, api_as):
    a1 = factories.a1_in_scenario(db, world)
    events = _events(db, a1.id)
    api = api_as("nurse", "A")
    with at("2027-01-20T10:00:00"):
        ok = api.post(
            f"{P}/{a1.id}/events/{events['ctdna_baseline:1'].id}/complete",
            json={"completed_on": "2026-12-15"},
        )
        assert ok.status_code == 200, ok.get_json()
        assert ok.get_json()["status"] == "completed"
        assert ok.get_json()["is_out_of_window"] is False
        late = api.post(
            f"{P}/{a1.id}/events/{events['qol:1'].id}/complete", json={"completed_on": "2027-01-19"}
        )
        assert late.status_code == 422
        assert "reason" in late.get_json()["error"]["fields"]
        # The reason fits its column: longer is a 422 naming it, never a database error.
        for action, body in (
            ("complete", {"completed_on": "2027-01-19"}),
            ("reschedule", {"target_date": "2027-02-01"}),
            ("cancel", {}),
        ):
            too_long = api.post(
                f"{P}/{a1.id}/events/{events['qol:1'].id}/{action}",
                json={**body, "reason": "x" * 501},
            )
            assert too_long.status_code == 422, (action, too_long.get_json())
            assert "reason" in too_long.get_json()["error"]["fields"]
        late = api.post(
            f"{P}/{a1.id}/events/{events['qol:1'].id}/complete",
            json={"completed_on": "2027-01-19", "reason": "phone was lost"},
        )
        assert late.status_code == 200
        assert late.get_json()["is_out_of_window"] is True
        future = api.post(
            f"{P}/{a1.id}/events/{events['ctdna:1'].id}/complete",
            json={"completed_on": "2027-03-29"},
        )
        assert future.status_code == 422
        again = api.post(
            f"{P}/{a1.id}/events/{events['ctdna_baseline:1'].id}/complete",
            json={"completed_on": "2026-12-15"},
        )
        assert again.status_code == 409
    audit = db.exec(select(AuditEvent).where(AuditEvent.action == "event.complete")).all()
    assert {(a.before["status"], a.after["status"]) for a in audit} == {("planned", "completed")}
    assert any(a.reason == "phone was lost" for a in audit)


def test_reschedule_and_cancel_need_reasons_and_are_audited(world, db, api_as):
    a1 = factories.a1_in_scenario(db, world)
    events = _events(db, a1.id)
    api = api_as("coordinator", "A")
    scan = events["imaging:1"]
    assert (
        api.post(
            f"{P}/{a1.id}/events/{scan.id}/reschedule", json={"target_date": "2027-04-02"}
        ).status_code
        == 422
    )
    resp = api.post(
        f"{P}/{a1.id}/events/{scan.id}/reschedule",
        json={"target_date": "2027-04-02", "reason": "scanner down"},
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert (body["target_date"], body["window_open_date"], body["window_close_date"]) == (
        "2027-04-02",
        "2027-03-19",
        "2027-04-16",
    )
    assert body["target_local"] == "2027-04-02T09:00:00+02:00"
    assert body["is_touched"] is True
    cancel = api.post(
        f"{P}/{a1.id}/events/{events['qol:2'].id}/cancel",
        json={"reason": "participant in hospital"},
    )
    assert cancel.status_code == 200 and cancel.get_json()["status"] == "cancelled"
    actions = [
        a.action
        for a in db.exec(select(AuditEvent).where(AuditEvent.entity == "schedule_event")).all()
    ]
    assert actions == ["event.reschedule", "event.cancel"]


def test_event_routes_are_scoped_and_role_gated(world, db, api_as):
    b1 = world.participants["B1"]
    a1 = factories.a1_in_scenario(db, world)
    b_event = next(iter(_events(db, b1.id).values()))
    a_event = next(iter(_events(db, a1.id).values()))
    nurse_a = api_as("nurse", "A")
    assert nurse_a.get(f"{P}/{b1.id}/schedule").status_code == 404
    assert nurse_a.get(f"{P}/{b1.id}/adherence").status_code == 404
    assert nurse_a.get(f"{P}/{b1.id}/decisions").status_code == 404
    for action, body in (
        ("complete", {"completed_on": "2026-11-01"}),
        ("reschedule", {"target_date": "2027-01-01", "reason": "x"}),
        ("cancel", {"reason": "x"}),
    ):
        assert (
            nurse_a.post(f"{P}/{b1.id}/events/{b_event.id}/{action}", json=body).status_code == 404
        )
        # An event id of another participant through one's own participant: 404 too.
        assert (
            nurse_a.post(f"{P}/{a1.id}/events/{b_event.id}/{action}", json=body).status_code == 404
        )
        assert (
            api_as("monitor", "A")
            .post(f"{P}/{a1.id}/events/{a_event.id}/{action}", json=body)
            .status_code
            == 403
        )
    assert _events(db, b1.id)[b_event.key].status == EventStatus.PLANNED


# --- re-anchoring -------------------------------------------------------------------------------


def test_a_scan_done_ten_days_late_moves_the_next_scans(world, db, api_as):
    p = _enrol(
        db,
        world,
        "STOP-HER2",
        "stop-her2",
        "SH2-100",
        site="B",
        timezone="America/New_York",
        locale=Locale.EN,
    )
    events = _events(db, p.id)
    first, second = events["restaging_scan:1"], events["restaging_scan:2"]
    assert first.target_date == date(2027, 3, 29)  # week 12
    assert second.target_date == date(2027, 6, 21)  # week 24
    visit2 = events["visit:2"].target_date
    with at("2027-04-09T15:00:00"):
        resp = api_as("coordinator", "B").post(
            f"{P}/{p.id}/events/{first.id}/complete", json={"completed_on": "2027-04-08"}
        )
        assert resp.status_code == 200, resp.get_json()
    events = _events(db, p.id)
    # 12 weeks from the ACTUAL scan, with its ±2-week window.
    assert events["restaging_scan:2"].target_date == date(2027, 7, 1)
    assert events["restaging_scan:2"].window_open_date == date(2027, 6, 17)
    assert events["restaging_scan:3"].target_date == date(2027, 9, 23)
    # Other items keep their calendar.
    assert events["visit:2"].target_date == visit2
    replans = db.exec(select(AuditEvent).where(AuditEvent.action == "schedule.replanned")).all()
    assert replans and "re-anchored" in replans[-1].reason


# --- the scheduler job -------------------------------------------------------------------------


def test_job_opens_windows_and_marks_closed_ones_missed(world, db, app):
    a1 = factories.a1_in_scenario(db, world)
    baseline = _events(db, a1.id)["ctdna_baseline:1"]
    # Window 2026-12-07 → 2026-12-21 in Paris: opens 2026-12-06T23:00Z, closes 2026-12-21T23:00Z.
    with at("2026-12-06T22:59:59"):
        jobs.update_event_statuses(session=db, now=datetime.now(UTC))
    assert _events(db, a1.id)["ctdna_baseline:1"].status == EventStatus.PLANNED
    with at("2026-12-06T23:00:00"):
        result = jobs.update_event_statuses(session=db, now=datetime.now(UTC))
    assert result["opened"] >= 1
    assert _events(db, a1.id)["ctdna_baseline:1"].status == EventStatus.OPEN
    with at("2026-12-21T22:59:59"):
        jobs.update_event_statuses(session=db, now=datetime.now(UTC))
    assert _events(db, a1.id)["ctdna_baseline:1"].status == EventStatus.OPEN
    with at("2026-12-21T23:00:00"):
        result = jobs.update_event_statuses(session=db, now=datetime.now(UTC))
    assert _events(db, a1.id)["ctdna_baseline:1"].status == EventStatus.MISSED
    assert result["missed"] >= 1
    missed = db.exec(
        select(AuditEvent).where(
            AuditEvent.action == "event.missed", AuditEvent.entity_id == str(baseline.id)
        )
    ).one()
    assert missed.actor == "system:scheduler"
    # Running again changes nothing more.
    with at("2026-12-21T23:00:00"):
        again = jobs.update_event_statuses(session=db, now=datetime.now(UTC))
    assert again["missed"] == 0


def test_scheduler_registers_jobs_under_stable_ids(app):
    sched = scheduler.build(app)
    assert {j.id for j in sched.get_jobs()} == {
        "schedules.update_event_statuses",
        "schedules.evaluate_decisions",
        "reminders.materialize",
        "outbox.expire_stale",
        "alerts.escalate",
        "alerts.calls",
        "alerts.watchdog",
        "alerts.check_routes",
        "results.overdue",
        "fhir.subscriptions",
        "health.deadman",
    }
    # A tier is notified at most 5 s after its timeout (issue 13: within 30 s of its due time,
    # a dead dispatcher's 15 s lease and the sender's queue included).
    jobs_by_id = {j.id: j for j in sched.get_jobs()}
    assert jobs_by_id["alerts.escalate"].trigger.interval == timedelta(seconds=5)


# --- status changes -----------------------------------------------------------------------------


def test_resumed_treatment_ends_pending_events_history_stays(world, db, api_as):
    a1 = factories.a1_in_scenario(db, world)
    events = _events(db, a1.id)
    api = api_as("coordinator", "A")
    with at("2027-04-01T10:00:00"):
        api.post(
            f"{P}/{a1.id}/events/{events['ctdna_baseline:1'].id}/complete",
            json={"completed_on": "2026-12-14"},
        )
        resp = api.patch(
            f"{P}/{a1.id}",
            json={"status": "resumed_treatment", "reason": "ctDNA positive, trastuzumab restarted"},
        )
        assert resp.status_code == 200, resp.get_json()
    events = _events(db, a1.id)
    assert events["ctdna_baseline:1"].status == EventStatus.COMPLETED
    pending = [e for e in events.values() if e.status in (EventStatus.PLANNED, EventStatus.OPEN)]
    assert pending == []
    assert events["ctdna:2"].status == EventStatus.CANCELLED
    assert "resumed_treatment" in events["ctdna:2"].status_reason


def test_withdrawal_ends_pending_events(world, db, api_as):
    a1 = factories.a1_in_scenario(db, world)
    api_as("investigator", "A").post(f"{P}/{a1.id}/withdraw", json={"reason": "moved abroad"})
    statuses = {e.status for e in _events(db, a1.id).values()}
    assert statuses == {EventStatus.CANCELLED}


# --- amendments ---------------------------------------------------------------------------------


def test_amendment_replans_only_future_untouched_events(world, db, api_as, app):
    a1 = factories.a1_in_scenario(db, world)
    api = api_as("coordinator", "A")
    events = _events(db, a1.id)
    with at("2027-04-20T10:00:00"):
        api.post(
            f"{P}/{a1.id}/events/{events['ctdna_baseline:1'].id}/complete",
            json={"completed_on": "2026-12-14"},
        )
        api.post(
            f"{P}/{a1.id}/events/{events['ctdna:4'].id}/reschedule",
            json={"target_date": "2027-12-01", "reason": "travel"},
        )
    before = _events(db, a1.id)
    registry = app.extensions["protocols"]
    v1 = registry["heroes"]
    data = v1.definition()
    old, new = v1.version, str(int(v1.version) + 1)
    data["version"] = new
    for item in data["schedule"]:
        if item["id"] == "ctdna":
            item["every"] = "8 weeks"
    registry["heroes"] = Protocol.model_validate(data).model_copy(
        update={"key": "heroes", "sha256": "f" * 64, "source_file": "heroes.yaml"}
    )
    try:
        runner = app.test_cli_runner()
        with at("2027-04-20T10:00:00"):
            result = runner.invoke(
                args=[
                    "protocol",
                    "amend",
                    "HEROES",
                    "--participant",
                    a1.study_code,
                    "--reason",
                    "amendment 2: ctDNA every 8 weeks",
                ]
            )
        assert result.exit_code == 0, result.output
    finally:
        registry["heroes"] = v1
    after = _events(db, a1.id)
    db.expire_all()
    assert db.get(Participant, a1.id).protocol_version == new
    # History and hand-moved events stay as they were.
    assert after["ctdna_baseline:1"].status == EventStatus.COMPLETED
    assert after["ctdna_baseline:1"].protocol_version == old
    assert after["ctdna:1"].target_date == before["ctdna:1"].target_date  # window already past
    assert after["ctdna:4"].target_date == date(2027, 12, 1)
    assert after["ctdna:4"].protocol_version == old
    # Future untouched ones follow version 2 (first at 12 weeks, then every 8):
    # #2 = anchor 2027-01-04 + 20 weeks, #3 = + 28 weeks, #5 = + 44 weeks.
    assert after["ctdna:2"].target_date == date(2027, 5, 24)
    assert after["ctdna:3"].target_date == date(2027, 7, 19)
    assert after["ctdna:3"].protocol_version == new
    assert after["ctdna:5"].target_date == date(2027, 11, 8)
    assert "ctdna:19" in after and "ctdna:20" not in after  # 12 + 8 x 18 = 156 weeks = 3 years
    # Imaging was not amended and stays as planned.
    assert after["imaging:2"].target_date == before["imaging:2"].target_date


# --- NCT07239271 decisions ----------------------------------------------------------------------


def test_decision_after_cycle_2_opens_with_the_rule_and_cycles_follow_the_choice(world, db, api_as):
    p = _enrol(
        db,
        world,
        "NCT07239271",
        "nct07239271",
        "NEO-100",
        cohort="adaptive",
        status=ParticipantStatus.ACTIVE,
        timezone="Asia/Shanghai",
        locale=Locale.ZH,
    )
    api = api_as("investigator", "A")
    ev = _events(db, p.id)
    assert ev["cycle:3"].regimen is None  # to be decided
    with at("2027-02-16T02:00:00"):
        for key, outcome, on in (
            ("ctdna_baseline:1", {"ctdna": "negative"}, "2027-01-03"),
            ("ctdna_c1:1", {"ctdna": "positive", "pam_mutation": False}, "2027-01-24"),
        ):
            r = api.post(
                f"{P}/{p.id}/events/{ev[key].id}/complete",
                json={"completed_on": on, "outcome": outcome},
            )
            assert r.status_code == 200, r.get_json()
        assert api.get(f"{P}/{p.id}/decisions").get_json() == []  # imaging not in yet
        bad = api.post(
            f"{P}/{p.id}/events/{ev['imaging_c2:1'].id}/complete",
            json={"completed_on": "2027-02-14", "outcome": {"recist": "XX"}},
        )
        assert bad.status_code == 422
        r = api.post(
            f"{P}/{p.id}/events/{ev['imaging_c2:1'].id}/complete",
            json={"completed_on": "2027-02-14", "outcome": {"recist": "SD"}},
        )
        assert r.status_code == 200
        decisions = api.get(f"{P}/{p.id}/decisions").get_json()
        assert len(decisions) == 1
        d = decisions[0]
        assert (d["status"], d["rule_id"], d["recommended_regimen"], d["recommended_cycles"]) == (
            "due",
            "ctdna_pos_no_pam",
            "pyroht",
            2,
        )
        assert d["facts"] == {
            "ctdna_baseline": "negative",
            "ctdna_after_c1": "positive",
            "response": "SD",
            "pam_mutation": "false",
        }
        # A different regimen needs a reason.
        url = f"{P}/{p.id}/decisions/{d['id']}/record"
        assert api.post(url, json={"regimen": "everoht"}).status_code == 422
        assert api_as("nurse", "A").post(url, json={"regimen": "pyroht"}).status_code == 403
        r = api.post(url, json={"regimen": "everoht", "reason": "PAM result revised"})
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["status"] == "decided"
        assert api.post(url, json={"regimen": "pyroht"}).status_code == 409
    ev = _events(db, p.id)
    assert ev["cycle:3"].regimen == "everoht" and ev["cycle:4"].regimen == "everoht"
    assert ev["decision_c2:1"].status == EventStatus.COMPLETED
    record = db.exec(select(AuditEvent).where(AuditEvent.action == "decision.record")).one()
    assert record.after["follows_recommendation"] is False
    assert record.reason == "PAM result revised"
    assert db.exec(select(Decision)).one().chosen_regimen == "everoht"


def test_decision_the_protocol_leaves_to_the_team_needs_a_reason(world, db, api_as):
    p = _enrol(
        db,
        world,
        "NCT07239271",
        "nct07239271",
        "NEO-101",
        cohort="adaptive",
        status=ParticipantStatus.ACTIVE,
        timezone="Asia/Shanghai",
    )
    api = api_as("investigator", "A")
    ev = _events(db, p.id)
    with at("2027-02-16T02:00:00"):
        for key, outcome, on in (
            ("ctdna_baseline:1", {"ctdna": "negative"}, "2027-01-03"),
            ("ctdna_c1:1", {"ctdna": "negative"}, "2027-01-24"),
            ("imaging_c2:1", {"recist": "NE"}, "2027-02-14"),
        ):
            api.post(
                f"{P}/{p.id}/events/{ev[key].id}/complete",
                json={"completed_on": on, "outcome": outcome},
            )
        d = api.get(f"{P}/{p.id}/decisions").get_json()[0]
        # Not a fall-through: the file's rule, with its quoted reason.
        assert d["rule_id"] == "ctdna_neg_response_not_assessed"
        assert d["recommended_regimen"] is None and d["options"] == []
        assert "radiological evaluation is conducted" in d["team_decides"]
        assert "the care team decides" in d["explanation"]
        url = f"{P}/{p.id}/decisions/{d['id']}/record"
        refused = api.post(url, json={"regimen": "nab_p_hp", "cycles": 2})
        assert refused.status_code == 422
        assert "leaves this to the care team" in refused.get_json()["error"]["fields"]["reason"][0]
        r = api.post(
            url, json={"regimen": "nab_p_hp", "cycles": 2, "reason": "repeat imaging shows PR"}
        )
        assert r.status_code == 200, r.get_json()


def test_decision_job_opens_decisions_whose_inputs_are_in(world, db, app):
    p = _enrol(
        db,
        world,
        "NCT07239271",
        "nct07239271",
        "NEO-102",
        cohort="adaptive",
        status=ParticipantStatus.ACTIVE,
        timezone="Asia/Shanghai",
    )
    ev = _events(db, p.id)
    for key, outcome in (
        ("ctdna_baseline:1", {"ctdna": "positive"}),
        ("ctdna_c1:1", {"ctdna": "positive", "pam_mutation": True}),
        ("imaging_c2:1", {"recist": "PR"}),
    ):
        e = ev[key]
        e.status, e.completed_on, e.outcome = EventStatus.COMPLETED, e.target_date, outcome
        db.add(e)
    db.commit()
    with at("2027-02-16T02:00:00"):
        assert jobs.evaluate_decisions(session=db, now=datetime.now(UTC)) == {"opened": 1}
        assert jobs.evaluate_decisions(session=db, now=datetime.now(UTC)) == {"opened": 0}
    d = db.exec(select(Decision).where(Decision.participant_id == p.id)).one()
    assert (d.rule_id, d.recommended_regimen) == ("ctdna_pos_baseline_pam", "everoht")


# --- protocols and preview ----------------------------------------------------------------------


def test_protocols_list_get_and_preview_create_nothing(world, db, api_as):
    api = api_as("coordinator", "A")
    studies = {p["study"] for p in api.get("/api/v1/protocols").get_json()}
    assert studies == {"HEROES", "FREE-HER", "STOP-HER2", "NCT07239271"}
    one = api.get("/api/v1/protocols/stop-her2").get_json()
    assert [c["key"] for c in one["cohorts"]] == ["stop", "continue"]
    assert api.get("/api/v1/protocols/nope").status_code == 404
    n_events = len(db.exec(select(ScheduleEvent)).all())
    n_audit = len(db.exec(select(AuditEvent)).all())
    resp = api.post(
        "/api/v1/protocols/STOP-HER2/preview",
        json={"cohort": "stop", "anchor_date": "2027-01-04", "timezone": "America/New_York"},
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    visits = [e for e in body["events"] if e["item_id"] == "visit"]
    assert [v["target_date"] for v in visits[:3]] == ["2027-02-08", "2027-03-29", "2027-06-21"]
    assert visits[0]["window_open_date"] == "2027-02-01"  # week 4
    assert visits[0]["window_close_date"] == "2027-02-15"  # week 6
    assert visits[0]["target_local"] == "2027-02-08T09:00:00-05:00"
    assert {p["phase"] for p in body["phases"] if p["item_id"] == "restaging_scan"} == {
        "year_1",
        "after_year_1",
    }
    assert len(db.exec(select(ScheduleEvent)).all()) == n_events
    assert len(db.exec(select(AuditEvent)).all()) == n_audit
    bad = api.post(
        "/api/v1/protocols/STOP-HER2/preview",
        json={"cohort": "sideways", "anchor_date": "2027-13-01", "timezone": "X"},
    )
    assert bad.status_code == 422


def test_cli_preview(app):
    result = app.test_cli_runner().invoke(
        args=[
            "protocol",
            "preview",
            "STOP-HER2",
            "--cohort",
            "stop",
            "--anchor",
            "2027-01-04",
            "--tz",
            "America/New_York",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "2027-02-08 09:00" in result.output
    assert "Restaging scans" in result.output
    bad = app.test_cli_runner().invoke(
        args=["protocol", "preview", "STOP-HER2", "--anchor", "2027-01-04", "--cohort", "nope"]
    )
    assert bad.exit_code != 0


# --- adherence ----------------------------------------------------------------------------------


def test_adherence_for_a_hand_built_history(world, db, api_as):
    a1 = factories.a1_in_scenario(db, world)  # HEROES stop, anchor 2027-01-04, Paris
    ev = _events(db, a1.id)
    api = api_as("coordinator", "A")
    with at("2027-04-20T10:00:00"):
        for key, on, reason in (
            ("ctdna_baseline:1", "2026-12-10", None),  # in window (12-07 → 12-21)
            ("qol:1", "2027-01-20", "forgot"),  # late (window closed 01-18)
            ("imaging:1", "2027-03-30", None),  # in window
            ("qol:2", "2027-04-10", None),  # in window (03-28 → 04-18)
        ):
            r = api.post(
                f"{P}/{a1.id}/events/{ev[key].id}/complete",
                json={"completed_on": on, "reason": reason} if reason else {"completed_on": on},
            )
            assert r.status_code == 200, r.get_json()
        # ctdna:1 (window 03-22 → 04-05) was never done: missed, even before the job runs.
        body = api.get(f"{P}/{a1.id}/adherence").get_json()
    by_type = {f["event_type"]: f for f in body["by_event_type"]}
    ctdna = by_type["ctdna_draw"]
    assert (
        ctdna["due"],
        ctdna["completed_in_window"],
        ctdna["completed_late"],
        ctdna["missed"],
        ctdna["in_window_pct"],
    ) == (2, 1, 0, 1, 50.0)
    imaging = by_type["imaging"]
    assert (imaging["due"], imaging["completed_in_window"], imaging["in_window_pct"]) == (
        1,
        1,
        100.0,
    )
    qol = by_type["questionnaire"]
    assert (qol["due"], qol["completed_in_window"], qol["completed_late"], qol["missed"]) == (
        2,
        1,
        1,
        0,
    )
    assert body["questionnaire_compliance"] == {"expected": 2, "received": 2, "pct": 100.0}
    total = body["total"]
    assert (
        total["due"],
        total["completed_in_window"],
        total["completed_late"],
        total["missed"],
        total["open"],
        total["in_window_pct"],
    ) == (5, 3, 1, 1, 0, 60.0)
    # Site and study figures include this participant, and the world's A1 and A2 (same calendar,
    # nothing done: 5 due each).
    with at("2027-04-20T10:00:00"):
        site = api.get(f"/api/v1/sites/{world.sites['A'].id}/adherence?study=HEROES").get_json()
        study = api.get("/api/v1/studies/HEROES/adherence").get_json()
        other = api.get(f"/api/v1/sites/{world.sites['B'].id}/adherence")
    assert site["total"]["due"] == 15
    assert site["total"]["completed_in_window"] == 3
    # The study view counts only the caller's sites (B1 is at site B).
    assert study["total"] == site["total"]
    assert other.status_code == 404
