"""Signed, expiring links to one questionnaire, for the reminder SMS.

The token is hexadecimal pieces joined by dashes (event, expiry, a 64-bit HMAC-SHA256 with
SECRET_KEY): short enough to fit a Chinese SMS's 2 UCS-2 segments with its link, and no run of
letters in it can spell a word the SMS health guard refuses (each has a letter beyond a–f)."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime

from server.db import ID_MAX


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


# What make_token writes: lower-case hex pieces and a 16-hex MAC.
_TOKEN = re.compile(r"([0-9a-f]{1,16})-([0-9a-f]{1,16})-([0-9a-f]{16})")


def read_token(secret: str, token: str, now: datetime) -> int:
    """The event id of a valid, unexpired token.

    Anything that is not exactly what make_token writes is invalid, including a correctly signed
    token whose values cannot be (an event id no id column holds, an expiry no calendar holds)."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise LinkInvalid(token)
    event_hex, expires_hex, mac = match.groups()
    if not hmac.compare_digest(mac, _mac(secret, f"{event_hex}-{expires_hex}")):
        raise LinkInvalid(token)
    event_id, expires = int(event_hex, 16), int(expires_hex, 16)
    if not 1 <= event_id <= ID_MAX:
        raise LinkInvalid(token)
    try:
        expires_at = datetime.fromtimestamp(expires, UTC)
    except (OverflowError, OSError, ValueError):
        raise LinkInvalid(token) from None
    if expires_at <= now:
        raise LinkExpired(token)
    return event_id
