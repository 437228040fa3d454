"""The sign-in limits on Redis, as production runs them: two app processes (gunicorn workers)
share one budget, the clock that decides is ours (frozen here), Retry-After is the same as on the
memory store, and nothing stored names an email.

Redis at STEPDOWN_TEST_REDIS_URL (default 127.0.0.1:6379, database 0); every run uses its own key
prefix and deletes its keys. Without Redis the module is skipped, except in CI (CI=true), where it
fails."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.apps import app_like
from tests.factories import PASSWORD

REDIS_URL = os.environ.get("STEPDOWN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TOKEN = "/api/v1/auth/token"
NURSE = "nurse.a@example.test"
WRONG = "not the password!"


@pytest.fixture(scope="module")
def redis_client() -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is unreachable; CI needs it: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable ({exc}); CI runs these tests")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client) -> Iterator[str]:
    name = f"stepdown-test-{uuid.uuid4().hex[:12]}"
    yield name
    for key in redis_client.scan_iter(match=f"{name}:*"):
        redis_client.delete(key)


@pytest.fixture
def worker(app, db, database_url, prefix):
    """worker() → a test client of a new app process counting in Redis under this run's prefix."""

    def make():
        other = app_like(
            app, database_url, RATELIMIT_STORAGE_URI=REDIS_URL, RATELIMIT_KEY_PREFIX=prefix
        )
        return other.test_client()

    return make


def _token(client, email, password=WRONG, ip="127.0.0.1"):
    return client.post(
        TOKEN, json={"email": email, "password": password}, environ_base={"REMOTE_ADDR": ip}
    )


def test_two_workers_share_one_budget_and_the_31st_failure_is_429(
    worker, world, frozen_clock, redis_client, prefix
):
    first, second = worker(), worker()
    for i in range(15):
        assert _token(first, f"a{i}@example.test").status_code == 401
        assert _token(second, f"b{i}@example.test").status_code == 401
    limited = _token(first, "c@example.test")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "901"
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert _token(second, NURSE, PASSWORD).status_code == 429
    frozen_clock.shift(timedelta(seconds=901))
    assert _token(second, NURSE, PASSWORD).status_code == 201
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{prefix}:*")]
    assert keys and all(k.startswith(f"{prefix}:") for k in keys)
    assert not any("example.test" in k or "nurse" in k for k in keys)


def test_the_per_email_delay_grows_across_workers(worker, world, frozen_clock):
    first, second = worker(), worker()
    for i in range(5):
        assert _token(first if i % 2 else second, NURSE).status_code == 401
    waits = []
    for step in range(3):
        client = first if step % 2 else second
        refused = _token(client, NURSE)
        assert refused.status_code == 429
        waits.append(int(refused.headers["Retry-After"]))
        frozen_clock.shift(timedelta(seconds=waits[-1]))
        assert _token(client, NURSE).status_code == 401
    assert waits == [1, 2, 4]
    # Elsewhere, the nurse is not held up; here she is through once her wait is over.
    assert _token(second, NURSE, PASSWORD, ip="198.51.100.20").status_code == 201
    frozen_clock.shift(timedelta(seconds=8))
    assert _token(first, NURSE, PASSWORD).status_code == 201


def test_a_spray_delays_a_new_client_a_minute_at_most(worker, world, frozen_clock):
    web = worker()
    for i in range(60):
        frozen_clock.shift(timedelta(seconds=1))
        _token(web, NURSE, ip=f"10.0.{i}.1")
    phone = _token(web, NURSE, PASSWORD, ip="203.0.113.44")
    assert phone.status_code == 429
    wait = int(phone.headers["Retry-After"])
    assert 0 < wait <= 60
    frozen_clock.shift(timedelta(seconds=wait))
    assert _token(web, NURSE, PASSWORD, ip="203.0.113.44").status_code == 201


def test_survey_link_guessing_is_limited_on_redis_too(worker, world):
    web = worker()
    for i in range(30):
        assert web.get(f"/s/{i:x}-{i:x}-{i:016x}").status_code == 404
    limited = web.get("/s/1-2-3")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "901"
