"""Who is on call: pure rota arithmetic in the site's time zone (issue 16 item 1).

A rota is one layer (primary, backup) of a site: its members take turns, one shift each, in
order. A shift is a day or a week long and changes hands at the handover time, a wall-clock time
in the site's zone ("08:00"), on the handover weekday for weekly rotas; the first shift begins at
the first handover on or after `starts_on`. Shifts are counted in local calendar days, so a
handover stays at 08:00 across a DST change (that shift is 23 or 25 hours long, or a week of 167
or 169). An override (a day off, a holiday) gives a span to someone else and wins over the turn.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

LAYERS = ("primary", "backup")
PERIODS = {"daily": 1, "weekly": 7}


@dataclass(frozen=True)
class RotaSpec:
    """What the arithmetic needs of a rota."""

    zone: ZoneInfo
    period: str  # daily | weekly
    handover: time  # site wall-clock time
    starts_on: date  # the first shift begins at the first handover on or after this day
    members: Sequence[int]  # staff user ids, in turn order
    handover_weekday: int = 0  # weekly: 0 = Monday


@dataclass(frozen=True)
class OverrideSpec:
    user_id: int
    starts_at: datetime  # UTC
    ends_at: datetime  # UTC, exclusive


@dataclass(frozen=True)
class Shift:
    user_id: int | None
    starts_at: datetime  # UTC
    ends_at: datetime  # UTC, exclusive
    is_override: bool = False


def _at(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """A site wall-clock moment as aware UTC (a time skipped by DST moves forward, fold=0)."""
    local = datetime.combine(day, clock, zone)
    return local.astimezone(ZoneInfo("UTC"))


def first_handover_day(spec: RotaSpec) -> date:
    """The local day of the first handover."""
    day = spec.starts_on
    if spec.period == "weekly":
        day += timedelta(days=(spec.handover_weekday - day.weekday()) % 7)
    return day


def turn_at(spec: RotaSpec, moment: datetime) -> Shift | None:
    """The regular turn (no override) covering `moment`, or None before the rota starts or
    when it has no member."""
    days = PERIODS[spec.period]
    first = first_handover_day(spec)
    start_utc = _at(first, spec.handover, spec.zone)
    if not spec.members or moment < start_utc:
        return None
    local_day = moment.astimezone(spec.zone).date()
    # The shift's first local day: the latest handover day at or before the moment.
    index = (local_day - first).days // days
    shift_day = first + timedelta(days=index * days)
    if _at(shift_day, spec.handover, spec.zone) > moment:
        index -= 1
        shift_day -= timedelta(days=days)
    end_day = shift_day + timedelta(days=days)
    return Shift(
        user_id=spec.members[index % len(spec.members)],
        starts_at=_at(shift_day, spec.handover, spec.zone),
        ends_at=_at(end_day, spec.handover, spec.zone),
    )


def on_call_at(spec: RotaSpec, overrides: Sequence[OverrideSpec], moment: datetime) -> Shift | None:
    """Who is on call at `moment`: an override covering it (the latest made wins: the last in
    the list), else the regular turn."""
    for o in reversed(list(overrides)):
        if o.starts_at <= moment < o.ends_at:
            return Shift(o.user_id, o.starts_at, o.ends_at, is_override=True)
    return turn_at(spec, moment)


def shifts(
    spec: RotaSpec, overrides: Sequence[OverrideSpec], start: datetime, end: datetime
) -> list[Shift]:
    """Every stretch with one person on call from `start` to `end`, in order: regular turns cut
    where an override begins or ends."""
    cuts = {start, end}
    turn = turn_at(spec, start)
    moment = turn.ends_at if turn else _at(first_handover_day(spec), spec.handover, spec.zone)
    guard = 0
    while moment < end and guard < 2000:
        cuts.add(moment)
        nxt = turn_at(spec, moment)
        if nxt is None:
            break
        moment = nxt.ends_at
        guard += 1
    for o in overrides:
        for edge in (o.starts_at, o.ends_at):
            if start < edge < end:
                cuts.add(edge)
    points = sorted(cuts)
    out: list[Shift] = []
    for a, b in itertools.pairwise(points):
        who = on_call_at(spec, overrides, a)
        if who is None:
            continue
        piece = Shift(who.user_id, a, b, who.is_override)
        if (
            out
            and out[-1].user_id == piece.user_id
            and out[-1].ends_at == a
            and (out[-1].is_override == piece.is_override)
        ):
            out[-1] = Shift(piece.user_id, out[-1].starts_at, b, piece.is_override)
        else:
            out.append(piece)
    return out


def now_and_next(
    spec: RotaSpec, overrides: Sequence[OverrideSpec], now: datetime
) -> tuple[Shift | None, Shift | None]:
    """The shift on now and the next one with another person (or after a gap)."""
    ahead = shifts(spec, overrides, now, now + timedelta(days=60))
    current = ahead[0] if ahead and ahead[0].starts_at <= now else None
    later = [s for s in ahead if s.starts_at > now]
    return current, (later[0] if later else None)


# A calendar link's token: secrets.token_urlsafe(32), 43 URL-safe characters. Anything else is
# not a token and is refused before it is hashed or looked up.
CALENDAR_TOKEN_BYTES = 32
_CALENDAR_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def is_calendar_token(text: str) -> bool:
    """Whether the text has the shape of a calendar link's token."""
    return _CALENDAR_TOKEN.fullmatch(text) is not None


def webcal_url(url: str) -> str:
    """The webcal:// form of an http(s) feed URL (calendar apps open it as a subscription)."""
    scheme, sep, rest = url.partition("://")
    return f"webcal://{rest}" if sep and scheme in ("http", "https") else url
