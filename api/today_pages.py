"""Today: what needs the care team now (alerts, overdue events and results, unreachable
participants, decisions due, dead escalation routes), and the alert pages.

Acknowledge and resolve are plain forms posted to the alert routes, which send the user back to
the page they came from (`next`, same-site paths only) or re-render it with the error (422).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import login_required
from sqlmodel import col, select
from werkzeug.wrappers import Response

from api.page_kit import (
    csv_download,
    query_choice,
    query_int,
    require_page,
    safe_next,
    staff,
    whole_number,
)
from notifications.models import OutboxMessage
from server import audit, labels, worklist
from server.alerts import briefing
from server.alerts import service as alerts
from server.alerts.models import Alert, AlertLog, AlertState
from server.auth.models import StaffUser
from server.auth.rules import Permission
from server.auth.scoping import can_see_site, get_site, sites_query, visible_site_ids_subquery
from server.auth.service import actor_of
from server.clock import utcnow
from server.db import ID_MAX, get_session
from server.errors import Conflict, NotFound, ValidationFailed
from server.health import service as health
from server.participants.models import Participant, Site
from server.surveys import texts

bp = Blueprint("today", __name__)

ACK_NOTE_MAX = 1000
# The note is also the audit row's reason, which holds 1,000 characters.
RESOLVE_NOTE_MAX = 1000


@dataclass
class FormError:
    """A refused acknowledge/resolve form, shown next to its note field."""

    alert_id: int
    form: str  # "ack" or "resolve"
    message: str
    value: str


# --- helpers -------------------------------------------------------------------------------------


def _site_param(user: StaffUser) -> int | None:
    """The `site` filter: one of my sites (another site's id is 404)."""
    site_id = query_int("site", lo=1)
    if site_id is not None:
        get_site(session=get_session(), user=user, site_id=site_id)
    return site_id


def _site_in(path: str, user: StaffUser) -> int | None:
    """The `site` filter of a path we are sending the user back to (ignored if not theirs)."""
    raw = (parse_qs(urlsplit(path).query).get("site") or [""])[0]
    site_id = whole_number(raw, lo=1, hi=ID_MAX)
    if site_id is not None and can_see_site(session=get_session(), user=user, site_id=site_id):
        return site_id
    return None


def _alert_for(alert_id: int) -> Alert:
    """An alert of my sites, else 404."""
    alert = (
        get_session()
        .exec(
            select(Alert).where(
                Alert.id == alert_id,
                col(Alert.site_id).in_(visible_site_ids_subquery(staff())),
            )
        )
        .first()
    )
    if alert is None:
        raise NotFound("alert not found")
    return alert


def _code_of(alert: Alert) -> str:
    participant = (
        get_session().get(Participant, alert.participant_id) if alert.participant_id else None
    )
    if participant is not None:
        return participant.study_code
    site = get_session().get(Site, alert.site_id) if alert.site_id else None
    return f"site {site.code}" if site else "the site"


def _name_of(user_id: int | None) -> str:
    user = get_session().get(StaffUser, user_id) if user_id else None
    return user.full_name if user else "someone"


# --- Today ---------------------------------------------------------------------------------------


def _render_today(
    user: StaffUser, site_id: int | None, form_error: FormError | None = None, status: int = 200
) -> tuple[str, int]:
    db = get_session()
    now = utcnow()
    scope: dict[str, Any] = {"session": db, "user": user, "site_id": site_id}
    sites = db.exec(sites_query(user).order_by(col(Site.code))).all()
    html = render_template(
        "today.html",
        user=user,
        sites=sites,
        site_id=site_id,
        back_to=url_for("today.today", site=site_id),
        open_alerts=worklist.alerts_in_state(**scope, state=AlertState.OPEN),
        acked_alerts=worklist.alerts_in_state(**scope, state=AlertState.ACKNOWLEDGED),
        events=worklist.overdue_events(**scope, now=now),
        coming=worklist.coming_up(**scope, now=now),
        coming_days=worklist.COMING_UP_DAYS,
        results=worklist.overdue_results(**scope, now=now),
        unreachable=worklist.unreachable_participants(**scope, now=now),
        waiting_texts=texts.waiting_for_text(
            session=db, site_ids=worklist.site_scope(user, site_id), now=now
        ),
        decisions=worklist.decisions_due(**scope),
        routes=worklist.route_problems(**scope),
        form_error=form_error,
        ack_note_max=ACK_NOTE_MAX,
        resolve_note_max=RESOLVE_NOTE_MAX,
        # Red when no scheduler leader has run a job for 2 minutes or no dispatcher is alive.
        system_down=health.today_banner(db, now),
    )
    return html, status


@bp.get("/")
@login_required
def today() -> tuple[str, int]:
    """The signed-in landing page: today's work for my sites."""
    user = staff()
    return _render_today(user, _site_param(user))


COMING_UP_COLUMNS = [
    "site_code",
    "study_code",
    "event",
    "event_type",
    "window_opens",
    "window_closes",
    "target_date",
    "time_zone",
    "status",
    "when",
]


@bp.get("/coming-up.csv")
@login_required
def coming_up_csv() -> Response:
    """Today's "coming up" list as CSV, every row (not only the page's first 100), dates local
    to each participant; each export is audited. Monitors may export too: read-only, participant
    codes only."""
    user = staff()
    site_id = _site_param(user)
    db = get_session()
    now = utcnow()
    found = worklist.coming_up(session=db, user=user, now=now, site_id=site_id, limit=0)
    rows = [
        [
            r.site_code,
            r.participant.study_code,
            r.event.label,
            r.event.event_type.value,
            r.event.window_open_date.isoformat(),
            r.event.window_close_date.isoformat(),
            r.event.target_date.isoformat(),
            r.participant.timezone,
            r.event.status.value,
            r.when,
        ]
        for r in found.rows
    ]
    sites = db.exec(sites_query(user)).all()
    audit.record_export(
        session=db,
        actor=actor_of(user),
        actor_user_id=user.id,
        entity="worklist",
        view="coming_up",
        filters={
            "site": next((s.code for s in sites if s.id == site_id), "all my sites"),
            "days": worklist.COMING_UP_DAYS,
        },
        row_count=len(rows),
        site_ids=[site_id] if site_id else [s.id for s in sites if s.id is not None],
        now=now,
    )
    db.commit()
    return csv_download(COMING_UP_COLUMNS, rows, f"coming-up-{now:%Y-%m-%d}.csv")


# --- alert pages ---------------------------------------------------------------------------------


@bp.get("/alerts")
@login_required
def alerts_page() -> str:
    """Alerts of my sites: not resolved by default, or by state (the list of the SMS link's
    page)."""
    user = staff()
    state = query_choice("state", set(worklist.ALERT_LIST_STATES))
    site_id = _site_param(user)
    page = query_int("page", 1, lo=1, hi=100_000) or 1
    db = get_session()
    found = worklist.alert_list(session=db, user=user, state=state, site_id=site_id, page=page)
    pages = max(1, -(-found.total // worklist.LIMIT))
    return render_template(
        "alerts.html",
        found=found,
        state=state,
        states=worklist.ALERT_LIST_STATES,
        sites=db.exec(sites_query(user).order_by(col(Site.code))).all(),
        site_id=site_id,
        page=page,
        pages=pages,
    )


def _staff_id(actor: str | None) -> int | None:
    if actor and actor.startswith("staff:") and actor[6:].isdigit():
        return int(actor[6:])
    return None


def _detail(detail: dict[str, Any], names: dict[int, str]) -> str:
    """A timeline entry's detail in words (note, channel, recipients, cancelled SMS, error)."""
    parts = []
    if detail.get("note"):
        parts.append(f"“{detail['note']}”")
    if detail.get("channel"):
        parts.append(labels.label(detail["channel"], "ack_channel"))
    recipients = detail.get("recipients")
    if isinstance(recipients, list):
        parts.append("to " + ", ".join(names.get(u, "a former staff member") for u in recipients))
    elif isinstance(recipients, str):
        parts.append("nobody reachable: " + labels.label(recipients, "recipients"))
    if detail.get("cancelled_messages"):
        parts.append(f"{detail['cancelled_messages']} pending SMS cancelled")
    if detail.get("error_code"):
        parts.append(f"error {detail['error_code']}")
    return " · ".join(parts)


def _render_alert(
    alert: Alert, form_error: FormError | None = None, status: int = 200
) -> tuple[str, int]:
    db = get_session()
    participant = db.get(Participant, alert.participant_id) if alert.participant_id else None
    site = db.get(Site, alert.site_id)
    timeline = db.exec(
        select(AlertLog).where(AlertLog.alert_id == alert.id).order_by(col(AlertLog.id))
    ).all()
    messages = db.exec(
        select(OutboxMessage)
        .where(OutboxMessage.ref == f"alert:{alert.id}")
        .order_by(col(OutboxMessage.id))
    ).all()
    staff_ids = {_staff_id(e.actor) for e in timeline} - {None}
    staff_ids |= {m.staff_user_id for m in messages if m.staff_user_id}
    staff_ids |= {u for u in (alert.acknowledged_by_user_id, alert.resolved_by_user_id) if u}
    for e in timeline:
        recipients = (e.detail or {}).get("recipients")
        if isinstance(recipients, list):
            staff_ids |= {u for u in recipients if isinstance(u, int)}
    names = worklist.staff_names(db, set(staff_ids))
    now = utcnow()
    zone = ZoneInfo(site.timezone) if site else ZoneInfo("UTC")
    html = render_template(
        "alert.html",
        brief=briefing.build(session=db, alert=alert, now=now),
        when=lambda moment, relative=False: briefing.when(moment, zone, now if relative else None),
        day_text=briefing.day_text,
        alert=alert,
        participant=participant,
        site=site,
        tz=site.timezone if site else "UTC",
        timeline=timeline,
        actors={e.id: labels.actor(e.actor, names) for e in timeline},
        details={e.id: _detail(e.detail or {}, names) for e in timeline},
        messages=messages,
        names=names,
        form_error=form_error,
        back_to=url_for("today.alert_page", alert_id=alert.id),
        ack_note_max=ACK_NOTE_MAX,
        resolve_note_max=RESOLVE_NOTE_MAX,
    )
    return html, status


@bp.get("/alerts/<int:alert_id>")
@login_required
def alert_page(alert_id: int) -> tuple[str, int]:
    """One alert: what it is about, its timeline and messages, acknowledge and resolve (the
    link in alert SMS)."""
    return _render_alert(_alert_for(alert_id))


def _refuse_form(alert: Alert, back: str, error: FormError) -> tuple[str, int]:
    """Nothing changed: show the page the form was on again, with the error at the field."""
    get_session().rollback()
    if urlsplit(back).path == url_for("today.today"):
        user = staff()
        return _render_today(user, _site_in(back, user), form_error=error, status=422)
    return _render_alert(alert, form_error=error, status=422)


@bp.post("/alerts/<int:alert_id>/acknowledge")
@login_required
def alert_acknowledge(alert_id: int) -> Response | tuple[str, int]:
    """Acknowledge in one click (optional note); further tiers stop."""
    alert = _alert_for(alert_id)
    user = require_page(Permission.ALERT_ACK)
    back = safe_next(request.form.get("next"), url_for("today.alert_page", alert_id=alert_id))
    note = (request.form.get("note") or "").strip()
    if len(note) > ACK_NOTE_MAX:
        return _refuse_form(
            alert,
            back,
            FormError(alert_id, "ack", f"at most {ACK_NOTE_MAX} characters", note),
        )
    db = get_session()
    done = alerts.acknowledge(
        session=db, alert=alert, user=user, channel="web", now=utcnow(), note=note or None
    )
    db.commit()
    code = _code_of(alert)
    if done:
        flash(f"Alert for {code} acknowledged: further tiers stopped.", "info")
    elif alert.state == AlertState.RESOLVED:
        flash(
            f"The alert for {code} was already resolved by {_name_of(alert.resolved_by_user_id)}.",
            "info",
        )
    else:
        flash(
            f"The alert for {code} was already acknowledged by "
            f"{_name_of(alert.acknowledged_by_user_id)}.",
            "info",
        )
    return redirect(back)


@bp.post("/alerts/<int:alert_id>/resolve")
@login_required
def alert_resolve(alert_id: int) -> Response | tuple[str, int]:
    """Resolve with a note of what was done; optionally record that treatment resumed."""
    alert = _alert_for(alert_id)
    user = require_page(Permission.ALERT_ACK)
    resume = request.form.get("resume_treatment") == "on"
    if resume:
        # Resuming treatment changes the participant's status: a participant write.
        require_page(Permission.PARTICIPANT_WRITE)
    back = safe_next(request.form.get("next"), url_for("today.alert_page", alert_id=alert_id))
    note = (request.form.get("note") or "").strip()
    problem = (
        "required: say what was done"
        if not note
        else (f"at most {RESOLVE_NOTE_MAX} characters" if len(note) > RESOLVE_NOTE_MAX else None)
    )
    if problem:
        return _refuse_form(alert, back, FormError(alert_id, "resolve", problem, note))
    db = get_session()
    try:
        alerts.resolve(
            session=db,
            alert=alert,
            user=user,
            note=note,
            now=utcnow(),
            resume_treatment=resume,
        )
    except ValidationFailed as exc:
        message = exc.fields["note"][0] if "note" in exc.fields else exc.message
        return _refuse_form(alert, back, FormError(alert_id, "resolve", message, note))
    except Conflict:
        db.rollback()
        flash(
            f"The alert for {_code_of(alert)} was already resolved by "
            f"{_name_of(alert.resolved_by_user_id)}.",
            "info",
        )
        return redirect(back)
    db.commit()
    flash(f"Alert for {_code_of(alert)} resolved.", "info")
    return redirect(back)
