"""Pure decisions about the event lifecycle."""

from __future__ import annotations

from datetime import date, datetime

from server.schedules.models import EventStatus

COMPLETABLE = frozenset({EventStatus.PLANNED, EventStatus.OPEN, EventStatus.MISSED})
CANCELLABLE = frozenset({EventStatus.PLANNED, EventStatus.OPEN, EventStatus.MISSED})
MOVABLE = frozenset({EventStatus.PLANNED, EventStatus.OPEN, EventStatus.MISSED})


def timed_status(
    status: EventStatus, window_open_at: datetime, window_close_at: datetime, now: datetime
) -> EventStatus:
    """What a planned or open event's status should be at `now` (others are final)."""
    if status not in (EventStatus.PLANNED, EventStatus.OPEN):
        return status
    if now >= window_close_at:
        return EventStatus.MISSED
    if now >= window_open_at:
        return EventStatus.OPEN
    return EventStatus.PLANNED


def is_in_window(done_on: date, window_open: date, window_close: date) -> bool:
    """Whether a completion date falls inside the window (both ends included)."""
    return window_open <= done_on <= window_close
