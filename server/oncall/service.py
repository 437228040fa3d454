"""On-call rotas: set a site's layer, override a span, who is on call now and next, each
person's shifts (the iCalendar feed) and their secret calendar link, and the shifts that would
reach nobody."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from server import audit
from server.auth.models import SiteMembership, StaffUser
from server.auth.service import actor_of, hash_token
from server.errors import field_error
from server.oncall import rules
from server.oncall.models import CalendarLink, Rota, RotaOverride
from server.participants.models import Site

# How far ahead the dead-route check and the page look at shifts.
LOOK_AHEAD = timedelta(days=14)


def spec_of(rota: Rota, site: Site) -> rules.RotaSpec:
    return rules.RotaSpec(
        zone=ZoneInfo(site.timezone),
        period=rota.period,
        handover=time.fromisoformat(rota.handover),
        starts_on=rota.starts_on,
        members=list(rota.members or []),
        handover_weekday=rota.handover_weekday,
    )


def overrides_of(session: Session, rota: Rota) -> list[rules.OverrideSpec]:
    rows = session.exec(
        select(RotaOverride).where(RotaOverride.rota_id == rota.id).order_by(col(RotaOverride.id))
    ).all()
    return [rules.OverrideSpec(o.user_id, _utc(o.starts_at), _utc(o.ends_at)) for o in rows]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def rotas_of(session: Session, site_id: int) -> list[Rota]:
    rows = session.exec(select(Rota).where(Rota.site_id == site_id)).all()
    return sorted(rows, key=lambda r: rules.LAYERS.index(r.layer))


def _members(session: Session, site_id: int) -> dict[int, StaffUser]:
    return {
        u.id: u  # type: ignore[misc]
        for u in session.exec(
            select(StaffUser)
            .join(SiteMembership, col(SiteMembership.user_id) == col(StaffUser.id))
            .where(SiteMembership.site_id == site_id)
        ).all()
    }


def reachable(user: StaffUser | None) -> bool:
    """Whether an SMS can reach this person (active, with a verified phone)."""
    return bool(user and user.is_active and user.is_phone_verified and user.phone_e164)


def set_rota(
    *,
    session: Session,
    site: Site,
    layer: str,
    period: str,
    handover: str,
    handover_weekday: int,
    starts_on: date,
    members: list[int],
    actor: StaffUser,
    now: datetime,
) -> Rota:
    """Create or replace a site's layer (audited `rota.set`); members must belong to the site."""
    staff = _members(session, site.id)  # type: ignore[arg-type]
    strangers = [m for m in members if m not in staff]
    if strangers:
        raise field_error("members", f"not staff of this site: {strangers}")
    if len(set(members)) != len(members):
        raise field_error("members", "each person once")
    rota = session.exec(select(Rota).where(Rota.site_id == site.id, Rota.layer == layer)).first()
    before = rota.model_dump(mode="json") if rota else None
    if rota is None:
        assert site.id is not None
        rota = Rota(
            site_id=site.id, layer=layer, starts_on=starts_on, period=period, handover=handover
        )
    rota.period, rota.handover, rota.handover_weekday = period, handover, handover_weekday
    rota.starts_on, rota.members, rota.updated_at = starts_on, list(members), now
    session.add(rota)
    session.flush()
    audit.record(
        session=session,
        actor=actor_of(actor),
        actor_user_id=actor.id,
        action="rota.set",
        entity="rota",
        entity_id=rota.id,
        site_id=site.id,
        now=now,
        before=before,
        after=rota.model_dump(mode="json"),
    )
    return rota


def add_override(
    *,
    session: Session,
    site: Site,
    rota: Rota,
    user_id: int,
    starts_at: datetime,
    ends_at: datetime,
    reason: str | None,
    actor: StaffUser,
    now: datetime,
) -> RotaOverride:
    """Someone else on call for a span (audited `rota.override`)."""
    if user_id not in _members(session, site.id):  # type: ignore[arg-type]
        raise field_error("user_id", "not staff of this site")
    if ends_at <= starts_at:
        raise field_error("ends_at", "must be after starts_at")
    if ends_at - starts_at > timedelta(days=62):
        raise field_error("ends_at", "an override spans at most 62 days")
    row = RotaOverride(
        rota_id=rota.id,  # type: ignore[arg-type]
        user_id=user_id,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=reason,
        created_by_user_id=actor.id,
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=actor_of(actor),
        actor_user_id=actor.id,
        action="rota.override",
        entity="rota_override",
        entity_id=row.id,
        site_id=site.id,
        now=now,
        after=row.model_dump(mode="json"),
    )
    return row


def on_call_user(session: Session, site: Site, layer: str, now: datetime) -> StaffUser | None:
    """The person on call now in a layer of the site (None: no rota, or before it starts)."""
    rota = session.exec(select(Rota).where(Rota.site_id == site.id, Rota.layer == layer)).first()
    if rota is None:
        return None
    shift = rules.on_call_at(spec_of(rota, site), overrides_of(session, rota), now)
    return session.get(StaffUser, shift.user_id) if shift and shift.user_id else None


@dataclass(frozen=True)
class LayerView:
    rota: Rota
    now: rules.Shift | None
    next: rules.Shift | None
    upcoming: list[rules.Shift]
    people: dict[int, StaffUser]

    def name(self, user_id: int | None) -> str:
        user = self.people.get(user_id) if user_id else None
        return user.full_name if user else "nobody"

    def can_reach(self, user_id: int | None) -> bool:
        return reachable(self.people.get(user_id) if user_id else None)

    @property
    def unreachable(self) -> list[rules.Shift]:
        """Shifts ahead whose person no SMS can reach."""
        return [s for s in self.upcoming if not self.can_reach(s.user_id)]


def layers(session: Session, site: Site, now: datetime) -> list[LayerView]:
    """Each layer of the site: who now, who next, the shifts of the next 14 days."""
    people = _members(session, site.id)  # type: ignore[arg-type]
    out = []
    for rota in rotas_of(session, site.id):  # type: ignore[arg-type]
        spec, overrides = spec_of(rota, site), overrides_of(session, rota)
        current, nxt = rules.now_and_next(spec, overrides, now)
        upcoming = rules.shifts(spec, overrides, now, now + LOOK_AHEAD)
        out.append(LayerView(rota, current, nxt, upcoming, people))
    return out


def shift_json(view: LayerView, shift: rules.Shift | None, site: Site) -> dict[str, Any] | None:
    if shift is None:
        return None
    zone = ZoneInfo(site.timezone)
    return {
        "user_id": shift.user_id,
        "name": view.name(shift.user_id),
        "starts_at": shift.starts_at.isoformat(),
        "ends_at": shift.ends_at.isoformat(),
        "starts_local": shift.starts_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        "ends_local": shift.ends_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        "is_override": shift.is_override,
        "has_verified_phone": view.can_reach(shift.user_id),
    }


def health(session: Session, site: Site, now: datetime) -> list[dict[str, Any]]:
    """Each layer as a route tier for the dead-route check: dead when a shift of the next 14
    days falls to someone no SMS can reach."""
    out = []
    for view in layers(session, site, now):
        bad = view.unreachable
        zone = ZoneInfo(site.timezone)
        out.append(
            {
                "route": "rota",
                "tier": rules.LAYERS.index(view.rota.layer) + 1,
                "recipients": f"rota:{view.rota.layer}",
                "timeout_minutes": None,
                "reachable": sorted(
                    {s.user_id for s in view.upcoming if s.user_id and view.can_reach(s.user_id)}
                ),
                "is_dead": bool(bad),
                "warning": (
                    f"{view.rota.layer} shift from "
                    f"{bad[0].starts_at.astimezone(zone):%a %Y-%m-%d %H:%M} has nobody with a "
                    "verified phone"
                )
                if bad
                else None,
            }
        )
    return out


def shifts_of_person(
    session: Session, user: StaffUser, start: datetime, end: datetime
) -> list[tuple[Site, Rota, rules.Shift]]:
    """Every shift of a person at their sites from start to end (the iCalendar feed)."""
    out = []
    site_ids = select(SiteMembership.site_id).where(SiteMembership.user_id == user.id)
    for rota in session.exec(select(Rota).where(col(Rota.site_id).in_(site_ids))).all():
        site = session.get(Site, rota.site_id)
        assert site is not None
        for shift in rules.shifts(spec_of(rota, site), overrides_of(session, rota), start, end):
            if shift.user_id == user.id:
                out.append((site, rota, shift))
    return sorted(out, key=lambda x: x[2].starts_at)


def ical(user: StaffUser, items: list[tuple[Site, Rota, rules.Shift]], now: datetime) -> bytes:
    """An iCalendar (RFC 5545) of a person's shifts: no health information, site codes only."""
    import icalendar

    cal = icalendar.Calendar()
    cal.add("prodid", "-//Stepdown//on-call rota//EN")
    cal.add("version", "2.0")
    cal.add("x-wr-calname", "Stepdown on call")
    for site, rota, shift in items:
        event = icalendar.Event()
        event.add("uid", f"oncall-{rota.id}-{shift.starts_at:%Y%m%dT%H%M%SZ}-{user.id}@stepdown")
        event.add("summary", f"On call ({rota.layer}) · {site.code}")
        event.add("dtstart", shift.starts_at)
        event.add("dtend", shift.ends_at)
        event.add("dtstamp", now)
        if shift.is_override:
            event.add("description", "Override")
        cal.add_component(event)
    return cal.to_ical()  # type: ignore[no-any-return]


# --- the secret calendar link (GET /oncall/feed/<token>.ics) -----------------------------------


def calendar_link_of(session: Session, user: StaffUser) -> CalendarLink | None:
    """The person's calendar link, if they hold one (its token is never known again)."""
    return session.exec(select(CalendarLink).where(CalendarLink.user_id == user.id)).first()


def create_calendar_link(
    *, session: Session, user: StaffUser, now: datetime
) -> tuple[str, CalendarLink]:
    """Give the person a new secret calendar link, replacing any old one (which stops working).
    Returns the clear token, to show to its owner once; audited `oncall.calendar_link_created`
    or `oncall.calendar_link_reset`, with the dates only (never the token or its hash)."""
    clear = secrets.token_urlsafe(rules.CALENDAR_TOKEN_BYTES)
    link = calendar_link_of(session, user)
    before = {"created_at": link.created_at} if link else None
    if link is None:
        link = CalendarLink(user_id=user.id, token_hash=hash_token(clear), created_at=now)  # type: ignore[arg-type]
    else:
        link.token_hash, link.created_at = hash_token(clear), now
    session.add(link)
    session.flush()
    common: dict[str, Any] = {
        "session": session,
        "actor": actor_of(user),
        "actor_user_id": user.id,
        "entity": "oncall_calendar_link",
        "entity_id": link.id,
        "now": now,
        "after": {"user_id": user.id, "created_at": now},
    }
    if before is None:
        audit.record(action="oncall.calendar_link_created", **common)
    else:
        audit.record(action="oncall.calendar_link_reset", before=before, **common)
    return clear, link


def revoke_calendar_link(*, session: Session, user: StaffUser, now: datetime) -> bool:
    """Stop the person's calendar link (audited `oncall.calendar_link_revoked`); False when
    there was none."""
    link = calendar_link_of(session, user)
    if link is None:
        return False
    before = {"user_id": user.id, "created_at": link.created_at}
    session.delete(link)
    session.flush()
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="oncall.calendar_link_revoked",
        entity="oncall_calendar_link",
        entity_id=link.id,
        now=now,
        before=before,
    )
    return True


def user_of_calendar_token(*, session: Session, token: str) -> StaffUser | None:
    """The active person whose live calendar link this token is (None for anything else: a
    malformed token is refused before it is hashed or looked up)."""
    if not rules.is_calendar_token(token):
        return None
    link = session.exec(
        select(CalendarLink).where(CalendarLink.token_hash == hash_token(token))
    ).first()
    if link is None:
        return None
    user = session.get(StaffUser, link.user_id)
    return user if user is not None and user.is_active else None
