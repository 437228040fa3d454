"""Settings, one class per environment, read from environment variables.

`load_config()` picks the class from STEPDOWN_ENV (development, testing, production). Production
fails fast: a missing secret or database URL stops the app before it serves a single request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS_DIR = ROOT / "config" / "protocols"
INSTRUMENTS_DIR = ROOT / "config" / "instruments"


class ConfigError(RuntimeError):
    """Raised when the configuration cannot run safely."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not value >= 0:  # also refuses NaN
        raise ConfigError(f"{name} must be zero or more, got {raw!r}")
    return value


class BaseConfig:
    """Values shared by every environment."""

    ENV_NAME = "base"
    DEBUG = False
    TESTING = False
    SECRET_KEY: str | None = None
    DATABASE_URL: str | None = None
    # Public URL the outside world (Twilio, SMS links) uses to reach us; webhook signatures are
    # checked against it because request.url is wrong behind a TLS-terminating proxy.
    PUBLIC_BASE_URL = "http://127.0.0.1:8000"
    PROTOCOLS_DIR = str(PROTOCOLS_DIR)
    INSTRUMENTS_DIR = str(INSTRUMENTS_DIR)

    # API tokens for staff clients: opaque, stored hashed, expiring.
    API_TOKEN_TTL_HOURS = 12
    # Staff web sessions are held server-side (server/auth/models.py StaffSession): ended by
    # logout, after 15 minutes idle (HIPAA-style limit for pages showing health data; ASVS L2
    # allows 30) and after 12 hours in all. The signed cookie may live the 12 hours: the server
    # decides idleness, so the user is told why they were logged out.
    STAFF_SESSION_IDLE_MINUTES = 15
    STAFF_SESSION_MAX_HOURS = 12
    PERMANENT_SESSION_LIFETIME = STAFF_SESSION_MAX_HOURS * 3600
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_TIME_LIMIT = None

    API_TITLE = "Stepdown API"
    API_VERSION = "v1"
    OPENAPI_VERSION = "3.1.0"
    OPENAPI_URL_PREFIX = "/api"
    OPENAPI_JSON_PATH = "openapi.json"
    API_SPEC_OPTIONS: dict[str, Any] = {
        "info": {
            "description": "Schedules, reminders, results and alerts for step-down trials.",
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
            }
        },
        "security": [{"bearerAuth": []}],
    }
    PAGE_SIZE_DEFAULT = 50
    PAGE_SIZE_MAX = 500

    # Twilio; the fake provider (on 127.0.0.1) is the default outside production.
    SMS_PROVIDER = "fake"
    TWILIO_ACCOUNT_SID: str | None = None
    TWILIO_AUTH_TOKEN: str | None = None
    TWILIO_MESSAGING_SERVICE_SID: str | None = None
    TWILIO_FROM_NUMBER: str | None = None
    # The number alert calls come from (Programmable Voice); default TWILIO_FROM_NUMBER.
    TWILIO_VOICE_FROM_NUMBER: str | None = None
    TWILIO_BASE_URL: str | None = None
    # SMS a second per sender, kept by every dispatcher together (Redis when REDIS_URL is set,
    # else PostgreSQL, else this process): a long code sends ~1/s; a Messaging Service or short
    # code is allowed far more. 0 means no limit.
    SMS_RATE_PER_SECOND = 1.0
    # Staff alerts' own sender (README, "Sending capacity"): with one, no participant message
    # can delay an alert; without, alerts leave from the participant sender, first in line.
    TWILIO_ALERT_MESSAGING_SERVICE_SID: str | None = None
    TWILIO_ALERT_FROM_NUMBER: str | None = None
    # Its rate; None: SMS_RATE_PER_SECOND.
    SMS_ALERT_RATE_PER_SECOND: float | None = None
    # How far ahead of our clock a lab's collection or report time may be (its clock may run
    # fast: LIS and instrument clocks are often not NTP-disciplined); later is refused as future.
    RESULT_CLOCK_SKEW_SECONDS = 600

    # The dead-man's switch: the scheduler leader POSTs here every minute (`<url>/fail` with the
    # reasons when not ready), a Healthchecks-style check that alerts when the pings stop.
    HEARTBEAT_URL: str | None = None
    # A scheduler leader silent this long is fenced off and replaced by a standby (PostgreSQL).
    SCHEDULER_LEASE_SECONDS = 10.0

    # Sign-in limits (README, "Sign-in limits"): Flask-Limiter's settings plus our failure ledger,
    # both kept in RATELIMIT_STORAGE_URI: REDIS_URL when set (shared by every gunicorn worker),
    # else this process's memory.
    REDIS_URL: str | None = None
    RATELIMIT_ENABLED = True
    RATELIMIT_STORAGE_URI = "memory://"
    RATELIMIT_STRATEGY = "moving-window"
    RATELIMIT_KEY_PREFIX = "stepdown"
    # A Redis outage must not stop a nurse signing in: count in this process meanwhile.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True
    # How many proxies in front of us append to X-Forwarded-For; 0 trusts none (remote_addr).
    TRUSTED_PROXY_COUNT = 0
    # Sent only in production, where every answer comes over HTTPS.
    STRICT_TRANSPORT_SECURITY: str | None = None

    def __init__(self) -> None:
        self.SECRET_KEY = _env("SECRET_KEY", self.SECRET_KEY)
        self.DATABASE_URL = _env("DATABASE_URL", self.DATABASE_URL)
        self.PUBLIC_BASE_URL = (_env("PUBLIC_BASE_URL", self.PUBLIC_BASE_URL) or "").rstrip("/")
        self.API_TOKEN_TTL_HOURS = _env_int("API_TOKEN_TTL_HOURS", self.API_TOKEN_TTL_HOURS)
        self.SMS_PROVIDER = _env("SMS_PROVIDER", self.SMS_PROVIDER) or "fake"
        for name in (
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "TWILIO_MESSAGING_SERVICE_SID",
            "TWILIO_FROM_NUMBER",
            "TWILIO_BASE_URL",
            "TWILIO_ALERT_MESSAGING_SERVICE_SID",
            "TWILIO_ALERT_FROM_NUMBER",
            "TWILIO_VOICE_FROM_NUMBER",
        ):
            setattr(self, name, _env(name, getattr(self, name)))
        self.SMS_RATE_PER_SECOND = _env_float("SMS_RATE_PER_SECOND", self.SMS_RATE_PER_SECOND)
        if _env("SMS_ALERT_RATE_PER_SECOND") is not None:
            self.SMS_ALERT_RATE_PER_SECOND = _env_float("SMS_ALERT_RATE_PER_SECOND", 0.0)
        self.RESULT_CLOCK_SKEW_SECONDS = _env_int(
            "RESULT_CLOCK_SKEW_SECONDS", self.RESULT_CLOCK_SKEW_SECONDS
        )
        if self.RESULT_CLOCK_SKEW_SECONDS < 0:
            raise ConfigError("RESULT_CLOCK_SKEW_SECONDS must be zero or more")
        self.HEARTBEAT_URL = _env("HEARTBEAT_URL", self.HEARTBEAT_URL)
        if self.HEARTBEAT_URL and not self.HEARTBEAT_URL.startswith(("https://", "http://")):
            raise ConfigError("HEARTBEAT_URL must be an http(s):// URL")
        self.SCHEDULER_LEASE_SECONDS = _env_float(
            "SCHEDULER_LEASE_SECONDS", self.SCHEDULER_LEASE_SECONDS
        )
        if not 2 <= self.SCHEDULER_LEASE_SECONDS <= 60:
            raise ConfigError("SCHEDULER_LEASE_SECONDS must be between 2 and 60")
        self.REDIS_URL = _env("REDIS_URL", self.REDIS_URL)
        self.RATELIMIT_STORAGE_URI = (
            _env("RATELIMIT_STORAGE_URI") or self.REDIS_URL or self.RATELIMIT_STORAGE_URI
        )
        self.TRUSTED_PROXY_COUNT = _env_int("TRUSTED_PROXY_COUNT", self.TRUSTED_PROXY_COUNT)
        if self.TRUSTED_PROXY_COUNT < 0:
            raise ConfigError("TRUSTED_PROXY_COUNT must be zero or more")

    def as_dict(self) -> dict[str, Any]:
        """Every upper-case setting, for app.config.from_mapping."""
        return {k: getattr(self, k) for k in dir(self) if k.isupper()}


class DevelopmentConfig(BaseConfig):
    """Local development: SQLite under instance/, fake SMS provider."""

    ENV_NAME = "development"
    DEBUG = True
    SECRET_KEY = "dev-only-not-secret"
    DATABASE_URL = f"sqlite:///{ROOT / 'instance' / 'stepdown.db'}"
    TWILIO_ACCOUNT_SID = "AC" + "0" * 32
    TWILIO_AUTH_TOKEN = "dev-fake-auth-token"
    TWILIO_FROM_NUMBER = "+15005550006"

    def __init__(self) -> None:
        # `make run PORT=8300 FAKE_TWILIO_PORT=8310`: every process `make run` starts, the demo
        # seed included (it writes SMS links before the server starts), links to the port the
        # server is on, unless PUBLIC_BASE_URL / TWILIO_BASE_URL say otherwise.
        self.PUBLIC_BASE_URL = f"http://127.0.0.1:{_port('PORT', 8000)}"
        self.TWILIO_BASE_URL = f"http://127.0.0.1:{_port('FAKE_TWILIO_PORT', 8010)}"
        super().__init__()


def _port(name: str, default: int) -> int:
    """A TCP port from the environment (development only)."""
    raw = _env(name)
    if raw is None or raw.strip() == "":
        return default
    if not (raw.strip().isascii() and raw.strip().isdigit() and 0 < int(raw) < 65536):
        raise ConfigError(f"{name} must be a port number from 1 to 65535, got {raw!r}")
    return int(raw)


class TestingConfig(BaseConfig):
    """The test suite: the database comes from the test fixtures."""

    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "test-secret"
    DATABASE_URL = "sqlite://"
    WTF_CSRF_ENABLED = True
    # Limits count in memory and every test starts from zero (tests/conftest.py); the Redis
    # pass is its own test (tests/api/test_rate_limits_redis.py).
    RATELIMIT_KEY_PREFIX = "stepdown-test"
    TWILIO_ACCOUNT_SID = "AC" + "1" * 32
    TWILIO_AUTH_TOKEN = "test-auth-token"
    TWILIO_FROM_NUMBER = "+15005550006"

    def __init__(self) -> None:
        super().__init__()
        self.RATELIMIT_STORAGE_URI = "memory://"  # even where REDIS_URL is set (CI)


class ProductionConfig(BaseConfig):
    """Production: every secret must come from the environment."""

    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True
    SESSION_COOKIE_NAME = "__Host-session"
    # Two years, subdomains too (table: HSTS >= 1 year; Medplum sends 63,072,000 s).
    STRICT_TRANSPORT_SECURITY = "max-age=63072000; includeSubDomains"
    SMS_PROVIDER = "twilio"

    def __init__(self) -> None:
        super().__init__()
        missing = [n for n in ("SECRET_KEY", "DATABASE_URL") if not getattr(self, n)]
        if missing:
            raise ConfigError(f"production needs these environment variables: {', '.join(missing)}")
        if self.SMS_PROVIDER == "twilio":
            needed = ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"]
            absent = [n for n in needed if not getattr(self, n)]
            if not (self.TWILIO_MESSAGING_SERVICE_SID or self.TWILIO_FROM_NUMBER):
                absent.append("TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER")
            if absent:
                # Webhooks fail closed: without the auth token no signature can be checked.
                raise ConfigError(f"production needs Twilio settings: {', '.join(absent)}")
        if self.RATELIMIT_STORAGE_URI.startswith("memory://") and not _env("RATELIMIT_STORAGE_URI"):
            # Each gunicorn worker would count on its own: an attacker gets workers x the budget.
            raise ConfigError(
                "production needs REDIS_URL for the sign-in limits shared by every worker "
                "(or RATELIMIT_STORAGE_URI=memory:// for a single-process install)"
            )
        if not self.PUBLIC_BASE_URL.startswith("https://"):
            raise ConfigError("production needs PUBLIC_BASE_URL starting with https://")


CONFIGS: dict[str, type[BaseConfig]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def load_config(name: str | None = None) -> BaseConfig:
    """Build the settings object for an environment (default: STEPDOWN_ENV or development)."""
    env_name = name or _env("STEPDOWN_ENV", "development") or "development"
    try:
        cls = CONFIGS[env_name]
    except KeyError as exc:
        raise ConfigError(
            f"STEPDOWN_ENV={env_name!r} is not one of {', '.join(sorted(CONFIGS))}"
        ) from exc
    return cls()
