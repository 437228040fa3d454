"""Acknowledgement times (issue 16 item 4): a page for investigators and monitors (and every
member of a site) with each month's figures per site, a chart drawn in inline SVG, and an audited
CSV export. The figures come from server/alerts/report.py, the same as the JSON API's."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, render_template, request, url_for
from flask_login import login_required
from sqlmodel import col

from api.page_kit import PageInputError, csv_download, query_choice, query_int, require_page
from server.alerts import report as ack_report
from server.alerts import timing
from server.auth.models import StaffUser
from server.auth.rules import Permission
from server.auth.scoping import get_site, sites_query
from server.clock import utcnow
from server.db import get_session
from server.participants.models import Site

bp = Blueprint("ack_report_pages", __name__)

MONTH = re.compile(r"^(\d{4})-(\d{2})$")
DEFAULT_MONTHS = 6
MAX_MONTHS = 36
VIEWS = ["summary", "alerts"]

# The chart's drawing box (the SVG scales to its container through its viewBox).
CHART_W, CHART_H, CHART_LEFT, CHART_BOTTOM, CHART_TOP = 640, 260, 64, 36, 12


def parse_month(name: str, raw: str | None) -> tuple[int, int] | None:
    """A YYYY-MM query value, None when absent; else a 400 (the page's or the API's)."""
    text = (raw or "").strip()
    if text == "":
        return None
    found = MONTH.match(text)
    if not found or not 1 <= int(found.group(2)) <= 12 or not 2000 <= int(found.group(1)) <= 2100:
        raise PageInputError(name, "must be a month written YYYY-MM, e.g. 2027-04")
    return int(found.group(1)), int(found.group(2))


def month_bounds(
    now: datetime, first: tuple[int, int] | None, last: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The range asked for, by default the last DEFAULT_MONTHS months up to this one."""
    last = last or ack_report.this_month(now)
    if first is None:
        index = last[0] * 12 + last[1] - 1 - (DEFAULT_MONTHS - 1)
        first = (index // 12, index % 12 + 1)
    if first > last:
        raise PageInputError("from", "must not be after the 'to' month")
    if (last[0] * 12 + last[1]) - (first[0] * 12 + first[1]) >= MAX_MONTHS:
        raise PageInputError("from", f"the range can span at most {MAX_MONTHS} months")
    return first, last


def _selection(now: datetime) -> tuple[StaffUser, list[Site], Site | None, Any, Any]:
    user = require_page(Permission.PARTICIPANT_READ)
    db = get_session()
    sites = list(db.exec(sites_query(user).order_by(col(Site.code))).all())
    site_id = query_int("site", lo=1)
    site = get_site(session=db, user=user, site_id=site_id) if site_id is not None else None
    first, last = month_bounds(
        now,
        parse_month("from", request.args.get("from")),
        parse_month("to", request.args.get("to")),
    )
    return user, sites, site, first, last


def _args(site: Site | None, first: tuple[int, int], last: tuple[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "from": f"{first[0]:04d}-{first[1]:02d}",
        "to": f"{last[0]:04d}-{last[1]:02d}",
    }
    if site is not None:
        out["site"] = str(site.id)
    return out


def chart(months: list[tuple[str, timing.Figures]]) -> dict[str, Any]:
    """Bars of the p50 and p90 minutes to acknowledgement per month, with the 30- and 60-minute
    lines; geometry computed here so the template only draws."""
    tops = [f.to_ack.p90 or 0 for _, f in months] + [f.to_ack.p50 or 0 for _, f in months]
    scale_max = max([75.0, *tops]) * 1.1
    plot_w = CHART_W - CHART_LEFT - 8
    plot_h = CHART_H - CHART_BOTTOM - CHART_TOP
    slot = plot_w / max(1, len(months))
    bar = min(28.0, slot / 3)

    def y(minutes: float) -> float:
        return round(CHART_TOP + plot_h - plot_h * minutes / scale_max, 1)

    bars = []
    for i, (month, f) in enumerate(months):
        x = CHART_LEFT + i * slot + slot / 2
        for offset, value, cls in ((-bar, f.to_ack.p50, "p50"), (0.0, f.to_ack.p90, "p90")):
            if value is None:
                continue
            bars.append(
                {
                    "x": round(x + offset, 1),
                    "y": y(value),
                    "w": round(bar - 2, 1),
                    "h": round(CHART_TOP + plot_h - y(value), 1),
                    "cls": cls,
                    "title": f"{month} {cls}: {value:g} min",
                }
            )
    return {
        "w": CHART_W,
        "h": CHART_H,
        "left": CHART_LEFT,
        "right": CHART_W - 8,
        "base": CHART_TOP + plot_h,
        "bars": bars,
        "labels": [
            {"x": round(CHART_LEFT + i * slot + slot / 2, 1), "text": month[2:]}
            for i, (month, _) in enumerate(months)
        ],
        "targets": [{"y": y(t), "text": f"{t} min"} for t in timing.ACK_TARGETS_MINUTES],
        "empty": not bars,
    }


def _minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"


@bp.get("/reports/ack-times")
@login_required
def page() -> str:
    """How fast my sites' alerts were acknowledged, per site and month."""
    now = utcnow()
    _user, sites, site, first, last = _selection(now)
    chosen = [site] if site is not None else sites
    result = ack_report.report(session=get_session(), sites=chosen, first=first, last=last)
    months = result.month_figures(site.id if site else None)
    return render_template(
        "ack_report.html",
        now=now,
        sites=sites,
        site=site,
        first=_args(site, first, last)["from"],
        last=_args(site, first, last)["to"],
        result=result,
        months=months,
        chart=chart(months),
        minutes=_minutes,
        pct=_pct,
        csv_summary=url_for("ack_report_pages.export_csv", **_args(site, first, last)),
        csv_alerts=url_for(
            "ack_report_pages.export_csv", view="alerts", **_args(site, first, last)
        ),
    )


SUMMARY_HEADER = [
    "site_code",
    "month",
    "alerts",
    "acknowledged",
    "resolved",
    "notify_p50_min",
    "notify_p90_min",
    "notify_max_min",
    "ack_p50_min",
    "ack_p90_min",
    "ack_max_min",
    "resolve_p50_min",
    "resolve_p90_min",
    "resolve_max_min",
    "ack_within_30_min_pct",
    "ack_within_60_min_pct",
    "reached_failsafe",
]
ALERT_HEADER = [
    "alert_id",
    "site_code",
    "month",
    "kind",
    "level",
    "study_code",
    "received_at",
    "first_notified_at",
    "acknowledged_at",
    "resolved_at",
    "failsafe_at",
    "minutes_to_first_notification",
    "minutes_to_acknowledgement",
    "minutes_to_resolution",
]


def summary_cells(site_code: str, month: str, f: timing.Figures) -> list[Any]:
    return [
        site_code,
        month,
        f.alerts,
        f.acknowledged,
        f.resolved,
        f.to_notify.p50,
        f.to_notify.p90,
        f.to_notify.max,
        f.to_ack.p50,
        f.to_ack.p90,
        f.to_ack.max,
        f.to_resolve.p50,
        f.to_resolve.p90,
        f.to_resolve.max,
        f.ack_within_30_pct,
        f.ack_within_60_pct,
        f.failsafe,
    ]


@bp.get("/reports/ack-times.csv")
@login_required
def export_csv() -> Response:
    """The figures per site and month (view=summary) or each alert's moments (view=alerts) as
    CSV; every export is audited."""
    now = utcnow()
    user, sites, site, first, last = _selection(now)
    view = query_choice("view", VIEWS) or "summary"
    chosen = [site] if site is not None else sites
    db = get_session()
    result = ack_report.report(session=db, sites=chosen, first=first, last=last)
    if view == "summary":
        header = SUMMARY_HEADER
        rows = [
            summary_cells(result.sites[site_id].code, month, f)
            for (site_id, month), f in result.by_site_month.items()
        ]
    else:
        header = ALERT_HEADER
        rows = [
            [ack_report.alert_row(a, result.sites[a.site_id])[k] for k in ALERT_HEADER]
            for a in result.alerts
        ]
    ack_report.record_export(
        session=db,
        user=user,
        view=view,
        filters={**_args(site, first, last), "site": site.code if site else "all my sites"},
        row_count=len(rows),
        site_ids=sorted(result.sites),
        now=now,
    )
    db.commit()
    return csv_download(header, rows, f"acknowledgement-{view}-{now:%Y-%m-%d}.csv")
