"""Server-rendered staff pages: log in, log out, home, change password."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from server.auth import service
from server.auth.scoping import sites_query
from server.auth.web import StaffPrincipal
from server.clock import utcnow
from server.db import get_session

bp = Blueprint("pages", __name__)


def _safe_next(target: str | None) -> str:
    # Only same-site relative paths: an open redirect would help phishing.
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("pages.home")


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    """The staff login form."""
    if request.method == "GET":
        return render_template("login.html", email="", error=None)
    email = request.form.get("email", "")
    password = request.form.get("password", "")
    db = get_session()
    try:
        user = service.authenticate(session=db, email=email, password=password, now=utcnow())
    except service.AuthError as exc:
        db.commit()
        return render_template("login.html", email=email, error=str(exc)), 401
    db.commit()
    session.clear()  # a new session on login (no fixation)
    session.permanent = True
    login_user(StaffPrincipal(user))
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> Response:
    """End the staff session."""
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("pages.login"))


@bp.get("/")
@login_required
def home() -> str:
    """The signed-in landing page."""
    user = current_user.user
    sites = get_session().exec(sites_query(user)).all()
    return render_template("home.html", user=user, sites=sites)


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password() -> str | Response | tuple[str, int]:
    """Change one's own password."""
    if request.method == "GET":
        return render_template("change_password.html", error=None)
    user = current_user.user
    new = request.form.get("new", "")
    problem = service.password_problem(new)
    if problem:
        return render_template("change_password.html", error=f"New password {problem}."), 422
    db = get_session()
    try:
        service.change_password(
            session=db, user=user, current=request.form.get("current", ""), new=new, now=utcnow()
        )
    except service.AuthError as exc:
        return render_template("change_password.html", error=str(exc)), 422
    db.commit()
    # The session id embeds the password timestamp: log in again with the new one.
    login_user(StaffPrincipal(user))
    flash("Password changed.", "info")
    return redirect(url_for("pages.home"))


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
    return redirect(url_for("pages.alert_page", alert_id=alert_id))


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
        return redirect(url_for("pages.alert_page", alert_id=alert_id))
    db.commit()
    flash("Alert resolved.", "info")
    return redirect(url_for("pages.alerts_page"))
