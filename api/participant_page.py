"""One participant's page: timeline (completion recorded from it), decisions, ctDNA and imaging
chart, QoL scores, messages, alerts, audit history.

Reads go through site scoping first (another site's participant is the same 404 as a missing
one); writes call the same services as the JSON API (api/schedules.py) and are refused to roles
without the permission even when the form is forged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import login_required
from sqlmodel import Session, col, select
from werkzeug.wrappers import Response

from api.page_kit import can, query_choice, require_page, whole_number
from notifications.outbox import shown_body
from server import labels as human
from server import worklist
from server.adherence import service as adherence
from server.alerts.models import Alert, AlertState, Level
from server.audit import AuditEvent
from server.auth.models import Role, StaffUser
from server.auth.rules import Permission
from server.auth.scoping import get_participant
from server.auth.service import actor_of
from server.clock import local_date, utcnow
from server.db import get_session
from server.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.participants import entry_gate
from server.participants import messages as participant_messages
from server.participants import service as participants
from server.participants.models import Participant, Site
from server.participants.rules import mask_phone
from server.protocols.models import Study
from server.results.models import LabResult, PfsEvent, ResultKind, ResultStatus
from server.schedules import service as schedules
from server.schedules.models import Decision, EventStatus, EventType, ScheduleEvent
from server.schedules.rules import COMPLETABLE, timed_status
from server.surveys import service as surveys

bp = Blueprint("participant_page", __name__)

# Upcoming events listed before the rest fold into "all future events" (STOP-HER2 has ~170).
UPCOMING_SHOWN = 10
# Newest rows shown before the rest fold away (messages, audit).
RECENT_SHOWN = 25
# schedule_event.status_reason is VARCHAR(500): a longer reason would fail in PostgreSQL.
REASON_MAX = 500
# The outcome a completion may record, per event type: the choices the form offers. The service
# (_check_outcome in server/schedules/service.py) remains the judge of what is valid.
OUTCOME_CHOICES: dict[EventType, dict[str, list[tuple[str, str]]]] = {
    EventType.CTDNA_DRAW: {
        "ctdna": [("positive", "positive"), ("negative", "negative")],
        "pam_mutation": [("yes", "PAM mutation found"), ("no", "no PAM mutation")],
    },
    EventType.IMAGING: {"recist": [(r, r) for r in schedules.RECIST]},
}
E164 = re.compile(r"\+\d{7,15}")
LEVEL_ORDER = {Level.CRITICAL: 0, Level.URGENT: 1, Level.ROUTINE: 2}


# --- view models ---------------------------------------------------------------------------------


@dataclass
class EventRow:
    """One event as the timeline shows it."""

    event: ScheduleEvent
    status: EventStatus  # as of now (a planned event whose window closed shows as missed)
    flag: str | None  # "early" / "late" when completed outside the window
    outcome: str | None
    can_complete: bool


@dataclass
class FormState:
    """A refused form, shown again with the user's values and the messages by field."""

    target: str  # "event" or "decision"
    target_id: int
    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    message: str = ""


def _effective_status(event: ScheduleEvent, now: datetime) -> EventStatus:
    return timed_status(event.status, event.window_open_at, event.window_close_at, now)


def _outcome_text(event: ScheduleEvent) -> str | None:
    outcome = event.outcome or {}
    parts = []
    if "ctdna" in outcome:
        parts.append(f"ctDNA {outcome['ctdna']}")
    if "pam_mutation" in outcome:
        parts.append("PAM mutation" if outcome["pam_mutation"] else "no PAM mutation")
    if "recist" in outcome:
        parts.append(f"RECIST {outcome['recist']}")
    if "regimen" in outcome:
        parts.append(f"{outcome['regimen']} ×{outcome.get('cycles')}")
    return ", ".join(parts) or None


def _flag(event: ScheduleEvent) -> str | None:
    if event.status != EventStatus.COMPLETED or event.completed_on is None:
        return None
    if event.completed_on < event.window_open_date:
        return "early"
    if event.completed_on > event.window_close_date:
        return "late"
    return None


def _timeline(
    events: list[ScheduleEvent],
    now: datetime,
    *,
    status: str | None,
    event_type: str | None,
    may_write: bool,
) -> dict[str, Any]:
    rows = []
    for e in events:
        effective = _effective_status(e, now)
        rows.append(
            EventRow(
                event=e,
                status=effective,
                flag=_flag(e),
                outcome=_outcome_text(e),
                can_complete=may_write
                and e.status in COMPLETABLE
                and e.event_type != EventType.DECISION_POINT,
            )
        )
    if status or event_type:
        shown = [
            r
            for r in rows
            if (status is None or r.status.value == status)
            and (event_type is None or r.event.event_type.value == event_type)
        ]
        return {"filtered": True, "rows": shown, "current": [], "upcoming": [], "later": []}
    # Past and current: the window has opened, or the event was done (early). A future event
    # cancelled by a re-plan stays in its place among the future ones.
    current: list[EventRow] = []
    future: list[EventRow] = []
    for r in rows:
        is_current = r.event.window_open_at <= now or r.status == EventStatus.COMPLETED
        (current if is_current else future).append(r)
    for r in future[UPCOMING_SHOWN:]:
        r.can_complete = False  # far ahead: no form (the filter still finds them)
    return {
        "filtered": False,
        "rows": [],
        "current": current,
        "upcoming": future[:UPCOMING_SHOWN],
        "later": future[UPCOMING_SHOWN:],
    }


def _result_day(r: LabResult, tz: str) -> date | None:
    return r.performed_on or local_date(r.collected_at, tz) or local_date(r.reported_at, tz)


def _results(session: Session, participant: Participant) -> dict[str, Any]:
    """The participant's results for the tables and the chart (chart: accepted ones only)."""
    rows = session.exec(select(LabResult).where(LabResult.participant_id == participant.id)).all()
    tz = participant.timezone
    dated = sorted(rows, key=lambda r: (_result_day(r, tz) or date.max, r.id or 0))
    ctdna = [r for r in dated if r.kind == ResultKind.CTDNA]
    imaging = [r for r in dated if r.kind == ResultKind.IMAGING]
    markers = [r for r in dated if r.kind == ResultKind.TUMOR_MARKER]
    pfs = session.exec(
        select(PfsEvent).where(PfsEvent.participant_id == participant.id).order_by(col(PfsEvent.id))
    ).all()

    def day(r: LabResult) -> str | None:
        d = _result_day(r, tz)
        return d.isoformat() if d else None

    chart = {
        "ctdna": [
            {
                "date": day(r),
                "call": r.call.value if r.call else None,
                "mtm_per_ml": r.mtm_per_ml,
            }
            for r in ctdna
            if r.status == ResultStatus.ACCEPTED and day(r)
        ],
        "imaging": [
            {
                "date": day(r),
                "modality": (r.modality or "imaging").replace("_", " ").upper(),
                "recist": r.recist.value if r.recist else None,
            }
            for r in imaging
            if r.status == ResultStatus.ACCEPTED and day(r)
        ],
        "anchor_date": participant.anchor_date.isoformat() if participant.anchor_date else None,
    }
    return {
        "ctdna": ctdna,
        "imaging": imaging,
        "markers": markers,
        "pfs": pfs,
        "chart": chart,
        "day": {r.id: _result_day(r, tz) for r in rows},
    }


def _qol(session: Session, participant: Participant) -> list[dict[str, Any]]:
    """Scores by instrument: the time points, one row per scale, and the chart's series."""
    raw = surveys.scores_over_time(session=session, participant=participant)
    known = surveys.instruments()
    out = []
    for key, scales in raw.items():
        instrument = known.get(key)
        title = key
        order: dict[str, int] = {}
        labels: dict[str, str] = {}
        kinds: dict[str, str] = {}
        if instrument is not None:
            t = instrument.title
            title = (t.get("en") or next(iter(t.values()), key)) if isinstance(t, dict) else str(t)
            for i, s in enumerate(instrument.scales):
                order[s.key], labels[s.key], kinds[s.key] = i, s.label, s.type.value
        # A time point is one response: its submission time and its questionnaire event.
        points = sorted(
            {(p["submitted_at"] or "", p["event_id"]) for ps in scales.values() for p in ps}
        )
        days = [
            local_date(datetime.fromisoformat(at), participant.timezone) if at else None
            for at, _ in points
        ]
        rows = []
        series = []
        for scale in sorted(scales, key=lambda s: (order.get(s, 999), s)):
            by_point = {(p["submitted_at"] or "", p["event_id"]): p for p in scales[scale]}
            cells = [by_point.get(point) for point in points]
            rows.append({"scale": scale, "label": labels.get(scale, scale), "cells": cells})
            series.append(
                {
                    "scale": scale,
                    "label": labels.get(scale, scale),
                    "type": kinds.get(scale),
                    "points": [
                        {"date": d.isoformat(), "score": c["score"]}
                        for d, c in zip(days, cells, strict=True)
                        if d and c and not c["is_missing"] and c["score"] is not None
                    ],
                }
            )
        out.append({"key": key, "title": title, "days": days, "rows": rows, "series": series})
    return out


def _scrub(value: Any) -> Any:
    """Phone numbers hidden inside audit values and free text (for roles that may not see them)."""
    if isinstance(value, str):
        return E164.sub(lambda m: mask_phone(m.group(0)) or "", value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _shown(value: Any) -> str:
    """An audit value in a table cell."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _audit_rows(
    rows: list[AuditEvent], about: dict[tuple[str, str], str], see_phone: bool
) -> list[dict[str, Any]]:
    out = []
    for a in rows:
        before = a.before or {}
        after = a.after or {}
        if not see_phone:
            before, after = _scrub(before), _scrub(after)
        # Fields whose value did not change are left out (an event's snapshot has eight).
        changes = [
            (k, _shown(before[k]) if k in before else None, _shown(after.get(k)))
            for k in dict.fromkeys([*before, *after])
            if k not in before or k not in after or before[k] != after[k]
        ]
        out.append(
            {
                "row": a,
                "about": about.get((a.entity, a.entity_id), a.entity.replace("_", " ")),
                "changes": changes,
                "reason": a.reason if see_phone or a.reason is None else _scrub(a.reason),
            }
        )
    return out


def _decisions(
    session: Session, participant: Participant, now: datetime
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    rows = session.exec(
        select(Decision).where(Decision.participant_id == participant.id).order_by(col(Decision.id))
    ).all()
    if not rows:
        return [], []
    protocol = schedules.participant_protocol(session=session, participant=participant, now=now)
    regimens = [(r.key, r.label) for r in protocol.treatment.regimens] if protocol.treatment else []
    return [
        {
            "decision": d,
            "options": schedules.decision_options(protocol, d),
            "team_decides": schedules.decision_team_reason(protocol, d),
        }
        for d in rows
    ], regimens


def _gate_facts(
    session: Session, participant: Participant, state: entry_gate.GateState | None
) -> list[tuple[entry_gate.FactState, tuple[str, ...]]]:
    """The gate facts a person may still attest, with the values allowed."""
    if state is None:
        return []
    protocol = entry_gate.protocol_for(session, participant)
    return [
        (fs, entry_gate.fact_values(protocol, fs.fact))
        for fs in state.facts
        if fs.fact.provenance.value == "attestation" and fs.record is None
    ]


def _page(
    participant_id: int, *, form: FormState | None = None, status: int = 200
) -> tuple[str, int]:
    user = require_page(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    now = utcnow()
    status_filter = query_choice("status", [s.value for s in EventStatus])
    type_filter = query_choice("type", [t.value for t in EventType])
    study = session.get(Study, participant.study_id)
    site = session.get(Site, participant.site_id)
    events = schedules.list_events(session=session, participant=participant)
    labels = {e.id: e.label for e in events}
    timeline = _timeline(
        events,
        now,
        status=status_filter,
        event_type=type_filter,
        may_write=can(Permission.SCHEDULE_WRITE),
    )
    decisions, regimens = _decisions(session, participant, now)
    choices = schedules.participant_choices(session=session, participant=participant, now=now)
    gate_state = entry_gate.participant_state(session, participant)
    gate = gate_state.as_dict(participant) if gate_state is not None else None
    results = _results(session, participant)
    messages = participant_messages.history(session=session, participant=participant)
    alerts = session.exec(
        select(Alert)
        .where(Alert.participant_id == participant.id)
        .order_by(col(Alert.opened_at).desc(), col(Alert.id).desc())
    ).all()
    about: dict[tuple[str, str], str] = {("participant", str(participant.id)): "participant"}
    about.update({("schedule_event", str(e.id)): e.label for e in events})
    about.update({("decision", str(d["decision"].id)): "decision" for d in decisions})
    about.update(
        {
            ("lab_result", str(r.id)): f"{human.label(r.kind)} result {r.accession_id}"
            for r in [*results["ctdna"], *results["imaging"], *results["markers"]]
        }
    )
    about.update({("alert", str(a.id)): f"{human.label(a.kind)} alert" for a in alerts})
    about.update({("outbox_message", str(m.id)): f"message #{m.id}" for m, _ in messages})
    audit_rows = list(
        reversed(
            participants.audit_history(
                session=session, participant=participant, include_related=True
            )
        )
    )
    names = worklist.staff_names(
        session,
        {a.acknowledged_by_user_id for a in alerts}
        | {a.resolved_by_user_id for a in alerts}
        | {d["decision"].decided_by_user_id for d in decisions}
        | {c["set_by_user_id"] for c in choices}
        | {
            (f.get("recorded") or {}).get("attested_by_user_id")
            for f in [*(gate or {}).get("facts", []), (gate or {}).get("stop_date", {})]
        }
        | {a.actor_user_id for a in audit_rows}
        | human.staff_ids([a.actor for a in audit_rows]),
    )
    see_phone = can(Permission.SEE_PHONE_NUMBERS)
    qol = _qol(session, participant)
    html = render_template(
        "participant.html",
        participant=participant,
        study=study,
        site=site,
        now=now,
        today=schedules.local_today(participant, now),
        adherence=adherence.for_participant(
            session=session,
            participant_id=participant.id,  # type: ignore[arg-type]
            now=now,
        ),
        timeline=timeline,
        filters={"status": status_filter, "type": type_filter},
        status_choices=[s.value for s in EventStatus],
        type_choices=[t.value for t in EventType],
        event_labels=labels,
        outcome_choices=OUTCOME_CHOICES,
        reason_max=REASON_MAX,
        decisions=decisions,
        regimens=regimens,
        choices=choices,
        gate=gate,
        gate_facts=_gate_facts(session, participant, gate_state),
        is_investigator=user.role == Role.INVESTIGATOR,
        results=results,
        chart_data={
            "results": results["chart"],
            "qol": [{"key": q["key"], "title": q["title"], "series": q["series"]} for q in qol],
        },
        qol=qol,
        messages=messages,
        alerts=alerts,
        # Not resolved yet, at the top of the page: to acknowledge first, then the most urgent.
        open_alerts=sorted(
            (a for a in alerts if a.state != AlertState.RESOLVED),
            key=lambda a: (a.state != AlertState.OPEN, LEVEL_ORDER[a.level], a.opened_at),
        ),
        audit=_audit_rows(audit_rows, about, see_phone),
        names=names,
        recent_shown=RECENT_SHOWN,
        form=form,
        redact=(lambda text: text) if see_phone else _scrub,
        # Message texts with activation codes and survey links replaced by markers.
        shown_body=shown_body,
    )
    return html, status


@bp.get("/participants/<int:participant_id>")
@login_required
def show(participant_id: int) -> tuple[str, int]:
    """A participant's page."""
    return _page(participant_id)


# --- writes --------------------------------------------------------------------------------------


def _writable(participant_id: int, permission: Permission) -> tuple[StaffUser, Participant]:
    user = require_page(Permission.PARTICIPANT_READ)
    # Scope first: another site's participant is 404 whatever the role (as in the API).
    participant = get_participant(session=get_session(), user=user, participant_id=participant_id)
    require_page(permission)
    return user, participant


def _refused(participant_id: int, form: FormState, error: ValidationFailed) -> tuple[str, int]:
    get_session().rollback()
    for name, messages in error.fields.items():
        form.errors[name.removeprefix("outcome.")] = "; ".join(messages)
    form.message = error.message
    return _page(participant_id, form=form, status=error.status)


def _form_values(names: tuple[str, ...]) -> dict[str, str]:
    return {n: request.form.get(n, "").strip() for n in names}


def _parse_completion(values: dict[str, str]) -> dict[str, Any]:
    """The form as complete_event's arguments; a field that cannot be read is a 422."""
    problems: dict[str, list[str]] = {}
    completed_on: date | None = None
    try:
        completed_on = date.fromisoformat(values["completed_on"])
    except ValueError:
        problems["completed_on"] = ["a date (YYYY-MM-DD) is required"]
    if len(values["reason"]) > REASON_MAX:
        problems["reason"] = [f"at most {REASON_MAX} characters"]
    outcome: dict[str, Any] = {}
    for name in ("ctdna", "recist"):
        if values[name]:
            outcome[name] = values[name]
    if values["pam_mutation"]:
        pam = values["pam_mutation"]
        outcome["pam_mutation"] = {"yes": True, "no": False}.get(pam, pam)
    if problems:
        raise ValidationFailed("please check the form", problems)
    return {
        "completed_on": completed_on,
        "reason": values["reason"] or None,
        "outcome": outcome or None,
    }


@bp.post("/participants/<int:participant_id>/events/<int:event_id>/complete")
@login_required
def complete_event(participant_id: int, event_id: int) -> Response | tuple[str, int]:
    """Record from the timeline that an event took place (the API's complete, as a form)."""
    user, participant = _writable(participant_id, Permission.SCHEDULE_WRITE)
    session = get_session()
    event = schedules.get_event(session=session, participant=participant, event_id=event_id)
    values = _form_values(("completed_on", "reason", "ctdna", "pam_mutation", "recist"))
    form = FormState("event", event_id, values)
    try:
        args = _parse_completion(values)
        schedules.complete_event(
            session=session,
            participant=participant,
            event=event,
            now=utcnow(),
            actor=actor_of(user),
            actor_user_id=user.id,
            **args,
        )
        # A gate event done in screening (STOP-HER2's baseline scans) may decide the gate.
        entry_gate.evaluate(
            session=session,
            participant=participant,
            now=utcnow(),
            actor=actor_of(user),
            actor_user_id=user.id,
        )
    except ValidationFailed as error:
        return _refused(participant_id, form, error)
    except Conflict as error:
        session.rollback()
        form.message = error.message
        return _page(participant_id, form=form, status=error.status)
    session.commit()
    flash(
        f"Recorded: {event.label} done on {event.completed_on}"
        + (" (outside its window)" if event.is_out_of_window else "")
        + ".",
        "info",
    )
    return redirect(
        url_for(".show", participant_id=participant_id, _anchor=f"event-{event_id}"), 303
    )


def _parse_decision(values: dict[str, str]) -> dict[str, Any]:
    problems: dict[str, list[str]] = {}
    if not values["regimen"]:
        problems["regimen"] = ["required"]
    cycles: int | None = None
    if values["cycles"]:
        cycles = whole_number(values["cycles"], lo=1, hi=100)
        if cycles is None:
            problems["cycles"] = ["a whole number from 1 to 100"]
    if len(values["reason"]) > 1000:
        problems["reason"] = ["at most 1000 characters"]
    if problems:
        raise ValidationFailed("please check the form", problems)
    return {"regimen": values["regimen"], "cycles": cycles, "reason": values["reason"] or None}


@bp.post("/participants/<int:participant_id>/decisions/<int:decision_id>/record")
@login_required
def record_decision(participant_id: int, decision_id: int) -> Response | tuple[str, int]:
    """Record the care team's choice at a decision point (the API's record, as a form).

    Needs participant:write, as the API does: a treatment choice is not a nurse's to record."""
    user, participant = _writable(participant_id, Permission.PARTICIPANT_WRITE)
    session = get_session()
    decision = session.get(Decision, decision_id)
    if decision is None or decision.participant_id != participant.id:
        raise NotFound("decision not found")
    values = _form_values(("regimen", "cycles", "reason"))
    form = FormState("decision", decision_id, values)
    try:
        schedules.record_decision(
            session=session,
            participant=participant,
            decision=decision,
            now=utcnow(),
            actor=actor_of(user),
            actor_user_id=user.id,
            **_parse_decision(values),
        )
    except ValidationFailed as error:
        return _refused(participant_id, form, error)
    except Conflict as error:
        session.rollback()
        form.message = error.message
        return _page(participant_id, form=form, status=error.status)
    session.commit()
    flash(
        f"Decision recorded: {decision.chosen_regimen} ×{decision.chosen_cycles}.",
        "info",
    )
    return redirect(
        url_for(".show", participant_id=participant_id, _anchor=f"decision-{decision_id}"), 303
    )


@bp.post("/participants/<int:participant_id>/choices/<key>")
@login_required
def set_choice(participant_id: int, key: str) -> Response | tuple[str, int]:
    """Set one of the protocol's per-participant choices (the API's PUT, as a form): a reason is
    required, and only future, untouched events are re-planned. Needs participant:write."""
    user, participant = _writable(participant_id, Permission.PARTICIPANT_WRITE)
    session = get_session()
    values = _form_values(("value", "reason"))
    form = FormState("choice", 0, {**values, "key": key})
    try:
        problems = {name: ["required"] for name in ("value", "reason") if not values[name]}
        if len(values["reason"]) > 1000:
            problems["reason"] = ["at most 1000 characters"]
        if problems:
            raise ValidationFailed("please check the form", problems)
        state, result = schedules.set_participant_choice(
            session=session,
            participant=participant,
            key=key,
            value=values["value"][:64],
            reason=values["reason"],
            now=utcnow(),
            actor=actor_of(user),
            actor_user_id=user.id,
        )
    except ValidationFailed as error:
        return _refused(participant_id, form, error)
    except Conflict as error:
        session.rollback()
        form.message = error.message
        return _page(participant_id, form=form, status=error.status)
    session.commit()
    if result is None:
        flash(f"{state['label']}: already {state['value']}, nothing changed.", "info")
    else:
        flash(
            f"{state['label']}: now {state['value']}. Future events re-planned: "
            f"{result.moved} moved, {result.created} added, {result.cancelled} cancelled.",
            "info",
        )
    return redirect(url_for(".show", participant_id=participant_id, _anchor=f"choice-{key}"), 303)


@bp.post("/participants/<int:participant_id>/entry-gate/facts")
@login_required
def attest_fact(participant_id: int) -> Response | tuple[str, int]:
    """Attest one entry-gate fact a person attests, or the confirmed stop date (the API's POST,
    as a form); the gate then decides on its own. Needs participant:write."""
    user, participant = _writable(participant_id, Permission.PARTICIPANT_WRITE)
    session = get_session()
    values = _form_values(("fact", "value", "observed_on", "note"))
    form = FormState("gate", 0, values)
    try:
        problems: dict[str, list[str]] = {}
        observed_on: date | None = None
        try:
            observed_on = date.fromisoformat(values["observed_on"])
        except ValueError:
            problems["observed_on"] = ["a date (YYYY-MM-DD) is required"]
        if len(values["note"]) > 500:
            problems["note"] = ["at most 500 characters"]
        if not values["fact"]:
            problems["fact"] = ["required"]
        if problems:
            raise ValidationFailed("please check the form", problems)
        state = entry_gate.attest(
            session=session,
            participant=participant,
            user=user,
            key=values["fact"][:48],
            value=values["value"][:64],
            observed_on=observed_on,
            note=values["note"] or None,
            now=utcnow(),
        )
    except ValidationFailed as error:
        return _refused(participant_id, form, error)
    except Conflict as error:
        session.rollback()
        form.message = error.message
        return _page(participant_id, form=form, status=error.status)
    session.commit()
    outcome = {
        "pass": "the entry gate passed: monitoring is planned from the confirmed stop date",
        "fail": "the entry gate decided: the participant continues maintenance",
        "wait": "the entry gate still waits for: " + "; ".join(state.awaiting),
    }[state.outcome]
    flash(f"Recorded. {outcome[0].upper()}{outcome[1:]}.", "info")
    return redirect(url_for(".show", participant_id=participant_id, _anchor="entry-gate"), 303)


@bp.post("/participants/<int:participant_id>/entry-gate/override")
@login_required
def override_gate(participant_id: int) -> Response | tuple[str, int]:
    """The investigator decides the entry gate with a reason (audited): pass, from a stop date,
    or fail (continues maintenance)."""
    user, participant = _writable(participant_id, Permission.PARTICIPANT_WRITE)
    session = get_session()
    values = _form_values(("outcome", "reason", "stop_date"))
    form = FormState("gate-override", 0, values)
    try:
        stop: date | None = None
        if values["stop_date"]:
            try:
                stop = date.fromisoformat(values["stop_date"])
            except ValueError:
                raise ValidationFailed(
                    "please check the form", {"stop_date": ["a date (YYYY-MM-DD)"]}
                ) from None
        if len(values["reason"]) > 1000:
            raise ValidationFailed("please check the form", {"reason": ["at most 1000 characters"]})
        entry_gate.override(
            session=session,
            participant=participant,
            user=user,
            outcome=values["outcome"],
            reason=values["reason"],
            stop_date=stop,
            now=utcnow(),
        )
    except ValidationFailed as error:
        return _refused(participant_id, form, error)
    except (Conflict, Forbidden) as error:
        session.rollback()
        form.message = error.message
        return _page(participant_id, form=form, status=error.status)
    session.commit()
    flash(f"Entry gate overridden ({values['outcome']}); the reason is in the audit trail.", "info")
    return redirect(url_for(".show", participant_id=participant_id, _anchor="entry-gate"), 303)
