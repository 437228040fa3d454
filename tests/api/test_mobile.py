"""The companion app: activation by SMS code, a token scoped to one participant, the participant's
schedule, questionnaires, answers and preferences; nothing else is reachable (404)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlmodel import select

from notifications.models import OutboxMessage
from server.surveys.models import SurveyResponse
from tests import factories

# The app is set up while the participant is awake (no activation code goes into their night).
pytestmark = pytest.mark.usefixtures("daytime")

M = "/api/v1/mobile"
NOW = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)  # A1's first questionnaire (qol:1) is open


def _code(db, participant_id):
    rows = db.exec(
        select(OutboxMessage)
        .where(
            OutboxMessage.participant_id == participant_id, OutboxMessage.kind == "activation_code"
        )
        .order_by(OutboxMessage.id)
    ).all()
    return re.search(r"\b(\d{6})\b", rows[-1].body).group(1)


def _activate(client, db, api_as, participant, code=None):
    api_as("coordinator", "A").post(f"/api/v1/participants/{participant.id}/activation")
    r = client.post(
        f"{M}/activate",
        json={
            "study": "HEROES",
            "study_code": code or participant.study_code,
            "code": _code(db, participant.id),
        },
    )
    assert r.status_code == 201, r.get_json()
    assert "Set-Cookie" not in r.headers
    return {"Authorization": f"Bearer {r.get_json()['token']}"}


def test_activation_code_works_once_and_wrong_codes_are_refused(client, db, world, api_as):
    a1 = world.participants["A1"]
    api_as("coordinator", "A").post(f"/api/v1/participants/{a1.id}/activation")
    code = _code(db, a1.id)
    wrong = "000000" if code != "000000" else "111111"
    bad = client.post(f"{M}/activate", json={"study_code": "A-001", "code": wrong})
    assert bad.status_code == 401
    ok = client.post(f"{M}/activate", json={"study_code": "A-001", "code": code})
    assert ok.status_code == 201
    again = client.post(f"{M}/activate", json={"study_code": "A-001", "code": code})
    assert again.status_code == 401  # one-time
    assert (
        client.post(f"{M}/activate", json={"study_code": "A-001", "code": "12"}).status_code == 422
    )


def test_five_wrong_tries_burn_the_code_and_codes_expire(client, db, world, api_as):
    a1 = world.participants["A1"]
    api_as("coordinator", "A").post(f"/api/v1/participants/{a1.id}/activation")
    code = _code(db, a1.id)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        client.post(f"{M}/activate", json={"study_code": "A-001", "code": wrong})
    assert (
        client.post(f"{M}/activate", json={"study_code": "A-001", "code": code}).status_code == 401
    )
    api_as("coordinator", "A").post(f"/api/v1/participants/{a1.id}/activation")
    fresh = _code(db, a1.id)
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=31), tick=False):
        late = client.post(f"{M}/activate", json={"study_code": "A-001", "code": fresh})
    assert late.status_code == 401


def test_the_app_sees_only_its_participant(client, db, world, api_as):
    a1, b1 = world.participants["A1"], world.participants["B1"]
    b1.phone_e164, b1.has_sms_consent = "+16175550123", True
    db.add(b1)
    db.commit()
    headers = _activate(client, db, api_as, a1)
    # Staff endpoints: 404, whatever they are.
    for path in (
        "/api/v1/participants",
        f"/api/v1/participants/{a1.id}",
        f"/api/v1/participants/{b1.id}",
        "/api/v1/alerts",
        "/api/v1/users",
    ):
        assert client.get(path, headers=headers).status_code == 404
    b_headers = _activate(client, db, api_as_b(api_as), b1, code="B-001")
    b_qol = client.get(f"{M}/schedule", headers=b_headers).get_json()
    b_event = next(e for e in b_qol if e["event_type"] == "questionnaire")
    r = client.post(
        f"{M}/questionnaires/{b_event['id']}/answers", headers=headers, json={"answers": {"q1": 1}}
    )
    assert r.status_code == 404


def api_as_b(api_as):
    def make(role, site="B"):
        return api_as(role, "B")

    return make


def test_schedule_questionnaire_answers_and_preferences(client, db, world, api_as):
    a1 = factories.a1_in_scenario(db, world)
    with time_machine.travel(NOW, tick=False):
        headers = _activate(client, db, api_as, a1)
        schedule = client.get(f"{M}/schedule", headers=headers).get_json()
        assert schedule[0]["target_local"].endswith("+01:00")  # Paris time
        open_ = client.get(f"{M}/questionnaires", headers=headers).get_json()
        assert [q["instrument"] for q in open_] == ["eortc_qlq_c30"]
        event_id = open_[0]["event_id"]
        assert len(open_[0]["items"]) == 30
        url = f"{M}/questionnaires/{event_id}/answers"
        partial = client.post(url, headers=headers, json={"answers": {"q1": 2}})
        assert partial.get_json()["status"] == "draft"
        answers = {f"q{i}": 1 for i in range(1, 29)} | {"q29": 5, "q30": 6}
        first = client.post(url, headers=headers, json={"answers": answers, "submit": True})
        second = client.post(url, headers=headers, json={"answers": answers, "submit": True})
        assert first.status_code == second.status_code == 200
        assert first.get_json()["response_id"] == second.get_json()["response_id"]
        bad = client.post(url, headers=headers, json={"answers": {"q29": 9}})
        assert bad.status_code in (409, 422)
        prefs = client.patch(
            f"{M}/preferences", headers=headers, json={"quiet_hours_start": "22:00", "locale": "en"}
        )
        assert prefs.status_code == 200, prefs.get_json()
        assert prefs.get_json()["quiet_hours_start"] == "22:00"
        assert prefs.get_json()["locale"] == "en"
    assert len(db.exec(select(SurveyResponse)).all()) == 1
    with time_machine.travel(NOW, tick=False):
        assert client.delete(f"{M}/token", headers=headers).status_code == 204
        assert client.get(f"{M}/schedule", headers=headers).status_code == 401


def test_calendar_feed_lists_upcoming_appointments_in_plain_words(client, db, world, api_as):
    from icalendar import Calendar

    a1 = factories.a1_in_scenario(db, world)
    with time_machine.travel(NOW, tick=False):
        headers = _activate(client, db, api_as, a1)
        r = client.get(f"{M}/calendar.ics", headers=headers)
    assert r.status_code == 200 and r.mimetype == "text/calendar"
    cal = Calendar.from_ical(r.data)
    events = [c for c in cal.walk() if c.name == "VEVENT"]
    summaries = {str(e["summary"]) for e in events}
    assert f"Prise de sang ({a1.study_code})" in summaries  # A1 reads French
    assert all("ctDNA" not in s and "Signatera" not in s for s in summaries)
    first = min(events, key=lambda e: e["dtstart"].dt)
    assert first["dtstart"].dt.astimezone(UTC) >= datetime(2027, 1, 4, tzinfo=UTC)
    assert client.get(f"{M}/calendar.ics").status_code == 401
