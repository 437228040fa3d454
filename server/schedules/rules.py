"""Pure decisions about the event lifecycle."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

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


def defer_out_of_quiet_hours(
    moment: datetime, zone: ZoneInfo, quiet_start: time, quiet_end: time
) -> datetime:
    """The first allowed moment at or after `moment` (UTC), outside the local quiet hours.

    Quiet hours may wrap midnight (21:00–08:00). A deferred moment lands at quiet_end local time,
    computed on the local calendar so that a DST change does not shift it.
    """
    if quiet_start == quiet_end:
        return moment
    local = moment.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    wraps = quiet_start > quiet_end
    inside = (t >= quiet_start or t < quiet_end) if wraps else (quiet_start <= t < quiet_end)
    if not inside:
        return moment
    day = local.date()
    if wraps and t >= quiet_start:
        day += timedelta(days=1)
    return _local(day, quiet_end, zone)


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    # fold=0 and zoneinfo resolve a wall time in a DST gap forward, which is what a reminder wants.
    return datetime.combine(day, at, zone).astimezone(UTC)


def reminder_moment(
    *,
    relative_to: str,
    offset_days: int,
    at: time,
    target_date: date,
    window_open_date: date,
    window_close_date: date,
    zone: ZoneInfo,
) -> datetime:
    """When a reminder is meant to go (UTC), from its anchor day, day offset and local time."""
    base = {
        "target": target_date,
        "window_open": window_open_date,
        "window_close": window_close_date,
    }[relative_to]
    return _local(base + timedelta(days=offset_days), at, zone)


def reminder_expiry(
    *, intended_local_day: date, target_date: date, window_close_at: datetime, zone: ZoneInfo
) -> datetime:
    """Until when a reminder still makes sense: one about the coming event expires at the end of
    the target day (no reminder for yesterday's draw); a nudge after it, when the window closes."""
    if intended_local_day <= target_date:
        return min(_local(target_date + timedelta(days=1), time(0, 0), zone), window_close_at)
    return window_close_at
