"""Pure decisions about who may do what."""

from __future__ import annotations

import enum
from collections.abc import Sequence
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


# Sign-in throttling (README, "Sign-in limits"). Nothing here ever locks an account: a pair of
# (email, client) that keeps failing waits longer and longer, while the email as a whole only ever
# imposes a short wait, and never on a client the account has signed in from before, so that
# failures sprayed from elsewhere cannot keep a nurse out when an alert arrives.
PAIR_FREE_FAILURES = 5  # table: at most 5 failures per account and client before slowing down
PAIR_MAX_DELAY = timedelta(minutes=15)
PAIR_MEMORY = timedelta(hours=24)  # a pair's failures count until a success or for a day
ACCOUNT_WINDOW = timedelta(hours=1)
ACCOUNT_FREE_FAILURES = 20  # per hour, from every client together, before spacing begins
ACCOUNT_SPACING = timedelta(seconds=60)  # then one attempt a minute from unfamiliar clients
ACCOUNT_CEILING = 100  # ASVS 2.2.1: never more than 100 failures per account per hour
KNOWN_CLIENT_MEMORY = timedelta(days=30)


def pair_delay(failures: int) -> timedelta:
    """How long a client waits after its latest failure on one email, having failed this often:
    nothing for the first five, then 1 s, 2 s, 4 s, … capped at 15 minutes."""
    if failures < PAIR_FREE_FAILURES:
        return timedelta(0)
    exponent = min(failures - PAIR_FREE_FAILURES, 20)  # 2**20 s is far past the cap
    return min(PAIR_MAX_DELAY, timedelta(seconds=2**exponent))


def sign_in_wait(
    *,
    pair_failures: Sequence[datetime],
    account_failures: Sequence[datetime],
    is_known_client: bool,
    now: datetime,
) -> timedelta:
    """How long this client must wait before its next sign-in attempt on this email (zero: it may
    try now).

    `pair_failures` are this client's failures on this email since its last success,
    `account_failures` those of every client on this email; `is_known_client` says whether this
    client has signed in to it successfully lately. The answer depends on counts and times only,
    never on whether the email belongs to anyone.
    """
    waits = [timedelta(0)]
    pair = sorted(t for t in pair_failures if t > now - PAIR_MEMORY)
    if pair:
        waits.append(pair[-1] + pair_delay(len(pair)) - now)
    recent = sorted(t for t in account_failures if t > now - ACCOUNT_WINDOW)
    if len(recent) >= ACCOUNT_CEILING:
        # Until enough of the hour's failures age out to leave room for one more.
        waits.append(recent[len(recent) - ACCOUNT_CEILING] + ACCOUNT_WINDOW - now)
    if not is_known_client and len(recent) >= ACCOUNT_FREE_FAILURES:
        waits.append(recent[-1] + ACCOUNT_SPACING - now)
    return max(waits)


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
