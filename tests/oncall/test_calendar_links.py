"""A person's secret calendar link (issue 16 item 1): a calendar app that cannot log in subscribes
to GET /oncall/feed/<token>.ics. The owner gets the link once (API and page), the feed answers
with that person's shifts of a rota built here at the frozen clock, a reset or a stop kills the
old link, a deactivated person's link is dead, nobody else (admin included) ever sees the link,
the audit holds neither the token nor its hash, garbage tokens are a 4xx, and our request log
never writes the token."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

import icalendar
import pytest
from sqlmodel import select
from werkzeug.serving import make_server

from server.audit import AuditEvent
from server.oncall.models import CalendarLink
from tests import clock

FEED = re.compile(r"/oncall/feed/([A-Za-z0-9_-]{43})\.ics")
BASE = "http://127.0.0.1:8000"  # TestingConfig's PUBLIC_BASE_URL


def _started() -> datetime:
    """The latest 08:00 in Paris at or before the frozen clock: the rota's first handover."""
    started = clock.local(clock.today(), "08:00")
    return started if started <= clock.NOW else clock.local(clock.today() - timedelta(1), "08:00")


@pytest.fixture
def rota(world: Any, api_as: Any) -> datetime:
    """SITE-A's primary: a daily turn, the nurse from the last 08:00, then the coordinator."""
    nurse, coordinator = world.staff[("nurse", "A")], world.staff[("coordinator", "A")]
    started = _started()
    resp = api_as("coordinator", "A").client.put(
        f"/api/v1/sites/{world.sites['A'].id}/rotas/primary",
        json={
            "period": "daily",
            "handover": "08:00",
            "starts_on": started.astimezone(clock.PARIS).date().isoformat(),
            "members": [nurse.id, coordinator.id],
        },
        headers=api_as("coordinator", "A")._headers(),
    )
    assert resp.status_code == 200, resp.get_json()
    return started


def _token(answer: dict[str, Any]) -> str:
    found = FEED.search(answer["url"])
    assert found, answer
    return found.group(1)


def _feed(client: Any, token: str) -> Any:
    return client.get(f"/oncall/feed/{token}.ics")


def _starts(ics: bytes) -> list[datetime]:
    events = icalendar.Calendar.from_ical(ics).walk("VEVENT")
    return [e.decoded("dtstart") for e in events]


def _not_found(resp: Any) -> None:
    assert resp.status_code == 404, resp.get_data()
    assert resp.get_json()["error"]["code"] == "not_found"
    assert resp.headers["Cache-Control"] == "no-store"


def test_the_owner_gets_the_link_once_and_a_calendar_app_reads_their_shifts(
    world, db, client, api_as, web_as, rota
):
    nurse = api_as("nurse", "A")
    assert nurse.get("/api/v1/me/oncall-feed").get_json() == {"exists": False, "created_at": None}
    created = nurse.post("/api/v1/me/oncall-feed")
    assert created.status_code == 201, created.get_json()
    link = created.get_json()
    token = _token(link)
    assert link["url"] == f"{BASE}/oncall/feed/{token}.ics"
    assert link["webcal_url"] == f"webcal://127.0.0.1:8000/oncall/feed/{token}.ics"
    assert link["created_at"] == clock.NOW.isoformat()
    # Afterwards: that a link exists and since when, never the link.
    state = nurse.get("/api/v1/me/oncall-feed")
    assert state.get_json() == {"exists": True, "created_at": clock.NOW.isoformat()}
    assert token not in state.get_data(as_text=True)
    # Only the token's SHA-256 is stored.
    row = db.exec(select(CalendarLink)).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(row.model_dump())

    # A calendar app: no login, no cookie; the nurse's shifts, the same file as /oncall/me.ics.
    feed = _feed(app_client := client.application.test_client(), token)
    assert feed.status_code == 200
    assert feed.mimetype == "text/calendar"
    assert feed.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in feed.headers
    assert feed.get_data() == web_as("nurse", "A").get("/oncall/me.ics").get_data()
    events = icalendar.Calendar.from_ical(feed.get_data()).walk("VEVENT")
    first = events[0]
    assert first.decoded("dtstart") == rota
    assert first.decoded("dtend") == rota + timedelta(hours=24)
    assert str(first.get("summary")) == "On call (primary) · SITE-A"
    # Every other day is the coordinator's: not in the nurse's calendar.
    assert _starts(feed.get_data())[:2] == [rota, rota + timedelta(hours=48)]
    # The coordinator's own link shows the coordinator's days only.
    other = _token(api_as("coordinator", "A").post("/api/v1/me/oncall-feed").get_json())
    assert _starts(_feed(app_client, other).get_data())[0] == rota + timedelta(hours=24)


def test_reset_kills_the_old_link_stop_kills_the_link_and_the_audit_keeps_no_token(
    world, db, client, api_as, rota
):
    nurse_user = world.staff[("nurse", "A")]
    nurse = api_as("nurse", "A")
    first = _token(nurse.post("/api/v1/me/oncall-feed").get_json())
    assert _feed(client, first).status_code == 200
    second = _token(nurse.post("/api/v1/me/oncall-feed").get_json())
    assert second != first
    _not_found(_feed(client, first))
    assert _feed(client, second).status_code == 200
    assert nurse.delete("/api/v1/me/oncall-feed").status_code == 204
    _not_found(_feed(client, second))
    assert nurse.get("/api/v1/me/oncall-feed").get_json()["exists"] is False
    # Stopping nothing is fine, and not audited.
    assert nurse.delete("/api/v1/me/oncall-feed").status_code == 204

    rows = db.exec(select(AuditEvent).where(AuditEvent.entity == "oncall_calendar_link")).all()
    assert [(r.action, r.actor, r.actor_user_id) for r in rows] == [
        ("oncall.calendar_link_created", f"staff:{nurse_user.id}", nurse_user.id),
        ("oncall.calendar_link_reset", f"staff:{nurse_user.id}", nurse_user.id),
        ("oncall.calendar_link_revoked", f"staff:{nurse_user.id}", nurse_user.id),
    ]
    trail = repr([r.model_dump() for r in db.exec(select(AuditEvent)).all()])
    for token in (first, second):
        assert token not in trail
        assert hashlib.sha256(token.encode()).hexdigest() not in trail


def test_a_deactivated_persons_link_is_dead(world, db, client, api_as, rota):
    nurse = world.staff[("nurse", "A")]
    token = _token(api_as("nurse", "A").post("/api/v1/me/oncall-feed").get_json())
    assert _feed(client, token).status_code == 200
    resp = api_as("admin", "A").patch(f"/api/v1/users/{nurse.id}", json={"is_active": False})
    assert resp.status_code == 200, resp.get_json()
    _not_found(_feed(client, token))


def test_the_page_shows_the_link_once_then_only_that_it_exists(world, db, client, web_as, rota):
    web = web_as("nurse", "A")
    html = web.text("/oncall")
    assert "Subscribe in your calendar" in html and "Create my calendar link" in html
    assert "Stop my calendar link" not in html
    # A forged form (no CSRF token) creates nothing.
    forged = web.client.post("/oncall/calendar-link", data={})
    assert forged.status_code == 400
    assert db.exec(select(CalendarLink)).first() is None

    created = web.post("/oncall/calendar-link")
    assert created.status_code == 200
    html = created.get_data(as_text=True)
    token = FEED.search(html).group(1)  # type: ignore[union-attr]
    assert f"{BASE}/oncall/feed/{token}.ics" in html
    assert f'href="webcal://127.0.0.1:8000/oncall/feed/{token}.ics"' in html
    assert "only this once" in html
    assert "Anyone with the link sees your shifts (site codes and times, no participant" in html
    assert "resetting it stops the old link" in html
    assert created.headers["Cache-Control"] == "no-store"
    assert _feed(client, token).status_code == 200

    later = web.text("/oncall")
    assert token not in later and "/oncall/feed/" not in later
    assert "You have a calendar link, created on" in later
    assert "Reset my calendar link" in later and "Stop my calendar link" in later

    stopped = web.post("/oncall/calendar-link/stop")
    assert stopped.status_code == 303 and stopped.headers["Location"].endswith("/oncall")
    _not_found(_feed(client, token))
    after = web.text("/oncall")
    assert "Your calendar link is stopped" in after and "Create my calendar link" in after


@pytest.mark.parametrize("role", ["admin", "investigator", "coordinator", "monitor", "nurse"])
def test_nobody_else_sees_the_link(world, db, api_as, web_as, rota, role):
    """The nurse of SITE-B holds a link; every role of SITE-A (admin included) and SITE-B's own
    other staff read the pages and the API where a link could show: never the token."""
    owner = world.staff[("nurse", "B")]
    token = _token(api_as("nurse", "B").post("/api/v1/me/oncall-feed").get_json())
    digest = hashlib.sha256(token.encode()).hexdigest()
    for site in ("A", "B"):
        if (role, site) == ("nurse", "B"):
            continue
        api, web = api_as(role, site), web_as(role, site)
        answers = [
            api.get("/api/v1/me/oncall-feed"),
            api.get("/api/v1/users"),
            api.get(f"/api/v1/users/{owner.id}"),
            api.get(f"/api/v1/sites/{world.sites[site].id}/rotas"),
            web.get("/oncall"),
            web.get("/"),
        ]
        assert answers[0].get_json() == {"exists": False, "created_at": None}
        assert web.get("/oncall").status_code == 200
        for answer in answers:
            text = answer.get_data(as_text=True) + repr(answer.headers)
            assert token not in text and digest not in text
            assert "/oncall/feed/" not in text


GARBAGE = [
    "a" * 42,  # one short
    "a" * 44,  # one long
    "a" * 5000,  # far too long
    "b" * 43 + ".ics",  # the path then ends .ics.ics
    "%21" * 43,  # odd characters
    "a" * 40 + "%20%20%20",  # spaces
    "a" * 42 + "%00",  # NUL
    "%C3%A9" * 43,  # unicode
    "%F0%9F%93%85" * 11,  # an emoji calendar
    "%FF%FE" * 20,  # not UTF-8
    "..%2F..%2Fetc%2Fpasswd",
    "",
]


@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
def test_a_garbage_token_is_a_404_in_the_envelope_never_a_500(client, db, token):
    for method in ("GET", "HEAD"):
        resp = client.open(f"/oncall/feed/{token}.ics", method=method)
        assert resp.status_code == 404, (method, token, resp.status_code)
        assert resp.headers["Cache-Control"] == "no-store"
        if method == "GET":
            assert resp.get_json()["error"]["code"] == "not_found"
    # Odd query strings are refused too, as everywhere (422 naming the field), never a 500.
    resp = client.get(f"/oncall/feed/{'a' * 43}.ics?x=%00")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "validation_error"
    # Nothing but GET is allowed.
    assert client.post(f"/oncall/feed/{'a' * 43}.ics").status_code == 405


def test_the_request_log_never_writes_the_token(app, caplog):
    """The development server's access line (werkzeug, `make run`) and gunicorn's, if someone
    enables it, show the path with the token replaced."""
    token = "Q" * 43

    def nothing(environ: Any, start_response: Any) -> list[bytes]:
        start_response("404 NOT FOUND", [("Content-Type", "text/plain")])
        return [b""]

    server = make_server("127.0.0.1", 0, nothing)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    with caplog.at_level(logging.INFO):
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(
                f"http://127.0.0.1:{server.port}/oncall/feed/{token}.ics", timeout=5
            )
        thread.join(5)
        server.server_close()
        logging.getLogger("gunicorn.access").info(
            '%(h)s "%(r)s" %(s)s', {"h": "10.0.0.1", "r": f"GET /oncall/feed/{token}.ics", "s": 200}
        )
    lines = [r.getMessage() for r in caplog.records if r.name in ("werkzeug", "gunicorn.access")]
    assert len(lines) == 2, caplog.text
    assert all("/oncall/feed/[redacted].ics" in line for line in lines), lines
    assert token not in caplog.text


def test_the_request_log_never_writes_a_survey_link() -> None:
    """A participant's survey link is as secret as a calendar link: the access line keeps the
    path's shape, never the token (and leaves other paths alone)."""
    from server.access_log import redact

    line = '127.0.0.1 - - "GET /s/AbC-12_x.y HTTP/1.1" 200 -'
    assert redact(line) == '127.0.0.1 - - "GET /s/[redacted] HTTP/1.1" 200 -'
    assert redact('"POST /s/tok?step=3 HTTP/1.1"') == '"POST /s/[redacted]?step=3 HTTP/1.1"'
    for other in ('"GET /static/s/x.css HTTP/1.1"', '"GET /participants/12 HTTP/1.1"'):
        assert redact(other) == other
