"""Participants API: scoping (404 across sites), roles, validation envelope, audit trail."""

from __future__ import annotations

import pytest
from sqlmodel import select

from server.audit import AuditEvent

BASE = "/api/v1/participants"


def _new(site: int, **kw):
    body = {
        "study": "HEROES",
        "site_id": site,
        "study_code": "A-100",
        "cohort": "stop",
        "anchor_date": "2027-01-04",
        "timezone": "Europe/Paris",
        "locale": "fr",
        "phone": "06 12 34 56 79",
        "has_sms_consent": True,
        "status": "off_treatment_monitoring",
        # Past screening, HEROES's entry gate must have been passed (attested, with its date).
        "eligibility": {"baseline_ctdna": {"value": "negative", "observed_on": "2026-11-20"}},
    }
    body.update(kw)
    if body["status"] == "screening" and "eligibility" not in kw:
        del body["eligibility"]  # in screening the gate reads the baseline result itself
    return body


def _audit(db, participant_id, prefix="participant."):
    rows = db.exec(
        select(AuditEvent)
        .where(AuditEvent.entity == "participant", AuditEvent.entity_id == str(participant_id))
        .order_by(AuditEvent.id)
    ).all()
    return [r for r in rows if r.action.startswith(prefix)]


# --- site scoping: every participant route answers 404 for another site's participant -----------

ROUTES = [
    ("get", "{base}/{id}", None),
    ("patch", "{base}/{id}", {"locale": "en"}),
    ("post", "{base}/{id}/withdraw", {"reason": "moved away"}),
    ("get", "{base}/{id}/audit", None),
]


@pytest.mark.parametrize(("method", "template", "body"), ROUTES)
@pytest.mark.parametrize("role", ["nurse", "coordinator", "investigator", "monitor", "admin"])
def test_other_sites_participant_is_404_on_every_route(
    world, api_as, db, method, template, body, role
):
    b1 = world.participants["B1"]
    api = api_as(role, "A")
    path = template.format(base=BASE, id=b1.id)
    kwargs = {"json": body} if body is not None else {}
    resp = getattr(api, method)(path, **kwargs)
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "not_found"
    # Same answer as for an id that does not exist at all: nothing leaks.
    missing = getattr(api, method)(template.format(base=BASE, id=999_999), **kwargs)
    assert missing.status_code == 404
    assert missing.get_json() == resp.get_json()
    db.expire_all()
    assert db.get(type(b1), b1.id).status.value == "off_treatment_monitoring"
    assert db.get(type(b1), b1.id).locale.value == "en"


@pytest.mark.parametrize("role", ["nurse", "coordinator", "investigator", "monitor", "admin"])
def test_list_never_shows_other_sites(world, api_as, role):
    api = api_as(role, "A")
    for query in ("", f"?site_id={world.sites['B'].id}", "?search=B-", "?page_size=500"):
        resp = api.get(BASE + query)
        assert resp.status_code == 200
        codes = {p["study_code"] for p in resp.get_json()["items"]}
        assert "B-001" not in codes
    resp = api_as(role, "B").get(BASE)
    assert [p["study_code"] for p in resp.get_json()["items"]] == ["B-001"]


def test_cannot_enrol_at_another_site(world, api_as, db):
    resp = api_as("coordinator", "A").post(BASE, json=_new(world.sites["B"].id))
    assert resp.status_code == 422
    assert "site_id" in resp.get_json()["error"]["fields"]


def test_cannot_move_a_participant_to_another_site(world, api_as, db):
    a1 = world.participants["A1"]
    resp = api_as("coordinator", "A").patch(
        f"{BASE}/{a1.id}", json={"site_id": world.sites["B"].id, "reason": "transfer"}
    )
    assert resp.status_code == 422
    db.expire_all()
    assert db.get(type(a1), a1.id).site_id == world.sites["A"].id


# --- roles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["monitor", "nurse"])
def test_read_only_roles_cannot_write(world, api_as, db, role):
    api = api_as(role, "A")
    a1 = world.participants["A1"]
    before = len(_audit(db, a1.id))
    assert api.post(BASE, json=_new(world.sites["A"].id)).status_code == 403
    resp = api.patch(f"{BASE}/{a1.id}", json={"locale": "en"})
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == "forbidden"
    assert api.post(f"{BASE}/{a1.id}/withdraw", json={"reason": "x"}).status_code == 403
    db.expire_all()
    assert db.get(type(a1), a1.id).locale.value == "fr"
    assert db.get(type(a1), a1.id).status.value == "off_treatment_monitoring"
    assert len(_audit(db, a1.id)) == before
    # They can still read.
    assert api.get(f"{BASE}/{a1.id}").status_code == 200


def test_monitor_never_sees_phone_numbers(world, api_as):
    a1 = world.participants["A1"]
    monitor = api_as("monitor", "A")
    body = monitor.get(f"{BASE}/{a1.id}").get_json()
    assert body["phone"] != "+33612345678"
    assert "345" not in body["phone"]
    listed = monitor.get(BASE).get_json()["items"]
    assert all(p["phone"] is None or "345" not in p["phone"] for p in listed)
    coordinator = api_as("coordinator", "A").get(f"{BASE}/{a1.id}").get_json()
    assert coordinator["phone"] == "+33612345678"


def test_monitor_audit_history_hides_phone(world, api_as):
    a1 = world.participants["A1"]
    events = api_as("monitor", "A").get(f"{BASE}/{a1.id}/audit").get_json()
    assert events[0]["action"] == "participant.create"
    assert "345" not in events[0]["after"]["phone_e164"]


# --- create / get / list ------------------------------------------------------------------------


def test_enrol_normalises_phone_and_audits(daytime, world, api_as, db):
    resp = api_as("coordinator", "A").post(BASE, json=_new(world.sites["A"].id))
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["phone"] == "+33612345679"  # national format read with the site's country
    assert body["study"] == "HEROES" and body["site_code"] == "SITE-A"
    events = _audit(db, body["id"], prefix="")
    assert [e.action for e in events] == [
        "participant.create",
        # Past screening: the gate's fact and the confirmed stop date, attested (issue 17).
        "eligibility.record",
        "eligibility.record",
        "schedule.planned",
        "participant.activation_code",
    ]
    assert events[1].after["provenance"] == "attestation"
    assert events[3].after["created"] > 10
    assert events[0].before is None
    assert events[0].after["study_code"] == "A-100"
    assert events[0].after["phone_e164"] == "+33612345679"
    assert events[0].actor == f"staff:{world.staff[('coordinator', 'A')].id}"
    assert events[0].request_id


def test_timezone_defaults_to_the_sites(world, api_as):
    body = _new(world.sites["B"].id, study_code="B-100", phone="+16175550124")
    del body["timezone"]
    resp = api_as("coordinator", "B").post(BASE, json=body)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["timezone"] == "America/New_York"


def test_duplicate_study_code_is_409_and_changes_nothing(world, api_as, db):
    resp = api_as("coordinator", "A").post(BASE, json=_new(world.sites["A"].id, study_code="A-001"))
    assert resp.status_code == 409
    assert resp.get_json()["error"]["fields"] == {"study_code": ["already used in this study"]}


def test_list_filters_and_paginates(world, api_as):
    api = api_as("coordinator", "A")
    api.post(BASE, json=_new(world.sites["A"].id, study_code="A-003", status="screening"))
    resp = api.get(BASE + "?status=screening")
    assert [p["study_code"] for p in resp.get_json()["items"]] == ["A-003"]
    page1 = api.get(BASE + "?page_size=2&page=1").get_json()
    page2 = api.get(BASE + "?page_size=2&page=2").get_json()
    assert page1["total"] == 3 and page1["pages"] == 2
    assert [p["study_code"] for p in page1["items"]] == ["A-001", "A-002"]
    assert [p["study_code"] for p in page2["items"]] == ["A-003"]
    assert api.get(BASE + "?study=NOPE").get_json()["total"] == 0
    assert api.get(BASE + "?study=HEROES").get_json()["total"] == 3


# --- validation: 422 in one envelope naming the field, nothing changed --------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"phone": "12"}, "phone"),
        ({"phone": "+33 1"}, "phone"),
        ({"phone": "not a number at all"}, "phone"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"anchor_date": "2027-02-30"}, "anchor_date"),
        ({"anchor_date": "yesterday"}, "anchor_date"),
        ({"status": "cured"}, "status"),
        ({"locale": "de"}, "locale"),
        ({"study_code": "Jeanne Dupont"}, "study_code"),
        ({"study": "NOPE"}, "study"),
        ({"site_id": "1"}, "site_id"),
        ({"favourite_colour": "blue"}, "favourite_colour"),
        ({"phone": None, "has_sms_consent": True}, "phone"),
    ],
)
def test_bad_input_is_422_naming_the_field(world, api_as, db, override, field):
    api = api_as("coordinator", "A")
    before = db.exec(select(AuditEvent)).all()
    resp = api.post(BASE, json=_new(world.sites["A"].id, **override))
    assert resp.status_code == 422, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"], error
    assert field in error["message"]
    assert len(db.exec(select(AuditEvent)).all()) == len(before)


def test_malformed_json_is_400_envelope(world, api_as):
    api = api_as("coordinator", "A")
    resp = api.client.post(
        BASE, data="{not json", headers={**api._headers(), "Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "bad_request"


def test_bad_query_args_are_422(world, api_as):
    resp = api_as("nurse", "A").get(BASE + "?page=0&status=weird")
    assert resp.status_code == 422
    assert {"page", "status"} <= resp.get_json()["error"]["fields"].keys()


def test_unknown_route_and_method_answer_in_envelope(world, api_as):
    api = api_as("nurse", "A")
    assert api.get("/api/v1/nothing-here").get_json()["error"]["code"] == "not_found"
    resp = api.delete(f"{BASE}/{world.participants['A1'].id}")
    assert resp.status_code == 405
    assert resp.get_json()["error"]["code"] == "method_not_allowed"


# --- update / withdraw ----------------------------------------------------------------------------


def test_trial_data_change_needs_reason(world, api_as, db):
    a1 = world.participants["A1"]
    api = api_as("coordinator", "A")
    resp = api.patch(f"{BASE}/{a1.id}", json={"anchor_date": "2027-01-11"})
    assert resp.status_code == 422
    assert "reason" in resp.get_json()["error"]["fields"]
    db.expire_all()
    assert str(db.get(type(a1), a1.id).anchor_date) == "2027-01-04"
    resp = api.patch(
        f"{BASE}/{a1.id}",
        json={"anchor_date": "2027-01-11", "reason": "anti-HER2 actually stopped a week later"},
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["anchor_date"] == "2027-01-11"
    last = _audit(db, a1.id)[-1]
    assert last.action == "participant.update"
    assert last.before == {"anchor_date": "2027-01-04"}
    assert last.after == {"anchor_date": "2027-01-11"}
    assert last.reason == "anti-HER2 actually stopped a week later"


def test_contact_change_needs_no_reason_and_is_audited(world, api_as, db):
    a1 = world.participants["A1"]
    resp = api_as("coordinator", "A").patch(
        f"{BASE}/{a1.id}", json={"locale": "en", "phone": "+33 6 12 34 56 70"}
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["phone"] == "+33612345670"
    last = _audit(db, a1.id)[-1]
    assert last.before == {"locale": "fr", "phone_e164": "+33612345678"}
    assert last.after == {"locale": "en", "phone_e164": "+33612345670"}


def test_noop_update_writes_no_audit(world, api_as, db):
    a1 = world.participants["A1"]
    before = len(_audit(db, a1.id))
    resp = api_as("coordinator", "A").patch(f"{BASE}/{a1.id}", json={"locale": "fr"})
    assert resp.status_code == 200
    assert len(_audit(db, a1.id)) == before


def test_empty_patch_is_422(world, api_as):
    a1 = world.participants["A1"]
    resp = api_as("coordinator", "A").patch(f"{BASE}/{a1.id}", json={"reason": "nothing"})
    assert resp.status_code == 422


def test_impossible_status_transition_is_422(world, api_as, db):
    a1 = world.participants["A1"]
    resp = api_as("coordinator", "A").patch(
        f"{BASE}/{a1.id}", json={"status": "screening", "reason": "oops"}
    )
    assert resp.status_code == 422
    assert "status" in resp.get_json()["error"]["fields"]


def test_withdraw_is_final_and_audited(world, api_as, db):
    a1 = world.participants["A1"]
    api = api_as("investigator", "A")
    resp = api.post(f"{BASE}/{a1.id}/withdraw", json={"reason": "participant's wish"})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "withdrawn"
    assert resp.get_json()["withdrawn_at"]
    last = _audit(db, a1.id)[-1]
    assert last.action == "participant.withdraw"
    assert last.before["status"] == "off_treatment_monitoring"
    assert last.after["status"] == "withdrawn"
    assert last.reason == "participant's wish"
    again = api.post(f"{BASE}/{a1.id}/withdraw", json={"reason": "again"})
    assert again.status_code == 409
    edit = api.patch(f"{BASE}/{a1.id}", json={"locale": "en"})
    assert edit.status_code == 409
    assert api.post(f"{BASE}/{a1.id}/withdraw", json={}).status_code == 422


def test_audit_endpoint_shows_before_and_after(daytime, world, api_as):
    a1 = world.participants["A1"]
    api = api_as("coordinator", "A")
    resp = api.patch(f"{BASE}/{a1.id}", json={"cohort": "continue", "reason": "baseline positive"})
    assert resp.status_code == 200, resp.get_json()
    events = api.get(f"{BASE}/{a1.id}/audit").get_json()
    actions = [e["action"] for e in events]
    assert actions == [
        "participant.create",
        # Enrolled past screening: the gate's fact and the stop date, attested.
        "eligibility.record",
        "eligibility.record",
        "schedule.planned",
        "participant.activation_code",
        "participant.update",
        "schedule.replanned",
    ]
    assert events[5]["before"] == {"cohort": "stop"}
    assert events[5]["after"] == {"cohort": "continue"}
    assert events[5]["reason"] == "baseline positive"
