"""On-call rotas (issue 16 item 1): a site's layers and who is on call now and next, setting a
layer, overrides, and each person's shifts as an iCalendar feed, behind their login or through
their secret calendar link (created, reset and stopped here, shown to its owner only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Response, current_app
from flask_smorest import Blueprint

from api.common import commit
from api.schemas import (
    CalendarLinkSchema,
    CalendarLinkStateSchema,
    RotaOverrideSchema,
    RotaSetSchema,
)
from server.auth.rules import Permission
from server.auth.scoping import get_site
from server.auth.web import require
from server.clock import utcnow
from server.db import get_session
from server.errors import NotFound
from server.oncall import rules
from server.oncall import service as oncall
from server.participants.models import Site

blp = Blueprint("oncall", __name__, url_prefix="/api/v1", description="On call")

FEED_BACK = timedelta(days=7)
FEED_AHEAD = timedelta(days=90)


def site_rotas(site: Site) -> dict[str, Any]:
    """A site's layers: the rota, who is on call now and next, shifts of the next 14 days."""
    now = utcnow()
    views = oncall.layers(get_session(), site, now)
    return {
        "site_id": site.id,
        "timezone": site.timezone,
        "layers": [
            {
                "layer": v.rota.layer,
                "period": v.rota.period,
                "handover": v.rota.handover,
                "handover_weekday": v.rota.handover_weekday,
                "starts_on": v.rota.starts_on.isoformat(),
                "members": list(v.rota.members),
                "now": oncall.shift_json(v, v.now, site),
                "next": oncall.shift_json(v, v.next, site),
                "upcoming": [oncall.shift_json(v, s, site) for s in v.upcoming],
                "unreachable_shifts": len(v.unreachable),
            }
            for v in views
        ],
    }


@blp.route("/sites/<int:site_id>/rotas")
@blp.response(200)
def get_rotas(site_id: int) -> dict[str, Any]:
    """The site's on-call layers (primary, backup): who is on call now and next, the shifts of
    the next 14 days (site time too), and those whose person has no verified phone."""
    user = require(Permission.PARTICIPANT_READ)
    return site_rotas(get_site(session=get_session(), user=user, site_id=site_id))


@blp.route("/sites/<int:site_id>/rotas/<string:layer>", methods=["PUT"])
@blp.arguments(RotaSetSchema)
@blp.response(200)
def set_rota(args: dict[str, Any], site_id: int, layer: str) -> dict[str, Any]:
    """Set a layer (primary or backup): daily or weekly shifts handed over at a site time, its
    members in turn order. Audited (`rota.set`)."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    site = get_site(session=session, user=user, site_id=site_id)
    require(Permission.SCHEDULE_WRITE)
    if layer not in rules.LAYERS:
        raise NotFound("layer not found: primary or backup")
    oncall.set_rota(session=session, site=site, layer=layer, actor=user, now=utcnow(), **args)
    commit()
    return site_rotas(site)


@blp.route("/sites/<int:site_id>/rotas/<string:layer>/overrides", methods=["POST"])
@blp.arguments(RotaOverrideSchema)
@blp.response(201)
def add_override(args: dict[str, Any], site_id: int, layer: str) -> dict[str, Any]:
    """Someone else on call for a span (a day off, a holiday); it wins over the turn. Audited
    (`rota.override`)."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    site = get_site(session=session, user=user, site_id=site_id)
    require(Permission.SCHEDULE_WRITE)
    rota = next((r for r in oncall.rotas_of(session, site_id) if r.layer == layer), None)
    if rota is None:
        raise NotFound("this site has no such layer")
    oncall.add_override(session=session, site=site, rota=rota, actor=user, now=utcnow(), **args)
    commit()
    return site_rotas(site)


@blp.route("/me/oncall.ics")
@blp.doc(
    responses={
        "200": {
            "description": "an iCalendar (RFC 5545) file",
            "content": {"text/calendar": {"schema": {"type": "string"}}},
        }
    }
)
def my_calendar() -> Response:
    """My shifts at my sites, last week to 90 days ahead, as iCalendar (site codes only)."""
    user = require(Permission.PARTICIPANT_READ)
    return calendar_response(user)


def calendar_response(user: Any) -> Response:
    now = utcnow()
    items = oncall.shifts_of_person(get_session(), user, now - FEED_BACK, now + FEED_AHEAD)
    return Response(
        oncall.ical(user, items, now),
        mimetype="text/calendar",
        headers={
            "Content-Disposition": 'attachment; filename="stepdown-oncall.ics"',
            "Cache-Control": "no-store",
        },
    )


def feed_url(token: str) -> str:
    """The public https address of a calendar link's feed (PUBLIC_BASE_URL is https in
    production; config/settings.py refuses anything else)."""
    return f"{current_app.config['PUBLIC_BASE_URL']}/oncall/feed/{token}.ics"


def calendar_link_json(token: str, created_at: Any) -> dict[str, Any]:
    """What only the owner sees, once: the link as https and webcal."""
    url = feed_url(token)
    return {"url": url, "webcal_url": rules.webcal_url(url), "created_at": created_at}


@blp.route("/me/oncall-feed")
@blp.response(200, CalendarLinkStateSchema)
def calendar_link_state() -> dict[str, Any]:
    """Whether I hold a secret calendar link, and since when (never the link itself: it is
    shown once, when created or reset)."""
    user = require(Permission.PARTICIPANT_READ)
    link = oncall.calendar_link_of(get_session(), user)
    return {"exists": link is not None, "created_at": link.created_at if link else None}


@blp.route("/me/oncall-feed", methods=["POST"])
@blp.response(201, CalendarLinkSchema)
def create_calendar_link() -> dict[str, Any]:
    """Create my secret calendar link, or reset it (the old one stops working at once): a
    calendar app subscribes to it without logging in. The answer is the only time the link is
    shown; anyone with it sees my shifts (site codes and times, no participant information).
    Audited (`oncall.calendar_link_created` / `oncall.calendar_link_reset`, without the link)."""
    user = require(Permission.PARTICIPANT_READ)
    token, link = oncall.create_calendar_link(session=get_session(), user=user, now=utcnow())
    commit()
    return calendar_link_json(token, link.created_at)


@blp.route("/me/oncall-feed", methods=["DELETE"])
@blp.response(204)
def revoke_calendar_link() -> None:
    """Stop my calendar link: it answers 404 from now on (nothing to stop is fine too).
    Audited (`oncall.calendar_link_revoked`)."""
    user = require(Permission.PARTICIPANT_READ)
    oncall.revoke_calendar_link(session=get_session(), user=user, now=utcnow())
    commit()
