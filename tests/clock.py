"""The test suite's one clock: every test runs frozen at NOW, never at the real date.

NOW is a session-wide default instant. `STEPDOWN_TEST_NOW` (an ISO instant, e.g.
`2028-01-05T23:30:00Z`) moves it; CI runs the SQLite suite a second time with it moved a year and
more ahead and to 23:30 UTC (late evening in Boston, past midnight in Paris), so a test that quietly
depends on the date it runs on fails in CI, not next year.

A test that needs a calendar of its own (a DST change, a given weekday) travels there with
`time_machine.travel(...)` and builds what it needs inside that travel; everything else is stated
relative to NOW.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from server.clock import utcnow

__all__ = ["NOW", "day", "local", "moment", "today", "utcnow"]

DEFAULT_NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def _parse(value: str) -> datetime:
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"STEPDOWN_TEST_NOW must carry a UTC offset: {value!r}")
    return moment.astimezone(UTC)


_ENV = os.environ.get("STEPDOWN_TEST_NOW")
NOW: datetime = _parse(_ENV) if _ENV else DEFAULT_NOW

PARIS = ZoneInfo("Europe/Paris")
# How many calendar days (in Paris, the world's first site) the instant was moved.
SHIFT_DAYS: int = (NOW.astimezone(PARIS).date() - DEFAULT_NOW.astimezone(PARIS).date()).days
IS_SHIFTED: bool = NOW != DEFAULT_NOW


def today(tz: str = "Europe/Paris") -> date:
    """NOW's calendar day in a time zone."""
    return NOW.astimezone(ZoneInfo(tz)).date()


def day(iso: str) -> date:
    """A date written as it falls in the default scenario, moved with NOW (whole days)."""
    return date.fromisoformat(iso) + timedelta(days=SHIFT_DAYS)


def moment(iso: str) -> datetime:
    """A UTC instant written as in the default scenario, moved with NOW by whole days (the time of
    day is kept)."""
    value = datetime.fromisoformat(iso)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC) + timedelta(days=SHIFT_DAYS)


def local(on: date, hhmm: str, tz: str = "Europe/Paris") -> datetime:
    """A wall-clock time on a day in a time zone, as a UTC instant."""
    return datetime.combine(on, time.fromisoformat(hhmm), ZoneInfo(tz)).astimezone(UTC)
