"""Pure decisions about who may do what."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from server.auth.models import Role


class Permission(enum.StrEnum):
    PARTICIPANT_READ = "participant:read"
    PARTICIPANT_WRITE = "participant:write"
    SCHEDULE_WRITE = "schedule:write"
    ALERT_ACK = "alert:ack"
    RESULT_WRITE = "result:write"
    MANAGE_USERS = "admin:users"
    MANAGE_SITES = "admin:sites"
    SEE_PHONE_NUMBERS = "participant:phone"


_ALL_READ = {Permission.PARTICIPANT_READ}
_CARE = _ALL_READ | {Permission.SEE_PHONE_NUMBERS, Permission.ALERT_ACK}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(
        _CARE
        | {
            Permission.PARTICIPANT_WRITE,
            Permission.SCHEDULE_WRITE,
            Permission.MANAGE_USERS,
            Permission.MANAGE_SITES,
            Permission.RESULT_WRITE,
        }
    ),
    Role.INVESTIGATOR: frozenset(
        _CARE | {Permission.PARTICIPANT_WRITE, Permission.SCHEDULE_WRITE, Permission.RESULT_WRITE}
    ),
    # A lab's integration account is a coordinator account of the sites it serves.
    Role.COORDINATOR: frozenset(
        _CARE | {Permission.PARTICIPANT_WRITE, Permission.SCHEDULE_WRITE, Permission.RESULT_WRITE}
    ),
    # Nurses act on alerts and record completed draws, but enrolment is the coordinators' job.
    Role.NURSE: frozenset(_CARE | {Permission.SCHEDULE_WRITE}),
    # Sponsor monitors review; they never write and never see phone numbers.
    Role.MONITOR: frozenset(_ALL_READ),
}


def has_permission(role: Role, permission: Permission) -> bool:
    """Whether a role grants a permission."""
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def lockout_delay_seconds(failed_attempts: int) -> int:
    """How long an account stays locked after this many consecutive failed logins."""
    if failed_attempts < 5:
        return 0
    # 5 failures: 1 minute, doubling, capped at 1 hour (well under ASVS's 100 per hour).
    return int(min(3600, 60 * 2 ** (failed_attempts - 5)))


def session_end_reason(
    *,
    created_at: datetime,
    last_seen_at: datetime,
    now: datetime,
    idle_limit: timedelta,
    absolute_limit: timedelta,
) -> str | None:
    """Why a browser session must end now ("idle", "expired"), or None if it may go on."""
    if now - created_at >= absolute_limit:
        return "expired"
    if now - last_seen_at >= idle_limit:
        return "idle"
    return None
