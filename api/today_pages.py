"""Today: what needs the care team now (alerts, overdue events and results, unreachable
participants, decisions due, dead escalation routes), and the alert pages."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from server.auth.scoping import sites_query
from server.clock import utcnow
from server.db import get_session

bp = Blueprint("today", __name__)


@bp.get("/")
@login_required
def today() -> str:
    """The signed-in landing page: today's work for my sites."""
    user = current_user.user
    sites = get_session().exec(sites_query(user)).all()
    return render_template("home.html", user=user, sites=sites, now=utcnow())


def _alert_for(alert_id: int) -> Any:
    from sqlmodel import col, select

    from server.alerts.models import Alert
    from server.auth.scoping import visible_site_ids_subquery

    alert = (
        get_session()
        .exec(
            select(Alert).where(
                Alert.id == alert_id,
                col(Alert.site_id).in_(visible_site_ids_subquery(current_user.user)),
            )
        )
        .first()
    )
    if alert is None:
        abort(404)
    return alert


@bp.get("/alerts")
@login_required
def alerts_page() -> str:
    """Open and acknowledged alerts of my sites (the link in alert SMS)."""
    from sqlmodel import col, select

    from server.alerts.models import Alert, AlertState
    from server.auth.scoping import visible_site_ids_subquery
    from server.participants.models import Participant

    db = get_session()
    rows = db.exec(
        select(Alert, Participant.study_code)
        .join(Participant, col(Participant.id) == col(Alert.participant_id), isouter=True)
        .where(
            col(Alert.site_id).in_(visible_site_ids_subquery(current_user.user)),
            col(Alert.state) != AlertState.RESOLVED,
        )
        .order_by(col(Alert.opened_at).desc())
    ).all()
    return render_template("alerts.html", rows=rows)


@bp.get("/alerts/<int:alert_id>")
@login_required
def alert_page(alert_id: int) -> str:
    """One alert: what it is about, its timeline, acknowledge and resolve."""
    from sqlmodel import col, select

    from server.alerts.models import AlertLog
    from server.auth.rules import Permission, has_permission
    from server.participants.models import Participant

    alert = _alert_for(alert_id)
    db = get_session()
    participant = db.get(Participant, alert.participant_id) if alert.participant_id else None
    timeline = db.exec(
        select(AlertLog).where(AlertLog.alert_id == alert.id).order_by(col(AlertLog.id))
    ).all()
    return render_template(
        "alert.html",
        alert=alert,
        participant=participant,
        timeline=timeline,
        can_act=has_permission(current_user.user.role, Permission.ALERT_ACK),
    )


@bp.post("/alerts/<int:alert_id>/acknowledge")
@login_required
def alert_acknowledge(alert_id: int) -> Response:
    """Acknowledge from the web page (one click)."""
    from server.alerts import service as alerts
    from server.auth.rules import Permission, has_permission

    alert = _alert_for(alert_id)
    if not has_permission(current_user.user.role, Permission.ALERT_ACK):
        abort(403)
    db = get_session()
    alerts.acknowledge(
        session=db,
        alert=alert,
        user=current_user.user,
        channel="web",
        now=utcnow(),
        note=request.form.get("note") or None,
    )
    db.commit()
    flash("Alert acknowledged: further tiers stopped.", "info")
    return redirect(url_for("today.alert_page", alert_id=alert_id))


@bp.post("/alerts/<int:alert_id>/resolve")
@login_required
def alert_resolve(alert_id: int) -> Response | tuple[str, int]:
    """Resolve from the web page with a note."""
    from server.alerts import service as alerts
    from server.auth.rules import Permission, has_permission
    from server.errors import DomainError

    alert = _alert_for(alert_id)
    if not has_permission(current_user.user.role, Permission.ALERT_ACK):
        abort(403)
    db = get_session()
    try:
        alerts.resolve(
            session=db,
            alert=alert,
            user=current_user.user,
            note=request.form.get("note", ""),
            now=utcnow(),
            resume_treatment=request.form.get("resume_treatment") == "on",
        )
    except DomainError as exc:
        db.rollback()
        flash(exc.message, "error")
        return redirect(url_for("today.alert_page", alert_id=alert_id))
    db.commit()
    flash("Alert resolved.", "info")
    return redirect(url_for("today.alerts_page"))
