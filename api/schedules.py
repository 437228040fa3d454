"""Schedules: a participant's events and their lifecycle, decisions, protocols, adherence."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from sqlmodel import col, select

from api.common import commit
from api.schemas import (
    AdherenceArgs,
    CancelEventSchema,
    CompleteEventSchema,
    DecisionReportSchema,
    DecisionSchema,
    EventSchema,
    ParticipantChoiceSchema,
    PreviewSchema,
    RecordDecisionSchema,
    RescheduleEventSchema,
    ScheduleArgs,
    SetChoiceResultSchema,
    SetChoiceSchema,
)
from server.adherence import service as adherence
from server.auth.models import StaffUser
from server.auth.rules import Permission
from server.auth.scoping import get_participant, get_site, visible_site_ids_subquery
from server.auth.service import actor_of
from server.auth.web import current_staff, require
from server.clock import utcnow
from server.db import get_session
from server.errors import NotFound, field_error
from server.participants import entry_gate
from server.participants.models import Participant
from server.participants.rules import is_valid_timezone
from server.protocols import rules as engine
from server.protocols import service as protocols
from server.protocols.models import Study
from server.schedules import service
from server.schedules.models import Decision, EventStatus, EventType

blp = Blueprint("schedules", __name__, url_prefix="/api/v1", description="Schedules")


def _participant(user: StaffUser, participant_id: int) -> Participant:
    return get_participant(session=get_session(), user=user, participant_id=participant_id)


@blp.route("/participants/<int:participant_id>/schedule")
@blp.arguments(ScheduleArgs, location="query")
@blp.response(200, EventSchema(many=True))
def schedule(args: dict[str, Any], participant_id: int) -> list[dict[str, Any]]:
    """A participant's events with windows, each time also in the participant's local time."""
    user = require(Permission.PARTICIPANT_READ)
    participant = _participant(user, participant_id)
    events = service.list_events(
        session=get_session(),
        participant=participant,
        status=EventStatus(args["status"]) if "status" in args else None,
        event_type=EventType(args["type"]) if "type" in args else None,
        date_from=args.get("date_from"),
        date_to=args.get("date_to"),
    )
    return [service.event_dict(e, participant.timezone) for e in events]


def _event_action(participant_id: int, event_id: int) -> tuple[StaffUser, Participant, Any]:
    user = require(Permission.PARTICIPANT_READ)
    participant = _participant(user, participant_id)  # scope first: 404 beats 403
    require(Permission.SCHEDULE_WRITE)
    event = service.get_event(session=get_session(), participant=participant, event_id=event_id)
    return user, participant, event


@blp.route("/participants/<int:participant_id>/events/<int:event_id>/complete", methods=["POST"])
@blp.arguments(CompleteEventSchema)
@blp.response(200, EventSchema)
def complete(args: dict[str, Any], participant_id: int, event_id: int) -> dict[str, Any]:
    """Record that an event took place (out of window: allowed, flagged, reason required)."""
    user, participant, event = _event_action(participant_id, event_id)
    service.complete_event(
        session=get_session(),
        participant=participant,
        event=event,
        completed_on=args["completed_on"],
        reason=args.get("reason"),
        outcome=args.get("outcome"),
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    # A gate event done in screening (STOP-HER2's baseline scans) may decide the entry gate.
    entry_gate.evaluate(
        session=get_session(),
        participant=participant,
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    commit()
    return service.event_dict(event, participant.timezone)


@blp.route("/participants/<int:participant_id>/events/<int:event_id>/reschedule", methods=["POST"])
@blp.arguments(RescheduleEventSchema)
@blp.response(200, EventSchema)
def reschedule(args: dict[str, Any], participant_id: int, event_id: int) -> dict[str, Any]:
    """Move an event to another target date (its window moves with it); reason required."""
    user, participant, event = _event_action(participant_id, event_id)
    service.reschedule_event(
        session=get_session(),
        participant=participant,
        event=event,
        target_date=args["target_date"],
        reason=args["reason"],
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    commit()
    return service.event_dict(event, participant.timezone)


@blp.route("/participants/<int:participant_id>/events/<int:event_id>/cancel", methods=["POST"])
@blp.arguments(CancelEventSchema)
@blp.response(200, EventSchema)
def cancel(args: dict[str, Any], participant_id: int, event_id: int) -> dict[str, Any]:
    """Cancel an event, or mark it not applicable; reason required."""
    user, participant, event = _event_action(participant_id, event_id)
    service.cancel_event(
        session=get_session(),
        participant=participant,
        event=event,
        reason=args["reason"],
        not_applicable=args["not_applicable"],
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    commit()
    return service.event_dict(event, participant.timezone)


def _decision_dict(participant: Participant, decision: Decision) -> dict[str, Any]:
    protocol = service.participant_protocol(
        session=get_session(), participant=participant, now=utcnow()
    )
    d = decision.model_dump()
    d["status"] = decision.status.value
    d["options"] = service.decision_options(protocol, decision)
    d["team_decides"] = service.decision_team_reason(protocol, decision)
    return d


@blp.route("/participants/<int:participant_id>/decisions")
@blp.response(200, DecisionSchema(many=True))
def decisions(participant_id: int) -> list[dict[str, Any]]:
    """A participant's decision points: due (with the rule's recommendation) and decided."""
    user = require(Permission.PARTICIPANT_READ)
    participant = _participant(user, participant_id)
    rows = get_session().exec(
        select(Decision).where(Decision.participant_id == participant.id).order_by(col(Decision.id))
    )
    return [_decision_dict(participant, d) for d in rows]


@blp.route(
    "/participants/<int:participant_id>/decisions/<int:decision_id>/record", methods=["POST"]
)
@blp.arguments(RecordDecisionSchema)
@blp.response(200, DecisionSchema)
def record_decision(args: dict[str, Any], participant_id: int, decision_id: int) -> dict[str, Any]:
    """Record the care team's decision; following cycles then follow the chosen regimen."""
    user = require(Permission.PARTICIPANT_READ)
    participant = _participant(user, participant_id)
    require(Permission.PARTICIPANT_WRITE)
    session = get_session()
    decision = session.get(Decision, decision_id)
    if decision is None or decision.participant_id != participant.id:
        raise NotFound("decision not found")
    service.record_decision(
        session=session,
        participant=participant,
        decision=decision,
        regimen=args["regimen"],
        cycles=args.get("cycles"),
        reason=args.get("reason"),
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    commit()
    return _decision_dict(participant, decision)


# --- protocols -------------------------------------------------------------------------------


@blp.route("/protocols")
@blp.response(200)
def list_protocols() -> list[dict[str, Any]]:
    """The trial protocols this installation runs."""
    current_staff()
    return [protocols.summary(p) for _, p in sorted(protocols.current_protocols().items())]


@blp.route("/protocols/<key>")
@blp.response(200)
def get_protocol(key: str) -> dict[str, Any]:
    """One protocol's full definition (as validated from its file)."""
    current_staff()
    protocol = protocols.find_protocol(key)
    return {**protocols.summary(protocol), "definition": protocol.definition()}


@blp.route("/protocols/<key>/preview", methods=["POST"])
@blp.arguments(PreviewSchema)
@blp.response(200)
def preview(args: dict[str, Any], key: str) -> dict[str, Any]:
    """Dry run: the full timeline for a cohort, anchor date and time zone. Creates nothing. A
    protocol with an entry gate also gives `entry_gate`: the events planned in screening, the
    facts, and both paths (monitoring from the confirmed stop date; continue maintenance)."""
    current_staff()
    protocol = protocols.find_protocol(key)
    tz = args.get("timezone") or protocol.time_zone
    if tz is None or not is_valid_timezone(tz):
        raise field_error("timezone", "not a known IANA time zone (e.g. Europe/Paris)")
    # A protocol whose entry gate picks the cohort (HEROES: stop) previews that path.
    gated = protocol.entry_gate.on_pass.cohort if protocol.entry_gate else None
    cohort = service.resolve_cohort(protocol, args.get("cohort") or gated, required=True)
    try:
        chosen = engine.check_participant_choices(protocol, args.get("choices"))
    except ValueError as exc:
        raise field_error("choices", str(exc)) from None
    return engine.timeline(
        protocol,
        cohort=cohort,  # type: ignore[arg-type]
        anchor_date=args["anchor_date"],
        tz=tz,
        participant_choices=chosen,
    )


@blp.route("/protocols/<key>/decisions")
@blp.response(200, DecisionReportSchema)
def decision_report(key: str) -> dict[str, Any]:
    """Every decision table of a protocol as the system applies it, for review before go-live:
    each fact (its values, unknown included, and where it comes from), each rule, and every
    combination of the facts' values with its outcome and the rule that gives it."""
    current_staff()
    return engine.decision_report(protocols.find_protocol(key))


# --- participant choices ---------------------------------------------------------------------


@blp.route("/participants/<int:participant_id>/choices")
@blp.response(200, ParticipantChoiceSchema(many=True))
def participant_choices(participant_id: int) -> list[dict[str, Any]]:
    """The values the participant's protocol leaves to the care team (e.g. STOP-HER2's imaging
    interval after year one): allowed values, default, the value in force and why."""
    user = require(Permission.PARTICIPANT_READ)
    participant = _participant(user, participant_id)
    return service.participant_choices(session=get_session(), participant=participant, now=utcnow())


@blp.route("/participants/<int:participant_id>/choices/<key>", methods=["PUT"])
@blp.arguments(SetChoiceSchema)
@blp.response(200, SetChoiceResultSchema)
def set_participant_choice(args: dict[str, Any], participant_id: int, key: str) -> dict[str, Any]:
    """Set a participant's value for one of the protocol's choices, with a reason (audited with
    before and after). Only future, untouched events are re-planned; completed, cancelled and
    hand-moved events, and those whose window has opened, stay. Coordinators and investigators."""
    user = require(Permission.PARTICIPANT_READ)
    participant = _participant(user, participant_id)  # scope first: 404 beats 403
    require(Permission.PARTICIPANT_WRITE)
    state, result = service.set_participant_choice(
        session=get_session(),
        participant=participant,
        key=key,
        value=args["value"],
        reason=args["reason"],
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
    )
    commit()
    return {**state, "replanned": result.as_dict() if result is not None else None}


# --- adherence -------------------------------------------------------------------------------


@blp.route("/participants/<int:participant_id>/adherence")
@blp.response(200)
def participant_adherence(participant_id: int) -> dict[str, Any]:
    """Adherence of one participant, by event type."""
    user = require(Permission.PARTICIPANT_READ)
    participant = _participant(user, participant_id)
    return adherence.for_participant(
        session=get_session(),
        participant_id=participant.id,  # type: ignore[arg-type]
        now=utcnow(),
    )


def _study(key: str) -> Study:
    study = get_session().exec(select(Study).where(Study.key == key)).first()
    if study is None:
        raise NotFound("study not found")
    return study


@blp.route("/sites/<int:site_id>/adherence")
@blp.arguments(AdherenceArgs, location="query")
@blp.response(200)
def site_adherence(args: dict[str, Any], site_id: int) -> dict[str, Any]:
    """Adherence of one of your sites (optionally one study there), by event type."""
    user = require(Permission.PARTICIPANT_READ)
    site = get_site(session=get_session(), user=user, site_id=site_id)
    study_id = _study(args["study"]).id if "study" in args else None
    return adherence.for_site(
        session=get_session(),
        site_id=site.id,  # type: ignore[arg-type]
        study_id=study_id,
        now=utcnow(),
    )


@blp.route("/studies/<key>/adherence")
@blp.response(200)
def study_adherence(key: str) -> dict[str, Any]:
    """Adherence of a study across your sites, by event type."""
    user = require(Permission.PARTICIPANT_READ)
    study = _study(key)
    return adherence.for_study(
        session=get_session(),
        study_id=study.id,  # type: ignore[arg-type]
        site_ids=visible_site_ids_subquery(user),
        now=utcnow(),
    )
