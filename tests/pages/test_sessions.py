"""Staff browser sessions: held server-side, ended by logout, idleness, the 12-hour limit, a
password or role change; logins and logouts are in the audit trail."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from sqlmodel import select

from server import audit
from server.auth import service as auth_service
from server.auth.models import Role, StaffSession
from server.clock import utcnow
from tests.factories import PASSWORD


def _cookie(web):
    return web.client.get_cookie("session").value


def _replay(app, cookie):
    """A different browser presenting a copy of the cookie."""
    other = app.test_client()
    other.set_cookie("session", cookie)
    return other


def _is_signed_in(client) -> bool:
    resp = client.get("/")
    return resp.status_code == 200 and "Log out" in resp.get_data(as_text=True)


def test_login_opens_a_server_session_and_is_audited(web_as, world, db):
    web_as("nurse", "A")
    nurse = world.staff[("nurse", "A")]
    rows = db.exec(select(StaffSession).where(StaffSession.user_id == nurse.id)).all()
    assert len(rows) == 1 and rows[0].ended_at is None
    actions = [
        e.action
        for e in db.exec(select(audit.AuditEvent).where(audit.AuditEvent.actor_user_id == nurse.id))
    ]
    assert "auth.login" in actions


def test_logout_makes_a_copied_cookie_worthless(app, web_as, db, world):
    web = web_as("nurse", "A")
    copied = _cookie(web)
    assert _is_signed_in(_replay(app, copied))
    resp = web.post("/logout")
    assert resp.status_code == 302
    assert not _is_signed_in(web.client)
    # Someone who copied the cookie before the logout gets the login page, not the data.
    replay = _replay(app, copied).get("/")
    assert replay.status_code == 302 and "/login" in replay.headers["Location"]
    nurse = world.staff[("nurse", "A")]
    row = db.exec(select(StaffSession).where(StaffSession.user_id == nurse.id)).one()
    assert row.end_reason == "logout"


def test_idle_for_15_minutes_logs_out_and_says_why(app, web_as):
    web = web_as("nurse", "A")
    cookie = _cookie(web)
    start = utcnow()
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        assert _is_signed_in(_replay(app, cookie))  # activity keeps it alive
    with time_machine.travel(start + timedelta(minutes=24), tick=False):
        assert _is_signed_in(_replay(app, cookie))  # 14 minutes after the last request
    with time_machine.travel(start + timedelta(minutes=40), tick=False):
        client = _replay(app, cookie)
        resp = client.get("/participants?status=active")
        assert resp.status_code == 302
        assert "next=/participants?status%3Dactive" in resp.headers["Location"] or (
            "next=%2Fparticipants" in resp.headers["Location"]
        )
        login = client.get(resp.headers["Location"]).get_data(as_text=True)
        assert "15 minutes without activity" in login
        # and it stays ended, even if the user comes straight back with the same cookie
        assert not _is_signed_in(_replay(app, cookie))


def test_a_session_ends_after_12_hours_even_when_active(app, web_as):
    web = web_as("nurse", "A")
    start = utcnow()
    for minutes in range(10, 12 * 60, 10):
        with time_machine.travel(start + timedelta(minutes=minutes), tick=False):
            assert _is_signed_in(web.client), minutes
    with time_machine.travel(start + timedelta(hours=12, minutes=1), tick=False):
        client = web.client
        resp = client.get("/")
        assert resp.status_code == 302
        assert "12-hour limit" in client.get(resp.headers["Location"]).get_data(as_text=True)


def test_password_change_ends_the_other_sessions_but_not_this_one(app, web_as):
    laptop = web_as("nurse", "A")
    tablet = web_as("nurse", "A")
    resp = laptop.post(
        "/account/password", data={"current": PASSWORD, "new": "a brand new passphrase"}
    )
    assert resp.status_code == 302
    assert _is_signed_in(laptop.client)
    assert not _is_signed_in(tablet.client)


def test_role_change_ends_the_users_sessions(app, web_as, world, db):
    web = web_as("nurse", "A")
    admin = world.staff[("admin", "A")]
    nurse = world.staff[("nurse", "A")]
    auth_service.update_user(
        session=db, actor=admin, user=nurse, changes={"role": Role.MONITOR}, now=utcnow()
    )
    db.commit()
    assert not _is_signed_in(web.client)


def test_login_form_slows_down_after_repeated_failures_and_says_when_to_retry(
    client, world, frozen_clock
):
    page = client.get("/login").get_data(as_text=True)
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    for _ in range(5):
        bad = client.post(
            "/login",
            data={
                "email": "nurse.a@example.test",
                "password": "wrong password",
                "csrf_token": token,
            },
        )
        assert bad.status_code == 401
        assert "email or password is wrong" in bad.get_data(as_text=True)
    good = client.post(
        "/login",
        data={"email": "nurse.a@example.test", "password": PASSWORD, "csrf_token": token},
    )
    assert good.status_code == 429
    assert good.headers["Retry-After"] == "1"
    html = good.get_data(as_text=True)
    assert "Try again in 1 second." in html and "reply ACK" in html
    assert "locked" not in html
    assert not _is_signed_in(client)
    frozen_clock.shift(timedelta(seconds=1))
    again = client.post(
        "/login",
        data={"email": "nurse.a@example.test", "password": PASSWORD, "csrf_token": token},
    )
    assert again.status_code == 302
    assert _is_signed_in(client)
