"""The on-call page: per site and layer, who is on call now and next and the shifts of the next
14 days in the site's time, flagging a shift whose person no SMS can reach; my shifts as an
iCalendar file."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import Blueprint, Response, render_template
from flask_login import login_required
from sqlmodel import col

from api.oncall import calendar_response
from api.page_kit import require_page
from server.auth.rules import Permission
from server.auth.scoping import sites_query
from server.clock import utcnow
from server.db import get_session
from server.oncall import service as oncall
from server.participants.models import Site

bp = Blueprint("oncall_pages", __name__)


@bp.get("/oncall")
@login_required
def page() -> str:
    """Who is on call at my sites, now and next."""
    user = require_page(Permission.PARTICIPANT_READ)
    session = get_session()
    now = utcnow()
    sites = session.exec(sites_query(user).order_by(col(Site.code))).all()
    return render_template(
        "oncall.html",
        now=now,
        sites=[(s, ZoneInfo(s.timezone), oncall.layers(session, s, now)) for s in sites],
    )


@bp.get("/oncall/me.ics")
@login_required
def my_calendar() -> Response:
    """My shifts as iCalendar, for a phone's or a laptop's calendar."""
    return calendar_response(require_page(Permission.PARTICIPANT_READ))
