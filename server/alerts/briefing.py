"""What an alert's page tells the person who opened it from the SMS: what happened (the result
that triggered it, with the earlier ones and the scans, or the event or answer), what to do now
(the protocol's next step and its source), who is on the team, and the escalation in words (what
has happened, what happens next and when, if nobody acknowledges).

Reads only; the acknowledgement code is never part of it (it lives in the SMS and nowhere else).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from server import labels
from server.alerts import rules
from server.alerts import service as alerts
from server.alerts.models import Alert, AlertKind, AlertLog, AlertState, Level
from server.auth.models import Role, SiteMembership, StaffUser
from server.errors import NotFound
from server.participants.models import Participant, Site
from server.protocols import service as protocols
from server.protocols.definition import Protocol
from server.results.models import LabResult, ResultKind, ResultStatus
from server.schedules.models import ScheduleEvent

# Roles on the alert page's team list, in this order (monitors and admins are not the care team).
TEAM_ROLES = (Role.NURSE, Role.COORDINATOR, Role.INVESTIGATOR)
# How many future escalation steps are spelled out.
FUTURE_STEPS = 6

# The next step when the protocol file says nothing about an alert kind.
DEFAULT_NEXT_STEP = {
    AlertKind.CTDNA_POSITIVE: "Tell the investigator, who decides what follows; record the "
    "decision when resolving the alert.",
    AlertKind.CTDNA_POSITIVE_BASELINE: "Tell the investigator, who decides what follows; record "
    "the decision when resolving the alert.",
    AlertKind.PROGRESSION: "Tell the investigator, who decides the treatment; record the date "
    "treatment resumed when resolving the alert.",
    AlertKind.REDRAW_NEEDED: "Book a new draw (the redraw is on the timeline) and tell the "
    "participant.",
    AlertKind.RESULT_OVERDUE: "Ask the lab for the report; record the result when it arrives.",
    AlertKind.MISSED_WINDOW: "Call the participant to rebook, or record why it will not happen.",
    AlertKind.ENTRY_GATE: "Open the participant's entry gate: confirm the stop date once the "
    "facts pass; if the gate decided 'continues maintenance', tell the investigator and the "
    "participant (nothing more is planned).",
    AlertKind.CRITICAL_ANSWER: "Call the participant about the answer below; record what was "
    "done when resolving the alert.",
    AlertKind.DEAD_ROUTE: "Give this tier someone with a verified phone, or put a nurse on call "
    "(Today lists the routes).",
    AlertKind.OPERATOR: "The escalation job is not running: check the scheduler process "
    "(`stepdown scheduler`); the stalled alert is still open.",
}


@dataclass
class ResultPoint:
    """One ctDNA result on the chart and in its table."""

    result: LabResult
    day: date | None
    is_trigger: bool


@dataclass
class Trigger:
    """What opened the alert."""

    result: LabResult | None = None
    result_day: date | None = None
    event: ScheduleEvent | None = None
    event_name: str = ""
    ctdna: list[ResultPoint] = field(default_factory=list)
    imaging: list[ResultPoint] = field(default_factory=list)
    # A questionnaire answer: (question, answer value) when it can be read.
    question: str | None = None
    answer: int | None = None
    chart: dict[str, Any] | None = None


@dataclass
class NextStep:
    """What the protocol says to do now."""

    text: str
    source: str | None  # the quote from the trial documents, if any
    origin: str  # "HEROES protocol, version 3", or "Stepdown's default"
    is_site_default: bool


@dataclass
class TeamMember:
    user: StaffUser
    is_on_call: bool


@dataclass
class Step:
    """One line of the escalation, past or to come."""

    at: datetime | None
    text: str
    state: str  # "done", "next" (the one a reply prevents now), "later"


@dataclass
class Briefing:
    headline: str
    level: Level
    level_meaning: str
    needs_ack: bool
    trigger: Trigger
    next_step: NextStep
    team: list[TeamMember]
    steps: list[Step]
    participant: Participant | None
    protocol: Protocol | None


def _protocol(session: Session, participant: Participant | None) -> Protocol | None:
    if participant is None:
        return None
    try:
        return protocols.protocol_of_study(session, participant.study_id)[1]
    except NotFound:
        return None


def _result_day(result: LabResult, zone: ZoneInfo) -> date | None:
    if result.performed_on is not None:
        return result.performed_on
    moment = result.collected_at or result.reported_at
    return moment.astimezone(zone).date() if moment else None


def _chart(points: list[ResultPoint]) -> dict[str, Any] | None:
    """An inline SVG sparkline of MTM/mL over time (x by date, y from 0), or None."""
    dated = [p for p in points if p.day is not None and p.result.mtm_per_ml is not None]
    if len(dated) < 2:
        return None
    width, height, pad = 320, 96, 12
    first, last = dated[0].day, dated[-1].day
    assert first is not None and last is not None
    span_days = max((last - first).days, 1)
    top = max(max(p.result.mtm_per_ml or 0.0 for p in dated), 0.1)
    dots = []
    for p in dated:
        assert p.day is not None
        x = pad + (width - 2 * pad) * (p.day - first).days / span_days
        y = height - pad - (height - 2 * pad) * (p.result.mtm_per_ml or 0.0) / top
        call = p.result.call.value if p.result.call else "none"
        dots.append({"x": round(x, 1), "y": round(y, 1), "call": call, "is_trigger": p.is_trigger})
    return {
        "width": width,
        "height": height,
        "line": " ".join(f"{d['x']},{d['y']}" for d in dots),
        "dots": dots,
        "top": top,
        "first": first,
        "last": last,
        "baseline_y": height - pad,
    }


def _trigger(session: Session, alert: Alert, participant: Participant | None) -> Trigger:
    trigger = Trigger()
    zone = ZoneInfo(participant.timezone) if participant else ZoneInfo("UTC")
    if alert.result_id is not None:
        trigger.result = session.get(LabResult, alert.result_id)
        if trigger.result is not None:
            trigger.result_day = _result_day(trigger.result, zone)
    if alert.event_id is not None:
        trigger.event = session.get(ScheduleEvent, alert.event_id)
    if participant is not None:
        results = session.exec(
            select(LabResult).where(
                LabResult.participant_id == participant.id,
                LabResult.status == ResultStatus.ACCEPTED,
                col(LabResult.kind).in_([ResultKind.CTDNA, ResultKind.IMAGING]),
            )
        ).all()
        points = sorted(
            (ResultPoint(r, _result_day(r, zone), r.id == alert.result_id) for r in results),
            key=lambda p: (p.day or date.max, p.result.id or 0),
        )
        trigger.ctdna = [p for p in points if p.result.kind == ResultKind.CTDNA]
        trigger.imaging = [p for p in points if p.result.kind == ResultKind.IMAGING]
        trigger.chart = _chart(trigger.ctdna)
        protocol = _protocol(session, participant)
        items = {item.id: item.label for item in protocol.schedule} if protocol else {}
        if trigger.event is not None:
            trigger.event_name = labels.event_key(trigger.event.key, items)
            if trigger.event_name == trigger.event.key:
                trigger.event_name = f"{trigger.event.label} #{trigger.event.sequence}"
    if alert.kind == AlertKind.CRITICAL_ANSWER:
        trigger.question, trigger.answer = _answer(session, alert)
    return trigger


def _answer(session: Session, alert: Alert) -> tuple[str | None, int | None]:
    """The question and answer a critical-answer alert is about ("answer:<response>:<item>")."""
    from server.surveys import service as surveys
    from server.surveys.models import SurveyAnswer, SurveyResponse

    parts = alert.trigger_key.split(":")
    if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit():
        return None, None
    response = session.get(SurveyResponse, int(parts[1]))
    if response is None:
        return None, None
    answer = session.exec(
        select(SurveyAnswer.value).where(
            SurveyAnswer.response_id == response.id, SurveyAnswer.item_id == parts[2]
        )
    ).first()
    question = None
    instrument = surveys.instruments().get(response.instrument_key)
    for item in getattr(instrument, "items", None) or []:
        if item.id == parts[2] and isinstance(item.text, dict):
            question = item.text.get("en") or next(iter(item.text.values()), None)
    return question or parts[2], answer


def day_text(value: date | None) -> str:
    """A day as "Tue 1 Dec 2026"."""
    return f"{value:%a} {value.day} {value:%b %Y}" if value else "an unknown day"


def _ctdna_text(point: ResultPoint) -> str:
    r = point.result
    call = labels.label(r.call).lower() if r.call else "no call"
    value = f", {r.mtm_per_ml:g} MTM/mL" if r.mtm_per_ml is not None else ""
    return f"{call}{value} (drawn {day_text(point.day)})"


def _headline(alert: Alert, trigger: Trigger) -> str:
    """What happened, in one line."""
    result, event = trigger.result, trigger.event
    if result is not None and result.kind == ResultKind.CTDNA:
        point = next((p for p in trigger.ctdna if p.is_trigger), None)
        if point is None:
            point = ResultPoint(result, trigger.result_day, True)
        text = f"ctDNA {_ctdna_text(point)}"
        earlier = [
            p
            for p in trigger.ctdna
            if not p.is_trigger and p.day and point.day and p.day <= point.day
        ]
        if earlier:
            text += f"; before: {_ctdna_text(earlier[-1])}"
        if alert.kind == AlertKind.REDRAW_NEEDED:
            text += "; a redraw is planned"
        return text
    if result is not None and result.kind == ResultKind.IMAGING:
        modality = labels.label(result.modality, "modality") if result.modality else "Imaging"
        recist = labels.label(result.recist) if result.recist else "no response recorded"
        return f"{modality} on {day_text(trigger.result_day)}: {recist}"
    if alert.kind == AlertKind.CRITICAL_ANSWER and trigger.question:
        answer = {0: "no", 1: "yes"}.get(trigger.answer, str(trigger.answer))  # type: ignore[arg-type]
        return f"Questionnaire: “{trigger.question}” answered {answer}"
    if event is not None and alert.kind == AlertKind.MISSED_WINDOW:
        return (
            f"{trigger.event_name}: window {day_text(event.window_open_date)} to "
            f"{day_text(event.window_close_date)} closed without it"
        )
    if event is not None and alert.kind == AlertKind.RESULT_OVERDUE:
        turnaround = event.result_turnaround_days or 14
        return (
            f"{trigger.event_name}, done {day_text(event.completed_on)}: no result after the "
            f"{turnaround}-day turnaround"
        )
    return alert.summary


def _next_step(alert: Alert, protocol: Protocol | None) -> NextStep:
    guidance = protocol.alerts.get(alert.kind.value) if protocol else None
    if guidance is not None and guidance.next_step:
        return NextStep(
            text=guidance.next_step,
            source=guidance.source,
            origin=f"{protocol.study} protocol, version {protocol.version}",  # type: ignore[union-attr]
            is_site_default="next_step" in guidance.site_defaults,
        )
    return NextStep(
        text=DEFAULT_NEXT_STEP.get(alert.kind, "Look at the participant's page and decide."),
        source=None,
        origin="Stepdown's default (the protocol file says nothing about this alert)",
        is_site_default=True,
    )


def _team(session: Session, site_id: int | None) -> list[TeamMember]:
    if site_id is None:
        return []
    rows = session.exec(
        select(StaffUser, SiteMembership.is_on_call)
        .join(SiteMembership, col(SiteMembership.user_id) == col(StaffUser.id))
        .where(
            SiteMembership.site_id == site_id,
            col(StaffUser.is_active).is_(True),
            col(StaffUser.role).in_(TEAM_ROLES),
        )
    ).all()
    order = {role: i for i, role in enumerate(TEAM_ROLES)}
    members = [TeamMember(user, bool(on_call)) for user, on_call in rows]
    members.sort(key=lambda m: (order[m.user.role], not m.is_on_call, m.user.full_name))
    return members


def when(moment: datetime | None, zone: ZoneInfo, now: datetime | None = None) -> str:
    """A moment in the site's time ("Tue 1 Dec 16:17"), with how far from now when given."""
    if moment is None:
        return "—"
    local = moment.astimezone(zone)
    text = f"{local:%a} {local.day} {local:%b %H:%M}"
    if now is None:
        return text
    minutes = round((moment - now).total_seconds() / 60)
    if abs(minutes) < 1:
        return f"{text} (now)"
    amount = f"{abs(minutes)} min" if abs(minutes) < 120 else f"{abs(minutes) // 60} h"
    return f"{text} (in {amount})" if minutes > 0 else f"{text} ({amount} ago)"


def _group(session: Session, site_id: int | None, group: str) -> str:
    people = alerts.recipients(session, site_id, group) if site_id else []
    who = labels.label(group, "recipients")
    if not people:
        return f"{who} (nobody with a verified phone: skipped)"
    return f"{who}: " + ", ".join(p.full_name for p in people)


def _past(session: Session, alert: Alert, zone: ZoneInfo, names: dict[int, str]) -> list[Step]:
    steps = []
    for entry in session.exec(
        select(AlertLog).where(AlertLog.alert_id == alert.id).order_by(col(AlertLog.id))
    ):
        detail = entry.detail or {}
        who = labels.actor(entry.actor, names)
        if entry.what == "opened":
            text = f"Opened ({labels.label(alert.level)}: {labels.LEVEL_MEANING[alert.level]})"
        elif entry.what == "tier_notified":
            people = ", ".join(
                names.get(u, "a former staff member") for u in detail.get("recipients", [])
            )
            send_at = detail.get("send_at")
            held = ""
            if isinstance(send_at, str):
                moment = datetime.fromisoformat(send_at)
                if moment > entry.at:
                    held = f", to go out {when(moment, zone)}"
            text = f"Tier {entry.tier}: SMS to {people}{held}"
        elif entry.what == "tier_unreachable":
            group = labels.label(detail.get("recipients"), "recipients")
            text = f"Tier {entry.tier}: nobody reachable ({group}), skipped"
        elif entry.what == "delivery_failed":
            text = f"Tier {entry.tier}: an SMS was not delivered, so the next tier went at once"
        elif entry.what == "acknowledged":
            channel = labels.label(detail.get("channel"), "ack_channel")
            text = f"Acknowledged by {who} {channel}: further tiers stopped"
        elif entry.what == "resolved":
            text = f"Resolved by {who}"
        elif entry.what == "route_exhausted":
            text = (
                "No further tier: the site's fail-safe is called"
                if alert.failsafe_at is not None
                else "No further tier: the alert stays open on Today until someone acknowledges it"
            )
        else:
            text = labels.label(entry.what, "alert_log") + (f" ({who})" if entry.actor else "")
        steps.append(Step(entry.at, text, "done"))
    return steps


def _future(session: Session, alert: Alert, zone: ZoneInfo, now: datetime) -> list[Step]:
    """The tiers still to come if nobody acknowledges, with when each would go out."""
    if alert.state != AlertState.OPEN:
        return []
    if not rules.needs_ack(alert.level):
        digest = rules.setting(alert.policy, "digest")
        return [
            Step(
                None,
                f"A routine task: it went (or goes) in the morning SMS ({digest.get('at')} on "
                "working days); no reply is needed and it never escalates. It stays on Today "
                "until someone resolves it.",
                "later",
            )
        ]
    if alert.next_tier_at is None:
        return []
    route = rules.route(alert.policy, alert.kind, alert.level)
    chain = rules.tiers(route)
    out: list[Step] = []
    tier, repeats, due = alert.tier, alert.repeats_done, alert.next_tier_at
    exhausted = False
    for _ in range(FUTURE_STEPS):
        nxt = rules.next_step(route, tier, repeats)
        if nxt is None:
            exhausted = True
            break
        tier, repeats = nxt
        send = rules.send_moment(
            kind=alert.kind, level=alert.level, moment=due, zone=zone, policy=alert.policy
        )
        step = chain[tier - 1]
        again = " again" if repeats else ""
        how = CHANNEL_WORDS.get(step.channel, "")
        text = f"Tier {tier}{again}{how}: {_group(session, alert.site_id, step.recipients)}"
        out.append(Step(send, text, "next" if not out else "later"))
        if step.timeout is None:
            break
        due = send + step.timeout
    if exhausted and alert.failsafe_at is None and alert.kind not in rules.SYSTEM_KINDS:
        # The last tier's timeout passes unanswered: the site's fail-safe, at that moment.
        out.append(Step(due, _failsafe(session, alert), "next" if not out else "later"))
    elif out:
        out.append(Step(None, "Then no further tier: the alert stays open on Today.", "later"))
    if out:
        out[0].text = f"If nobody acknowledges by then — {out[0].text}"
    return out


# How a tier reaches its people, when not by SMS alone.
CHANNEL_WORDS = {"both": " (SMS and a phone call)", "call": " (a phone call)"}


def _failsafe(session: Session, alert: Alert) -> str:
    """Who the site's fail-safe reaches, in words (never the number itself)."""
    site = session.get(Site, alert.site_id) if alert.site_id else None
    if site is None:
        return "Fail-safe"
    who = [p.full_name for p in alerts.failsafe_people(session, site)]
    if site.failsafe_phone_e164:
        who.append("the site's fail-safe number")
    return "Fail-safe: " + (", ".join(who) if who else "nobody reachable")


def build(*, session: Session, alert: Alert, now: datetime) -> Briefing:
    """Everything the alert page shows about an alert besides its raw timeline and messages."""
    participant = session.get(Participant, alert.participant_id) if alert.participant_id else None
    site = session.get(Site, alert.site_id) if alert.site_id else None
    zone = ZoneInfo(site.timezone) if site else ZoneInfo("UTC")
    protocol = _protocol(session, participant)
    team = _team(session, alert.site_id)
    names = {m.user.id: m.user.full_name for m in team if m.user.id is not None}
    log_ids = session.exec(
        select(AlertLog.actor, AlertLog.detail).where(AlertLog.alert_id == alert.id)
    )
    wanted: set[int] = set()
    for actor, detail in log_ids:
        wanted |= labels.staff_ids([actor])
        wanted |= {u for u in (detail or {}).get("recipients", []) if isinstance(u, int)}
    for user in session.exec(select(StaffUser).where(col(StaffUser.id).in_(wanted - set(names)))):
        names[user.id] = user.full_name  # type: ignore[index]
    trigger = _trigger(session, alert, participant)
    return Briefing(
        headline=_headline(alert, trigger),
        level=alert.level,
        level_meaning=labels.LEVEL_MEANING[alert.level],
        needs_ack=rules.needs_ack(alert.level),
        trigger=trigger,
        next_step=_next_step(alert, protocol),
        team=team,
        steps=_past(session, alert, zone, names) + _future(session, alert, zone, now),
        participant=participant,
        protocol=protocol,
    )
