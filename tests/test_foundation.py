"""Migrations, configuration, the audit trail's immutability, OpenAPI, pages, CLI."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from config.settings import ConfigError, ProductionConfig, load_config
from server import migrate
from server.audit import AuditEvent
from tests.factories import PASSWORD


def test_single_migration_head():
    assert len(migrate.heads()) == 1


def test_models_and_migrations_agree(database_url):
    migrate.check(database_url)  # raises if autogenerate would produce anything


def test_audit_trail_cannot_be_edited_or_deleted(world, db):
    # Any row of the world's; its reason (if any) must survive the attempts unchanged.
    event = db.exec(select(AuditEvent).order_by(AuditEvent.id)).first()
    assert event is not None
    reason = event.reason
    with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
        db.execute(
            sa.text("UPDATE audit_event SET reason = 'tampered' WHERE id = :id"),
            {"id": event.id},
        )
    with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
        db.execute(sa.text("DELETE FROM audit_event WHERE id = :id"), {"id": event.id})
    db.expire_all()
    assert db.get(AuditEvent, event.id).reason == reason != "tampered"


def test_production_refuses_to_start_without_secrets(monkeypatch):
    for name in (
        "SECRET_KEY",
        "DATABASE_URL",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_ACCOUNT_SID",
        "REDIS_URL",
        "RATELIMIT_STORAGE_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        ProductionConfig()
    monkeypatch.setenv("SECRET_KEY", "s" * 40)
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/stepdown")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://stepdown.example.org")
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        ProductionConfig()
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "a" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    monkeypatch.setenv("TWILIO_MESSAGING_SERVICE_SID", "MG" + "b" * 32)
    # Sign-in limits shared by every gunicorn worker, or explicitly one process's memory.
    with pytest.raises(ConfigError, match="REDIS_URL"):
        ProductionConfig()
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", "memory://")
    assert ProductionConfig().RATELIMIT_STORAGE_URI == "memory://"
    monkeypatch.delenv("RATELIMIT_STORAGE_URI")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    config = ProductionConfig()
    assert config.SESSION_COOKIE_SECURE is True
    assert config.RATELIMIT_STORAGE_URI == "redis://127.0.0.1:6379/0"


def test_unknown_environment_is_refused(monkeypatch):
    monkeypatch.setenv("STEPDOWN_ENV", "staging-ish")
    with pytest.raises(ConfigError, match="staging-ish"):
        load_config()


def test_development_defaults_to_sqlite_under_instance(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    config = load_config("development")
    assert config.DATABASE_URL.startswith("sqlite:///")
    assert "/instance/" in config.DATABASE_URL


def test_openapi_is_generated_from_the_schemas(client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    assert "/api/v1/participants" in spec["paths"]
    assert "/api/v1/participants/{participant_id}/withdraw" in spec["paths"]
    props = spec["components"]["schemas"]["ParticipantCreate"]["properties"]
    assert {"study", "site_id", "study_code", "phone", "timezone"} <= props.keys()
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    html = docs.get_data(as_text=True)
    assert "/api/v1/participants" in html and "study_code" in html
    assert not re.search(r"https?://(?!127\.0\.0\.1)", html.replace("http://www.w3.org", ""))


def test_login_page_sets_a_safe_cookie_and_needs_csrf(app, client, world):
    page = client.get("/login")
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    no_csrf = client.post("/login", data={"email": "nurse.a@example.test", "password": PASSWORD})
    assert no_csrf.status_code == 400
    resp = client.post(
        "/login", data={"email": "nurse.a@example.test", "password": PASSWORD, "csrf_token": token}
    )
    assert resp.status_code == 302
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    home = client.get("/")
    assert home.status_code == 200
    assert "SITE-A" in home.get_data(as_text=True)
    assert "SITE-B" not in home.get_data(as_text=True)


def test_login_page_rejects_wrong_password(client, world):
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    resp = client.post(
        "/login", data={"email": "nurse.a@example.test", "password": "nope", "csrf_token": token}
    )
    assert resp.status_code == 401
    assert client.get("/").status_code == 302  # still not logged in: sent to the login page


def test_session_cookie_does_not_open_the_api(client, world):
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    client.post(
        "/login", data={"email": "nurse.a@example.test", "password": PASSWORD, "csrf_token": token}
    )
    assert client.get("/api/v1/participants").status_code == 401
