"""The one clock. Everything asks it for the time so tests can freeze it (time-machine)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from notifications.sqltypes import utcnow

__all__ = ["local_date", "utcnow"]


def local_date(moment: datetime | None, tz: str) -> date | None:
    """The calendar day of a UTC moment in a time zone (None stays None)."""
    return moment.astimezone(ZoneInfo(tz)).date() if moment else None
