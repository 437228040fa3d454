"""Reports for sponsors and inspectors: acknowledgement times per site and month (issue 16
item 4), the same figures as the page /reports/acknowledgement."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from sqlmodel import col

from api.ack_report_pages import month_bounds, parse_month
from api.page_kit import PageInputError
from api.schemas import AckReportArgs, AckReportSchema
from server.alerts import report as ack_report
from server.auth.rules import Permission
from server.auth.scoping import get_site, sites_query
from server.auth.web import require
from server.clock import utcnow
from server.db import get_session
from server.errors import field_error
from server.participants.models import Site

blp = Blueprint("reports", __name__, url_prefix="/api/v1", description="Reports")


@blp.route("/reports/acknowledgement")
@blp.arguments(AckReportArgs, location="query")
@blp.response(200, AckReportSchema)
def acknowledgement(args: dict[str, Any]) -> dict[str, Any]:
    """Acknowledgement times of your sites' critical and urgent alerts: per site and month
    (site time) p50/p90/max minutes from the result's arrival to the first notification, the
    acknowledgement and the resolution, the share acknowledged within 30 and 60 minutes, the
    alerts that reached the fail-safe; and each alert's moments. Percentiles are nearest-rank."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    if "site_id" in args:
        sites = [get_site(session=session, user=user, site_id=args["site_id"])]
    else:
        sites = list(session.exec(sites_query(user).order_by(col(Site.code))).all())
    try:
        first, last = month_bounds(
            utcnow(), parse_month("from", args.get("from_")), parse_month("to", args.get("to"))
        )
    except PageInputError as exc:
        raise field_error(exc.field, exc.message) from exc
    return ack_report.as_json(
        ack_report.report(session=session, sites=sites, first=first, last=last)
    )
