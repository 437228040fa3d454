"""Limits per client on the entry points that need no login: staff sign-in (API token and the
login form), the app's activation code, survey links. README, "Sign-in limits", says why each
number is what it is.

Two mechanisms, one storage (RATELIMIT_STORAGE_URI: Redis when REDIS_URL is set, else memory):
- Flask-Limiter budgets per client address (moving windows), counting only *failed* attempts
  (deduct_when), so a shift change signing in from one hospital address is never refused;
- the staff sign-in throttle (server/auth/throttle.py): a growing delay per (email, client) and a
  short, bounded one per email, applied by server.auth.service.sign_in.

Every refusal is a 429 with Retry-After: the JSON envelope on the API, the login form or the
survey page (in the participant's language) saying when to retry.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from api.errors import envelope, wants_json
from server.auth.throttle import (
    MemoryLedger,
    RedisLedger,
    SignInThrottle,
    SignInThrottled,
    wait_words,
)
from server.clock import utcnow
from server.surveys.links import LinkInvalid, read_token

log = logging.getLogger(__name__)

# Per client address. Failed attempts only: 30 in any 15 minutes (the issue's "31st attempt is
# 429"; 2,880 guesses a day at most, spread over every account). All attempts: 160 a minute,
# Medplum's ceiling for auth routes, far above any shift change (that is 160 people in one minute).
FAILED_PER_CLIENT = "30 per 15 minutes"
ATTEMPTS_PER_CLIENT = "160 per minute"
# An activation code is 6 digits and dies after 5 wrong tries; a participant's study code may be
# tried 10 times an hour from anywhere (240 guesses a day against one participant).
FAILED_PER_STUDY_CODE = "10 per hour"

STAFF_SIGN_IN = ("auth.TokenView", "pages.login")
ACTIVATION = "mobile.activate"
SURVEY = "survey.survey"

# The survey page's words when a client is refused (its other words are in api/survey_pages.py).
SURVEY_WORDS = {
    "en": ("Please wait a moment.", "Too many links that do not work were opened from here. "),
    "fr": (
        "Merci de patienter un instant.",
        "Trop de liens invalides ont été ouverts depuis cette connexion. ",
    ),
    "zh": ("请稍候。", "从此网络打开了太多无效链接。"),
}
SURVEY_RETRY = {
    "en": "Try again {wait}.",
    "fr": "Réessayez dans {minutes} min.",
    "zh": "请在{minutes}分钟后重试。",
}


@dataclass
class RateLimits:
    """What init_app installs on an app (app.extensions["stepdown_limits"])."""

    limiter: Limiter
    sign_in: SignInThrottle

    def reset(self) -> None:
        """Forget every count (tests: the test client always comes from 127.0.0.1)."""
        if self.limiter.enabled:  # a disabled limiter has no storage at all
            self.limiter.reset()
        self.sign_in.reset()


def client_key() -> str:
    """The client's address: remote_addr, which ProxyFix takes from X-Forwarded-For only when
    TRUSTED_PROXY_COUNT says how many proxies stand in front (server/app.py). An IPv6 client is
    its /64: one subscriber usually holds a whole /64."""
    raw = get_remote_address() or ""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw or "unknown"
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)


def _study_code_key() -> str:
    body = request.get_json(silent=True)
    code = body.get("study_code") if isinstance(body, dict) else None
    # An unreadable body is a 422 and never counted; it still needs a non-empty key.
    return f"study-code:{code.strip()[:64]}" if isinstance(code, str) else "study-code:-"


def _failed(*statuses: int) -> Any:
    return lambda response: response.status_code in statuses


def _signed_survey_link() -> bool:
    """A link we signed (even expired) cannot have been guessed: never limit it, so a
    participant's phone can always answer."""
    token = (request.view_args or {}).get("token", "")
    try:
        read_token(current_app.config["SECRET_KEY"], str(token), utcnow())
    except LinkInvalid:
        return False
    except Exception:
        return True  # LinkExpired, or values too large to be a date: signed all the same
    return True


def init_app(app: Flask) -> RateLimits:
    """Install the limits on the sign-in endpoints (call after every blueprint is registered)."""
    config = app.config
    storage_uri = config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    prefix = config.setdefault("RATELIMIT_KEY_PREFIX", "stepdown")
    is_redis = storage_uri.startswith(("redis://", "rediss://", "redis+unix://"))
    if is_redis:
        # Flask-Limiter's keys under our prefix (not the library's shared "LIMITS"), with short
        # timeouts so an outage falls back to memory quickly.
        options = {
            "key_prefix": f"{prefix}:limits",
            "socket_connect_timeout": 1,
            "socket_timeout": 1,
        }
        config.setdefault("RATELIMIT_STORAGE_OPTIONS", options)
    elif config.get("ENV_NAME") == "production":
        log.warning("sign-in limits count in this process's memory: run a single worker")
    limiter = Limiter(key_func=client_key)
    limiter.init_app(app)
    ledger = RedisLedger(storage_uri, prefix) if is_redis else MemoryLedger()
    throttle = SignInThrottle(
        ledger, secret=config["SECRET_KEY"], prefix=prefix, enabled=limiter.enabled
    )

    def wrap(endpoint: str, *limits: Any) -> None:
        view = app.view_functions[endpoint]
        for limit in limits:
            view = limit(view)
        app.view_functions[endpoint] = view

    staff_failed = limiter.shared_limit(
        FAILED_PER_CLIENT, scope="staff-sign-in", methods=["POST"], deduct_when=_failed(401)
    )
    staff_all = limiter.shared_limit(ATTEMPTS_PER_CLIENT, scope="staff-sign-in", methods=["POST"])
    for endpoint in STAFF_SIGN_IN:
        wrap(endpoint, staff_failed, staff_all)
    wrap(
        ACTIVATION,
        limiter.limit(FAILED_PER_CLIENT, deduct_when=_failed(401)),
        limiter.limit(ATTEMPTS_PER_CLIENT),
        limiter.limit(FAILED_PER_STUDY_CODE, key_func=_study_code_key, deduct_when=_failed(401)),
    )
    wrap(
        SURVEY,
        limiter.limit(FAILED_PER_CLIENT, deduct_when=_failed(404), exempt_when=_signed_survey_link),
        limiter.limit(ATTEMPTS_PER_CLIENT, exempt_when=_signed_survey_link),
    )

    @app.errorhandler(RateLimitExceeded)
    def _limited(error: RateLimitExceeded) -> Response:
        breached = limiter.current_limit
        # reset_at is whole seconds past the window's end: waiting that long always succeeds,
        # on the memory store and on Redis alike.
        retry = math.ceil(breached.reset_at - time.time()) if breached else 60
        return too_many(max(1, retry))

    @app.errorhandler(SignInThrottled)
    def _throttled(error: SignInThrottled) -> Response:
        return too_many(error.retry_after)

    limits = RateLimits(limiter=limiter, sign_in=throttle)
    app.extensions["stepdown_limits"] = limits
    return limits


def limits_of(app: Flask) -> RateLimits:
    """The limits installed on an app."""
    return app.extensions["stepdown_limits"]  # type: ignore[no-any-return]


def sign_in_throttle() -> SignInThrottle:
    """The current app's staff sign-in throttle."""
    return limits_of(current_app).sign_in


def too_many(retry_after: int) -> Response:
    """The 429 answer, in the form the refused endpoint speaks, with Retry-After."""
    wait = wait_words(retry_after)
    message = f"too many sign-in attempts: try again {wait}"
    if request.endpoint == "pages.login":
        error = (
            f"Too many sign-in attempts from here. Try again {wait}. To acknowledge an alert "
            "without signing in, reply ACK and its code to the alert SMS."
        )
        body = render_template("login.html", email=request.form.get("email", ""), error=error)
        resp = Response(body, status=429, mimetype="text/html")
    elif request.endpoint == SURVEY:
        lang = request.accept_languages.best_match(list(SURVEY_WORDS)) or "en"
        title, text = SURVEY_WORDS[lang]
        retry = SURVEY_RETRY[lang].format(wait=wait, minutes=math.ceil(retry_after / 60))
        body = render_template("survey_message.html", lang=lang, title=title, body=text + retry)
        resp = Response(body, status=429, mimetype="text/html")
    elif request.endpoint == ACTIVATION:
        resp = envelope(429, f"too many attempts: try again {wait}")
    elif wants_json():
        resp = envelope(429, message)
    else:
        from api.page_kit import error_page

        body, status = error_page(429, f"Too many attempts. Try again {wait}.")
        resp = Response(body, status=status, mimetype="text/html")
    resp.headers["Retry-After"] = str(retry_after)
    return resp
