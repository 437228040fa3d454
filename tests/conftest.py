"""Test harness: a fresh database per run (SQLite, or PostgreSQL when STEPDOWN_TEST_DATABASE_URL
names a server), built by the real migrations, and one rolled-back transaction per test."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session

from config.settings import TestingConfig
from server import migrate
from server.app import create_app
from server.auth import service as auth_service
from server.db import Database, get_db, make_engine, normalise_url
from tests import clock, factories


def _fresh_postgres(server_url: str) -> tuple[str, str]:
    """Create a new empty database on the server; return (its URL, its name)."""
    name = f"stepdown_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        # A scratch database: its commits need not wait for the disk (a crash loses the run
        # anyway). Tests that commit (served apps, jobs, processes) no longer wait on fsync.
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit TO off')
    admin.dispose()
    url = sa.engine.make_url(normalise_url(server_url)).set(database=name)
    return url.render_as_string(hide_password=False), name


def _drop_postgres(server_url: str, name: str) -> None:
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[time_machine.Traveller]:
    """Every test, and every fixture that builds its data, runs frozen at tests.clock.NOW."""
    with time_machine.travel(clock.NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def _fresh_rate_limits(request: pytest.FixtureRequest) -> None:
    """Every test using the app starts with no sign-in attempt counted: the test client always
    comes from 127.0.0.1, so one test's failures would otherwise throttle the next."""
    if "app" in request.fixturenames:
        from api.rate_limits import limits_of

        limits_of(request.getfixturevalue("app")).reset()


@pytest.fixture
def daytime(frozen_clock: time_machine.Traveller) -> None:
    """Move the frozen clock forward, if need be, to a time when participants at both world sites
    are awake: 14:00-20:00 in Paris (08:00-14:00 in Boston) stays, otherwise the next 15:00 in
    Paris. For tests of things staff do while the participant is awake (no activation code goes
    into their night). Request it before `world` (e.g. `pytest.mark.usefixtures("daytime")`)."""
    local = clock.NOW.astimezone(clock.PARIS)
    if not 14 <= local.hour < 20:
        day = local.date() if local.hour < 14 else local.date() + timedelta(days=1)
        frozen_clock.move_to(clock.local(day, "15:00"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated database for this test run."""
    server = os.environ.get("STEPDOWN_TEST_DATABASE_URL")
    if server:
        url, name = _fresh_postgres(server)
        migrate.upgrade(url)
        yield url
        _drop_postgres(server, name)
    else:
        path = tmp_path_factory.mktemp("db") / "stepdown-test.db"
        url = f"sqlite:///{path}"
        migrate.upgrade(url)
        yield url


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    # argon2's production cost makes each hash take tens of milliseconds; tests hash hundreds.
    original, dummy = auth_service._hasher, auth_service._DUMMY_HASH
    auth_service._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    # An unknown email is checked against the dummy hash: same cost as the test users' hashes.
    auth_service._DUMMY_HASH = auth_service._hasher.hash("not-a-real-password")
    yield
    auth_service._hasher, auth_service._DUMMY_HASH = original, dummy


@pytest.fixture(scope="session")
def app(database_url: str) -> Flask:
    """One app for the run, bound to the test database."""
    config = TestingConfig()
    config.DATABASE_URL = database_url
    return create_app(config)


@pytest.fixture
def db(app: Flask) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test.

    The app's request sessions join the same connection through SAVEPOINTs, so a request's
    commit is visible to the test and everything vanishes afterwards.
    """
    database: Database = get_db(app)
    connection = database.engine.connect()
    transaction = connection.begin()
    database.bind = connection
    database.join_savepoint = True
    session = database.session()
    try:
        yield session
    finally:
        session.close()
        database.bind = database.engine
        database.join_savepoint = False
        transaction.rollback()
        connection.close()


@pytest.fixture
def client(app: Flask, db: Session) -> FlaskClient:
    """A test client whose requests share the test's transaction."""
    return app.test_client()


@pytest.fixture
def world(db: Session) -> factories.World:
    """Two sites (A in Paris, B in Boston), a study, staff of every role at each, participants."""
    return factories.build_world(db)


class Api:
    """A tiny JSON client that sends a bearer token."""

    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client = client
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self._headers(), **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.post(path, json=json, headers=self._headers(), **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.patch(path, json=json, headers=self._headers(), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(path, headers=self._headers(), **kw)


@pytest.fixture
def api_as(client: FlaskClient, db: Session, world: factories.World) -> Any:
    """api_as("nurse", "A") → an Api client authenticated as that staff user."""

    def make(role: str, site: str = "A") -> Api:
        user = world.staff[(role, site)]
        return Api(client, factories.token_for(db, user))

    return make


class Web:
    """A browser-like client for the care-team pages: logged in through the real form, sends
    the CSRF token with every form post."""

    CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.csrf = ""

    def login(self, email: str, password: str = factories.PASSWORD) -> Any:
        page = self.client.get("/login")
        self.csrf = self.CSRF.search(page.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
        resp = self.client.post(
            "/login", data={"email": email, "password": password, "csrf_token": self.csrf}
        )
        # The session is new after login, and so is its CSRF token.
        home = self.client.get("/")
        found = self.CSRF.search(home.get_data(as_text=True))
        self.csrf = found.group(1) if found else ""
        return resp

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, **kw)

    def text(self, path: str, status: int = 200) -> str:
        """GET a page, check its status, return its HTML."""
        resp = self.client.get(path)
        assert resp.status_code == status, (path, resp.status_code, resp.get_data(as_text=True))
        return resp.get_data(as_text=True)  # type: ignore[no-any-return]

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.client.post(path, data={**(data or {}), "csrf_token": self.csrf}, **kw)


@pytest.fixture
def web_as(app: Flask, db: Session, world: factories.World) -> Any:
    """web_as("nurse", "A") → a page client logged in as that staff user (its own cookie jar)."""

    def make(role: str, site: str = "A") -> Web:
        web = Web(app.test_client())
        resp = web.login(world.staff[(role, site)].email)
        assert resp.status_code == 302, resp.get_data(as_text=True)
        return web

    return make
