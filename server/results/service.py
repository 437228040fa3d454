"""Results in: idempotent on the lab's accession id, attached to the right participant or
quarantined, linked to the draw or scan they fulfil, then judged by the study's rules.

Alerts and their first-tier SMS are written in the same transaction as the result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app, has_app_context
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from server import audit
from server.alerts import service as alerts
from server.alerts.models import AlertKind
from server.clock import local_date
from server.errors import Conflict, ValidationFailed
from server.participants import entry_gate
from server.participants.models import Participant, ParticipantStatus
from server.protocols.models import Study
from server.protocols.service import protocol_of_study
from server.results import rules
from server.results.models import (
    CtdnaCall,
    LabResult,
    PfsEvent,
    Recist,
    ResultKind,
    ResultStatus,
)
from server.schedules import reminders
from server.schedules import service as schedules
from server.schedules.models import EventStatus, EventType, ScheduleEvent

EVENT_TYPES = {
    ResultKind.CTDNA: (EventType.CTDNA_DRAW,),
    ResultKind.IMAGING: (EventType.IMAGING,),
    ResultKind.TUMOR_MARKER: (EventType.TUMOR_MARKERS, EventType.BLOOD_WORK),
}


@dataclass
class Ingested:
    """What happened to one posted result."""

    result: LabResult
    created: bool
    alert_id: int | None = None


def _canonical(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    data = audit.jsonable(payload)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return data, hashlib.sha256(text.encode()).hexdigest()


def _find_participant(
    session: Session, study_key: str | None, study_code: str, site_ids: Any
) -> tuple[Participant | None, str | None]:
    q = select(Participant).where(Participant.study_code == study_code)
    if study_key:
        q = q.join(Study, col(Study.id) == col(Participant.study_id)).where(Study.key == study_key)
    if site_ids is not None:
        q = q.where(col(Participant.site_id).in_(site_ids))
    found = session.exec(q).all()
    if not found:
        return None, f"no participant {study_code!r}" + (f" in {study_key}" if study_key else "")
    if len(found) > 1:
        return None, f"study code {study_code!r} exists in several studies: give the study"
    return found[0], None


def _pam_finding_retracted(
    session: Session, participant: Participant | None, source: str, fields: Mapping[str, Any]
) -> LabResult | None:
    """The earlier result whose PAM-mutation finding this one retracts (`retracts_pam_mutation_of`
    names its accession, same lab), or None. A retraction naming no such finding is a 422: a
    mutation once found stays found unless a result withdraws that very finding."""
    accession = fields.get("retracts_pam_mutation_of")
    if not accession or participant is None:
        return None
    earlier = session.exec(
        select(LabResult).where(LabResult.source == source, LabResult.accession_id == accession)
    ).first()
    if (
        earlier is None
        or earlier.participant_id != participant.id
        or earlier.kind != ResultKind.CTDNA
        or (earlier.payload or {}).get("pam_mutation") is not True
    ):
        raise ValidationFailed(
            "nothing to retract",
            {
                "retracts_pam_mutation_of": [
                    f"no earlier ctDNA result {accession!r} from lab {source!r} reported a PAM "
                    "mutation for this participant"
                ]
            },
        )
    return earlier


def configured_clock_skew() -> timedelta:
    """How far ahead of our clock a result's times may be (RESULT_CLOCK_SKEW_SECONDS)."""
    if has_app_context() and "RESULT_CLOCK_SKEW_SECONDS" in current_app.config:
        return timedelta(seconds=int(current_app.config["RESULT_CLOCK_SKEW_SECONDS"]))
    return rules.DEFAULT_CLOCK_SKEW


def enrolment_day(participant: Participant) -> date:
    """The day a participant's results are dated from: the earlier of the anchor date (the
    protocol's day 0) and the local day they were enrolled in Stepdown. The earlier of the two,
    because either can come first: baseline draws are planned before the anchor, and a
    participant entered after their anchor has results from before the entry."""
    created = participant.created_at
    if created.tzinfo is None:  # SQLite hands back naive UTC
        created = created.replace(tzinfo=UTC)
    entered = created.astimezone(ZoneInfo(participant.timezone)).date()
    anchor = participant.anchor_date
    return min(anchor, entered) if anchor is not None else entered


def check_dates(
    *,
    session: Session,
    participant: Participant | None,
    fields: Mapping[str, Any],
    now: datetime,
    clock_skew: timedelta,
    names: Mapping[str, str] | None = None,
) -> None:
    """Refuse (422, naming each field) a result whose dates cannot be: sampled or reported in the
    future beyond `clock_skew`, a scan on a day not begun, a report before its sample or scan, or
    (with a participant) a sample or scan from before their enrolment day minus the protocol's
    `result_look_back`. Every way in (JSON, FHIR, CSV import, demo) comes through here."""
    earliest, why, zone = None, "", None
    if participant is not None:
        zone = ZoneInfo(participant.timezone)
        _, protocol = protocol_of_study(session, participant.study_id)
        look_back = protocol.result_look_back
        if look_back is not None:
            day = enrolment_day(participant)
            earliest = day - look_back.delta()
            why = (
                f"the {protocol.study} protocol accepts samples and scans from {look_back} "
                f"before enrolment ({day.isoformat()}) on"
            )
    problems = rules.implausible_dates(
        collected_at=fields.get("collected_at"),
        reported_at=fields.get("reported_at"),
        performed_on=fields.get("performed_on"),
        now=now,
        skew=clock_skew,
        zone=zone,
        earliest=earliest,
        earliest_why=why,
        names=names,
    )
    if problems:
        raise ValidationFailed(
            "impossible dates: "
            + "; ".join(f"{field} {' and '.join(msgs)}" for field, msgs in problems.items()),
            problems,
        )


def ingest(
    *,
    session: Session,
    kind: ResultKind,
    source: str,
    accession_id: str,
    study_code: str,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    site_ids: Any = None,
    study_key: str | None = None,
    fields: dict[str, Any],
    clock_skew: timedelta | None = None,
    field_names: Mapping[str, str] | None = None,
) -> Ingested:
    """Record one result. The same accession twice is one result; the same accession with other
    content is refused (409) rather than silently overwritten. Impossible dates are refused
    (422, `check_dates`, fields named as in `field_names`) before anything is written; an unknown
    participant is quarantined as before, its dates checked for everything but the look-back
    (which needs the participant's enrolment)."""
    payload, digest = _canonical(
        {"kind": kind.value, "study": study_key, "study_code": study_code, **fields}
    )
    existing = session.exec(
        select(LabResult).where(LabResult.source == source, LabResult.accession_id == accession_id)
    ).first()
    if existing is not None:
        if existing.payload_sha256 != digest:
            raise Conflict(
                f"accession {accession_id} was already received with different content; "
                "send a corrected result under a new accession id",
                {"accession_id": ["already received with different content"]},
            )
        return Ingested(existing, False)
    participant, problem = _find_participant(session, study_key, study_code, site_ids)
    check_dates(
        session=session,
        participant=participant,
        fields=fields,
        now=now,
        clock_skew=configured_clock_skew() if clock_skew is None else clock_skew,
        names=field_names,
    )
    retracted = _pam_finding_retracted(session, participant, source, fields)
    call = fields.get("call")
    if kind == ResultKind.CTDNA and call not in rules.CTDNA_CALLS:
        # Never guess: an unreadable call is not a negative one.
        problem = problem or f"ambiguous ctDNA call {call!r}"
    if kind == ResultKind.IMAGING and fields.get("recist") not in rules.RECIST:
        problem = problem or f"ambiguous RECIST response {fields.get('recist')!r}"
    result = LabResult(
        kind=kind,
        source=source,
        accession_id=accession_id,
        study_key=study_key,
        study_code=study_code,
        participant_id=participant.id if participant and not problem else None,
        site_id=participant.site_id if participant and not problem else None,
        status=ResultStatus.QUARANTINED if problem else ResultStatus.ACCEPTED,
        quarantine_reason=problem,
        payload=payload,
        payload_sha256=digest,
        received_at=now,
        **_columns(kind, fields, quarantined=bool(problem)),
    )
    try:
        with session.begin_nested():
            session.add(result)
            session.flush()
    except IntegrityError:
        # The same accession was being posted concurrently (a lab's retry) and the other
        # request won: answer as for any repeat (200), or 409 if the content differs.
        if result in session:
            session.expunge(result)
        winner = session.exec(
            select(LabResult).where(
                LabResult.source == source, LabResult.accession_id == accession_id
            )
        ).one()
        if winner.payload_sha256 != digest:
            raise Conflict(
                f"accession {accession_id} was already received with different content",
                {"accession_id": ["already received with different content"]},
            ) from None
        return Ingested(winner, False)
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="result.quarantine" if problem else "result.create",
        entity="lab_result",
        entity_id=result.id,
        site_id=result.site_id,
        now=now,
        after={
            "kind": kind.value,
            "accession_id": accession_id,
            "status": result.status.value,
            "participant_id": result.participant_id,
        },
        reason=problem,
    )
    if problem or participant is None:
        return Ingested(result, True)
    if retracted is not None:
        audit.record(
            session=session,
            actor=actor,
            actor_user_id=actor_user_id,
            action="result.pam_retraction",
            entity="lab_result",
            entity_id=retracted.id,
            site_id=result.site_id,
            now=now,
            before={"pam_mutation": True},
            after={"pam_mutation": "retracted", "retracted_by": accession_id},
            reason=f"result {accession_id} retracts the PAM mutation of {retracted.accession_id}",
        )
    alert_id = apply(
        session=session,
        result=result,
        participant=participant,
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
    )
    return Ingested(result, True, alert_id)


def _columns(kind: ResultKind, f: dict[str, Any], *, quarantined: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "collected_at": f.get("collected_at"),
        "reported_at": f.get("reported_at"),
        "performed_on": f.get("performed_on"),
        "assay": f.get("assay"),
        "mtm_per_ml": f.get("mtm_per_ml"),
        "modality": f.get("modality"),
        "is_confirmed": f.get("is_confirmed"),
        "marker": f.get("marker"),
        "value": f.get("value"),
        "unit": f.get("unit"),
    }
    if kind == ResultKind.CTDNA and f.get("call") in rules.CTDNA_CALLS:
        out["call"] = CtdnaCall(f["call"])
    if kind == ResultKind.IMAGING and f.get("recist") in rules.RECIST:
        out["recist"] = Recist(f["recist"])
    return out


def _local_day(result: LabResult, tz: str) -> date | None:
    if result.performed_on is not None:
        return result.performed_on
    return local_date(result.collected_at, tz)


def _fulfils(session: Session, result: LabResult, participant: Participant) -> ScheduleEvent | None:
    day = _local_day(result, participant.timezone)
    if day is None:
        return None
    candidates = session.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == participant.id,
            col(ScheduleEvent.event_type).in_(list(EVENT_TYPES[result.kind])),
            col(ScheduleEvent.status).notin_([EventStatus.CANCELLED, EventStatus.NOT_APPLICABLE]),
        )
    ).all()
    taken = set(
        session.exec(
            select(LabResult.event_id).where(
                LabResult.participant_id == participant.id,
                col(LabResult.event_id).is_not(None),
                LabResult.kind == result.kind,
            )
        ).all()
    )
    free = [e for e in candidates if e.id not in taken]
    # 1. A draw or scan recorded as done that very day (even late, outside its window).
    done_that_day = [e for e in free if e.status == EventStatus.COMPLETED and e.completed_on == day]
    # 2. An event whose window holds the day.
    inside = [e for e in free if e.window_open_date <= day <= e.window_close_date]
    # 3. The nearest event within two weeks that still awaits its sample or its result.
    near = [
        e
        for e in free
        if abs((e.target_date - day).days) <= 14
        and (
            e.status in (EventStatus.PLANNED, EventStatus.OPEN, EventStatus.MISSED)
            or (e.status == EventStatus.COMPLETED and e.expects_result is not None)
        )
    ]
    pool = done_that_day or inside or near
    if not pool:
        return None
    rank = {t: i for i, t in enumerate(EVENT_TYPES[result.kind])}
    # The assay's own event type first (tumour markers before routine bloods), then the nearest.
    return min(pool, key=lambda e: (rank[e.event_type], abs((e.target_date - day).days)))


def apply(
    *,
    session: Session,
    result: LabResult,
    participant: Participant,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
) -> int | None:
    """Link the result to its event, complete it, and act on the study's rules; a participant in
    screening at an entry gate then moves on if the gate has decided."""
    _, protocol = protocol_of_study(session, participant.study_id)
    gated = participant.status == ParticipantStatus.SCREENING and protocol.entry_gate is not None
    alert_id = _apply(
        session=session,
        result=result,
        participant=participant,
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
        gated=gated,
    )
    if gated:
        session.flush()
        entry_gate.evaluate(session=session, participant=participant, now=now)
    return alert_id


# The findings an entry gate decides itself (routine, through the gate), not a critical alert.
GATE_DECIDES = frozenset({AlertKind.CTDNA_POSITIVE_BASELINE, AlertKind.CTDNA_POSITIVE})


def _apply(
    *,
    session: Session,
    result: LabResult,
    participant: Participant,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
    gated: bool,
) -> int | None:
    event = _fulfils(session, result, participant)
    outcome: dict[str, Any] = {}
    if result.kind == ResultKind.CTDNA and result.call in (CtdnaCall.POSITIVE, CtdnaCall.NEGATIVE):
        outcome["ctdna"] = result.call.value
        if result.payload.get("pam_mutation") is not None:
            outcome["pam_mutation"] = bool(result.payload["pam_mutation"])
    if result.kind == ResultKind.IMAGING and result.recist is not None:
        outcome["recist"] = result.recist.value
    if event is not None:
        result.event_id = event.id
        session.add(result)
        day = _local_day(result, participant.timezone)
        if event.status in (EventStatus.PLANNED, EventStatus.OPEN, EventStatus.MISSED) and day:
            schedules.complete_event(
                session=session,
                participant=participant,
                event=event,
                completed_on=min(day, schedules.local_today(participant, now)),
                now=now,
                actor=actor,
                actor_user_id=actor_user_id,
                reason=f"result {result.accession_id}",
                outcome=outcome or None,
            )
        elif outcome and not event.outcome:
            event.outcome = outcome
            session.add(event)
            schedules.refresh_decisions(session=session, participant=participant, now=now)
    if result.kind == ResultKind.CTDNA and (
        result.payload.get("pam_mutation") is not None
        or result.payload.get("retracts_pam_mutation_of")
    ):
        # PAM status is read from every ctDNA result, linked to a draw or not.
        session.flush()
        schedules.refresh_decisions(session=session, participant=participant, now=now)
    _, protocol = protocol_of_study(session, participant.study_id)
    study_rules = frozenset(r.value for r in protocol.rules)
    if result.kind == ResultKind.CTDNA and result.call is not None:
        prior = [
            str(getattr(c, "value", c))
            for c in session.exec(
                select(LabResult.call)
                .where(
                    LabResult.participant_id == participant.id,
                    LabResult.kind == ResultKind.CTDNA,
                    LabResult.status == ResultStatus.ACCEPTED,
                    LabResult.id != result.id,
                    col(LabResult.collected_at) <= (result.collected_at or now),
                )
                .order_by(col(LabResult.collected_at), col(LabResult.id))
            ).all()
            if c is not None
        ]
        is_baseline = bool(event and "baseline" in event.item_id) or bool(
            participant.anchor_date
            and result.collected_at
            and result.collected_at.astimezone(ZoneInfo(participant.timezone)).date()
            <= participant.anchor_date
        )
        finding = rules.ctdna_finding(
            call=result.call.value,
            prior_calls=prior,
            is_baseline=is_baseline,
            study_rules=study_rules,
        )
    elif result.kind == ResultKind.IMAGING and result.recist is not None:
        finding = rules.imaging_finding(recist=result.recist.value, study_rules=study_rules)
    else:
        return None
    if finding.pfs_event and result.performed_on:
        _record_pfs(session, participant, result)
    if finding.redraw:
        _plan_redraw(session, participant, result, event, now, gated=gated)
    if finding.alert is None or (gated and finding.alert in GATE_DECIDES):
        return None
    alert, _ = alerts.open_alert(
        session=session,
        kind=finding.alert,
        trigger_key=f"result:{result.id}",
        participant=participant,
        site_id=participant.site_id,
        summary=finding.reason,
        result_id=result.id,
        event_id=event.id if event else None,
        now=now,
    )
    return alert.id


def _record_pfs(session: Session, participant: Participant, result: LabResult) -> None:
    assert result.performed_on is not None
    days = (result.performed_on - participant.anchor_date).days if participant.anchor_date else None
    session.add(
        PfsEvent(
            participant_id=participant.id,  # type: ignore[arg-type]
            result_id=result.id,  # type: ignore[arg-type]
            progression_on=result.performed_on,
            days_from_anchor=days,
        )
    )


def _plan_redraw(
    session: Session,
    participant: Participant,
    result: LabResult,
    event: ScheduleEvent | None,
    now: datetime,
    gated: bool = False,
) -> None:
    """A failed test asks for a new draw as soon as possible (a week's window); in screening
    too, where the entry gate waits for it."""
    if participant.status not in schedules.PLANNING_STATUSES and not gated:
        return
    zone = ZoneInfo(participant.timezone)
    today = schedules.local_today(participant, now)
    target = today + timedelta(days=1)
    at = (event.target_at.astimezone(zone).time() if event else datetime.min.time()).replace(
        tzinfo=None
    )
    base = event.key if event else f"ctdna:{result.id}"
    n = (
        len(
            session.exec(
                select(ScheduleEvent.id).where(
                    ScheduleEvent.participant_id == participant.id,
                    col(ScheduleEvent.key).startswith(f"{base}:redraw"),
                )
            ).all()
        )
        + 1
    )
    redraw = ScheduleEvent(
        participant_id=participant.id,  # type: ignore[arg-type]
        key=f"{base}:redraw{n}"[:80],
        item_id=(event.item_id if event else "ctdna") + "_redraw",
        sequence=n,
        event_type=EventType.CTDNA_DRAW,
        label="ctDNA redraw (previous test failed)",
        phase=event.phase if event else None,
        protocol_version=event.protocol_version if event else (participant.protocol_version or ""),
        target_date=target,
        window_open_date=today,
        window_close_date=today + timedelta(days=7),
        target_at=datetime.combine(
            target, at if at.hour else datetime.min.time().replace(hour=9), zone
        ).astimezone(ZoneInfo("UTC")),
        window_open_at=datetime.combine(today, datetime.min.time(), zone).astimezone(
            ZoneInfo("UTC")
        ),
        window_close_at=datetime.combine(
            today + timedelta(days=8), datetime.min.time(), zone
        ).astimezone(ZoneInfo("UTC")),
        expects_result="ctdna",
        result_turnaround_days=event.result_turnaround_days if event else 14,
        status=EventStatus.OPEN,
        is_touched=True,
        status_reason=f"redraw after {result.call.value if result.call else 'failed'} result",
        created_at=now,
        updated_at=now,
    )
    session.add(redraw)
    session.flush()
    audit.record(
        session=session,
        actor="system:rules",
        action="event.redraw",
        entity="schedule_event",
        entity_id=redraw.id,
        site_id=participant.site_id,
        now=now,
        after={"key": redraw.key, "target_date": target},
        reason="failed ctDNA test",
    )
    reminders.materialize(session=session, now=now, participant_id=participant.id)


# --- watchdogs -----------------------------------------------------------------------------------


@dataclass
class AwaitedResult:
    """A completed draw or scan whose result is later than the assay's turnaround."""

    event: ScheduleEvent
    participant: Participant
    turnaround_days: int
    days_waiting: int


# How far back a completed draw or scan is still watched for its result.
AWAITED_RESULT_DAYS = 120


# Outcome fields that carry the result itself (a ctDNA call, a RECIST response).
RESULT_OUTCOMES = frozenset({"ctdna", "recist"})


def results_overdue(
    *, session: Session, now: datetime, site_ids: Any = None
) -> list[AwaitedResult]:
    """Completed draws and scans of participants still followed, done in the last 120 days,
    with no result after the assay's turnaround (in the participant's local days); optionally
    only at `site_ids` (a list or a subquery). The watchdog job and the Today page share it."""
    # Only apply() links a result to an event, and always to that event's participant: the
    # participant column lets the lookup use the (participant_id, kind, ...) index.
    has_result = (
        select(LabResult.id)
        .where(
            col(LabResult.participant_id) == col(ScheduleEvent.participant_id),
            col(LabResult.event_id) == col(ScheduleEvent.id),
        )
        .exists()
    )
    q = (
        select(ScheduleEvent, Participant)
        .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
        .where(
            ScheduleEvent.status == EventStatus.COMPLETED,
            col(ScheduleEvent.expects_result).is_not(None),
            col(ScheduleEvent.completed_on).is_not(None),
            col(ScheduleEvent.completed_on) >= (now - timedelta(days=AWAITED_RESULT_DAYS)).date(),
            col(Participant.status).in_(
                [
                    ParticipantStatus.ACTIVE,
                    ParticipantStatus.OFF_TREATMENT_MONITORING,
                    # The entry gate's draws and scans in screening await their results too.
                    ParticipantStatus.SCREENING,
                ]
            ),
            ~has_result,
        )
        .order_by(col(ScheduleEvent.completed_on), col(ScheduleEvent.id))
    )
    if site_ids is not None:
        q = q.where(col(Participant.site_id).in_(site_ids))
    out = []
    for event, participant in session.exec(q).all():
        assert event.completed_on is not None
        if RESULT_OUTCOMES & set(event.outcome or {}):
            continue  # the team recorded the result with the completion: nothing is awaited
        turnaround = event.result_turnaround_days or 14
        today = schedules.local_today(participant, now)
        if rules.is_result_overdue(
            done_on=event.completed_on, turnaround_days=turnaround, today=today
        ):
            out.append(
                AwaitedResult(
                    event=event,
                    participant=participant,
                    turnaround_days=turnaround,
                    days_waiting=(today - event.completed_on).days,
                )
            )
    return out


OVERDUE_COMMIT_EVERY = 20


def overdue_results(*, session: Session, now: datetime) -> dict[str, int]:
    """Draws and scans done longer ago than the assay's turnaround with no result: tell the
    coordinator (once per event)."""
    opened = 0
    rules_by_study: dict[int, frozenset[str]] = {}
    for item in results_overdue(session=session, now=now):
        event, participant = item.event, item.participant
        if participant.study_id not in rules_by_study:
            _, protocol = protocol_of_study(session, participant.study_id)
            rules_by_study[participant.study_id] = frozenset(r.value for r in protocol.rules)
        if "result_overdue" not in rules_by_study[participant.study_id]:
            continue
        _, created = alerts.open_alert(
            session=session,
            kind=AlertKind.RESULT_OVERDUE,
            trigger_key=f"overdue:{event.id}",
            participant=participant,
            site_id=participant.site_id,
            summary=f"{event.label} #{event.sequence}, done {event.completed_on}: no result "
            f"after the {item.turnaround_days}-day turnaround",
            event_id=event.id,
            now=now,
        )
        opened += int(created)
        if created and opened % OVERDUE_COMMIT_EVERY == 0:
            session.commit()  # a lab's outage makes hundreds at once: short transactions
    return {"opened": opened}


def on_missed_events(*, session: Session, events: list[ScheduleEvent], now: datetime) -> int:
    """A missed ctDNA window tells the coordinator (studies with the missed_ctdna_window rule)."""
    opened = 0
    for event in events:
        if event.event_type != EventType.CTDNA_DRAW:
            continue
        participant = session.get(Participant, event.participant_id)
        # In screening too: a missed gate draw leaves the entry gate waiting (HEROES baseline).
        followed = (*schedules.PLANNING_STATUSES, ParticipantStatus.SCREENING)
        if participant is None or participant.status not in followed:
            continue
        _, protocol = protocol_of_study(session, participant.study_id)
        if "missed_ctdna_window" not in {r.value for r in protocol.rules}:
            continue
        _, created = alerts.open_alert(
            session=session,
            kind=AlertKind.MISSED_WINDOW,
            trigger_key=f"missed:{event.id}",
            participant=participant,
            site_id=participant.site_id,
            summary=f"{event.label} #{event.sequence}: window closed "
            f"{event.window_close_date} without a draw",
            event_id=event.id,
            now=now,
        )
        opened += int(created)
    return opened
