"""Pure decisions about alerts: which route an alert kind takes, which tier is due, business hours,
acknowledgement codes and SMS replies."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from server.alerts.models import AlertKind, Severity

# Recipient groups a tier can name (resolved against the site's staff by the service).
ON_CALL_NURSES = "on_call_nurses"
NURSES_AND_COORDINATORS = "nurses_and_coordinators"
COORDINATORS = "coordinators"
INVESTIGATORS = "investigators"
ADMINS = "admins"
RECIPIENT_GROUPS = (ON_CALL_NURSES, NURSES_AND_COORDINATORS, COORDINATORS, INVESTIGATORS, ADMINS)

# The default escalation policy of a site (a site may store its own in site.escalation_policy).
DEFAULT_POLICY: dict[str, Any] = {
    "routes": {
        # A positive ctDNA or a progression: the on-call nurse now, then every nurse and the
        # coordinator after 15 minutes, then the investigator after 30 more; around the clock.
        "clinical": {
            "hours": "24/7",
            "tiers": [
                {"recipients": ON_CALL_NURSES, "timeout_minutes": 15},
                {"recipients": NURSES_AND_COORDINATORS, "timeout_minutes": 30},
                {"recipients": INVESTIGATORS, "timeout_minutes": 30},
            ],
            "repeats": 2,
        },
        # Follow-up work (a redraw, an overdue result, a missed draw): coordinators in business
        # hours, the investigator the next working day if nobody acknowledged.
        "follow_up": {
            "hours": "business",
            "tiers": [
                {"recipients": COORDINATORS, "timeout_minutes": 24 * 60},
                {"recipients": INVESTIGATORS, "timeout_minutes": 24 * 60},
            ],
            "repeats": 0,
        },
        # The system itself needs a person: a stalled escalation, a dead route.
        "operator": {
            "hours": "24/7",
            "tiers": [{"recipients": ADMINS, "timeout_minutes": 30}],
            "repeats": 1,
        },
    },
    "business_hours": {"start": "08:00", "end": "18:00", "weekdays": [0, 1, 2, 3, 4]},
}

ROUTE_OF_KIND = {
    AlertKind.CTDNA_POSITIVE: "clinical",
    AlertKind.CTDNA_POSITIVE_BASELINE: "clinical",
    AlertKind.PROGRESSION: "clinical",
    AlertKind.CRITICAL_ANSWER: "clinical",
    AlertKind.REDRAW_NEEDED: "follow_up",
    AlertKind.RESULT_OVERDUE: "follow_up",
    AlertKind.MISSED_WINDOW: "follow_up",
    AlertKind.DEAD_ROUTE: "operator",
    AlertKind.OPERATOR: "operator",
}

SEVERITY_OF_KIND = {
    AlertKind.CTDNA_POSITIVE: Severity.CRITICAL,
    AlertKind.CTDNA_POSITIVE_BASELINE: Severity.CRITICAL,
    AlertKind.PROGRESSION: Severity.CRITICAL,
    AlertKind.CRITICAL_ANSWER: Severity.HIGH,
}


@dataclass(frozen=True)
class Tier:
    """One escalation step."""

    number: int
    recipients: str
    timeout: timedelta


def route(policy: dict[str, Any], kind: AlertKind) -> dict[str, Any]:
    """The route (tiers, hours, repeats) an alert kind takes under a policy."""
    routes = {**DEFAULT_POLICY["routes"], **(policy.get("routes") or {})}
    return dict(routes[ROUTE_OF_KIND.get(kind, "follow_up")])


def tiers(route_: dict[str, Any]) -> list[Tier]:
    """The route's tiers, numbered from 1."""
    return [
        Tier(i + 1, t["recipients"], timedelta(minutes=int(t["timeout_minutes"])))
        for i, t in enumerate(route_["tiers"])
    ]


def next_step(
    route_: dict[str, Any], current_tier: int, repeats_done: int
) -> tuple[int, int] | None:
    """After `current_tier` timed out unanswered: (tier to notify, repeats done), or None when the
    route is exhausted. The last tier repeats `repeats` times."""
    chain = tiers(route_)
    if current_tier < len(chain):
        return current_tier + 1, repeats_done
    if repeats_done < int(route_.get("repeats", 0)):
        return len(chain), repeats_done + 1
    return None


def in_business_hours(moment: datetime, zone: ZoneInfo, hours: dict[str, Any]) -> bool:
    """Whether a moment falls in the site's business hours."""
    local = moment.astimezone(zone)
    start, end = time.fromisoformat(hours["start"]), time.fromisoformat(hours["end"])
    return local.weekday() in hours["weekdays"] and start <= local.time().replace(tzinfo=None) < end


def next_business_moment(moment: datetime, zone: ZoneInfo, hours: dict[str, Any]) -> datetime:
    """The first moment at or after `moment` inside business hours (site local time)."""
    if in_business_hours(moment, zone, hours):
        return moment
    start = time.fromisoformat(hours["start"])
    local = moment.astimezone(zone)
    day = local.date()
    if local.time().replace(tzinfo=None) >= start:
        day += timedelta(days=1)
    for _ in range(8):
        if day.weekday() in hours["weekdays"]:
            return datetime.combine(day, start, zone).astimezone(moment.tzinfo)
        day += timedelta(days=1)
    return moment


# --- acknowledgement codes -----------------------------------------------------------------------
#
# Six digits, 100000-999999 (no leading zero to lose): short to type, 900,000 values. A code counts
# only from a phone it was sent to (service.acknowledge_by_sms), so a guess has to come from a
# recipient's own number, and it can only hit an open alert sent to that number; even ignoring
# that, one guess names one of a site's N open alerts with probability N / 900,000 (2 in 100,000
# for 20 open alerts), and a phone gets SMS_ACK_REFUSALS_PER_DAY tries a day: 10 * 20 / 900,000 =
# 0.02 % a day for a site with 20 open alerts, against 0.2 % per single guess with four digits.
ACK_CODE_LOW = 100_000
ACK_CODE_SPACE = 900_000
# A Feistel network over 949 x 949 = 900,601 >= 900,000 values, walked back into range.
_FEISTEL_HALF = 949
_FEISTEL_ROUNDS = 8

# A phone that sent this many refused ACKs in 24 hours is not believed for the rest of that
# window, even with a right code: a guesser gets ten tries a day, not thousands. Escalation goes
# on and the web page still acknowledges, so the cost of a false stop is more people paged, never
# a silenced alert. A nurse who mistypes a code twice is far from it.
SMS_ACK_REFUSALS_PER_DAY = 10
# Answers to refused or unreadable ACKs per phone per day: we cannot be made to send SMS at will.
ACK_UNKNOWN_REPLIES_PER_DAY = 5


def _feistel_round(key: bytes, round_: int, value: int) -> int:
    digest = hmac.new(key, f"{round_}:{value}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % _FEISTEL_HALF


def permute_code_index(key: bytes, index: int) -> int:
    """A keyed permutation of range(900,000): distinct indexes give distinct values, and without
    the key the value of one index says nothing about another's."""
    value = index % ACK_CODE_SPACE
    while True:
        left, right = divmod(value, _FEISTEL_HALF)
        for round_ in range(_FEISTEL_ROUNDS):
            left, right = right, (left + _feistel_round(key, round_, right)) % _FEISTEL_HALF
        value = left * _FEISTEL_HALF + right
        # Cycle-walking: the permutation of 900,601 values, re-applied until it lands in range,
        # is a permutation of the first 900,000 (it terminates: the cycle returns to its start).
        if value < ACK_CODE_SPACE:
            return value


def ack_code(key: bytes, alert_id: int, step: int = 0) -> str:
    """The six-digit acknowledgement code of an alert id (`step` > 0: the next candidates, when
    an alert 900,000 ids older is still open with the same code)."""
    return f"{ACK_CODE_LOW + permute_code_index(key, alert_id + step)}"


_ACK_RE = re.compile(
    r"^\s*(?:ack|ok|accuse|确认)?\s*[:#]?\s*"
    r"(?:(?P<a>[0-9]{3})[ .-]?(?P<b>[0-9]{3})|(?P<legacy>[0-9]{4}))"
    r"\s*[.!]?\s*$",
    re.IGNORECASE,
)


def _normal(body: str) -> str:
    # Full-width digits and letters (a Chinese or Japanese keyboard) read as ASCII ones.
    return unicodedata.normalize("NFKC", body)


def parse_ack(body: str) -> str | None:
    """The code of an acknowledgement reply ("ACK 482113", "ack482113", "482 113", "482113"; the
    four digits of an older alert), or None."""
    match = _ACK_RE.match(_normal(body))
    if not match:
        return None
    return match["legacy"] or f"{match['a']}{match['b']}"


def looks_like_ack(body: str) -> bool:
    """Whether a reply tries to acknowledge (so a wrong code gets an answer, not silence)."""
    text = _normal(body)
    return bool(re.match(r"^\s*(ack|ok|accuse|确认)\b", text, re.IGNORECASE)) or bool(
        re.match(r"^\s*[0-9][0-9 .-]{1,8}[0-9]\s*$", text)
    )
