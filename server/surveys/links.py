"""Signed, expiring links to one questionnaire, for the reminder SMS.

The token is hexadecimal pieces joined by dashes (event, expiry, a 64-bit HMAC-SHA256 with
SECRET_KEY): short enough to fit a Chinese SMS's 2 UCS-2 segments with its link, and no run of
letters in it can spell a word the SMS health guard refuses (each has a letter beyond a–f)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime


class LinkInvalid(Exception):
    """Not a link we made (or tampered with)."""


class LinkExpired(Exception):
    """A link we made, past its time."""


def _mac(secret: str, body: str) -> str:
    return hmac.new(secret.encode(), f"survey:{body}".encode(), hashlib.sha256).hexdigest()[:16]


def make_token(secret: str, event_id: int, expires_at: datetime) -> str:
    """The token of a link to one questionnaire event, valid until `expires_at`."""
    body = f"{event_id:x}-{int(expires_at.timestamp()):x}"
    return f"{body}-{_mac(secret, body)}"


def read_token(secret: str, token: str, now: datetime) -> int:
    """The event id of a valid, unexpired token."""
    parts = token.split("-")
    if len(parts) != 3:
        raise LinkInvalid(token)
    body = "-".join(parts[:2])
    if not hmac.compare_digest(parts[2], _mac(secret, body)):
        raise LinkInvalid(token)
    try:
        event_id, expires = (int(p, 16) for p in parts[:2])
    except ValueError:
        raise LinkInvalid(token) from None
    if datetime.fromtimestamp(expires, UTC) <= now:
        raise LinkExpired(token)
    return event_id
