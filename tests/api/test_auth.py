"""Bearer tokens: issued for good credentials only, hashed, expiring, revocable, no cookies."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from sqlmodel import select

from server.audit import AuditEvent
from server.auth.models import ApiToken
from server.auth.service import hash_token
from server.clock import utcnow
from tests.factories import PASSWORD

TOKEN = "/api/v1/auth/token"


def _login(client, email, password=PASSWORD):
    return client.post(TOKEN, json={"email": email, "password": password})


def test_token_for_good_credentials_sets_no_cookie(client, world, db):
    resp = _login(client, "nurse.a@example.test")
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["token_type"] == "Bearer" and len(body["token"]) >= 40
    assert "Set-Cookie" not in resp.headers
    # Only the hash is stored.
    row = db.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(body["token"]))).one()
    assert body["token"] not in row.token_hash
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.get_json()["email"] == "nurse.a@example.test"
    assert "Set-Cookie" not in me.headers
    listed = client.get(
        "/api/v1/participants", headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert listed.status_code == 200
    assert "Set-Cookie" not in listed.headers


def test_wrong_password_and_unknown_email_look_the_same(client, world):
    bad = _login(client, "nurse.a@example.test", "wrong password!!")
    unknown = _login(client, "nobody@example.test", "wrong password!!")
    assert bad.status_code == unknown.status_code == 401
    assert bad.get_json() == unknown.get_json()


def test_repeated_failures_slow_this_client_down_without_locking_the_account(
    client, world, db, frozen_clock
):
    for _ in range(5):
        assert _login(client, "nurse.a@example.test", "wrong password!!").status_code == 401
    # This client waits a second now, even with the right password (never checked meanwhile) …
    waiting = _login(client, "nurse.a@example.test")
    assert waiting.status_code == 429
    assert waiting.headers["Retry-After"] == "1"
    assert waiting.get_json()["error"]["code"] == "rate_limited"
    # … said exactly as for an email nobody has, after as many failures.
    for _ in range(5):
        _login(client, "nobody@example.test", "wrong password!!")
    assert _login(client, "nobody@example.test").get_json() == waiting.get_json()
    # Another client was never held up; this one is through once the second has passed.
    other = client.post(
        TOKEN,
        json={"email": "nurse.a@example.test", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert other.status_code == 201
    frozen_clock.shift(timedelta(seconds=1))
    assert _login(client, "nurse.a@example.test").status_code == 201
    # Each failure is still audited; nothing is locked in the database.
    nurse = world.staff[("nurse", "A")]
    db.refresh(nurse)
    assert nurse.locked_until_at is None and nurse.failed_login_count == 0
    failed = db.exec(
        select(AuditEvent).where(
            AuditEvent.action == "auth.login_failed", AuditEvent.entity_id == str(nurse.id)
        )
    ).all()
    assert len(failed) == 5


def test_no_token_bad_token_are_401(client, world):
    assert client.get("/api/v1/participants").status_code == 401
    resp = client.get("/api/v1/participants", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "unauthorized"


def test_token_expires(client, world):
    token = _login(client, "nurse.a@example.test").get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/participants", headers=headers).status_code == 200
    with time_machine.travel(utcnow() + timedelta(hours=13)):
        assert client.get("/api/v1/participants", headers=headers).status_code == 401


def test_token_revocation(client, world):
    token = _login(client, "nurse.a@example.test").get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.delete(TOKEN, headers=headers).status_code == 204
    assert client.get("/api/v1/participants", headers=headers).status_code == 401


def test_deactivated_user_token_stops_working(client, world, api_as):
    token = _login(client, "nurse.a@example.test").get_json()["token"]
    nurse = world.staff[("nurse", "A")]
    resp = api_as("admin", "A").patch(f"/api/v1/users/{nurse.id}", json={"is_active": False})
    assert resp.status_code == 200, resp.get_json()
    resp = client.get("/api/v1/participants", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401


def test_token_request_validation(client, world):
    resp = client.post(TOKEN, json={"email": "not-an-email"})
    assert resp.status_code == 422
    assert {"email", "password"} <= resp.get_json()["error"]["fields"].keys()
