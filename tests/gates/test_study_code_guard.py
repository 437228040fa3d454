"""Issue 17 item 4: a study code the SMS guard would refuse is refused at enrolment (422 naming
the field), and no message rendered inside a request turns a guard failure into a 500."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from notifications.messages import HealthInformationError
from notifications.models import OutboxMessage
from server.participants.models import Participant
from server.participants.rules import study_code_problem
from tests.pages.test_participants_pages import NEW, form

BASE = "/api/v1/participants"


def _body(site_id: int, code: str) -> dict[str, object]:
    return {
        "study": "HEROES",
        "site_id": site_id,
        "study_code": code,
        "anchor_date": "2027-02-01",
        "phone": "06 12 34 56 79",
        "has_sms_consent": True,
    }


def _participants(db) -> int:
    db.expire_all()
    return int(db.exec(select(func.count()).select_from(Participant)).one())


@pytest.mark.parametrize(
    "code", ["X-HEROES-01", "HER2-7", "nct0123", "CANCER1", "POSITIVE-9", "Stop-HER2.3"]
)
def test_a_code_no_sms_may_carry_is_named(code):
    problem = study_code_problem(code)
    assert problem is not None and "SMS" in problem


@pytest.mark.parametrize("code", ["A-100", "HR-01", "P.0042", "STOP-1", "X-HERO-01"])
def test_ordinary_codes_pass(code):
    assert study_code_problem(code) is None


def test_enrolment_refuses_the_code_with_a_422_naming_the_field(api_as, world, db):
    before = _participants(db)
    resp = api_as("coordinator").post(BASE, json=_body(world.sites["A"].id, "X-HEROES-01"))
    assert resp.status_code == 422, resp.get_json()
    error = resp.get_json()["error"]
    assert list(error["fields"]) == ["study_code"]
    assert "heroes" in error["fields"]["study_code"][0]
    assert _participants(db) == before
    # The same code without the trial's name goes through.
    ok = api_as("coordinator").post(BASE, json=_body(world.sites["A"].id, "X-HERO-01"))
    assert ok.status_code == 201, ok.get_json()


def test_renaming_to_such_a_code_is_refused(api_as, world, db):
    a1 = world.participants["A1"]
    resp = api_as("coordinator").patch(
        f"{BASE}/{a1.id}", json={"study_code": "A-SIGNATERA", "reason": "typo"}
    )
    assert resp.status_code == 422
    assert "study_code" in resp.get_json()["error"]["fields"]
    db.expire_all()
    assert db.get(Participant, a1.id).study_code == "A-001"


def test_the_enrolment_form_names_the_field(web_as, world, db):
    web = web_as("coordinator")
    before = _participants(db)
    resp = web.post(NEW, form(world, study_code="X-HEROES-01", action="preview"))
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "no SMS may carry" in html
    assert _participants(db) == before


def test_a_guard_failure_inside_a_request_is_a_4xx_and_saves_nothing(
    api_as, world, db, monkeypatch
):
    # Whatever slipped past the checks (a template, a new input): refused, never a 500.
    def refuse(*_a: object, **_k: object) -> str:
        raise HealthInformationError("SMS text contains the forbidden term 'cancer'")

    monkeypatch.setattr("server.participants.service.compose", refuse)
    before = _participants(db)
    outbox = int(db.exec(select(func.count()).select_from(OutboxMessage)).one())
    resp = api_as("coordinator").post(BASE, json=_body(world.sites["A"].id, "A-555"))
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["code"] == "sms_guard"
    assert _participants(db) == before
    db.expire_all()
    assert int(db.exec(select(func.count()).select_from(OutboxMessage)).one()) == outbox
