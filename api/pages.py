"""Server-rendered staff pages: log in, log out, change password."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from api.page_kit import safe_next
from api.rate_limits import client_key, sign_in_throttle
from server.auth import service
from server.auth.web import SESSION_KEY, StaffPrincipal
from server.clock import utcnow
from server.db import get_session

bp = Blueprint("pages", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    """The staff login form."""
    if request.method == "GET":
        return render_template("login.html", email="", error=None)
    email = request.form.get("email", "")
    password = request.form.get("password", "")
    db = get_session()
    try:
        user = service.sign_in(
            session=db,
            throttle=sign_in_throttle(),
            email=email,
            password=password,
            client=client_key(),
            now=utcnow(),
        )
    except service.AuthError as exc:
        db.commit()
        return render_template("login.html", email=email, error=str(exc)), 401
    token = service.start_session(session=db, user=user, now=utcnow())
    db.commit()
    session.clear()  # a new session on login (no fixation)
    session.permanent = True
    session[SESSION_KEY] = token
    login_user(StaffPrincipal(user))
    return redirect(safe_next(request.args.get("next"), url_for("today.today")))


@bp.post("/logout")
def logout() -> Response:
    """End the staff session, server-side too: a copy of the cookie is worthless afterwards."""
    db = get_session()
    service.end_session(session=db, token=session.get(SESSION_KEY), reason="logout", now=utcnow())
    db.commit()
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("pages.login"))


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
    # Every session of this user ended with the change; this one continues under a new id.
    token = service.start_session(session=db, user=user, now=utcnow())
    db.commit()
    session[SESSION_KEY] = token
    login_user(StaffPrincipal(user))
    flash("Password changed.", "info")
    return redirect(url_for("today.today"))
