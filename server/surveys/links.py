"""Signed, expiring links to one questionnaire, for the reminder SMS.

The token is hexadecimal pieces joined by dashes (participant, event, expiry, HMAC-SHA256 with
SECRET_KEY): short enough for an SMS, and no run of letters in it can spell a word the SMS health
guard refuses (every refused word has a letter beyond a–f)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime


class LinkInvalid(Exception):
    """Not a link we made (or tampered with)."""


class LinkExpired(Exception):
    """A link we made, past its time."""


def _mac(secret: str, body: str) -> str:
    return hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]


def make_token(secret: str, participant_id: int, event_id: int, expires_at: datetime) -> str:
    """The token of a link valid until `expires_at`."""
    body = f"{participant_id:x}-{event_id:x}-{int(expires_at.timestamp()):x}"
    return f"{body}-{_mac(secret, body)}"


def read_token(secret: str, token: str, now: datetime) -> tuple[int, int]:
    """(participant id, event id) of a valid, unexpired token."""
    parts = token.split("-")
    if len(parts) != 4:
        raise LinkInvalid(token)
    body = "-".join(parts[:3])
    if not hmac.compare_digest(parts[3], _mac(secret, body)):
        raise LinkInvalid(token)
    try:
        participant_id, event_id, expires = (int(p, 16) for p in parts[:3])
    except ValueError:
        raise LinkInvalid(token) from None
    if datetime.fromtimestamp(expires, UTC) <= now:
        raise LinkExpired(token)
    return participant_id, event_id
