"""Wiring staff authentication into Flask: cookie sessions for pages, bearer tokens for the API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, current_app, flash, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin

from server.auth.models import ApiToken, StaffUser
from server.auth.rules import Permission, has_permission
from server.auth.service import check_session, user_for_token
from server.clock import utcnow
from server.db import get_session
from server.errors import DomainError, Forbidden, NotFound

login_manager = LoginManager()
login_manager.login_view = "pages.login"
login_manager.session_protection = "strong"


class Unauthorized(DomainError):
    """No valid credentials."""

    status = 401
    code = "unauthorized"


class StaffPrincipal(UserMixin):
    """A logged-in staff user, as flask-login sees them."""

    def __init__(self, user: StaffUser) -> None:
        self.user = user

    def get_id(self) -> str:
        # The prefix keeps staff ids apart from any other principal type (participants later).
        # The password timestamp makes a password change end every other session.
        return f"staff:{self.user.id}:{int(self.user.password_changed_at.timestamp())}"


@login_manager.user_loader
def _load_user(user_id: str) -> StaffPrincipal | None:
    parts = user_id.split(":")
    if len(parts) != 3 or parts[0] != "staff" or not parts[1].isdigit():
        return None
    user = get_session().get(StaffUser, int(parts[1]))
    if user is None or not user.is_active:
        return None
    if str(int(user.password_changed_at.timestamp())) != parts[2]:
        return None
    # The server-side session: ended by logout, an idle timeout or the absolute limit.
    db = get_session()
    why = check_session(
        session=db,
        user_id=user.id,  # type: ignore[arg-type]
        token=session.get(SESSION_KEY),
        now=utcnow(),
        idle_limit=timedelta(minutes=current_app.config["STAFF_SESSION_IDLE_MINUTES"]),
        absolute_limit=timedelta(hours=current_app.config["STAFF_SESSION_MAX_HOURS"]),
    )
    if db.dirty:
        # Only when the session was touched (at most once a minute) or ended: most page views
        # write nothing here and go on in the same transaction.
        db.commit()
    if why is not None:
        g.session_end_reason = why
        session.pop(SESSION_KEY, None)
        return None
    return StaffPrincipal(user)


SESSION_KEY = "sid"

_END_MESSAGES = {
    "idle": "You were logged out after {idle} minutes without activity. Please log in again.",
    "expired": "Your session reached its {hours}-hour limit. Please log in again.",
    "ended": "This session has ended. Please log in again.",
}


@login_manager.unauthorized_handler
def _unauthorized() -> Any:
    """Pages send the user to the login form, saying why when a session just ended."""
    reason = g.get("session_end_reason")
    message = _END_MESSAGES.get(reason or "", "Please log in to see this page.")
    flash(
        message.format(
            idle=current_app.config["STAFF_SESSION_IDLE_MINUTES"],
            hours=current_app.config["STAFF_SESSION_MAX_HOURS"],
        ),
        "info",
    )
    target = request.full_path if request.method == "GET" else None
    return redirect(url_for("pages.login", next=target.rstrip("?") if target else None))


class ApiAwareSessionInterface(SecureCookieSessionInterface):
    """Never set a session cookie on a token-authenticated call."""

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        if g.get("login_via_request"):
            return None
        return super().save_session(app, session, response)


def bearer_token() -> str | None:
    """The bearer token from the Authorization header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate_api_request() -> tuple[StaffUser, ApiToken]:
    """Authenticate an API call by its bearer token, or raise Unauthorized."""
    token = bearer_token()
    if token is None:
        raise Unauthorized("send 'Authorization: Bearer <token>' (POST /api/v1/auth/token)")
    g.login_via_request = True
    session = get_session()
    now = utcnow()
    found = user_for_token(session=session, token=token, now=now)
    if found is None:
        from server.participants.mobile import is_participant_token

        if is_participant_token(session=session, token=token):
            # A participant's app token never reaches staff endpoints, and learns nothing there.
            raise NotFound("not found")
        raise Unauthorized("the token is invalid, expired or revoked")
    user, row = found
    # Touch last_used_at at most once a minute to keep reads cheap.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
        session.add(row)
        session.commit()
    g.staff_user = user
    g.api_token = row
    return user, row


def current_staff() -> StaffUser:
    """The staff user of this API request."""
    user = g.get("staff_user")
    if user is None:
        raise Unauthorized("authentication required")
    return user  # type: ignore[no-any-return]


def require(permission: Permission) -> StaffUser:
    """The current staff user, if their role grants the permission; else 403."""
    user = current_staff()
    if not has_permission(user.role, permission):
        raise Forbidden(f"your role ({user.role.value}) may not do this")
    return user


def init_app(app: Flask) -> None:
    """Install flask-login and the cookie-less API session interface."""
    login_manager.init_app(app)
    app.session_interface = ApiAwareSessionInterface()
