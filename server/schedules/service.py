"""A participant's schedule: planning from the protocol, the event lifecycle, decision points.

One operation keeps the stored events in line with the protocol: `plan_participant` computes the
desired plan (protocol expansion, the care team's regimen choices, re-anchoring on actual dates)
and applies it to the events that may still move. Enrolment, anchor changes, status changes,
re-anchoring completions, recorded decisions and amendments all go through it.

Only pending (planned or open) events that staff have not moved by hand are re-planned; history
(completed, missed, cancelled) never changes. An amendment goes further: it re-plans only events
whose window has not opened yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from server import audit
from server.errors import Conflict, NotFound, ValidationFailed, field_error
from server.participants.models import Participant, ParticipantStatus
from server.protocols import rules as engine
from server.protocols import service as protocols
from server.protocols.definition import Protocol
from server.results.models import LabResult, ResultKind, ResultStatus
from server.schedules import reminders, rules
from server.schedules.models import (
    PENDING_STATUSES,
    Decision,
    DecisionStatus,
    EventStatus,
    EventType,
    ParticipantChoiceValue,
    ScheduleEvent,
)
from server.schedules.rules import CANCELLABLE, COMPLETABLE, MOVABLE, is_in_window

PLANNING_STATUSES = frozenset(
    {ParticipantStatus.ACTIVE, ParticipantStatus.OFF_TREATMENT_MONITORING}
)
ENDING_STATUSES = frozenset(
    {
        ParticipantStatus.RESUMED_TREATMENT,
        ParticipantStatus.WITHDRAWN,
        ParticipantStatus.COMPLETED,
        ParticipantStatus.CONTINUES_MAINTENANCE,
    }
)
RECIST = ("CR", "PR", "SD", "PD", "NE")


@dataclass
class PlanResult:
    """What a re-plan changed."""

    created: int = 0
    moved: int = 0
    cancelled: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.moved or self.cancelled)

    def as_dict(self) -> dict[str, int]:
        return {"created": self.created, "moved": self.moved, "cancelled": self.cancelled}


# --- protocol of a participant -------------------------------------------------------------------


def resolve_cohort(protocol: Protocol, cohort: str | None, *, required: bool) -> str | None:
    """Validate a cohort against the protocol; a one-cohort protocol fills it in."""
    keys = protocol.cohort_keys()
    if cohort is None:
        if len(keys) == 1:
            return keys[0]
        if required:
            raise field_error("cohort", f"required for {protocol.study}: one of {', '.join(keys)}")
        return None
    if cohort not in keys:
        raise field_error("cohort", f"not a cohort of {protocol.study}: one of {', '.join(keys)}")
    return cohort


def participant_protocol(*, session: Session, participant: Participant, now: datetime) -> Protocol:
    """The protocol version the participant follows (the current one when not yet set)."""
    study, current = protocols.protocol_of_study(session, participant.study_id)
    if participant.protocol_version is None:
        protocols.record_version(session=session, protocol=current, now=now)
        participant.protocol_version = current.version
        session.add(participant)
        return current
    return protocols.protocol_version(
        session=session, protocol_key=study.protocol_key, version=participant.protocol_version
    )


def _events(session: Session, participant_id: int) -> list[ScheduleEvent]:
    return list(
        session.exec(
            select(ScheduleEvent)
            .where(ScheduleEvent.participant_id == participant_id)
            .order_by(col(ScheduleEvent.target_at), col(ScheduleEvent.id))
        ).all()
    )


def _choices(session: Session, participant_id: int) -> dict[str, engine.Choice]:
    rows = session.exec(
        select(Decision).where(
            Decision.participant_id == participant_id, Decision.status == DecisionStatus.DECIDED
        )
    ).all()
    return {
        d.decision_key: engine.Choice(d.chosen_regimen, d.chosen_cycles)  # type: ignore[arg-type]
        for d in rows
        if d.chosen_regimen and d.chosen_cycles
    }


def _choice_rows(session: Session, participant_id: int) -> list[ParticipantChoiceValue]:
    return list(
        session.exec(
            select(ParticipantChoiceValue)
            .where(ParticipantChoiceValue.participant_id == participant_id)
            .order_by(col(ParticipantChoiceValue.id))
        ).all()
    )


def choice_values(session: Session, protocol: Protocol, participant_id: int) -> dict[str, str]:
    """The participant's values for the protocol's choices. A key the protocol version does not
    declare, or a value it no longer allows (after an amendment), is left out: the default
    applies, and planning never fails on a stale value."""
    out = {}
    for row in _choice_rows(session, participant_id):
        try:
            out.update(engine.check_participant_choices(protocol, {row.choice_key: row.value}))
        except ValueError:
            continue
    return out


# --- planning ------------------------------------------------------------------------------------


def desired_plan(
    protocol: Protocol,
    participant: Participant,
    existing: list[ScheduleEvent],
    choices: dict[str, engine.Choice],
    participant_choices: dict[str, str] | None = None,
    cohort: str | None = None,
) -> list[engine.PlannedEvent]:
    """The plan the protocol gives today: expansion, the regimens chosen at decisions and the
    participant's choices, then re-anchoring on actual dates. `cohort` stands in for the
    participant's while the entry gate has not chosen it (only the gate's items are kept)."""
    assert participant.anchor_date is not None
    assert (cohort or participant.cohort) is not None
    common: dict[str, Any] = {
        "cohort": cohort or participant.cohort,
        "anchor_date": participant.anchor_date,
        "tz": participant.timezone,
        "choices": choices,
        "participant_choices": participant_choices or {},
    }
    by_key = {p.key: p for p in engine.expand_schedule(protocol, **common)}
    reanchoring = sorted({p.item_id for p in by_key.values() if p.is_reanchoring})
    for item_id in reanchoring:
        done = [
            e
            for e in existing
            if e.item_id == item_id and e.status == EventStatus.COMPLETED and e.completed_on
        ]
        if not done:
            continue
        last = max(done, key=lambda e: e.sequence)
        override = engine.reanchor_item(
            protocol,
            item_id=item_id,
            sequence=last.sequence,
            completed_on=last.completed_on,  # type: ignore[arg-type]
            **common,
        )
        override_keys = {o.key for o in override}
        # Later occurrences of the item are now counted from the actual date: drop the old ones.
        for key, planned in list(by_key.items()):
            later = planned.item_id == item_id and planned.sequence > last.sequence
            if later and key not in override_keys:
                del by_key[key]
        for o in override:
            by_key[o.key] = o
    return sorted(by_key.values(), key=lambda p: (p.target_at, p.key))


def _replannable(event: ScheduleEvent, now: datetime, future_only: bool) -> bool:
    if event.status not in PENDING_STATUSES or event.is_touched:
        return False
    if future_only:
        return event.status == EventStatus.PLANNED and event.window_open_at > now
    return True


def _time_status(open_at: datetime, close_at: datetime, now: datetime) -> EventStatus:
    # A re-planned or new event is planned or open; the job marks missed ones (and audits them).
    return EventStatus.OPEN if open_at <= now < close_at else EventStatus.PLANNED


_PLANNED_FIELDS = (
    "item_id",
    "sequence",
    "event_type",
    "modality",
    "instrument",
    "regimen",
    "label",
    "phase",
    "target_date",
    "window_open_date",
    "window_close_date",
    "target_at",
    "window_open_at",
    "window_close_at",
    "expects_result",
    "result_turnaround_days",
    "is_reanchoring",
)


def _values(p: engine.PlannedEvent) -> dict[str, Any]:
    values = {f: getattr(p, f) for f in _PLANNED_FIELDS}
    values["event_type"] = EventType(p.event_type.value)
    return values


def apply_plan(
    *,
    session: Session,
    participant: Participant,
    desired: list[engine.PlannedEvent],
    version: str,
    now: datetime,
    future_only: bool = False,
    why: str | None = None,
) -> PlanResult:
    """Make the stored events match the desired plan where they may still move; an event no
    longer planned is cancelled saying `why` (default: the protocol version)."""
    result = PlanResult()
    changed_ids: list[int | None] = []
    existing = {e.key: e for e in _events(session, participant.id)}  # type: ignore[arg-type]
    wanted = set()
    for planned in desired:
        wanted.add(planned.key)
        event = existing.get(planned.key)
        values = _values(planned)
        if event is None:
            if future_only and planned.window_open_at <= now:
                continue  # an amendment does not invent events in the past
            session.add(
                ScheduleEvent(
                    participant_id=participant.id,  # type: ignore[arg-type]
                    key=planned.key,
                    protocol_version=version,
                    status=_time_status(planned.window_open_at, planned.window_close_at, now),
                    created_at=now,
                    updated_at=now,
                    **values,
                )
            )
            result.created += 1
        elif _replannable(event, now, future_only) and (
            any(getattr(event, f) != v for f, v in values.items())
            or event.protocol_version != version
        ):
            for f, v in values.items():
                setattr(event, f, v)
            event.protocol_version = version
            event.status = _time_status(event.window_open_at, event.window_close_at, now)
            event.updated_at = now
            session.add(event)
            changed_ids.append(event.id)
            result.moved += 1
    for key, event in existing.items():
        if key not in wanted and _replannable(event, now, future_only):
            event.status = EventStatus.CANCELLED
            event.status_reason = f"no longer planned ({why or f'protocol version {version}'})"
            event.updated_at = now
            session.add(event)
            changed_ids.append(event.id)
            result.cancelled += 1
    session.flush()
    reminders.cancel_for_events(session, changed_ids, now=now, reason="event re-planned")
    return result


def plan_participant(
    *,
    session: Session,
    participant: Participant,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    reason: str | None = None,
    future_only: bool = False,
    why: str | None = None,
) -> PlanResult | None:
    """(Re-)plan a participant's schedule; None when they are not in a planning status. A
    participant in screening at a protocol's entry gate gets the gate's events only."""
    if participant.anchor_date is None:
        return None
    gate_items: frozenset[str] | None = None
    if participant.status == ParticipantStatus.SCREENING:
        protocol = participant_protocol(session=session, participant=participant, now=now)
        if protocol.entry_gate is None:
            return None
        gate_items = frozenset(protocol.entry_gate.items)
    elif participant.status not in PLANNING_STATUSES:
        return None
    else:
        protocol = participant_protocol(session=session, participant=participant, now=now)
        participant.cohort = resolve_cohort(protocol, participant.cohort, required=True)
    existing = _events(session, participant.id)  # type: ignore[arg-type]
    desired = desired_plan(
        protocol,
        participant,
        existing,
        _choices(session, participant.id),  # type: ignore[arg-type]
        choice_values(session, protocol, participant.id),  # type: ignore[arg-type]
        # Gate items are planned for every cohort: any one expands them.
        cohort=(participant.cohort or protocol.cohort_keys()[0]) if gate_items else None,
    )
    if gate_items is not None:
        desired = [p for p in desired if p.item_id in gate_items]
    result = apply_plan(
        session=session,
        participant=participant,
        desired=desired,
        version=protocol.version,
        now=now,
        future_only=future_only,
        why=why,
    )
    if result.changed:
        audit.record(
            session=session,
            actor=actor,
            actor_user_id=actor_user_id,
            action="schedule.planned" if not existing else "schedule.replanned",
            entity="participant",
            entity_id=participant.id,
            site_id=participant.site_id,
            now=now,
            after={**result.as_dict(), "protocol_version": protocol.version},
            reason=reason,
        )
    # Reminders due in the next hours are written now, not at the next job tick.
    reminders.materialize(session=session, now=now, participant_id=participant.id)
    return result


def end_pending(
    *,
    session: Session,
    participant: Participant,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
    reason: str,
) -> int:
    """Cancel every pending event and due decision (treatment resumed, withdrawal, completion)."""
    count = 0
    ended: list[int | None] = []
    for event in _events(session, participant.id):  # type: ignore[arg-type]
        if event.status in PENDING_STATUSES:
            event.status = EventStatus.CANCELLED
            event.status_reason = reason
            event.updated_at = now
            session.add(event)
            ended.append(event.id)
            count += 1
    reminders.cancel_for_events(session, ended, now=now, reason=reason)
    for decision in session.exec(
        select(Decision).where(
            Decision.participant_id == participant.id, Decision.status == DecisionStatus.DUE
        )
    ):
        decision.status = DecisionStatus.CANCELLED
        session.add(decision)
    session.flush()
    if count:
        audit.record(
            session=session,
            actor=actor,
            actor_user_id=actor_user_id,
            action="schedule.ended",
            entity="participant",
            entity_id=participant.id,
            site_id=participant.site_id,
            now=now,
            after={"cancelled": count},
            reason=reason,
        )
    return count


def on_participant_changed(
    *,
    session: Session,
    participant: Participant,
    changed: set[str],
    now: datetime,
    actor: str,
    actor_user_id: int | None,
    reason: str | None,
) -> None:
    """Re-plan after enrolment or a change (status, anchor, cohort, time zone)."""
    if "status" in changed and participant.status in ENDING_STATUSES:
        end_pending(
            session=session,
            participant=participant,
            now=now,
            actor=actor,
            actor_user_id=actor_user_id,
            reason=f"participant is now {participant.status.value}"
            + (f": {reason}" if reason else ""),
        )
        return
    if changed & {"status", "anchor_date", "cohort", "timezone", "created"}:
        plan_participant(
            session=session,
            participant=participant,
            now=now,
            actor=actor,
            actor_user_id=actor_user_id,
            reason=reason,
        )


def move_to_version(
    *,
    session: Session,
    participant: Participant,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    reason: str,
) -> PlanResult | None:
    """Move a participant to the current protocol version (an amendment): re-plan only future,
    untouched events; history stays as it was."""
    _, current = protocols.protocol_of_study(session, participant.study_id)
    protocols.record_version(session=session, protocol=current, now=now)
    before = participant.protocol_version
    if before == current.version:
        return PlanResult()
    participant.protocol_version = current.version
    session.add(participant)
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="participant.protocol_version",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        before={"protocol_version": before},
        after={"protocol_version": current.version},
        reason=reason,
    )
    return plan_participant(
        session=session,
        participant=participant,
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
        reason=reason,
        future_only=True,
    )


# --- participant choices -------------------------------------------------------------------------


def participant_choices(
    *, session: Session, participant: Participant, now: datetime
) -> list[dict[str, Any]]:
    """The choices the participant's protocol version leaves to the care team for their cohort:
    allowed values, default, the value in force, and who set it, when and why. Reads only: a
    participant not yet on a version is shown the current one."""
    if participant.protocol_version is None:
        _, protocol = protocols.protocol_of_study(session, participant.study_id)
    else:
        protocol = protocols.protocol_version(
            session=session,
            protocol_key=protocols.protocol_of_study(session, participant.study_id)[0].protocol_key,
            version=participant.protocol_version,
        )
    rows = {r.choice_key: r for r in _choice_rows(session, participant.id)}  # type: ignore[arg-type]
    values = choice_values(session, protocol, participant.id)  # type: ignore[arg-type]
    states = engine.choice_states(protocol, cohort=participant.cohort or "", values=values)
    for state in states:
        row = rows.get(state["key"])
        state["reason"] = row.reason if row else None
        state["set_at"] = row.set_at if row else None
        state["set_by_user_id"] = row.set_by_user_id if row else None
        state["protocol_version"] = protocol.version
    return states


def set_participant_choice(
    *,
    session: Session,
    participant: Participant,
    key: str,
    value: str,
    reason: str,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
) -> tuple[dict[str, Any], PlanResult | None]:
    """Set a participant's value for one of the protocol's choices (audited with before, after
    and the reason). Only future, untouched events are re-planned: completed, cancelled and
    hand-moved events, and those whose window has opened, stay as they are. The plan result is
    None when the value was already this one (nothing written)."""
    protocol = participant_protocol(session=session, participant=participant, now=now)
    try:
        spec = protocol.choice(key)
    except KeyError:
        raise NotFound(
            f"{protocol.study} version {protocol.version} has no choice {key!r}"
        ) from None
    if not spec.applies_to(participant.cohort or ""):
        raise Conflict(
            f"{key} is for the {', '.join(spec.cohorts or [])} cohort(s); this participant is in "
            f"{participant.cohort or 'no cohort'}"
        )
    if not (reason and reason.strip()):
        raise field_error("reason", "required: say why (it goes in the audit trail)")
    allowed = spec.allowed()
    try:
        chosen = spec.normalise(value)
    except ValueError:
        chosen = ""
    if chosen not in allowed:
        raise field_error("value", f"one of {', '.join(allowed)}")
    row = session.exec(
        select(ParticipantChoiceValue).where(
            ParticipantChoiceValue.participant_id == participant.id,
            ParticipantChoiceValue.choice_key == key,
        )
    ).first()
    before = row.value if row is not None else spec.normalise(spec.default)
    if row is not None and row.value == chosen:
        return _choice_state(session, participant, key, now), None
    if row is None:
        row = ParticipantChoiceValue(
            participant_id=participant.id,  # type: ignore[arg-type]
            choice_key=key,
            value=chosen,
            reason=reason.strip(),
            set_by_user_id=actor_user_id,
            set_at=now,
        )
    else:
        row.value, row.reason = chosen, reason.strip()
        row.set_by_user_id, row.set_at = actor_user_id, now
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="participant.choice",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        before={key: before},
        after={key: chosen, "protocol_version": protocol.version},
        reason=reason.strip(),
    )
    # A participant not being followed has nothing to re-plan: an empty result, not None.
    result = plan_participant(
        session=session,
        participant=participant,
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
        reason=f"{key} = {chosen}: {reason.strip()}",
        future_only=True,
        why=f"{key} = {chosen}",
    )
    return _choice_state(session, participant, key, now), result or PlanResult()


def _choice_state(
    session: Session, participant: Participant, key: str, now: datetime
) -> dict[str, Any]:
    states = participant_choices(session=session, participant=participant, now=now)
    return next(s for s in states if s["key"] == key)


# --- lifecycle -----------------------------------------------------------------------------------


def get_event(*, session: Session, participant: Participant, event_id: int) -> ScheduleEvent:
    """An event of this participant, or NotFound."""
    event = session.get(ScheduleEvent, event_id)
    if event is None or event.participant_id != participant.id:
        raise NotFound("event not found")
    return event


def local_today(participant: Participant, now: datetime) -> date:
    """Today's date where the participant lives."""
    return now.astimezone(ZoneInfo(participant.timezone)).date()


EVENT_AUDIT_FIELDS = (
    "status",
    "target_date",
    "window_open_date",
    "window_close_date",
    "completed_on",
    "is_out_of_window",
    "outcome",
    "status_reason",
)


def _event_changed(
    session: Session,
    participant: Participant,
    event: ScheduleEvent,
    before: dict[str, Any],
    what: str,
    *,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
    reason: str | None,
) -> None:
    """After a staff change to an event: its pending reminders go, the audit trail gets a row."""
    session.add(event)
    session.flush()
    reminders.cancel_for_events(session, [event.id], now=now, reason=f"event {what}")
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action=f"event.{what}",
        entity="schedule_event",
        entity_id=event.id,
        site_id=participant.site_id,
        now=now,
        before=before,
        after=audit.snapshot(event, EVENT_AUDIT_FIELDS),
        reason=reason,
    )


def _check_outcome(event: ScheduleEvent, outcome: dict[str, Any] | None) -> dict[str, Any] | None:
    if not outcome:
        return None
    allowed: dict[EventType, dict[str, tuple[Any, ...]]] = {
        EventType.CTDNA_DRAW: {"ctdna": ("positive", "negative"), "pam_mutation": (True, False)},
        EventType.IMAGING: {"recist": RECIST},
    }
    spec = allowed.get(event.event_type)
    if spec is None:
        raise field_error("outcome", f"a {event.event_type.value} event records no outcome")
    fields: dict[str, list[str]] = {}
    for key, value in outcome.items():
        if key not in spec:
            fields[f"outcome.{key}"] = [f"unknown; one of {', '.join(spec)}"]
        elif value not in spec[key]:
            fields[f"outcome.{key}"] = [f"one of {', '.join(map(str, spec[key]))}"]
    if fields:
        raise ValidationFailed("invalid outcome", fields)
    return outcome


def complete_event(
    *,
    session: Session,
    participant: Participant,
    event: ScheduleEvent,
    completed_on: date,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    reason: str | None = None,
    outcome: dict[str, Any] | None = None,
) -> ScheduleEvent:
    """Record that an event happened on a date; out of window is allowed, flagged, and needs a
    reason. A re-anchoring event moves the ones after it; a decision input may open a decision."""
    if event.event_type == EventType.DECISION_POINT:
        raise Conflict("a decision point is completed by recording the decision")
    if event.status not in COMPLETABLE:
        raise Conflict(f"the event is {event.status.value}; it cannot be completed")
    if completed_on > local_today(participant, now):
        raise field_error("completed_on", "cannot be in the future")
    outcome = _check_outcome(event, outcome)
    in_window = is_in_window(completed_on, event.window_open_date, event.window_close_date)
    if not in_window and not (reason and reason.strip()):
        raise field_error("reason", "required: the date is outside the event's window")
    before = audit.snapshot(event, EVENT_AUDIT_FIELDS)
    event.status = EventStatus.COMPLETED
    event.completed_on = completed_on
    event.completed_at = now
    event.is_out_of_window = not in_window
    event.outcome = outcome
    event.status_reason = reason
    event.updated_at = now
    _event_changed(
        session,
        participant,
        event,
        before,
        "complete",
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
        reason=reason,
    )
    if event.is_reanchoring:
        plan_participant(
            session=session,
            participant=participant,
            now=now,
            actor=actor,
            actor_user_id=actor_user_id,
            reason=f"re-anchored on {event.key} done {completed_on.isoformat()}",
        )
    refresh_decisions(session=session, participant=participant, now=now)
    return event


def reschedule_event(
    *,
    session: Session,
    participant: Participant,
    event: ScheduleEvent,
    target_date: date,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    reason: str,
) -> ScheduleEvent:
    """Move an event to a new target date; its window moves with it and re-plans leave it be."""
    if event.status not in MOVABLE:
        raise Conflict(f"the event is {event.status.value}; it cannot be moved")
    if not reason.strip():
        raise field_error("reason", "required")
    shift = target_date - event.target_date
    zone = ZoneInfo(participant.timezone)
    before = audit.snapshot(event, EVENT_AUDIT_FIELDS)
    local_time = event.target_at.astimezone(zone).time()
    event.target_date = target_date
    event.window_open_date += shift
    event.window_close_date += shift
    # Same local wall-clock time on the new day, whatever the UTC offset that day; windows run
    # from local midnight to local midnight.
    event.target_at = datetime.combine(target_date, local_time, zone).astimezone(UTC)
    event.window_open_at = _local_midnight(event.window_open_date, zone)
    event.window_close_at = _local_midnight(event.window_close_date + timedelta(days=1), zone)
    event.status = _time_status(event.window_open_at, event.window_close_at, now)
    event.is_touched = True
    event.status_reason = reason
    event.updated_at = now
    _event_changed(
        session,
        participant,
        event,
        before,
        "reschedule",
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
        reason=reason,
    )
    reminders.materialize(session=session, now=now, participant_id=participant.id)
    return event


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0, 0), zone).astimezone(UTC)


def cancel_event(
    *,
    session: Session,
    participant: Participant,
    event: ScheduleEvent,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    reason: str,
    not_applicable: bool = False,
) -> ScheduleEvent:
    """Cancel an event (or mark it not applicable) with a reason."""
    if event.status not in CANCELLABLE:
        raise Conflict(f"the event is {event.status.value}; it cannot be cancelled")
    if not reason.strip():
        raise field_error("reason", "required")
    before = audit.snapshot(event, EVENT_AUDIT_FIELDS)
    event.status = EventStatus.NOT_APPLICABLE if not_applicable else EventStatus.CANCELLED
    event.status_reason = reason
    event.is_touched = True
    event.updated_at = now
    _event_changed(
        session,
        participant,
        event,
        before,
        "cancel",
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
        reason=reason,
    )
    return event


# --- decision points -----------------------------------------------------------------------------


def _event_record(e: ScheduleEvent) -> rules.EventRecord:
    return rules.EventRecord(
        event_id=e.id,  # type: ignore[arg-type]
        key=e.key,
        item_id=e.item_id,
        event_type=e.event_type.value,
        sequence=e.sequence,
        status=e.status,
        target_at=e.target_at,
        target_date=e.target_date,
        completed_on=e.completed_on,
        outcome=e.outcome,
        regimen=e.regimen,
        status_reason=e.status_reason,
    )


def _result_records(session: Session, participant: Participant) -> list[rules.ResultRecord]:
    """The participant's accepted ctDNA and imaging results, oldest first, as facts read them."""
    rows = session.exec(
        select(LabResult)
        .where(
            LabResult.participant_id == participant.id,
            LabResult.status == ResultStatus.ACCEPTED,
            col(LabResult.kind).in_([ResultKind.CTDNA, ResultKind.IMAGING]),
        )
        .order_by(col(LabResult.id))
    ).all()
    zone = ZoneInfo(participant.timezone)
    out = []
    for r in rows:
        payload = r.payload or {}
        pam = payload.get("pam_mutation")
        retracts = payload.get("retracts_pam_mutation_of")
        on = r.performed_on or (r.collected_at.astimezone(zone).date() if r.collected_at else None)
        out.append(
            rules.ResultRecord(
                result_id=r.id,  # type: ignore[arg-type]
                accession_id=r.accession_id,
                lab=r.source,
                kind=r.kind.value,
                event_id=r.event_id,
                on=on,
                call=r.call.value if r.call else None,
                recist=r.recist.value if r.recist else None,
                pam_mutation=pam if isinstance(pam, bool) else None,
                retracts_pam_mutation_of=retracts if isinstance(retracts, str) else None,
            )
        )
    return out


def gather_facts(
    protocol: Protocol,
    decision_key: str,
    events: list[ScheduleEvent],
    point: ScheduleEvent,
    results: list[rules.ResultRecord] | None = None,
) -> tuple[dict[str, rules.Fact], list[str]]:
    """The facts a decision table reads, each with its sources, from every relevant event and
    result (server/schedules/rules.py derive_facts); and those still awaited."""
    return rules.derive_facts(
        protocol.decision(decision_key),
        events=[_event_record(e) for e in events],
        results=results or [],
        point=_event_record(point),
    )


def refresh_decisions(*, session: Session, participant: Participant, now: datetime) -> int:
    """Open (or re-evaluate) the decision points whose inputs are in. Returns how many opened."""
    events = _events(session, participant.id)  # type: ignore[arg-type]
    points = [
        e
        for e in events
        if e.event_type == EventType.DECISION_POINT and e.status in PENDING_STATUSES
    ]
    if not points:
        return 0
    protocol = participant_protocol(session=session, participant=participant, now=now)
    results = _result_records(session, participant)
    opened = 0
    for point in points:
        decision_key = _decision_key(protocol, point)
        existing = session.exec(select(Decision).where(Decision.event_id == point.id)).first()
        if existing is not None and existing.status != DecisionStatus.DUE:
            continue
        found, awaited = gather_facts(protocol, decision_key, events, point, results)
        if awaited:
            continue
        facts = {name: fact.value for name, fact in found.items()}
        sources = [fact.as_dict() for fact in found.values()]
        outcome = engine.evaluate_decision(protocol.decision(decision_key), facts)
        if existing is None:
            existing = Decision(
                participant_id=participant.id,  # type: ignore[arg-type]
                event_id=point.id,  # type: ignore[arg-type]
                decision_key=decision_key,
                created_at=now,
            )
            opened += 1
        elif existing.facts == facts and existing.fact_sources == sources:
            continue
        existing.facts = dict(facts)
        existing.fact_sources = sources
        existing.rule_id = outcome.rule_id
        existing.recommended_regimen = outcome.regimen
        existing.recommended_cycles = outcome.cycles
        existing.explanation = outcome.explanation[:1000]
        session.add(existing)
        session.flush()
        audit.record(
            session=session,
            actor="system:rules",
            action="decision.due",
            entity="decision",
            entity_id=existing.id,
            site_id=participant.site_id,
            now=now,
            after={
                "decision": decision_key,
                "facts": facts,
                "fact_sources": sources,
                "rule_id": outcome.rule_id,
                "recommended_regimen": outcome.regimen,
                "options": list(outcome.options),
                "cycles": outcome.cycles,
                "team_decides": outcome.team_decides,
            },
        )
    return opened


def _decision_key(protocol: Protocol, point: ScheduleEvent) -> str:
    item = protocol.item(point.item_id)
    key = getattr(item, "decision", None)
    if not key:
        raise Conflict(f"item {point.item_id} names no decision table")
    return str(key)


def decision_options(protocol: Protocol, decision: Decision) -> list[str]:
    """The regimens the matched rule allows (one, several, or none when no rule matched)."""
    if decision.recommended_regimen:
        return [decision.recommended_regimen]
    table = protocol.decision(decision.decision_key)
    rule = next((r for r in table.rules if r.id == decision.rule_id), None)
    return list(rule.choose_from or []) if rule else []


def decision_team_reason(protocol: Protocol, decision: Decision) -> str | None:
    """The protocol's reason when the matched rule leaves the decision to the care team."""
    table = protocol.decision(decision.decision_key)
    rule = next((r for r in table.rules if r.id == decision.rule_id), None)
    return rule.team_decides if rule else None


def record_decision(
    *,
    session: Session,
    participant: Participant,
    decision: Decision,
    regimen: str,
    cycles: int | None,
    now: datetime,
    actor: str,
    actor_user_id: int | None,
    reason: str | None,
) -> Decision:
    """The care team's decision: it may differ from the recommendation, with a reason. The
    following cycles then follow the chosen regimen."""
    if decision.status != DecisionStatus.DUE:
        raise Conflict(f"the decision is {decision.status.value}")
    protocol = participant_protocol(session=session, participant=participant, now=now)
    assert protocol.treatment is not None
    known = [r.key for r in protocol.treatment.regimens]
    if regimen not in known:
        raise field_error("regimen", f"one of {', '.join(known)}")
    options = decision_options(protocol, decision)
    follows = regimen in options
    if not follows and not (reason and reason.strip()):
        raise field_error(
            "reason",
            "required: the regimen differs from the rule's recommendation"
            if options
            else "required: the protocol leaves this to the care team, say why this regimen",
        )
    chosen_cycles = cycles or decision.recommended_cycles
    if chosen_cycles is None:
        raise field_error("cycles", "required: no rule says how many cycles")
    before = audit.snapshot(decision, ("status", "chosen_regimen", "chosen_cycles"))
    decision.status = DecisionStatus.DECIDED
    decision.chosen_regimen = regimen
    decision.chosen_cycles = chosen_cycles
    decision.decided_by_user_id = actor_user_id
    decision.decided_at = now
    decision.reason = reason
    session.add(decision)
    point = session.get(ScheduleEvent, decision.event_id)
    assert point is not None
    point.status = EventStatus.COMPLETED
    point.completed_on = local_today(participant, now)
    point.completed_at = now
    point.is_out_of_window = not is_in_window(
        point.completed_on, point.window_open_date, point.window_close_date
    )
    point.outcome = {"regimen": regimen, "cycles": chosen_cycles}
    point.updated_at = now
    session.add(point)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="decision.record",
        entity="decision",
        entity_id=decision.id,
        site_id=participant.site_id,
        now=now,
        before=before,
        after={
            "status": decision.status.value,
            "chosen_regimen": regimen,
            "chosen_cycles": chosen_cycles,
            "recommended_regimen": decision.recommended_regimen,
            "rule_id": decision.rule_id,
            "follows_recommendation": follows,
        },
        reason=reason,
    )
    plan_participant(
        session=session,
        participant=participant,
        now=now,
        actor=actor,
        actor_user_id=actor_user_id,
        reason=f"decision {decision.decision_key}: {regimen} x{chosen_cycles}",
    )
    return decision


def open_due_decisions(*, session: Session, now: datetime) -> int:
    """For the job: refresh decisions of participants with a pending decision point."""
    ids = session.exec(
        select(ScheduleEvent.participant_id)
        .where(
            ScheduleEvent.event_type == EventType.DECISION_POINT,
            col(ScheduleEvent.status).in_(list(PENDING_STATUSES)),
        )
        .distinct()
    ).all()
    opened = 0
    for pid in ids:
        participant = session.get(Participant, pid)
        if participant is not None and participant.status in PLANNING_STATUSES:
            opened += refresh_decisions(session=session, participant=participant, now=now)
    return opened


# --- presentation --------------------------------------------------------------------------------


def event_dict(event: ScheduleEvent, tz: str) -> dict[str, Any]:
    """An event with its times also in the participant's local time."""
    zone = ZoneInfo(tz)
    d = event.model_dump()
    d["event_type"] = event.event_type.value
    d["status"] = event.status.value
    d["target_local"] = event.target_at.astimezone(zone).isoformat()
    d["window_open_local"] = event.window_open_at.astimezone(zone).isoformat()
    d["window_close_local"] = event.window_close_at.astimezone(zone).isoformat()
    d["time_zone"] = tz
    return d


def list_events(
    *,
    session: Session,
    participant: Participant,
    status: EventStatus | None = None,
    event_type: EventType | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> list[ScheduleEvent]:
    """A participant's events, filtered, by target time."""
    q = select(ScheduleEvent).where(ScheduleEvent.participant_id == participant.id)
    if status is not None:
        q = q.where(ScheduleEvent.status == status)
    if event_type is not None:
        q = q.where(ScheduleEvent.event_type == event_type)
    if date_from is not None:
        q = q.where(col(ScheduleEvent.target_date) >= date_from)
    if date_to is not None:
        q = q.where(col(ScheduleEvent.target_date) <= date_to)
    return list(session.exec(q.order_by(col(ScheduleEvent.target_at), col(ScheduleEvent.id))))
