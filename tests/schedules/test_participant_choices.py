"""A choice the protocol leaves to the care team, set per participant: STOP-HER2 moved to
6-monthly imaging after year one. Only future, untouched events re-plan; it is audited; the API,
the participant page and the preview show it."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import time_machine
from sqlmodel import select

from server.audit import AuditEvent
from server.participants.models import Locale, ParticipantStatus
from server.schedules.models import EventStatus, ParticipantChoiceValue, ScheduleEvent
from tests import factories
from tests.clock import utcnow

P = "/api/v1/participants"
INTERVAL = "imaging_interval_after_year_1"


def at(iso: str):
    return time_machine.travel(datetime.fromisoformat(iso).replace(tzinfo=UTC), tick=False)


def enrol(db, world, code: str, cohort: str = "stop", site: str = "A"):
    """A STOP-HER2 participant (anchor 2027-01-04, Boston), enrolled before their first window
    whatever the suite's clock."""
    study = db.exec(select(factories.Study).where(factories.Study.key == "STOP-HER2")).first()
    study = study or factories.make_study(db, "STOP-HER2", "stop-her2")
    with at("2026-12-01T15:00:00"):
        p = factories.make_participant(
            db,
            world.staff[("coordinator", site)],
            world.sites[site],
            study,
            code,
            cohort=cohort,
            status=ParticipantStatus.OFF_TREATMENT_MONITORING,
            timezone="America/New_York",
            locale=Locale.EN,
        )
        db.commit()
    return p


def events(db, participant_id: int) -> dict[str, ScheduleEvent]:
    db.expire_all()
    rows = db.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == participant_id))
    return {e.key: e for e in rows}


def put(api, path: str, body: dict):
    return api.client.put(path, json=body, headers=api._headers())


def test_six_monthly_imaging_after_year_one_re_plans_only_future_untouched_scans(world, db, api_as):
    p = enrol(db, world, "SH2-601")
    api = api_as("coordinator", "A")
    ev = events(db, p.id)
    with at("2027-12-07T15:00:00"):
        r = api.post(
            f"{P}/{p.id}/events/{ev['restaging_scan:4'].id}/complete",
            json={"completed_on": "2027-12-06"},
        )
        assert r.status_code == 200, r.get_json()
        r = api.post(
            f"{P}/{p.id}/events/{ev['restaging_scan:7'].id}/reschedule",
            json={"target_date": "2028-10-02", "reason": "patient travels in September"},
        )
        assert r.status_code == 200, r.get_json()
        r = api.post(
            f"{P}/{p.id}/events/{ev['restaging_scan:8'].id}/cancel",
            json={"reason": "scan done elsewhere"},
        )
        assert r.status_code == 200, r.get_json()
    before = {k: (e.target_date, e.target_at, e.status) for k, e in events(db, p.id).items()}
    assert before["restaging_scan:5"][0] == date(2028, 3, 6)  # every 3 months
    assert before["restaging_scan:6"][0] == date(2028, 6, 6)
    assert "restaging_scan:40" in before and "restaging_scan:41" not in before

    url = f"{P}/{p.id}/choices/{INTERVAL}"
    with at("2028-02-25T15:00:00"):  # scan 5's window (from 02-21) is open
        r = put(api, url, {"value": "6 months", "reason": "stable for a year: oncologist's call"})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["value"], body["default"], body["is_default"]) == ("6 months", "3 months", False)
    assert body["reason"] == "stable for a year: oncologist's call"
    after = events(db, p.id)
    # History, the scan whose window is open, hand-moved and cancelled scans: as they were.
    assert after["restaging_scan:4"].status == EventStatus.COMPLETED
    open_scan = after["restaging_scan:5"]
    assert open_scan.target_date == date(2028, 3, 6) and open_scan.status != EventStatus.CANCELLED
    assert open_scan.window_open_at <= datetime(2028, 2, 25, 15, tzinfo=UTC)
    assert after["restaging_scan:7"].target_date == date(2028, 10, 2)
    assert after["restaging_scan:8"].status == EventStatus.CANCELLED
    assert after["restaging_scan:8"].status_reason == "scan done elsewhere"
    # Future untouched scans: every 6 months, counted from the last scan of year one.
    assert after["restaging_scan:6"].target_date == date(2028, 12, 6)
    assert after["restaging_scan:9"].target_date == date(2030, 6, 6)
    assert after["restaging_scan:22"].target_date == date(2036, 12, 6)
    gone = after["restaging_scan:23"]
    assert (gone.status, gone.status_reason) == (
        EventStatus.CANCELLED,
        f"no longer planned ({INTERVAL} = 6 months)",
    )
    assert sum(1 for k in after if k.startswith("restaging_scan:")) == 40  # none deleted
    # Nothing else moved.
    unchanged = [k for k in before if not k.startswith("restaging_scan:")]
    assert all(before[k][1] == after[k].target_at for k in unchanged)
    moved = [k for k in before if before[k][0] != after[k].target_date]
    assert len(moved) == 15  # scans 6 and 9-22
    assert body["replanned"] == {"created": 0, "moved": 15, "cancelled": 18}
    # Audited: the choice with before, after and the reason, then the re-plan.
    choice = db.exec(select(AuditEvent).where(AuditEvent.action == "participant.choice")).one()
    assert (choice.entity, choice.entity_id) == ("participant", str(p.id))
    assert choice.before == {INTERVAL: "3 months"}
    assert choice.after == {INTERVAL: "6 months", "protocol_version": "4"}
    assert choice.reason == "stable for a year: oncologist's call"
    assert choice.actor_user_id == world.staff[("coordinator", "A")].id
    replan = db.exec(
        select(AuditEvent).where(AuditEvent.action == "schedule.replanned").order_by(AuditEvent.id)
    ).all()[-1]
    assert replan.after["cancelled"] == 18
    assert replan.reason == f"{INTERVAL} = 6 months: stable for a year: oncologist's call"

    # The same value again changes nothing and writes nothing.
    with at("2028-02-25T16:00:00"):
        again = put(api, url, {"value": "6 Months", "reason": "same"})
    assert again.status_code == 200 and again.get_json()["replanned"] is None
    assert (
        len(db.exec(select(AuditEvent).where(AuditEvent.action == "participant.choice")).all()) == 1
    )

    # Later re-plans keep the choice: completing scan 5 late re-anchors 6 months on.
    with at("2028-03-20T15:00:00"):
        r = api.post(
            f"{P}/{p.id}/events/{after['restaging_scan:5'].id}/complete",
            json={"completed_on": "2028-03-20"},
        )
        assert r.status_code == 200, r.get_json()
    assert events(db, p.id)["restaging_scan:6"].target_date == date(2028, 9, 20)

    listed = api.get(f"{P}/{p.id}/choices").get_json()
    assert [(c["key"], c["value"], c["is_default"]) for c in listed] == [
        (INTERVAL, "6 months", False),
        ("scan_modality", "ct_or_mri", True),
    ]


def test_setting_a_choice_is_checked_and_refused_to_readers(world, db, api_as):
    p = enrol(db, world, "SH2-602")
    url = f"{P}/{p.id}/choices/{INTERVAL}"
    coordinator = api_as("coordinator", "A")
    cases = [
        ({"value": "7 months", "reason": "x"}, 422, "value"),
        ({"value": "2 weeks", "reason": "x"}, 422, "value"),
        ({"value": "6 months", "reason": "   "}, 422, "reason"),
        ({"value": "6 months"}, 422, "reason"),
        ({"value": "", "reason": "x"}, 422, "value"),
    ]
    for body, status, field in cases:
        r = put(coordinator, url, body)
        assert r.status_code == status, (body, r.get_json())
        assert field in r.get_json()["error"]["fields"], (body, r.get_json())
    unknown = put(
        coordinator, f"{P}/{p.id}/choices/scan_interval", {"value": "6 months", "reason": "x"}
    )
    assert unknown.status_code == 404
    # Nurses and monitors read choices but may not set them; another site's participant is 404.
    for role in ("nurse", "monitor"):
        assert api_as(role, "A").get(f"{P}/{p.id}/choices").status_code == 200
        assert put(api_as(role, "A"), url, {"value": "6 months", "reason": "x"}).status_code == 403
    assert (
        put(api_as("coordinator", "B"), url, {"value": "6 months", "reason": "x"}).status_code
        == 404
    )
    assert api_as("investigator", "B").get(f"{P}/{p.id}/choices").status_code == 404
    # The continue cohort has no such choice.
    other = enrol(db, world, "SH2-603", cohort="continue")
    r = put(coordinator, f"{P}/{other.id}/choices/{INTERVAL}", {"value": "6 months", "reason": "x"})
    assert r.status_code == 409 and "stop cohort" in r.get_json()["error"]["message"]
    assert db.exec(select(ParticipantChoiceValue)).all() == []
    # An investigator may.
    ok = put(api_as("investigator", "A"), url, {"value": "4 months", "reason": "oncologist"})
    assert ok.status_code == 200, ok.get_json()


def test_the_scan_method_is_set_from_the_participant_page(world, db, web_as):
    p = enrol(db, world, "SH2-604")
    web = web_as("coordinator", "A")
    page = web.text(f"/participants/{p.id}")
    assert 'id="choices"' in page and "Imaging interval after one progression-free year" in page
    action = f"/participants/{p.id}/choices/scan_modality"
    assert f'action="{action}"' in page
    refused = web.post(action, data={"value": "mri", "reason": ""})
    assert refused.status_code == 422
    assert "Not changed: see below." in refused.get_data(as_text=True)
    r = web.post(action, data={"value": "mri", "reason": "RECIST: same method as baseline"})
    assert r.status_code == 303 and r.headers["Location"].endswith("#choice-scan_modality")
    scans = [e for e in events(db, p.id).values() if e.event_type.value == "imaging"]
    now = utcnow()
    future = [e for e in scans if e.window_open_at.replace(tzinfo=UTC) > now]
    assert future and {e.modality for e in future} == {"mri"}
    # Scans whose window has opened by now (the suite's clock may be late) stay as planned.
    assert {e.modality for e in scans if e not in future} <= {"ct_or_mri"}
    page = web.text(f"/participants/{p.id}")
    section = page[page.index('id="choice-scan_modality"') :]
    assert "RECIST: same method as baseline" in section[:3000]
    # A nurse sees the choices without a form to change them.
    nurse = web_as("nurse", "A").text(f"/participants/{p.id}")
    assert 'id="choices"' in nurse and f'action="{action}"' not in nurse
    assert web_as("nurse", "A").post(action, data={"value": "ct", "reason": "x"}).status_code == 403


def test_the_preview_shows_the_choices_and_can_try_one(world, api_as, app):
    api = api_as("coordinator", "A")
    body = {"cohort": "stop", "anchor_date": "2027-01-04", "timezone": "America/New_York"}
    default = api.post("/api/v1/protocols/STOP-HER2/preview", json=body).get_json()
    assert [(c["key"], c["value"], c["is_default"]) for c in default["participant_choices"]] == [
        (INTERVAL, "3 months", True),
        ("scan_modality", "ct_or_mri", True),
    ]
    six = api.post(
        "/api/v1/protocols/STOP-HER2/preview", json={**body, "choices": {INTERVAL: "6 months"}}
    ).get_json()
    scans = lambda data: [e for e in data["events"] if e["item_id"] == "restaging_scan"]  # noqa: E731
    assert (len(scans(default)), len(scans(six))) == (40, 22)
    bad = api.post(
        "/api/v1/protocols/STOP-HER2/preview", json={**body, "choices": {INTERVAL: "1 year"}}
    )
    assert bad.status_code == 422 and "choices" in bad.get_json()["error"]["fields"]
    runner = app.test_cli_runner()
    out = runner.invoke(
        args=[
            "protocol", "preview", "STOP-HER2", "--cohort", "stop", "--anchor", "2027-01-04",
            "--choice", f"{INTERVAL}=6 months",
        ]
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert (
        f"choice {INTERVAL}: 6 months (chosen); default 3 months, allowed 3 months, 4 months, "
        "5 months, 6 months, set by the treating oncologist"
    ) in out.output
    plain = runner.invoke(
        args=["protocol", "preview", "STOP-HER2", "--cohort", "stop", "--anchor", "2027-01-04"]
    )
    counts = [int(re.search(r"^(\d+) events$", o.output, re.M).group(1)) for o in (plain, out)]  # type: ignore[union-attr]
    assert counts[0] - counts[1] == 18  # 36 scans after year one every 3 months, 18 every 6
    wrong = runner.invoke(
        args=["protocol", "preview", "STOP-HER2", "--cohort", "stop", "--anchor", "2027-01-04",
              "--choice", "imaging=6 months"]
    )  # fmt: skip
    assert wrong.exit_code == 2 and "has no choice 'imaging'" in wrong.output


def test_the_enrolment_preview_lists_the_choices_with_their_defaults(world, db, web_as):
    factories.make_study(db, "STOP-HER2", "stop-her2")
    db.commit()
    web = web_as("coordinator", "A")
    page = web.text("/participants/new")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    r = web.post(
        "/participants/new",
        data={
            "action": "preview",
            "study": "STOP-HER2",
            "site_id": str(world.sites["A"].id),
            "study_code": "SH2-700",
            "cohort": "stop",
            "anchor_date": "2027-01-04",
            "timezone": "America/New_York",
            "locale": "en",
            "status": "off_treatment_monitoring",
            # Past screening: the entry gate's scans attested within 30 days (issue 17).
            "gate.baseline_scans_recent.value": "within",
            "gate.baseline_scans_recent.observed_on": "2026-11-20",
        },
    )
    html = r.get_data(as_text=True)
    assert r.status_code == 200, html
    listed = html[html.index('id="preview-choices"') :]
    assert (
        "Imaging interval after one progression-free year off treatment</strong>: 3 months"
        in listed
    )
    assert "decided by the treating oncologist" in listed


def test_a_choice_for_a_participant_no_longer_followed_is_kept_and_plans_nothing(world, db, api_as):
    p = enrol(db, world, "SH2-605")
    api = api_as("investigator", "A")
    r = api.post(f"{P}/{p.id}/withdraw", json={"reason": "moved abroad"})
    assert r.status_code == 200, r.get_json()
    r = put(
        api, f"{P}/{p.id}/choices/{INTERVAL}", {"value": "5 months", "reason": "for the record"}
    )
    assert r.status_code == 200, r.get_json()
    assert (r.get_json()["value"], r.get_json()["replanned"]) == (
        "5 months",
        {"created": 0, "moved": 0, "cancelled": 0},
    )
    assert {e.status for e in events(db, p.id).values()} == {EventStatus.CANCELLED}


def test_an_amendment_that_no_longer_allows_a_value_falls_back_to_the_default(
    world, db, api_as, app
):
    from server.protocols.definition import Protocol

    p = enrol(db, world, "SH2-606")
    api = api_as("coordinator", "A")
    with at("2027-06-01T15:00:00"):
        r = put(api, f"{P}/{p.id}/choices/{INTERVAL}", {"value": "6 months", "reason": "onc"})
        assert r.status_code == 200, r.get_json()
    registry = app.extensions["protocols"]
    v2 = registry["stop-her2"]
    data = v2.definition()
    data["version"] = str(int(v2.version) + 1)
    data["choices"][0]["range"]["max"] = "4 months"
    registry["stop-her2"] = Protocol.model_validate(data).model_copy(
        update={"key": "stop-her2", "sha256": "e" * 64, "source_file": "stop-her2.yaml"}
    )
    try:
        with at("2027-06-01T16:00:00"):
            result = app.test_cli_runner().invoke(
                args=["protocol", "amend", "STOP-HER2", "--participant", p.study_code,
                      "--reason", "amendment: 3-4 months"]
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            listed = api.get(f"{P}/{p.id}/choices").get_json()
    finally:
        registry["stop-her2"] = v2
    assert (listed[0]["value"], listed[0]["is_default"]) == ("3 months", True)
    assert listed[0]["allowed"] == ["3 months", "4 months"]
    assert events(db, p.id)["restaging_scan:6"].target_date == date(2028, 6, 6)  # 3-monthly
