"""The on-call page: per site and layer, who is on call now and next and the shifts of the next
14 days in the site's time, flagging a shift whose person no SMS can reach; my shifts as an
iCalendar file; my secret calendar link (create, reset, stop) and the feed it opens, which needs
no login: the token alone names the person."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, flash, redirect, render_template, url_for
from flask_login import login_required
from sqlmodel import col

from api.oncall import calendar_link_json, calendar_response
from api.page_kit import require_page
from server.auth.models import StaffUser
from server.auth.rules import Permission
from server.auth.scoping import sites_query
from server.clock import utcnow
from server.db import get_session
from server.errors import NotFound
from server.oncall import service as oncall
from server.participants.models import Site

bp = Blueprint("oncall_pages", __name__)


def _render(user: StaffUser, new_link: dict[str, Any] | None = None) -> str:
    session = get_session()
    now = utcnow()
    sites = session.exec(sites_query(user).order_by(col(Site.code))).all()
    return render_template(
        "oncall.html",
        now=now,
        sites=[(s, ZoneInfo(s.timezone), oncall.layers(session, s, now)) for s in sites],
        calendar_link=oncall.calendar_link_of(session, user),
        new_link=new_link,
    )


@bp.get("/oncall")
@login_required
def page() -> str:
    """Who is on call at my sites, now and next; whether I hold a calendar link."""
    return _render(require_page(Permission.PARTICIPANT_READ))


@bp.get("/oncall/me.ics")
@login_required
def my_calendar() -> Response:
    """My shifts as iCalendar, for a phone's or a laptop's calendar."""
    return calendar_response(require_page(Permission.PARTICIPANT_READ))


@bp.post("/oncall/calendar-link")
@login_required
def create_calendar_link() -> str:
    """Create or reset my calendar link and show it, this once, in this answer only (no
    redirect, no flash: neither a URL nor the session cookie ever holds it)."""
    user = require_page(Permission.PARTICIPANT_READ)
    token, link = oncall.create_calendar_link(session=get_session(), user=user, now=utcnow())
    get_session().commit()
    return _render(user, new_link=calendar_link_json(token, link.created_at))


@bp.post("/oncall/calendar-link/stop")
@login_required
def stop_calendar_link() -> Any:
    """Stop my calendar link: calendars subscribed to it get nothing more."""
    user = require_page(Permission.PARTICIPANT_READ)
    if oncall.revoke_calendar_link(session=get_session(), user=user, now=utcnow()):
        get_session().commit()
        flash("Your calendar link is stopped: calendars following it get no more shifts.", "info")
    return redirect(url_for("oncall_pages.page"), code=303)


@bp.get("/oncall/feed/<token>.ics")
def calendar_feed(token: str) -> Response:
    """A person's shifts as iCalendar through their secret link, for a calendar app that cannot
    log in. An unknown, reset or stopped link, or a deactivated person's, is the JSON 404."""
    user = oncall.user_of_calendar_token(session=get_session(), token=token)
    if user is None:
        raise NotFound("no such calendar link: it may have been reset or stopped")
    return calendar_response(user)
