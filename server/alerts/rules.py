"""Pure decisions about alerts: each alert's level, which route it takes, when its SMS may go out
(night, the morning digest), which tier is due, acknowledgement codes and SMS replies.

Levels (each kind's default below; a protocol file's `alerts:` block or the site's
`escalation_policy.levels` may set another, the site's word last):

- critical: act now. SMS at once, day or night (the site's `page_24_7`), reply ACK, escalates
  through the `clinical` route, 15 minutes a tier: the on-call nurse (the rota's primary; a phone
  call after 10 minutes unacknowledged; keypad 1 acknowledges), after 15 minutes every nurse and
  the coordinator, after 15 more the investigators by SMS and a call at once, and 15 minutes
  after that, still unacknowledged, the site's fail-safe (45 minutes after the first SMS, no
  repeats). CLSI GP47 asks a critical result to reach a responsible clinician within an hour
  and the Joint Commission (NPSG 2C) a fail-safe when the caregiver cannot be reached: the
  fail-safe still has 15 minutes of that hour. A call nobody answers (no answer, busy,
  voicemail) moves on at once, so +45 is the latest, not the usual, moment.
- urgent: act today. SMS at once in the day, held until the night ends (21:00-08:00 site time)
  unless `page_24_7` names it; reply ACK; escalates through the `urgent` route: nurses and
  coordinators, after 60 minutes the investigator (each step also held at night).
- routine: a task. Never an SMS at night nor at once: one SMS per person at the site's morning
  digest (08:00 Monday to Friday, site time), listing every task due to them; no reply is needed
  and it never escalates (it stays on Today until someone resolves it).

System alerts (a stalled escalation, a dead route) go to the admins (`operator` route).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from server.alerts.models import AlertKind, Level

# Recipient groups a tier can name (resolved against the site's staff by the service).
ON_CALL_NURSES = "on_call_nurses"
NURSES_AND_COORDINATORS = "nurses_and_coordinators"
COORDINATORS = "coordinators"
INVESTIGATORS = "investigators"
ADMINS = "admins"
# The person on call now in a layer of the site's rota (server/oncall); a site with a primary rota
# also reaches its primary through ON_CALL_NURSES (else: the nurses marked on call).
ROTA_PRIMARY = "rota:primary"
ROTA_BACKUP = "rota:backup"
RECIPIENT_GROUPS = (
    ON_CALL_NURSES,
    NURSES_AND_COORDINATORS,
    COORDINATORS,
    INVESTIGATORS,
    ADMINS,
    ROTA_PRIMARY,
    ROTA_BACKUP,
)

# The level of each kind when neither the protocol nor the site says otherwise.
DEFAULT_LEVEL_OF_KIND: Mapping[AlertKind, Level] = {
    AlertKind.CTDNA_POSITIVE: Level.CRITICAL,
    AlertKind.CTDNA_POSITIVE_BASELINE: Level.CRITICAL,
    AlertKind.PROGRESSION: Level.CRITICAL,
    AlertKind.CRITICAL_ANSWER: Level.URGENT,
    AlertKind.REDRAW_NEEDED: Level.ROUTINE,
    AlertKind.RESULT_OVERDUE: Level.ROUTINE,
    AlertKind.MISSED_WINDOW: Level.ROUTINE,
    # The entry gate decided, or waits for the stop date: a task, never a page (issue 17).
    AlertKind.ENTRY_GATE: Level.ROUTINE,
    AlertKind.DEAD_ROUTE: Level.URGENT,
    AlertKind.OPERATOR: Level.CRITICAL,
}

# The system's own alerts reach the admins whatever their level.
SYSTEM_KINDS = frozenset({AlertKind.DEAD_ROUTE, AlertKind.OPERATOR})
# The route each level takes (the names predate levels: a site's own `clinical` route is still
# what its critical alerts follow).
ROUTE_OF_LEVEL: Mapping[Level, str] = {
    Level.CRITICAL: "clinical",
    Level.URGENT: "urgent",
    Level.ROUTINE: "follow_up",
}

# The default escalation policy of a site (a site may store its own in site.escalation_policy;
# keys it leaves out keep these values).
DEFAULT_POLICY: dict[str, Any] = {
    "routes": {
        # Critical: the on-call nurse now, then every nurse and the coordinator after 15 minutes,
        # then the investigators after 15 more, then (no repeats) the site's fail-safe 15 minutes
        # later: +45 min, inside CLSI GP47's hour (issue 16).
        "clinical": {
            "tiers": [
                # SMS now, a phone call after 10 minutes unacknowledged.
                {"recipients": ON_CALL_NURSES, "timeout_minutes": 15, "call_after_minutes": 10},
                {"recipients": NURSES_AND_COORDINATORS, "timeout_minutes": 15},
                # The last people before the fail-safe: SMS and a call at once.
                {"recipients": INVESTIGATORS, "timeout_minutes": 15, "channel": "both"},
            ],
            "repeats": 0,
        },
        # Urgent: the nurses and coordinators, the investigator after an hour unanswered.
        "urgent": {
            "tiers": [
                {"recipients": NURSES_AND_COORDINATORS, "timeout_minutes": 60},
                {"recipients": INVESTIGATORS, "timeout_minutes": 120},
            ],
            "repeats": 0,
        },
        # Routine tasks: the coordinators' morning digest (a later tier only stands in when
        # nobody of an earlier one has a verified phone; routine never escalates by time).
        "follow_up": {
            "tiers": [{"recipients": COORDINATORS}, {"recipients": INVESTIGATORS}],
            "repeats": 0,
        },
        # The system itself needs a person: a stalled escalation, a dead route.
        "operator": {
            "tiers": [{"recipients": ADMINS, "timeout_minutes": 30}],
            "repeats": 1,
        },
    },
    # Level changes by kind, e.g. {"redraw_needed": "urgent"} (the site's word over the protocol's).
    "levels": {},
    # Which alerts page at night: levels and alert kinds (routine never does).
    "page_24_7": [Level.CRITICAL.value, AlertKind.CRITICAL_ANSWER.value],
    # Site time: urgent SMS (and any not in page_24_7) wait for its end.
    "night": {"start": "21:00", "end": "08:00"},
    # Routine tasks go out at this site time on these weekdays (0 = Monday), one SMS per person.
    "digest": {"at": "08:00", "weekdays": [0, 1, 2, 3, 4]},
}


def setting(policy: Mapping[str, Any] | None, key: str) -> Any:
    """One setting of a site's policy, else the default."""
    value = (policy or {}).get(key)
    return DEFAULT_POLICY[key] if value is None else value


# The settings of a site's policy that decide how alerts of each level reach people (the rest of
# a policy is its routes). PUT /api/v1/sites/{id}/alert-levels sets them.
LEVEL_SETTINGS = ("levels", "page_24_7", "night", "digest")
# Kinds a site may give another level: the system's own alerts always reach the admins as they are.
CLINICAL_KINDS = tuple(kind for kind in AlertKind if kind not in SYSTEM_KINDS)


def level_settings(policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """A site's level settings as they apply (its own, else the defaults)."""
    return {key: setting(policy, key) for key in LEVEL_SETTINGS}


def level_of(
    kind: AlertKind, *, protocol_level: str | None, policy: Mapping[str, Any] | None
) -> Level:
    """An alert kind's level: the site's policy, else the protocol's, else the kind's default."""
    site_level = (setting(policy, "levels") or {}).get(kind.value)
    for chosen in (site_level, protocol_level):
        if chosen in {lvl.value for lvl in Level}:
            return Level(chosen)
    return DEFAULT_LEVEL_OF_KIND.get(kind, Level.ROUTINE)


def needs_ack(level: Level) -> bool:
    """Whether the alert's SMS asks for an ACK reply (and it escalates until one comes)."""
    return level is not Level.ROUTINE


def pages_at_night(kind: AlertKind, level: Level, policy: Mapping[str, Any] | None) -> bool:
    """Whether the alert's SMS may go out at night: its level or its kind is in `page_24_7`;
    routine never."""
    if level is Level.ROUTINE:
        return False
    listed = set(setting(policy, "page_24_7") or ())
    return level.value in listed or kind.value in listed


def route_name(kind: AlertKind, level: Level) -> str:
    """The route an alert takes: admins for the system's alerts, else its level's route."""
    return "operator" if kind in SYSTEM_KINDS else ROUTE_OF_LEVEL[level]


def route(policy: Mapping[str, Any] | None, kind: AlertKind, level: Level) -> dict[str, Any]:
    """The route (tiers, repeats) an alert takes under a policy."""
    routes = {**DEFAULT_POLICY["routes"], **((policy or {}).get("routes") or {})}
    name = route_name(kind, level)
    return dict(routes.get(name) or DEFAULT_POLICY["routes"][name])


# How a tier reaches people: SMS (the default), a phone call, or both at once.
CHANNELS = ("sms", "call", "both")


@dataclass(frozen=True)
class Tier:
    """One escalation step (`timeout` None: it never times out). `channel`: sms, call or both;
    `call_after`: an SMS tier also calls its people when still unacknowledged this long after
    its SMS (None: never)."""

    number: int
    recipients: str
    timeout: timedelta | None
    channel: str = "sms"
    call_after: timedelta | None = None

    @property
    def texts(self) -> bool:
        return self.channel in ("sms", "both")

    @property
    def calls_at_once(self) -> bool:
        return self.channel in ("call", "both")


def tiers(route_: Mapping[str, Any]) -> list[Tier]:
    """The route's tiers, numbered from 1."""
    return [
        Tier(
            i + 1,
            t["recipients"],
            timedelta(minutes=int(t["timeout_minutes"]))
            if t.get("timeout_minutes") is not None
            else None,
            t.get("channel") if t.get("channel") in CHANNELS else "sms",
            timedelta(minutes=int(t["call_after_minutes"]))
            if t.get("call_after_minutes") is not None
            else None,
        )
        for i, t in enumerate(route_["tiers"])
    ]


def next_step(
    route_: Mapping[str, Any], current_tier: int, repeats_done: int
) -> tuple[int, int] | None:
    """After `current_tier` timed out unanswered: (tier to notify, repeats done), or None when the
    route is exhausted. The last tier repeats `repeats` times."""
    chain = tiers(route_)
    if current_tier < len(chain):
        return current_tier + 1, repeats_done
    if repeats_done < int(route_.get("repeats", 0)):
        return len(chain), repeats_done + 1
    return None


def _clock(text: str) -> time:
    return time.fromisoformat(text)


def _local_time(moment: datetime, zone: ZoneInfo) -> tuple[datetime, time]:
    local = moment.astimezone(zone)
    return local, local.time().replace(tzinfo=None)


def is_night(moment: datetime, zone: ZoneInfo, night: Mapping[str, str]) -> bool:
    """Whether a moment falls in the site's night (start..end, across midnight when end < start)."""
    start, end = _clock(night["start"]), _clock(night["end"])
    _, now = _local_time(moment, zone)
    if start <= end:
        return start <= now < end
    return now >= start or now < end


def night_end(moment: datetime, zone: ZoneInfo, night: Mapping[str, str]) -> datetime:
    """The first moment at or after `moment` outside the night."""
    if not is_night(moment, zone, night):
        return moment
    end = _clock(night["end"])
    local, now = _local_time(moment, zone)
    day = local.date() if now < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, zone).astimezone(moment.tzinfo)


def next_digest(moment: datetime, zone: ZoneInfo, policy: Mapping[str, Any] | None) -> datetime:
    """The first morning digest at or after `moment` (`digest`: its site time and weekdays)."""
    digest = setting(policy, "digest")
    at = _clock(digest.get("at") or DEFAULT_POLICY["digest"]["at"])
    weekdays = digest.get("weekdays") or list(range(7))
    local = moment.astimezone(zone)
    day = local.date()
    for _ in range(8):
        candidate = datetime.combine(day, at, zone)
        if day.weekday() in weekdays and candidate >= local:
            return candidate.astimezone(moment.tzinfo)
        day += timedelta(days=1)
    return moment


def send_moment(
    *,
    kind: AlertKind,
    level: Level,
    moment: datetime,
    zone: ZoneInfo,
    policy: Mapping[str, Any] | None,
) -> datetime:
    """When an alert SMS due at `moment` may go out: routine at the next morning digest; critical
    and urgent at once, unless it is night and the site does not page them at night."""
    if level is Level.ROUTINE:
        return next_digest(moment, zone, policy)
    if pages_at_night(kind, level, policy):
        return moment
    return night_end(moment, zone, setting(policy, "night"))


# Staff SMS are in the site's language, read from its country (ISO 3166); elsewhere English.
LANGUAGE_OF_COUNTRY: Mapping[str, str] = {
    "FR": "fr",
    "MC": "fr",
    "CN": "zh",  # the catalog is Simplified Chinese
}


def staff_locale(country: str | None) -> str:
    """The language of a site's staff SMS."""
    return LANGUAGE_OF_COUNTRY.get((country or "").upper(), "en")


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
