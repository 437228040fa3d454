"""Participants: enrol, list, read, update, withdraw, audit history."""

from __future__ import annotations

import math
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common import commit, participant_dicts
from api.schemas import (
    AttestSchema,
    AuditEventSchema,
    EntryGateSchema,
    GateOverrideSchema,
    ParticipantCreateSchema,
    ParticipantListArgs,
    ParticipantPageSchema,
    ParticipantSchema,
    ParticipantUpdateSchema,
    WithdrawSchema,
)
from server.auth.rules import Permission, has_permission
from server.auth.scoping import get_participant
from server.auth.web import require
from server.clock import utcnow
from server.db import get_session
from server.errors import NotFound
from server.participants import entry_gate, service
from server.participants.models import Locale, ParticipantStatus
from server.participants.rules import mask_phone

blp = Blueprint(
    "participants", __name__, url_prefix="/api/v1/participants", description="Participants"
)


@blp.route("")
class ParticipantsView(MethodView):
    @blp.arguments(ParticipantListArgs, location="query")
    @blp.response(200, ParticipantPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List participants of your sites (filter by study, site, status, cohort; paginated)."""
        user = require(Permission.PARTICIPANT_READ)
        session = get_session()
        page = service.list_participants(
            session=session,
            user=user,
            page=args["page"],
            page_size=args["page_size"],
            study=args.get("study"),
            site_id=args.get("site_id"),
            status=ParticipantStatus(args["status"]) if "status" in args else None,
            cohort=args.get("cohort"),
            search=args.get("search"),
            adherence_below=args.get("adherence_below"),
            now=utcnow(),
        )
        return {
            "items": participant_dicts(session, user, page.items),
            "page": page.page,
            "page_size": page.page_size,
            "total": page.total,
            "pages": math.ceil(page.total / page.page_size) if page.total else 0,
        }

    @blp.arguments(ParticipantCreateSchema)
    @blp.response(201, ParticipantSchema)
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Enrol a participant at one of your sites."""
        user = require(Permission.PARTICIPANT_WRITE)
        session = get_session()
        participant = service.enroll(
            session=session,
            user=user,
            study=args["study"],
            site_id=args["site_id"],
            study_code=args["study_code"],
            timezone=args.get("timezone"),
            cohort=args.get("cohort"),
            anchor_date=args.get("anchor_date"),
            status=ParticipantStatus(args["status"]),
            locale=Locale(args["locale"]),
            phone=args.get("phone"),
            has_sms_consent=args["has_sms_consent"],
            eligibility=args.get("eligibility"),
            now=utcnow(),
        )
        commit()
        return participant_dicts(session, user, [participant])[0]


@blp.route("/<int:participant_id>")
class ParticipantView(MethodView):
    @blp.response(200, ParticipantSchema)
    def get(self, participant_id: int) -> dict[str, Any]:
        """One participant of your sites."""
        user = require(Permission.PARTICIPANT_READ)
        session = get_session()
        participant = get_participant(session=session, user=user, participant_id=participant_id)
        return participant_dicts(session, user, [participant])[0]

    @blp.arguments(ParticipantUpdateSchema)
    @blp.response(200, ParticipantSchema)
    def patch(self, args: dict[str, Any], participant_id: int) -> dict[str, Any]:
        """Change a participant; a reason is required when trial data changes."""
        user = require(Permission.PARTICIPANT_READ)
        session = get_session()
        # Scope first: another site's participant is 404 whatever the caller's role.
        participant = get_participant(session=session, user=user, participant_id=participant_id)
        require(Permission.PARTICIPANT_WRITE)
        reason = args.pop("reason", None)
        service.update(
            session=session,
            user=user,
            participant=participant,
            changes=args,
            reason=reason,
            now=utcnow(),
        )
        commit()
        return participant_dicts(session, user, [participant])[0]


@blp.route("/<int:participant_id>/withdraw", methods=["POST"])
@blp.arguments(WithdrawSchema)
@blp.response(200, ParticipantSchema)
def withdraw(args: dict[str, Any], participant_id: int) -> dict[str, Any]:
    """Withdraw a participant from the study (final, with a reason)."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    require(Permission.PARTICIPANT_WRITE)
    service.withdraw(
        session=session, user=user, participant=participant, reason=args["reason"], now=utcnow()
    )
    commit()
    return participant_dicts(session, user, [participant])[0]


@blp.route("/<int:participant_id>/audit")
@blp.response(200, AuditEventSchema(many=True))
def audit_history(participant_id: int) -> list[Any]:
    """Every recorded change to a participant, oldest first."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    see_phone = has_permission(user.role, Permission.SEE_PHONE_NUMBERS)
    out = []
    for event in service.audit_history(session=session, participant=participant):
        d = event.model_dump()
        if not see_phone:
            for side in ("before", "after"):
                if d[side] and "phone_e164" in d[side]:
                    d[side] = {**d[side], "phone_e164": mask_phone(d[side]["phone_e164"])}
        out.append(d)
    return out


def _gate(session: Any, participant: Any) -> dict[str, Any]:
    found = entry_gate.participant_state(session, participant)
    if found is None:
        raise NotFound("this participant's protocol has no entry gate")
    return found.as_dict(participant)


@blp.route("/<int:participant_id>/entry-gate")
@blp.response(200, EntryGateSchema)
def gate_state(participant_id: int) -> dict[str, Any]:
    """The participant's entry gate: each fact with its value, provenance and attester, the
    confirmed stop date, the outcome (pass, fail, wait) and what it still awaits."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    return _gate(session, participant)


@blp.route("/<int:participant_id>/entry-gate/facts", methods=["POST"])
@blp.arguments(AttestSchema)
@blp.response(200, EntryGateSchema)
def attest_fact(args: dict[str, Any], participant_id: int) -> dict[str, Any]:
    """Attest one entry-gate fact a person attests (e.g. Free-HER's complete radiological
    remission) or the confirmed stop date, once, with its date; the gate then decides."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    require(Permission.PARTICIPANT_WRITE)
    entry_gate.attest(
        session=session,
        participant=participant,
        user=user,
        key=args["fact"],
        value=args["value"],
        observed_on=args["observed_on"],
        note=args.get("note"),
        now=utcnow(),
    )
    commit()
    return _gate(session, participant)


@blp.route("/<int:participant_id>/entry-gate/override", methods=["POST"])
@blp.arguments(GateOverrideSchema)
@blp.response(200, EntryGateSchema)
def override_gate(args: dict[str, Any], participant_id: int) -> dict[str, Any]:
    """The investigator decides the entry gate, with a reason (audited): pass (monitoring from
    the stop date) or fail (continues maintenance)."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    require(Permission.PARTICIPANT_WRITE)
    entry_gate.override(
        session=session,
        participant=participant,
        user=user,
        outcome=args["outcome"],
        reason=args["reason"],
        stop_date=args.get("stop_date"),
        now=utcnow(),
    )
    commit()
    return _gate(session, participant)
