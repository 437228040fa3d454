"""Adherence pages: per site and study, by event type and month, drill-down, CSV export.

Every figure comes from server/adherence/service.py (the same SQL as the JSON API); the pages
only read the filters, call it and render. Filters live in the query string so a view can be
bookmarked, linked from a count, and exported as the same CSV.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from flask import Blueprint, Response, render_template, request, url_for
from flask_login import login_required
from sqlmodel import col, select

from api.page_kit import PageInputError, csv_download, query_choice, query_int, require_page
from server.adherence import service as adherence
from server.auth.models import StaffUser
from server.auth.rules import Permission
from server.auth.scoping import get_site, sites_query, visible_site_ids_subquery
from server.auth.service import actor_of
from server.clock import utcnow
from server.db import get_session
from server.exports import odm
from server.participants.models import Participant, Site
from server.protocols.models import Study
from server.schedules.models import EventType

bp = Blueprint("adherence_pages", __name__)

EVENT_TYPES = [t.value for t in EventType]
EVENT_TYPE_LABELS = {
    "ctdna_draw": "ctDNA draw",
    "blood_work": "Routine bloods",
    "tumor_markers": "Tumour markers",
    "imaging": "Imaging",
    "clinic_visit": "Clinic visit",
    "questionnaire": "Questionnaire",
    "decision_point": "Decision point",
    "treatment_cycle": "Treatment cycle",
}
MEASURE_LABELS = {
    "due": "Due",
    "in_window": "In window",
    "early": "Early",
    "late": "Late",
    "missed": "Missed",
    "open": "Open",
    "received": "Received",
}
VIEWS = ["summary", "event_type", "month", "participants"]
MONTH = re.compile(r"^(\d{4})-(\d{2})$")
DEFAULT_MONTHS = 12
MAX_MONTHS = 15 * 12  # the longest follow-up (STOP-HER2, 10 years) with room to spare

Month = tuple[int, int]


@dataclass(frozen=True)
class Selection:
    """The filters of an adherence view, read from the query string."""

    user: StaffUser
    sites: dict[int, Site]  # the user's sites, by id
    studies: dict[int, Study]  # studies with participants at the user's sites, by id
    site: Site | None
    study: Study | None
    event_type: str | None
    month_from: Month
    month_to: Month
    month: Month | None  # drill-down: one month instead of the range

    @property
    def months(self) -> list[Month]:
        """The months of the range, oldest first."""
        out, m = [], self.month_from
        while m <= self.month_to:
            out.append(m)
            m = _next_month(m)
        return out

    def where(self) -> list[Any]:
        """The service's `where` for this selection (always limited to the user's sites)."""
        first, last = (self.month, self.month) if self.month else (self.month_from, self.month_to)
        return adherence.page_filters(
            site_ids=visible_site_ids_subquery(self.user),
            site_id=self.site.id if self.site else None,
            study_id=self.study.id if self.study else None,
            event_type=self.event_type,
            closes_from=date(first[0], first[1], 1),
            closes_before=date(*_next_month(last), 1),
        )

    def args(self, **override: Any) -> dict[str, str]:
        """The query string of this selection, with some values replaced (None drops one)."""
        out: dict[str, Any] = {
            "site": self.site.id if self.site else None,
            "study": self.study.key if self.study else None,
            "event_type": self.event_type,
            "from": _month_str(self.month_from),
            "to": _month_str(self.month_to),
            "month": _month_str(self.month) if self.month else None,
        }
        out.update(override)
        return {k: str(v) for k, v in out.items() if v is not None}

    def described(self) -> dict[str, str]:
        """The filters in words (page headings and the audit row)."""
        out = {
            "site": self.site.code if self.site else "all my sites",
            "study": self.study.key if self.study else "all studies",
            "event_type": self.event_type or "all event types",
        }
        if self.month:
            out["month"] = _month_str(self.month)
        else:
            out["from"] = _month_str(self.month_from)
            out["to"] = _month_str(self.month_to)
        return out

    def covered_site_ids(self) -> list[int]:
        """The sites this selection reads (for the audit row)."""
        return [self.site.id] if self.site and self.site.id else sorted(self.sites)


def _next_month(m: Month) -> Month:
    return (m[0] + 1, 1) if m[1] == 12 else (m[0], m[1] + 1)


def _month_str(m: Month) -> str:
    return f"{m[0]:04d}-{m[1]:02d}"


def _months_before(m: Month, n: int) -> Month:
    index = m[0] * 12 + (m[1] - 1) - n
    return (index // 12, index % 12 + 1)


def _query_month(name: str) -> Month | None:
    raw = request.args.get(name, "").strip()
    if raw == "":
        return None
    found = MONTH.match(raw)
    if not found or not 1 <= int(found.group(2)) <= 12 or not 2000 <= int(found.group(1)) <= 2100:
        raise PageInputError(name, "must be a month written YYYY-MM, e.g. 2027-04")
    return int(found.group(1)), int(found.group(2))


def _selection(now: datetime) -> Selection:
    """Read and check the filters: unknown values are a 400 page, another site a 404 page."""
    user = require_page(Permission.PARTICIPANT_READ)
    db = get_session()
    sites = {s.id: s for s in db.exec(sites_query(user).order_by(col(Site.code))).all()}
    studies = {
        s.id: s
        for s in db.exec(
            select(Study)
            .where(
                col(Study.id).in_(
                    select(Participant.study_id).where(
                        col(Participant.site_id).in_(visible_site_ids_subquery(user))
                    )
                )
            )
            .order_by(col(Study.key))
        ).all()
    }
    site_id = query_int("site", lo=1)
    site = get_site(session=db, user=user, site_id=site_id) if site_id is not None else None
    study_key = query_choice("study", [s.key for s in studies.values()])
    study = next((s for s in studies.values() if s.key == study_key), None)
    event_type = query_choice("event_type", EVENT_TYPES)
    this_month = (now.year, now.month)
    month_to = _query_month("to") or this_month
    month_from = _query_month("from") or _months_before(month_to, DEFAULT_MONTHS - 1)
    if month_from > month_to:
        raise PageInputError("from", "must not be after the 'to' month")
    if len(range(month_from[0] * 12 + month_from[1], month_to[0] * 12 + month_to[1])) >= MAX_MONTHS:
        raise PageInputError("from", f"the range can span at most {MAX_MONTHS} months")
    return Selection(
        user=user,
        sites=sites,  # type: ignore[arg-type]
        studies=studies,  # type: ignore[arg-type]
        site=site,
        study=study,
        event_type=event_type,
        month_from=month_from,
        month_to=month_to,
        month=_query_month("month"),
    )


def _measure(required: bool) -> str | None:
    measure = query_choice("measure", list(adherence.MEASURES))
    if measure is None and required:
        raise PageInputError("measure", "is required: one of " + ", ".join(adherence.MEASURES))
    return measure


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"


def _common(sel: Selection, now: datetime) -> dict[str, Any]:
    def drill(measure: str, **dims: Any) -> str:
        params: dict[str, Any] = sel.args(**dims, measure=measure)
        return url_for("adherence_pages.participants", **params)

    return {
        "sel": sel,
        "now": now,
        "drill": drill,
        "pct": _pct,
        "type_label": lambda t: EVENT_TYPE_LABELS.get(t, str(t).replace("_", " ")),
        "month_str": _month_str,
        "measure_labels": MEASURE_LABELS,
        "definitions": adherence.DEFINITIONS,
        "event_types": EVENT_TYPES,
    }


@bp.get("/adherence")
@login_required
def overview() -> str:
    """Adherence of my sites: by site × study, by event type, by month; every count links to
    the participants behind it."""
    now = utcnow()
    sel = _selection(now)
    if sel.month is not None:
        # One month is the drill-down's filter; the overview shows a range.
        raise PageInputError("month", "use from and to on this page")
    result = adherence.report(session=get_session(), now=now, where=sel.where())
    return render_template(
        "adherence.html",
        report=result,
        by_month=[(m, result.by_month.get(m, adherence.Tally())) for m in sel.months],
        **_common(sel, now),
    )


@bp.get("/adherence/participants")
@login_required
def participants() -> str:
    """The participants behind one count of the overview, with their own count for it."""
    now = utcnow()
    sel = _selection(now)
    measure = _measure(required=True)
    assert measure is not None
    rows = adherence.participants_behind(
        session=get_session(), now=now, where=sel.where(), measure=measure
    )
    return render_template(
        "adherence_participants.html",
        rows=rows,
        measure=measure,
        total=sum(r.count for r in rows),
        **_common(sel, now),
    )


# --- CSV export ---------------------------------------------------------------------------------

FIGURE_COLUMNS = [
    "due",
    "in_window",
    "in_window_pct",
    "early",
    "late",
    "missed",
    "open",
    "questionnaires_due",
    "questionnaires_received",
    "questionnaire_compliance_pct",
]


def _figure_cells(t: adherence.Tally) -> list[Any]:
    return [
        t.due,
        t.in_window,
        t.in_window_pct,
        t.early,
        t.late,
        t.missed,
        t.open,
        t.questionnaires_due,
        t.questionnaires_received,
        t.compliance_pct,
    ]


def _table(sel: Selection, view: str, now: datetime) -> tuple[list[str], list[list[Any]]]:
    """The header and rows of one view, as the page shows them."""
    db = get_session()
    if view == "participants":
        measure = _measure(required=True)
        assert measure is not None
        found = adherence.participants_behind(
            session=db, now=now, where=sel.where(), measure=measure
        )
        header = ["study_code", "site_code", "study", "measure", "count", "due", "in_window_pct"]
        return header, [
            [
                r.study_code,
                sel.sites[r.site_id].code,
                sel.studies[r.study_id].key,
                measure,
                r.count,
                r.figures.due,
                r.figures.in_window_pct,
            ]
            for r in found
        ]
    if sel.month is not None:
        raise PageInputError("month", "only the participants view takes one month")
    result = adherence.report(session=db, now=now, where=sel.where())
    if view == "summary":
        header = ["site_code", "site_name", "study", *FIGURE_COLUMNS]
        return header, [
            [
                sel.sites[site_id].code,
                sel.sites[site_id].name,
                sel.studies[study_id].key,
                *_figure_cells(t),
            ]
            for (site_id, study_id), t in result.by_site_study.items()
        ]
    if view == "event_type":
        return ["event_type", *FIGURE_COLUMNS], [
            [event_type, *_figure_cells(t)] for event_type, t in result.by_event_type.items()
        ]
    return ["month", *FIGURE_COLUMNS], [
        [_month_str(m), *_figure_cells(result.by_month.get(m, adherence.Tally()))]
        for m in sel.months
    ]


@bp.get("/adherence.csv")
@login_required
def export_csv() -> Response:
    """The current view as CSV (UTF-8, header row, plain numbers); each export is audited.

    Monitors may export too: it is read-only, shows participant codes only, and is audited."""
    now = utcnow()
    sel = _selection(now)
    view = query_choice("view", VIEWS) or "summary"
    header, rows = _table(sel, view, now)
    filters = sel.described()
    if view == "participants":
        filters["measure"] = request.args.get("measure", "")
    db = get_session()
    adherence.record_export(
        session=db,
        user=sel.user,
        view=view,
        filters=filters,
        row_count=len(rows),
        site_ids=sel.covered_site_ids(),
        now=now,
    )
    db.commit()
    filename = f"adherence-{view.replace('_', '-')}-{now:%Y-%m-%d}.csv"
    return csv_download(header, rows, filename)


@bp.get("/adherence/odm.xml")
@login_required
def export_odm() -> Response:
    """One study of my sites (the site filter applies) as CDISC ODM 1.3.2 XML for the sponsor's
    EDC; every download is audited. Monitors may download too (read-only, study codes only)."""
    now = utcnow()
    sel = _selection(now)
    if sel.study is None:
        raise PageInputError(
            "study", "is required: one of " + ", ".join(s.key for s in sel.studies.values())
        )
    db = get_session()
    export = odm.build(
        session=db,
        study=sel.study,
        site_ids=sel.covered_site_ids(),
        now=now,
    )
    odm.record_export(
        session=db,
        export=export,
        study=sel.study,
        actor=actor_of(sel.user),
        actor_user_id=sel.user.id,
        via="adherence page",
        now=now,
    )
    db.commit()
    return Response(
        export.xml,
        mimetype="application/xml",
        headers={
            "Content-Disposition": f'attachment; filename="{sel.study.key}-odm-{now:%Y-%m-%d}.xml"',
            "Cache-Control": "no-store",
        },
    )
