"""Entry gates (issue 17): the protocol, not a person's memory, decides who enters monitoring.

A gated protocol (config/protocols/*.yaml `entry_gate:`) enrols participants in screening with
only the gate's events planned. Each time one of the gate's facts may have come in (a result, an
event recorded as done, an attestation, the confirmed stop date), `evaluate` reads the facts,
records the definitive ones once with their provenance, and moves the participant on its own:

- every fact passes and the stop date is confirmed: monitoring, planned from that stop date;
- a fact fails (HEROES: Signatera-positive at baseline): continues maintenance, nothing more
  planned or sent, and the coordinator is told (a routine alert, not a critical one);
- anything else waits (a failed test is redrawn by the study's rule; the coordinator is asked to
  confirm the stop date once every fact passes).

The investigator may override the gate with a reason (`override`, audited). This module is a
flow: it calls the schedules and alerts services, and nothing below it calls back up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlmodel import Session, col, select

from server import audit
from server.alerts import service as alerts
from server.alerts.models import Alert, AlertKind, AlertState
from server.auth.models import Role, StaffUser
from server.auth.service import actor_of
from server.errors import Conflict, Forbidden, ValidationFailed, field_error
from server.participants.models import EligibilityFact, Participant, ParticipantStatus
from server.protocols import rules as engine
from server.protocols import service as protocols
from server.protocols.definition import (
    STOP_DATE_FACT,
    EntryGate,
    GateFact,
    GateProvenance,
    Protocol,
)
from server.results.models import LabResult, ResultStatus
from server.schedules import service as schedules
from server.schedules.models import EventStatus, EventType, ScheduleEvent

PASS, FAIL, WAIT = "pass", "fail", "wait"


@dataclass
class FactState:
    """One gate fact for one participant: its value (None: not in yet), the gate's verdict on
    it, the recorded row (provenance, attester) once definitive, and what it waits for."""

    fact: GateFact
    value: str | None
    verdict: str
    record: EligibilityFact | None = None
    waiting_for: str | None = None
    result: LabResult | None = None
    event: ScheduleEvent | None = None

    def as_dict(self) -> dict[str, Any]:
        record = self.record
        return {
            "key": self.fact.key,
            "label": self.fact.label,
            "provenance": self.fact.provenance.value,
            "item": self.fact.item,
            "passes": list(self.fact.passes),
            "fails": list(self.fact.fails),
            "value": self.value,
            "verdict": self.verdict,
            "waiting_for": self.waiting_for,
            "recorded": _record_dict(record) if record is not None else None,
        }


@dataclass
class GateState:
    """Where a participant stands at their protocol's entry gate."""

    gate: EntryGate
    facts: list[FactState]
    stop_date: date | None
    stop_record: EligibilityFact | None
    outcome: str
    awaiting: list[str] = field(default_factory=list)

    def as_dict(self, participant: Participant) -> dict[str, Any]:
        gate = self.gate
        return {
            "label": gate.label,
            "source": gate.source,
            "status": participant.status.value,
            "outcome": self.outcome,
            "decided": participant.status != ParticipantStatus.SCREENING,
            "awaiting": list(self.awaiting),
            "facts": [f.as_dict() for f in self.facts],
            "stop_date": {
                "label": gate.stop_date,
                "value": self.stop_date.isoformat() if self.stop_date else None,
                "recorded": _record_dict(self.stop_record) if self.stop_record else None,
            },
            "paths": engine.gate_paths(gate),
        }


def _record_dict(record: EligibilityFact) -> dict[str, Any]:
    return {
        "value": record.value,
        "provenance": record.provenance,
        "result_id": record.result_id,
        "event_id": record.event_id,
        "observed_on": record.observed_on.isoformat() if record.observed_on else None,
        "attested_by_user_id": record.attested_by_user_id,
        "note": record.note,
        "recorded_at": record.recorded_at.isoformat(),
    }


# --- reading the facts ---------------------------------------------------------------------------


def protocol_for(session: Session, participant: Participant) -> Protocol:
    """The protocol version the participant follows (the study's current one if none yet)."""
    study, current = protocols.protocol_of_study(session, participant.study_id)
    if participant.protocol_version is None:
        return current
    return protocols.protocol_version(
        session=session, protocol_key=study.protocol_key, version=participant.protocol_version
    )


def records(session: Session, participant_id: int) -> dict[str, EligibilityFact]:
    """The participant's recorded eligibility facts by key."""
    rows = session.exec(
        select(EligibilityFact)
        .where(EligibilityFact.participant_id == participant_id)
        .order_by(col(EligibilityFact.id))
    ).all()
    return {r.fact_key: r for r in rows}


def _gate_events(session: Session, participant: Participant, item: str) -> list[ScheduleEvent]:
    # A failed test's redraw (results service) is the item's id with "_redraw".
    return list(
        session.exec(
            select(ScheduleEvent)
            .where(
                ScheduleEvent.participant_id == participant.id,
                col(ScheduleEvent.item_id).in_([item, f"{item}_redraw"]),
            )
            .order_by(col(ScheduleEvent.id))
        ).all()
    )


def _from_result(
    session: Session, participant: Participant, fact: GateFact
) -> tuple[str | None, LabResult | None, ScheduleEvent | None, str]:
    assert fact.item is not None
    events = {e.id: e for e in _gate_events(session, participant, fact.item)}
    if not events:
        return None, None, None, f"the {fact.item} event"
    rows = session.exec(
        select(LabResult)
        .where(
            LabResult.participant_id == participant.id,
            LabResult.status == ResultStatus.ACCEPTED,
            col(LabResult.event_id).in_(list(events)),
        )
        .order_by(col(LabResult.id))
    ).all()
    if not rows:
        # The care team may record the call with the draw's completion (an event outcome).
        recorded = [
            e
            for e in events.values()
            if e.status == EventStatus.COMPLETED and _outcome_value(e) is not None
        ]
        if recorded:
            event = max(recorded, key=lambda e: e.id or 0)
            called = str(_outcome_value(event))
            waiting = "" if called in (*fact.passes, *fact.fails) else "a new draw's result"
            return called, None, event, waiting
        return None, None, None, f"the result of {fact.item}"
    latest = rows[-1]
    value = latest.call.value if latest.call else (latest.recist.value if latest.recist else None)
    waiting = "the redraw's result" if value not in (*fact.passes, *fact.fails) else ""
    return value, latest, events.get(latest.event_id), waiting


def _outcome_value(event: ScheduleEvent) -> Any:
    key = "ctdna" if event.event_type == EventType.CTDNA_DRAW else "recist"
    return (event.outcome or {}).get(key)


def _from_event(
    session: Session, participant: Participant, fact: GateFact, stop: date | None
) -> tuple[str | None, ScheduleEvent | None, str]:
    assert fact.item is not None and fact.within is not None
    done = [
        e
        for e in _gate_events(session, participant, fact.item)
        if e.status == EventStatus.COMPLETED and e.completed_on is not None
    ]
    if not done:
        return None, None, f"{fact.item} recorded as done"
    latest = max(done, key=lambda e: (e.completed_on, e.id))
    if stop is None:
        return None, latest, "the confirmed stop date"
    assert latest.completed_on is not None
    earliest = stop - fact.within.delta()
    value = "within" if earliest <= latest.completed_on <= stop else "outside"
    waiting = "" if value in fact.passes else f"new {fact.item} within {fact.within} of the stop"
    return value, latest, waiting


def state(session: Session, participant: Participant, protocol: Protocol) -> GateState | None:
    """The participant's gate: each fact's value and verdict, the stop date, the outcome."""
    gate = protocol.entry_gate
    if gate is None:
        return None
    recorded = records(session, participant.id)  # type: ignore[arg-type]
    stop_record = recorded.get(STOP_DATE_FACT)
    stop = date.fromisoformat(stop_record.value) if stop_record else None
    facts: list[FactState] = []
    for fact in gate.facts:
        record = recorded.get(fact.key)
        if record is not None:
            # Recorded once: a definitive value stays (a correction is the investigator's).
            facts.append(FactState(fact, record.value, fact.verdict(record.value), record))
            continue
        if fact.provenance == GateProvenance.RESULT:
            value, result, event, waiting = _from_result(session, participant, fact)
            facts.append(
                FactState(fact, value, fact.verdict(value), None, waiting or None, result, event)
            )
        elif fact.provenance == GateProvenance.EVENT:
            value, event, waiting = _from_event(session, participant, fact, stop)
            facts.append(
                FactState(fact, value, fact.verdict(value), None, waiting or None, event=event)
            )
        else:
            facts.append(FactState(fact, None, WAIT, None, "a person's attestation"))
    verdicts = [f.verdict for f in facts]
    awaiting = [f"{f.fact.label}: {f.waiting_for}" for f in facts if f.verdict == WAIT]
    if FAIL in verdicts:
        outcome = FAIL
    elif all(v == PASS for v in verdicts) and stop is not None:
        outcome = PASS
    else:
        outcome = WAIT
        if stop is None:
            awaiting.append(gate.stop_date)
    return GateState(gate, facts, stop, stop_record, outcome, awaiting)


def participant_state(session: Session, participant: Participant) -> GateState | None:
    """The gate state of a participant of a gated protocol (None when there is no gate)."""
    return state(session, participant, protocol_for(session, participant))


# --- recording -----------------------------------------------------------------------------------


def _record(
    session: Session,
    participant: Participant,
    *,
    key: str,
    value: str,
    provenance: str,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    observed_on: date | None = None,
    result_id: int | None = None,
    event_id: int | None = None,
    note: str | None = None,
) -> EligibilityFact:
    row = EligibilityFact(
        participant_id=participant.id,  # type: ignore[arg-type]
        fact_key=key,
        value=value,
        provenance=provenance,
        result_id=result_id,
        event_id=event_id,
        observed_on=observed_on,
        attested_by_user_id=actor_user_id if provenance == GateProvenance.ATTESTATION else None,
        note=note,
        recorded_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="eligibility.record",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        after={
            "fact": key,
            "value": value,
            "provenance": provenance,
            "observed_on": observed_on,
            "result_id": result_id,
            "event_id": event_id,
            "attested_by_user_id": row.attested_by_user_id,
        },
        reason=note,
    )
    return row


def _record_definitive(
    session: Session, participant: Participant, st: GateState, now: datetime
) -> None:
    for fs in st.facts:
        if fs.record is not None or fs.verdict == WAIT or fs.value is None:
            continue
        observed = None
        if fs.result is not None:
            observed = fs.result.performed_on or (
                fs.result.collected_at.date() if fs.result.collected_at else None
            )
        elif fs.event is not None:
            observed = fs.event.completed_on
        fs.record = _record(
            session,
            participant,
            key=fs.fact.key,
            value=fs.value,
            # A call recorded with the draw's completion (no lab result): the event's outcome.
            provenance=(
                GateProvenance.EVENT.value
                if fs.result is None and fs.event is not None
                else fs.fact.provenance.value
            ),
            now=now,
            actor="system:entry_gate",
            observed_on=observed,
            result_id=fs.result.id if fs.result is not None else None,
            event_id=fs.event.id if fs.event is not None else None,
            note=(f"result {fs.result.accession_id}" if fs.result is not None else None),
        )


# --- moving the participant ----------------------------------------------------------------------


def evaluate(
    *,
    session: Session,
    participant: Participant,
    now: datetime,
    actor: str = "system:entry_gate",
    actor_user_id: int | None = None,
) -> GateState | None:
    """Read a screening participant's gate facts, record the definitive ones, and move the
    participant if the gate has decided. None when there is nothing to decide."""
    if participant.status != ParticipantStatus.SCREENING:
        return None
    protocol = protocol_for(session, participant)
    st = state(session, participant, protocol)
    if st is None:
        return None
    _record_definitive(session, participant, st, now)
    if st.outcome == PASS:
        assert st.stop_date is not None
        _enter_monitoring(
            session,
            participant,
            protocol,
            stop=st.stop_date,
            now=now,
            actor=actor,
            actor_user_id=actor_user_id,
            reason="entry gate passed: " + _facts_text(st),
        )
    elif st.outcome == FAIL:
        _continue_maintenance(
            session,
            participant,
            st.gate,
            now=now,
            actor=actor,
            actor_user_id=actor_user_id,
            reason="entry gate: " + _facts_text(st),
        )
    elif st.stop_date is None and all(f.verdict == PASS for f in st.facts):
        # Everything is in but the day treatment actually stops: a task for the coordinator.
        alerts.open_alert(
            session=session,
            kind=AlertKind.ENTRY_GATE,
            trigger_key=f"gate:{participant.id}:confirm_stop",
            participant=participant,
            site_id=participant.site_id,
            summary=f"{participant.study_code}: entry gate passed ({_facts_text(st)}); "
            f"confirm the stop date to start monitoring",
            now=now,
        )
    return st


def _facts_text(st: GateState) -> str:
    return ", ".join(f"{f.fact.label} {f.value or 'not in'}" for f in st.facts)


def _enter_monitoring(
    session: Session,
    participant: Participant,
    protocol: Protocol,
    *,
    stop: date,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
    reason: str,
) -> None:
    gate = protocol.entry_gate
    assert gate is not None
    before = audit.snapshot(participant, ("status", "cohort", "anchor_date"))
    participant.status = ParticipantStatus.OFF_TREATMENT_MONITORING
    participant.anchor_date = stop
    participant.cohort = schedules.resolve_cohort(
        protocol, gate.on_pass.cohort or participant.cohort, required=True
    )
    participant.updated_at = now
    session.add(participant)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="entry_gate.passed",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        before=before,
        after=audit.snapshot(participant, ("status", "cohort", "anchor_date")),
        reason=reason,
    )
    schedules.on_participant_changed(
        session=session,
        participant=participant,
        changed={"status", "anchor_date", "cohort"},
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
        reason=reason,
    )
    _close_task(session, participant, "confirm_stop", now=now, actor=actor, note=reason)


def _close_task(
    session: Session, participant: Participant, task: str, *, now: datetime, actor: str, note: str
) -> None:
    """The gate's task for the coordinator is done once the gate has moved the participant."""
    alert = session.exec(
        select(Alert).where(Alert.trigger_key == f"gate:{participant.id}:{task}")
    ).first()
    if alert is None or alert.state == AlertState.RESOLVED:
        return
    before = alert.state.value
    alert.state = AlertState.RESOLVED
    alert.resolved_at = now
    alert.resolution_note = note[:2000]
    alert.next_tier_at = None
    session.add(alert)
    alerts.log(session, alert, "resolved", now, actor=actor, detail={"note": note})
    audit.record(
        session=session,
        actor=actor,
        action="alert.resolve",
        entity="alert",
        entity_id=alert.id,
        site_id=alert.site_id,
        now=now,
        before={"state": before},
        after={"state": AlertState.RESOLVED.value},
        reason=note,
    )


def _continue_maintenance(
    session: Session,
    participant: Participant,
    gate: EntryGate,
    *,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
    reason: str,
) -> None:
    assert gate.on_fail is not None
    before = audit.snapshot(participant, ("status", "cohort"))
    participant.status = ParticipantStatus.CONTINUES_MAINTENANCE
    if gate.on_fail.cohort is not None:
        participant.cohort = gate.on_fail.cohort
    participant.updated_at = now
    session.add(participant)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="entry_gate.failed",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        before=before,
        after=audit.snapshot(participant, ("status", "cohort")),
        reason=reason,
    )
    # Ends whatever is still pending (a redraw); nothing more is planned, no reminder goes.
    schedules.on_participant_changed(
        session=session,
        participant=participant,
        changed={"status"},
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
        reason=gate.on_fail.label,
    )
    # The coordinator is told, as a routine task: nothing is urgent, the participant simply
    # stays on the therapy they are on.
    alerts.open_alert(
        session=session,
        kind=AlertKind.ENTRY_GATE,
        trigger_key=f"gate:{participant.id}:fail",
        participant=participant,
        site_id=participant.site_id,
        summary=f"{participant.study_code}: {gate.on_fail.label} ({reason})",
        now=now,
    )


# --- staff actions -------------------------------------------------------------------------------


def check_attestation(
    protocol: Protocol,
    key: str,
    value: str,
    observed_on: date | None,
    today: date,
    *,
    field: str,
) -> tuple[str, date]:
    """An attested value in canonical form and its date, or ValidationFailed naming `field`."""
    gate = protocol.entry_gate
    assert gate is not None
    if observed_on is None:
        raise ValidationFailed(
            f"{field}: the date it held is required", {field: ["give the date it held"]}
        )
    if observed_on > today + _YEAR:
        raise ValidationFailed(f"{field}: too far ahead", {field: ["more than a year ahead"]})
    if key == STOP_DATE_FACT:
        return observed_on.isoformat(), observed_on
    if observed_on > today:
        raise ValidationFailed(f"{field}: in the future", {field: ["the date is in the future"]})
    try:
        fact = gate.fact(key)
    except KeyError:
        known = ", ".join([f.key for f in gate.facts] + [STOP_DATE_FACT])
        raise ValidationFailed(
            f"{field}: not a fact of this gate", {field: [f"not a fact of this gate ({known})"]}
        ) from None
    allowed = fact_values(protocol, fact)
    if value not in allowed:
        raise ValidationFailed(
            f"{field}: one of {', '.join(allowed)}", {field: [f"one of {', '.join(allowed)}"]}
        )
    return value, observed_on


def fact_values(protocol: Protocol, fact: GateFact) -> tuple[str, ...]:
    """The values a gate fact can take (a result fact: those of its item's result)."""
    kind = None
    if fact.item is not None:
        expects = protocol.item(fact.item).expects
        kind = expects.result if expects is not None else None
    return fact.allowed(kind)


def attest(
    *,
    session: Session,
    participant: Participant,
    user: StaffUser,
    key: str,
    value: str,
    observed_on: date | None,
    note: str | None,
    now: datetime,
) -> GateState:
    """A person attests one gate fact (one the protocol says a person attests) or the confirmed
    stop date, once, with the date it held; then the gate is evaluated."""
    protocol = protocol_for(session, participant)
    gate = protocol.entry_gate
    if gate is None:
        raise Conflict(f"{protocol.study} has no entry gate")
    if participant.status != ParticipantStatus.SCREENING:
        raise Conflict(
            f"participant is {participant.status.value}: the entry gate has decided "
            "(the investigator can override it)"
        )
    if key != STOP_DATE_FACT:
        try:
            fact = gate.fact(key)
        except KeyError:
            fact = None
        if fact is not None and fact.provenance != GateProvenance.ATTESTATION:
            raise field_error(
                "fact", f"{key} comes from a {fact.provenance.value}, not from a person"
            )
    today = schedules.local_today(participant, now)
    clean, day = check_attestation(protocol, key, value, observed_on, today, field="value")
    existing = records(session, participant.id).get(key)  # type: ignore[arg-type]
    if existing is not None:
        raise Conflict(
            f"{key} is already recorded ({existing.value}, {existing.provenance}); the "
            "investigator can override the gate"
        )
    _record(
        session,
        participant,
        key=key,
        value=clean,
        provenance=GateProvenance.ATTESTATION.value,
        now=now,
        actor=actor_of(user),
        actor_user_id=user.id,
        observed_on=day,
        note=note,
    )
    if key == STOP_DATE_FACT and participant.anchor_date != day:
        # The gate's events were planned from the planned stop date; the confirmed one counts.
        participant.anchor_date = day
        session.add(participant)
        schedules.on_participant_changed(
            session=session,
            participant=participant,
            changed={"anchor_date"},
            now=now,
            actor=actor_of(user),
            actor_user_id=user.id,
            reason="stop date confirmed",
        )
    evaluate(
        session=session,
        participant=participant,
        now=now,
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    st = participant_state(session, participant)
    assert st is not None
    return st


def record_enrolment_attestations(
    *,
    session: Session,
    participant: Participant,
    user: StaffUser,
    attested: dict[str, tuple[str, date]],
    now: datetime,
) -> None:
    """The facts a person attested on the enrolment form (already checked), recorded once."""
    for key, (value, day) in attested.items():
        _record(
            session,
            participant,
            key=key,
            value=value,
            provenance=GateProvenance.ATTESTATION.value,
            now=now,
            actor=actor_of(user),
            actor_user_id=user.id,
            observed_on=day,
            note="attested at enrolment",
        )


OVERRIDE_OUTCOMES = (PASS, FAIL)


def override(
    *,
    session: Session,
    participant: Participant,
    user: StaffUser,
    outcome: str,
    reason: str,
    stop_date: date | None,
    now: datetime,
) -> GateState:
    """The investigator decides the gate against (or before) its facts, with a reason: pass
    (monitoring from the stop date) or fail (continues maintenance). Audited."""
    if user.role != Role.INVESTIGATOR:
        raise Forbidden("only the investigator can override the entry gate")
    if outcome not in OVERRIDE_OUTCOMES:
        raise field_error("outcome", "one of pass, fail")
    if not (reason and reason.strip()):
        raise field_error("reason", "required: say why (it goes in the audit trail)")
    protocol = protocol_for(session, participant)
    gate = protocol.entry_gate
    if gate is None:
        raise Conflict(f"{protocol.study} has no entry gate")
    allowed_from = {ParticipantStatus.SCREENING}
    if outcome == PASS:
        allowed_from.add(ParticipantStatus.CONTINUES_MAINTENANCE)
    if participant.status not in allowed_from:
        raise Conflict(f"participant is {participant.status.value}: nothing to override")
    if outcome == FAIL and gate.on_fail is None:
        raise field_error("outcome", f"{protocol.study}'s gate has no failing path")
    st = state(session, participant, protocol)
    assert st is not None
    stop = stop_date or st.stop_date
    if outcome == PASS and stop is None:
        raise field_error("stop_date", "required: the day the schedule counts from")
    today = schedules.local_today(participant, now)
    if stop is not None and stop_date is not None and stop_date > today + _YEAR:
        raise field_error("stop_date", "more than a year ahead")
    reason = reason.strip()
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="entry_gate.override",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        before={"status": participant.status.value, "gate_outcome": st.outcome},
        after={"outcome": outcome, "stop_date": stop},
        reason=reason,
    )
    if outcome == PASS:
        assert stop is not None
        if st.stop_record is None:
            _record(
                session,
                participant,
                key=STOP_DATE_FACT,
                value=stop.isoformat(),
                provenance=GateProvenance.ATTESTATION.value,
                now=now,
                actor=actor_of(user),
                actor_user_id=user.id,
                observed_on=stop,
                note=f"investigator override: {reason}",
            )
        _enter_monitoring(
            session,
            participant,
            protocol,
            stop=stop,
            now=now,
            actor=actor_of(user),
            actor_user_id=user.id,
            reason=f"investigator override: {reason}",
        )
    else:
        _continue_maintenance(
            session,
            participant,
            gate,
            now=now,
            actor=actor_of(user),
            actor_user_id=user.id,
            reason=f"investigator override: {reason}",
        )
    new = state(session, participant, protocol)
    assert new is not None
    return new


_YEAR = date(2001, 1, 1) - date(2000, 1, 1)


def attested_passing(protocol: Protocol, on: date) -> dict[str, dict[str, Any]] | None:
    """Every gate fact attested with its passing value as of `on` (None: the protocol has no
    gate): what enrolling past screening needs for a participant whose entry gate was passed
    before Stepdown (the demo, benchmarks, tests)."""
    gate = protocol.entry_gate
    if gate is None:
        return None
    return {f.key: {"value": f.passes[0], "observed_on": on} for f in gate.facts}
