"""Pure decisions about alerts: which route an alert kind takes, which tier is due, business hours,
acknowledgement codes and SMS replies."""

from __future__ import annotations

import re
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


_ACK_RE = re.compile(r"^\s*(?:ack|ok|accuse|确认)?\s*[:#]?\s*(\d{4})\s*[.!]?\s*$", re.IGNORECASE)


def parse_ack(body: str) -> str | None:
    """The 4-digit code of an acknowledgement reply ("ACK 4821", "ack4821", "4821"), or None."""
    match = _ACK_RE.match(body)
    return match.group(1) if match else None


def looks_like_ack(body: str) -> bool:
    """Whether a reply tries to acknowledge (so a wrong code gets an answer, not silence)."""
    return bool(re.match(r"^\s*(ack|ok|accuse|确认)\b", body, re.IGNORECASE)) or bool(
        re.match(r"^\s*\d{3,6}\s*$", body)
    )
