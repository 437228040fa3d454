"""Headers on every answer (server/app.py): `Cache-Control: no-store` on everything but static
files, whoever asks (staff pages, staff API, the participant's app, survey links, login and error
pages); `Strict-Transport-Security` in production only. The routes come from the app's url_map,
so a new GET route is walked without anyone adding it here."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlmodel import select

from config import settings
from server.participants.mobile import ParticipantToken
from server.schedules.models import EventType, ScheduleEvent
from server.surveys.links import make_token
from tests.apps import app_like
from tests.clock import NOW


def _paths(app, world, db) -> list[tuple[str, str]]:
    """(endpoint, a path to GET) for every GET route, with ids from site A."""
    a1 = world.participants["A1"]
    questionnaire = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == a1.id,
            ScheduleEvent.event_type == EventType.QUESTIONNAIRE,
        )
    ).first()
    values = {
        "participant_id": a1.id,
        "site_id": world.sites["A"].id,
        "user_id": world.staff[("nurse", "A")].id,
        "alert_id": 1,
        "key": "HEROES",
        "token": make_token(app.config["SECRET_KEY"], questionnaire.id, NOW + timedelta(days=3)),
        "filename": "stepdown.css",
        "resource_type": "Patient",
        "resource_id": str(a1.id),
        "rest": "Basic",
    }
    out = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        missing = rule.arguments - values.keys()
        assert not missing, f"give {sorted(missing)} a value for {rule.rule}"
        out.append((rule.endpoint, rule.build({k: values[k] for k in rule.arguments})[1]))
    return sorted(out)


@pytest.fixture
def participant_headers(db, world):
    """The participant A1's app token, as activation would have issued it."""
    clear = "app-token-for-the-header-walk"
    db.add(
        ParticipantToken(
            participant_id=world.participants["A1"].id,
            token_hash=hashlib.sha256(clear.encode()).hexdigest(),
            created_at=NOW,
            expires_at=NOW + timedelta(days=30),
        )
    )
    db.commit()
    return {"Authorization": f"Bearer {clear}"}


def test_every_get_route_answers_no_store_to_everyone(
    app, client, db, world, api_as, web_as, participant_headers
):
    staff_api = api_as("coordinator", "A")
    staff_web = web_as("coordinator", "A")
    seen = set()
    for endpoint, path in _paths(app, world, db):
        if path.startswith("/api/v1/mobile/"):
            signed_in = client.get(path, headers=participant_headers)
        elif path.startswith(("/api/", "/fhir/")):
            signed_in = staff_api.get(path)
        else:
            signed_in = staff_web.get(path)
        anonymous = app.test_client().get(path)
        for who, resp in (("signed in", signed_in), ("anonymous", anonymous)):
            cache = resp.headers.get("Cache-Control", "")
            if endpoint == "static":
                assert resp.status_code == 200 and "no-store" not in cache, (path, cache)
            else:
                assert cache == "no-store", (who, path, resp.status_code, cache)
            assert "Strict-Transport-Security" not in resp.headers
        seen.add((endpoint, signed_in.status_code))
    # The walk reached real content, not only refusals.
    ok = {endpoint for endpoint, status in seen if status == 200}
    assert {
        "today.today",
        "participant_page.show",
        "participants.ParticipantView",
        "mobile.schedule",
        "fhir.read",
        "fhir.search_type",
        "survey.survey",
        "pages.login",
        "static",
    } <= ok


def test_error_and_refusal_answers_are_no_store_too(client, world):
    for resp in (
        client.get("/no/such/page"),
        client.get("/api/v1/no/such/thing"),
        client.post("/api/v1/auth/token", json={"email": "x@example.test", "password": "nope"}),
        client.get("/api/v1/participants"),
    ):
        assert resp.status_code in (401, 404)
        assert resp.headers["Cache-Control"] == "no-store"


def test_production_sends_hsts_for_two_years(app, db, database_url, monkeypatch):
    for name, value in {
        "SECRET_KEY": "s" * 40,
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": "https://stepdown.example.org",
        "TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
        "TWILIO_AUTH_TOKEN": "token",
        "TWILIO_FROM_NUMBER": "+15005550006",
        "RATELIMIT_STORAGE_URI": "memory://",
    }.items():
        monkeypatch.setenv(name, value)
    production = app_like(app, database_url, config=settings.ProductionConfig())
    web = production.test_client()
    for path in ("/login", "/healthz", "/api/v1/participants", "/static/stepdown.css"):
        hsts = web.get(path).headers["Strict-Transport-Security"]
        assert hsts == "max-age=63072000; includeSubDomains"
        assert int(hsts.split(";")[0].split("=")[1]) >= 31_536_000  # the table's one year
