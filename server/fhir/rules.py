"""Pure decisions for FHIR subscriptions: signatures, retry backoff, acceptable endpoints."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Stepdown-Signature"
# A receiver should refuse a signature older than this (replays).
SIGNATURE_TOLERANCE_SECONDS = 300
# Retries: 30 s, 1 min, 2 min … capped at 1 hour; after MAX_ATTEMPTS (about a day) we give up.
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 3600
MAX_ATTEMPTS = 30


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: int) -> bool:
    """What a receiver does: the HMAC matches and the timestamp is recent (constant-time)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if not parts.get("t", "").isdigit() or "v1" not in parts:
        return False
    timestamp = int(parts["t"])
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), f"t={timestamp},v1={parts['v1']}")


def backoff_seconds(attempts: int) -> int:
    """How long to wait after the n-th failed attempt (1-based): doubling from 30 s, at most 1 h."""
    exponent = min(max(attempts - 1, 0), 20)
    return int(min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**exponent))


def endpoint_problem(url: str, *, allow_http_localhost: bool) -> str | None:
    """Why an endpoint may not be registered, or None: https only (plain http to the local host
    when allowed, for development and tests), no credentials in the URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a URL"
    if not parts.hostname:
        return "must be an absolute URL"
    if parts.username or parts.password:
        return "must not carry credentials (the signature authenticates us)"
    if parts.scheme == "https":
        return None
    if (
        parts.scheme == "http"
        and allow_http_localhost
        and parts.hostname
        in (
            "127.0.0.1",
            "localhost",
        )
    ):
        return None
    return "must be an https:// URL"
