"""Limits per client on everything that needs no login (api/rate_limits.py), on the in-memory
store: staff sign-in (API token and login form share one budget), app activation codes, survey
links. Failed attempts count, successful ones never do; a throttled answer is a 429 with
Retry-After that says the same for any email; nobody can lock a nurse out.

The same scenarios run against Redis in test_rate_limits_redis.py."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import select

from api.rate_limits import client_key, limits_of
from server.auth import rules
from server.schedules.models import EventType, ScheduleEvent
from server.surveys.links import make_token
from tests.apps import app_like
from tests.clock import NOW
from tests.factories import PASSWORD

TOKEN = "/api/v1/auth/token"
ACTIVATE = "/api/v1/mobile/activate"
NURSE = "nurse.a@example.test"
WRONG = "not the password!"


def _token(client, email, password=WRONG, ip="127.0.0.1", **kw):
    return client.post(
        TOKEN, json={"email": email, "password": password}, environ_base={"REMOTE_ADDR": ip}, **kw
    )


def _login_form(client, email, password=WRONG):
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf})


def test_the_31st_failed_sign_in_from_one_client_is_429_with_retry_after(client, world):
    for i in range(30):
        resp = _token(client, f"someone{i}@example.test")
        assert resp.status_code == 401, (i, resp.get_json())
        assert resp.get_json()["error"]["message"] == "email or password is wrong"
        assert "Retry-After" not in resp.headers
    limited = _token(client, "someone-else@example.test")
    assert limited.status_code == 429
    # The 30 failures happened at this frozen instant: the window frees 900 s on, and
    # Retry-After is the next whole second, when a retry succeeds on any store.
    assert limited.headers["Retry-After"] == "901"
    assert limited.get_json() == {
        "error": {
            "code": "rate_limited",
            "message": "too many sign-in attempts: try again in 16 minutes",
            "fields": {},
        }
    }
    # Whatever the email, even the right password: this address is out of attempts.
    assert _token(client, NURSE, PASSWORD).status_code == 429
    # Another client is not.
    assert _token(client, NURSE, PASSWORD, ip="203.0.113.9").status_code == 201


def test_retry_after_is_when_the_budget_is_back(client, world, frozen_clock):
    for i in range(30):
        _token(client, f"someone{i}@example.test")
    frozen_clock.shift(timedelta(minutes=10))
    assert _token(client, "x@example.test").headers["Retry-After"] == "301"
    frozen_clock.shift(timedelta(seconds=299))
    assert _token(client, "x@example.test").status_code == 429
    frozen_clock.shift(timedelta(seconds=2))
    assert _token(client, NURSE, PASSWORD).status_code == 201
    assert _token(client, "x@example.test").status_code == 401


def test_successful_sign_ins_from_one_address_never_count(client, world):
    for i in range(29):
        assert _token(client, f"someone{i}@example.test").status_code == 401
    # A shift change behind the hospital's one NAT address.
    for _ in range(100):
        assert _token(client, NURSE, PASSWORD).status_code == 201
    assert _token(client, "late@example.test").status_code == 401  # the 30th failure
    assert _token(client, "later@example.test").status_code == 429


def test_the_login_form_shares_the_budget_and_shows_when_to_retry(client, world):
    for i in range(15):
        assert _token(client, f"api{i}@example.test").status_code == 401
    for i in range(15):
        wrong = _login_form(client, f"form{i}@example.test")
        assert wrong.status_code == 401
        assert "email or password is wrong" in wrong.get_data(as_text=True)
    limited = _login_form(client, NURSE, PASSWORD)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "901"
    html = limited.get_data(as_text=True)
    assert "Too many sign-in attempts from here. Try again in 16 minutes." in html
    assert "reply ACK" in html
    assert 'name="password"' in html  # the form, ready for later
    assert client.get("/login").status_code == 200  # the page itself is never limited


def test_wrong_password_and_unknown_email_look_the_same_throttled_or_not(client, world):
    def attempts(email):
        return [_token(client, email, ip="198.51.100.1") for _ in range(7)]

    real, unknown = attempts(NURSE), attempts("nobody@example.test")
    for a, b in zip(real, unknown, strict=True):
        assert (a.status_code, a.get_json(), a.headers.get("Retry-After")) == (
            b.status_code,
            b.get_json(),
            b.headers.get("Retry-After"),
        )
    assert [r.status_code for r in real] == [401] * 5 + [429] * 2


def test_the_delay_per_email_and_client_grows_and_a_success_clears_it(client, world, frozen_clock):
    for _ in range(5):
        assert _token(client, NURSE).status_code == 401
    waits = []
    for _ in range(5):
        refused = _token(client, NURSE)
        assert refused.status_code == 429
        waits.append(int(refused.headers["Retry-After"]))
        frozen_clock.shift(timedelta(seconds=waits[-1] - 1))
        assert _token(client, NURSE).status_code == 429  # a second early
        frozen_clock.shift(timedelta(seconds=1))
        assert _token(client, NURSE).status_code == 401  # counted, the wait doubles
    assert waits == [1, 2, 4, 8, 16]
    # The right password waits like a wrong one (it is not even checked), then goes through.
    assert _token(client, NURSE, PASSWORD).status_code == 429
    frozen_clock.shift(timedelta(seconds=32))
    assert _token(client, NURSE, PASSWORD).status_code == 201
    assert _token(client, NURSE).status_code == 401  # this pair starts afresh


def test_an_attacker_cannot_keep_the_nurse_out(client, world, frozen_clock):
    # From one address: 200 tries on her email (its own delay and budget stop it early).
    statuses = {_token(client, NURSE, ip="192.0.2.66").status_code for _ in range(200)}
    assert statuses == {401, 429}
    assert _token(client, NURSE, PASSWORD, ip="198.51.100.20").status_code == 201


def test_a_spray_from_many_addresses_delays_a_new_client_a_minute_at_most(
    client, world, frozen_clock
):
    # The nurse signed in from the ward's address last week: that client is known.
    frozen_clock.shift(timedelta(days=-7))
    assert _token(client, NURSE, PASSWORD, ip="198.51.100.10").status_code == 201
    frozen_clock.shift(timedelta(days=7))
    answers = []
    for i in range(200):
        frozen_clock.shift(timedelta(seconds=1))
        answers.append(_token(client, NURSE, ip=f"10.{i // 250}.{i % 250}.1"))
    statuses = [r.status_code for r in answers]
    assert statuses.count(401) < 40 and statuses.count(429) > 160
    assert max(int(r.headers.get("Retry-After", 0)) for r in answers) <= 60
    # From the ward, at once, in the middle of the spray.
    assert _token(client, NURSE, PASSWORD, ip="198.51.100.10").status_code == 201
    # From a phone never seen before: at most the account's short wait.
    phone = _token(client, NURSE, PASSWORD, ip="203.0.113.44")
    assert phone.status_code == 429
    wait = int(phone.headers["Retry-After"])
    assert 0 < wait <= rules.ACCOUNT_SPACING.total_seconds() == 60
    frozen_clock.shift(timedelta(seconds=wait))
    assert _token(client, NURSE, PASSWORD, ip="203.0.113.44").status_code == 201


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(app, client, world, database_url):
    for i in range(30):
        spoofed = {"X-Forwarded-For": f"10.9.9.{i}"}
        assert _token(client, f"s{i}@example.test", headers=spoofed).status_code == 401
    assert (
        _token(client, "t@example.test", headers={"X-Forwarded-For": "10.9.9.99"}).status_code
        == 429
    )

    behind_proxy = app_like(app, database_url, TRUSTED_PROXY_COUNT=1).test_client()
    for i in range(30):
        resp = _token(behind_proxy, f"p{i}@example.test", headers={"X-Forwarded-For": "10.1.1.1"})
        assert resp.status_code == 401
    assert (
        _token(behind_proxy, "q@example.test", headers={"X-Forwarded-For": "10.1.1.1"}).status_code
        == 429
    )
    # A different client behind the same proxy (the proxy's own address is 127.0.0.1).
    assert (
        _token(behind_proxy, "q@example.test", headers={"X-Forwarded-For": "10.1.1.2"}).status_code
        == 401
    )


def test_ratelimit_enabled_false_turns_every_limit_off(app, client, world, database_url):
    # What the schemathesis run may use.
    unlimited = app_like(app, database_url, RATELIMIT_ENABLED=False).test_client()
    for i in range(40):
        assert _token(unlimited, f"u{i}@example.test").status_code == 401
    for _ in range(10):
        assert _token(unlimited, "same@example.test").status_code == 401
    limits_of(unlimited.application).reset()  # harmless when off


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_a_client_is_its_address_and_an_ipv6_client_its_64(app, remote, key):
    with app.test_request_context(environ_base={"REMOTE_ADDR": remote}):
        assert client_key() == key


def test_activation_code_guessing_is_limited_per_client(client, world):
    for i in range(30):
        resp = client.post(ACTIVATE, json={"study_code": f"Z-{i:03}", "code": "123456"})
        assert resp.status_code == 401, resp.get_json()
    limited = client.post(ACTIVATE, json={"study_code": "Z-999", "code": "123456"})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "901"
    assert limited.get_json()["error"]["code"] == "rate_limited"
    # Malformed requests are refused (422) without spending the budget of another client.
    other = {"REMOTE_ADDR": "198.51.100.3"}
    for _ in range(40):
        bad = client.post(ACTIVATE, json={"study_code": "A-001", "code": "12"}, environ_base=other)
        assert bad.status_code == 422


def test_activation_is_limited_per_study_code_from_any_address(client, world):
    for i in range(10):
        resp = client.post(
            ACTIVATE,
            json={"study_code": "A-001", "code": f"{100000 + i}"},
            environ_base={"REMOTE_ADDR": f"10.0.0.{i}"},
        )
        assert resp.status_code == 401
    fresh = {"REMOTE_ADDR": "10.0.1.1"}
    limited = client.post(
        ACTIVATE, json={"study_code": "A-001", "code": "999999"}, environ_base=fresh
    )
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) == 3601
    other = client.post(
        ACTIVATE, json={"study_code": "A-002", "code": "999999"}, environ_base=fresh
    )
    assert other.status_code == 401


def test_survey_link_guessing_is_limited_but_real_links_never_are(app, client, db, world):
    for i in range(30):
        resp = client.get(f"/s/{i:x}-{i:x}-{i:016x}")
        assert resp.status_code == 404
    limited = client.get("/s/1-2-3", headers={"Accept-Language": "fr"})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "901"
    html = limited.get_data(as_text=True)
    assert 'lang="fr"' in html and "Réessayez dans 16 min." in html
    # A participant behind the same address still opens and answers her real link.
    event = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == world.participants["A1"].id,
            ScheduleEvent.event_type == EventType.QUESTIONNAIRE,
        )
    ).first()
    token = make_token(app.config["SECRET_KEY"], event.id, NOW + timedelta(days=3))
    for _ in range(200):
        assert client.get(f"/s/{token}").status_code == 200
    expired = make_token(app.config["SECRET_KEY"], event.id, NOW - timedelta(days=1))
    assert client.get(f"/s/{expired}").status_code == 410


def test_with_redis_down_sign_in_works_and_limits_count_in_memory(app, db, world, database_url):
    # Nothing listens on this port: every Redis call fails at once.
    down = app_like(app, database_url, RATELIMIT_STORAGE_URI="redis://127.0.0.1:9/0")
    client = down.test_client()
    assert _token(client, NURSE, PASSWORD).status_code == 201
    for _ in range(5):
        assert _token(client, NURSE).status_code == 401
    assert _token(client, NURSE).headers["Retry-After"] == "1"
    for i in range(25):  # 30 failures in all from this address
        assert _token(client, f"someone{i}@example.test").status_code == 401
    assert _token(client, "one-more@example.test").status_code == 429
