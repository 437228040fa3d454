"""Staff accounts: passwords, API tokens, users and memberships."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from server import audit
from server.auth.models import ApiToken, Role, SiteMembership, StaffSession, StaffUser
from server.auth.rules import session_end_reason
from server.auth.throttle import SignInThrottle
from server.participants.models import Site

_hasher = PasswordHasher()
# Verifying against this keeps the time of a login for an unknown email like a real one.
_DUMMY_HASH = _hasher.hash("not-a-real-password")

MIN_PASSWORD_LENGTH = 12


class AuthError(Exception):
    """Login refused; the message never says whether the email exists."""


WRONG_CREDENTIALS = "email or password is wrong"


def hash_password(password: str) -> str:
    """argon2id hash of a password."""
    return _hasher.hash(password)


def password_problem(password: str) -> str | None:
    """Why a new password is unacceptable, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    return None


def hash_token(token: str) -> str:
    """SHA-256 of an opaque token; only this is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def actor_of(user: StaffUser | None) -> str:
    """The audit actor string of a staff user."""
    return f"staff:{user.id}" if user is not None else "system"


def authenticate(*, session: Session, email: str, password: str, now: datetime) -> StaffUser:
    """Check email and password; a failure is counted on the user and audited. Never locks:
    slowing repeated failures down is sign_in's throttle."""
    user = session.exec(select(StaffUser).where(StaffUser.email == email.strip().lower())).first()
    if user is None or not user.is_active:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_DUMMY_HASH, password)
        raise AuthError(WRONG_CREDENTIALS)
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        # failed_login_count (failures since the last success) is kept for the audit trail;
        # locked_until_at is no longer set: a lock is what an attacker could use against a nurse.
        user.failed_login_count += 1
        session.add(user)
        audit.record(
            session=session,
            actor=actor_of(user),
            actor_user_id=user.id,
            action="auth.login_failed",
            entity="staff_user",
            entity_id=user.id,
            now=now,
            after={"failed_login_count": user.failed_login_count},
        )
        raise AuthError(WRONG_CREDENTIALS) from None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.failed_login_count = 0
    user.locked_until_at = None
    session.add(user)
    session.flush()
    return user


def sign_in(
    *,
    session: Session,
    throttle: SignInThrottle,
    email: str,
    password: str,
    client: str,
    now: datetime,
) -> StaffUser:
    """authenticate behind the sign-in throttle: raises SignInThrottled (429, the same for any
    email) while this client must wait, before the password is even checked; AuthError for a
    wrong email or password, counted for this client and this email."""
    throttle.check(email=email, client=client, now=now)
    try:
        user = authenticate(session=session, email=email, password=password, now=now)
    except AuthError:
        throttle.record_failure(email=email, client=client, now=now)
        raise
    throttle.record_success(email=email, client=client, now=now)
    return user


def issue_token(
    *, session: Session, user: StaffUser, ttl_hours: int, now: datetime, label: str | None = None
) -> tuple[str, ApiToken]:
    """Create a bearer token; returns the clear token (shown once) and its row."""
    clear = secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,  # type: ignore[arg-type]
        token_hash=hash_token(clear),
        label=label,
        created_at=now,
        expires_at=now + timedelta(hours=ttl_hours),
    )
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="auth.token_issued",
        entity="api_token",
        entity_id=row.id,
        now=now,
        after={"label": label, "expires_at": row.expires_at},
    )
    return clear, row


def user_for_token(
    *, session: Session, token: str, now: datetime
) -> tuple[StaffUser, ApiToken] | None:
    """The active user behind a valid, unexpired, unrevoked token."""
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    user = session.get(StaffUser, row.user_id)
    if user is None or not user.is_active:
        return None
    return user, row


def revoke_token(*, session: Session, token_row: ApiToken, user: StaffUser, now: datetime) -> None:
    """Revoke a token so it no longer authenticates."""
    if token_row.revoked_at is None:
        token_row.revoked_at = now
        session.add(token_row)
        audit.record(
            session=session,
            actor=actor_of(user),
            actor_user_id=user.id,
            action="auth.token_revoked",
            entity="api_token",
            entity_id=token_row.id,
            now=now,
        )


def site_ids_of(*, session: Session, user: StaffUser) -> list[int]:
    """The ids of the sites a user belongs to."""
    rows = session.exec(select(SiteMembership.site_id).where(SiteMembership.user_id == user.id))
    return sorted(rows.all())


USER_AUDIT_FIELDS = ("email", "full_name", "role", "phone_e164", "is_phone_verified", "is_active")


def create_user(
    *,
    session: Session,
    actor: StaffUser | None,
    email: str,
    full_name: str,
    password: str,
    role: Role,
    site_ids: list[int],
    now: datetime,
    phone_e164: str | None = None,
    is_phone_verified: bool = False,
) -> StaffUser:
    """Create a staff user with site memberships."""
    user = StaffUser(
        email=email.strip().lower(),
        full_name=full_name,
        password_hash=hash_password(password),
        role=role,
        phone_e164=phone_e164,
        is_phone_verified=is_phone_verified,
        created_at=now,
        password_changed_at=now,
    )
    session.add(user)
    session.flush()
    for site_id in sorted(set(site_ids)):
        session.add(SiteMembership(user_id=user.id, site_id=site_id, created_at=now))  # type: ignore[arg-type]
    session.flush()
    after = audit.snapshot(user, USER_AUDIT_FIELDS)
    after["site_ids"] = sorted(set(site_ids))
    audit.record(
        session=session,
        actor=actor_of(actor),
        actor_user_id=actor.id if actor else None,
        action="user.create",
        entity="staff_user",
        entity_id=user.id,
        now=now,
        after=after,
    )
    return user


def update_user(
    *,
    session: Session,
    actor: StaffUser,
    user: StaffUser,
    changes: dict[str, object],
    now: datetime,
    site_ids: list[int] | None = None,
) -> StaffUser:
    """Change a staff user's role, phone, activity or sites."""
    before = audit.snapshot(user, USER_AUDIT_FIELDS)
    before["site_ids"] = site_ids_of(session=session, user=user)
    for key, value in changes.items():
        setattr(user, key, value)
    if "phone_e164" in changes and "is_phone_verified" not in changes:
        # A new number has not been verified yet.
        user.is_phone_verified = False
    session.add(user)
    if site_ids is not None:
        existing = session.exec(
            select(SiteMembership).where(SiteMembership.user_id == user.id)
        ).all()
        wanted = set(site_ids)
        for m in existing:
            if m.site_id not in wanted:
                session.delete(m)
        have = {m.site_id for m in existing}
        for sid in sorted(wanted - have):
            session.add(SiteMembership(user_id=user.id, site_id=sid, created_at=now))  # type: ignore[arg-type]
    session.flush()
    after = audit.snapshot(user, USER_AUDIT_FIELDS)
    after["site_ids"] = site_ids_of(session=session, user=user)
    if before["role"] != after["role"] or (before["is_active"] and not after["is_active"]):
        # A privilege change or a deactivation ends the user's browser sessions: log in again.
        end_sessions(session=session, user=user, reason="privileges_changed", now=now)
    audit.record(
        session=session,
        actor=actor_of(actor),
        actor_user_id=actor.id,
        action="user.update",
        entity="staff_user",
        entity_id=user.id,
        now=now,
        before=before,
        after=after,
    )
    return user


def change_password(
    *, session: Session, user: StaffUser, current: str, new: str, now: datetime
) -> None:
    """Change one's own password after checking the current one."""
    try:
        _hasher.verify(user.password_hash, current)
    except (VerificationError, InvalidHashError):
        raise AuthError("current password is wrong") from None
    user.password_hash = hash_password(new)
    user.password_changed_at = now
    session.add(user)
    end_sessions(session=session, user=user, reason="password_changed", now=now)
    # Every API token issued before the change stops working.
    for row in session.exec(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))  # type: ignore[union-attr]
    ):
        row.revoked_at = now
        session.add(row)
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="auth.password_changed",
        entity="staff_user",
        entity_id=user.id,
        now=now,
    )


SITE_AUDIT_FIELDS = (
    "code",
    "name",
    "country",
    "timezone",
    "is_active",
    "failsafe_role",
    "failsafe_phone_e164",
)


def create_site(
    *,
    session: Session,
    actor: StaffUser | None,
    code: str,
    name: str,
    country: str,
    timezone: str,
    now: datetime,
    failsafe_role: str | None = None,
    failsafe_phone_e164: str | None = None,
) -> Site:
    """Create a site (it enrols once it has a fail-safe: a role or a number)."""
    site = Site(
        code=code,
        name=name,
        country=country.upper(),
        timezone=timezone,
        failsafe_role=failsafe_role,
        failsafe_phone_e164=failsafe_phone_e164,
        created_at=now,
    )
    session.add(site)
    session.flush()
    audit.record(
        session=session,
        actor=actor_of(actor),
        actor_user_id=actor.id if actor else None,
        action="site.create",
        entity="site",
        entity_id=site.id,
        site_id=site.id,
        now=now,
        after=audit.snapshot(site, SITE_AUDIT_FIELDS),
    )
    return site


def update_site(
    *, session: Session, actor: StaffUser, site: Site, changes: dict[str, object], now: datetime
) -> Site:
    """Change a site's name, time zone, country or activity."""
    before = audit.snapshot(site, SITE_AUDIT_FIELDS)
    for key, value in changes.items():
        setattr(site, key, value)
    session.add(site)
    session.flush()
    audit.record(
        session=session,
        actor=actor_of(actor),
        actor_user_id=actor.id,
        action="site.update",
        entity="site",
        entity_id=site.id,
        site_id=site.id,
        now=now,
        before=before,
        after=audit.snapshot(site, SITE_AUDIT_FIELDS),
    )
    return site


# --- browser sessions ------------------------------------------------------------------------


def start_session(*, session: Session, user: StaffUser, now: datetime) -> str:
    """Open a server-side browser session after a successful login; returns the opaque id for
    the cookie (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    assert user.id is not None
    row = StaffSession(
        user_id=user.id, token_hash=hash_token(token), created_at=now, last_seen_at=now
    )
    session.add(row)
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="auth.login",
        entity="staff_user",
        entity_id=user.id,
        now=now,
    )
    session.flush()
    return token


def check_session(
    *,
    session: Session,
    user_id: int,
    token: str | None,
    now: datetime,
    idle_limit: timedelta,
    absolute_limit: timedelta,
) -> str | None:
    """None if the browser session is live (and mark it seen), else why it is not: "missing",
    "ended", "idle" or "expired" (an idle or expired session is ended here)."""
    if not token:
        return "missing"
    row = session.exec(
        select(StaffSession).where(
            StaffSession.token_hash == hash_token(token), StaffSession.user_id == user_id
        )
    ).first()
    if row is None:
        return "missing"
    if row.ended_at is not None:
        return "ended"
    reason = session_end_reason(
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        now=now,
        idle_limit=idle_limit,
        absolute_limit=absolute_limit,
    )
    if reason is not None:
        row.ended_at = now
        row.end_reason = reason
        session.add(row)
    elif now - row.last_seen_at >= timedelta(minutes=1):
        # At most one write a minute per session: plenty for a 15-minute idle limit.
        row.last_seen_at = now
        session.add(row)
    return reason


def end_session(*, session: Session, token: str | None, reason: str, now: datetime) -> None:
    """End one browser session (logout)."""
    if not token:
        return
    row = session.exec(
        select(StaffSession).where(StaffSession.token_hash == hash_token(token))
    ).first()
    if row is None or row.ended_at is not None:
        return
    row.ended_at = now
    row.end_reason = reason
    session.add(row)
    audit.record(
        session=session,
        actor=f"staff:{row.user_id}",
        actor_user_id=row.user_id,
        action="auth.logout",
        entity="staff_user",
        entity_id=row.user_id,
        now=now,
    )


def end_sessions(*, session: Session, user: StaffUser, reason: str, now: datetime) -> int:
    """End every live browser session of a user (password change, deactivation)."""
    rows = session.exec(
        select(StaffSession).where(
            StaffSession.user_id == user.id,
            StaffSession.ended_at.is_(None),  # type: ignore[union-attr]
        )
    ).all()
    for row in rows:
        row.ended_at = now
        row.end_reason = reason
        session.add(row)
    return len(rows)
