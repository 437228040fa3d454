"""Results API for labs (JSON and FHIR R4 Observation) and the results timeline for staff."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_smorest import Blueprint
from sqlmodel import col, select

from api.common import commit
from api.errors import validation_failed
from api.schemas import (
    CtdnaResultSchema,
    FhirObservationSchema,
    Hl7ReceiptSchema,
    ImagingResultSchema,
    ResultSchema,
    TumorMarkerResultSchema,
)
from server.auth.models import Role
from server.auth.rules import Permission
from server.auth.scoping import get_participant, visible_site_ids_subquery
from server.auth.service import actor_of
from server.auth.web import require
from server.clock import utcnow
from server.db import get_session
from server.errors import ValidationFailed
from server.results import fhir, hl7v2
from server.results import service as results
from server.results.models import LabResult, PfsEvent, ResultKind, ResultStatus

blp = Blueprint("results", __name__, url_prefix="/api/v1", description="Results")


def _dump(ingested: results.Ingested) -> tuple[dict[str, Any], int]:
    d = ingested.result.model_dump()
    d["kind"] = ingested.result.kind.value
    d["status"] = ingested.result.status.value
    d["call"] = ingested.result.call.value if ingested.result.call else None
    d["recist"] = ingested.result.recist.value if ingested.result.recist else None
    d["alert_id"] = ingested.alert_id
    return d, 201 if ingested.created else 200


def _ingest(
    kind: ResultKind, args: dict[str, Any], field_names: dict[str, str] | None = None
) -> tuple[dict[str, Any], int]:
    user = require(Permission.RESULT_WRITE)
    session = get_session()
    lab = args.pop("lab")
    study = args.pop("study")
    code = args.pop("study_code")
    accession = args.pop("accession_id")
    ingested = results.ingest(
        session=session,
        kind=kind,
        source=lab,
        accession_id=accession,
        study_code=code,
        study_key=study,
        fields=args,
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
        site_ids=visible_site_ids_subquery(user),
        field_names=field_names,
    )
    commit()
    return _dump(ingested)


@blp.route("/results/ctdna", methods=["POST"])
@blp.arguments(CtdnaResultSchema)
@blp.response(201, ResultSchema)
@blp.alt_response(200, schema=ResultSchema, description="the same accession again: no change")
def post_ctdna(args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A ctDNA result (idempotent on the lab's accession id). Unknown participants and unreadable
    calls are quarantined for review. Impossible dates are 422 naming the field, whoever the
    participant: `collected_at` or `reported_at` later than now plus the clock-skew allowance
    (10 minutes by default), `reported_at` before `collected_at`; and for a known participant,
    `collected_at` before their enrolment minus the protocol's look-back (an unknown
    participant's result has no enrolment to compare with: it is quarantined, as before)."""
    return _ingest(ResultKind.CTDNA, args)


@blp.route("/results/imaging", methods=["POST"])
@blp.arguments(ImagingResultSchema)
@blp.response(201, ResultSchema)
@blp.alt_response(200, schema=ResultSchema, description="the same accession again: no change")
def post_imaging(args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """An imaging response (RECIST 1.1); PD opens a progression alert and a PFS event. The dates
    are checked as for ctDNA: `performed_on` may not be a day that has not begun (in the
    participant's time zone) nor before enrolment minus the look-back; `reported_at` may not
    precede that day."""
    return _ingest(ResultKind.IMAGING, args)


@blp.route("/results/tumor-markers", methods=["POST"])
@blp.arguments(TumorMarkerResultSchema)
@blp.response(201, ResultSchema)
@blp.alt_response(200, schema=ResultSchema, description="the same accession again: no change")
def post_marker(args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A tumour marker value (CA 15-3, CEA); its dates are checked as for ctDNA."""
    return _ingest(ResultKind.TUMOR_MARKER, args)


@blp.route("/results/fhir/Observation", methods=["POST"])
@blp.doc(
    requestBody={
        "required": True,
        "description": "a FHIR R4 Observation (application/fhir+json or application/json)",
        "content": {
            media: {"schema": FhirObservationSchema}
            for media in ("application/fhir+json", "application/json")
        },
    }
)
@blp.response(201, ResultSchema)
@blp.alt_response(200, schema=ResultSchema, description="the same accession again: no change")
def post_fhir() -> tuple[dict[str, Any], int]:
    """A ctDNA result as a FHIR R4 Observation (identifier = accession, subject.identifier =
    study code, valueCodeableConcept or interpretation = the call). Its dates are checked as for
    ctDNA; errors name `effectiveDateTime` (the collection) and `issued` (the report)."""
    require(Permission.RESULT_WRITE)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationFailed(
            "the body must be a FHIR Observation JSON object",
            {"_schema": ["expected a JSON object"]},
        )
    # The documented subset first (lengths, status, required elements): 422 naming the element.
    problems = FhirObservationSchema().validate(body)
    if problems:
        raise validation_failed(problems)
    args = fhir.observation_to_ctdna(body)
    return _ingest(ResultKind.CTDNA, args, fhir.FIELD_NAMES)


@blp.route("/results/hl7v2", methods=["POST"])
@blp.doc(
    requestBody={
        "required": True,
        "description": "one HL7 v2.5.1 ORU^R01 message (ER7; segments end with CR, LF or CRLF)",
        "content": {
            media: {"schema": {"type": "string", "maxLength": 1048576}}
            for media in (hl7v2.MEDIA_TYPE, "text/plain")
        },
    }
)
@blp.response(201, Hl7ReceiptSchema)
@blp.alt_response(200, schema=Hl7ReceiptSchema, description="every result already received")
def post_hl7v2() -> tuple[dict[str, Any], int]:
    """ctDNA results as an HL7 v2 ORU^R01 (the MLLP listener, `stepdown mllp`, takes the same
    messages). Mapped to the same results service as `/results/ctdna`: idempotent on the filler
    order number (OBR-3) per lab, unknown participants quarantined, the same rules and alerts.
    The answer carries the ACK (MSA-1 AA, MSA-2 = MSH-10). A message that cannot be read as an
    ORU^R01 (the MLLP listener's AR) is 400; one whose results cannot be recorded (AE) is 422
    or 409, naming the segment and field (e.g. `OBR[1] OBR-3`): nothing of it is recorded."""
    user = require(Permission.RESULT_WRITE)
    session = get_session()
    try:
        text = request.get_data(cache=False).decode("utf-8")
    except UnicodeDecodeError:
        raise hl7v2.Rejected("the message is not UTF-8 text", "102") from None
    receipt = hl7v2.receive(
        session=session,
        text=text,
        now=utcnow(),
        actor=actor_of(user),
        actor_user_id=user.id,
        site_ids=visible_site_ids_subquery(user),
        commit=commit,
    )
    if receipt.error is not None:
        raise receipt.error
    dumped = [_dump(i)[0] for i in receipt.ingested]
    created = any(i.created for i in receipt.ingested)
    body = {
        "ack_code": receipt.ack_code,
        "control_id": receipt.control_id,
        "ack": receipt.ack,
        "results": dumped,
    }
    return body, 201 if created else 200


@blp.route("/results/quarantine")
@blp.response(200, ResultSchema(many=True))
def quarantine() -> list[dict[str, Any]]:
    """Results held for review (unknown participant, ambiguous call). Admins see all."""
    user = require(Permission.RESULT_WRITE)
    q = select(LabResult).where(LabResult.status == ResultStatus.QUARANTINED)
    if user.role != Role.ADMIN:
        q = q.where(col(LabResult.site_id).in_(visible_site_ids_subquery(user)))
    rows = get_session().exec(q.order_by(col(LabResult.id))).all()
    return [_dump(results.Ingested(r, False))[0] for r in rows]


@blp.route("/participants/<int:participant_id>/results")
@blp.response(200)
def timeline(participant_id: int) -> dict[str, Any]:
    """A participant's results over time: ctDNA calls and MTM/mL, imaging responses, markers."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    rows = session.exec(
        select(LabResult)
        .where(
            LabResult.participant_id == participant.id,
            LabResult.status == ResultStatus.ACCEPTED,
        )
        .order_by(col(LabResult.collected_at), col(LabResult.performed_on), col(LabResult.id))
    ).all()
    pfs = session.exec(select(PfsEvent).where(PfsEvent.participant_id == participant.id)).all()
    return {
        "participant_id": participant.id,
        "study_code": participant.study_code,
        "ctdna": [
            {
                "id": r.id,
                "collected_at": r.collected_at.isoformat() if r.collected_at else None,
                "call": r.call.value if r.call else None,
                "mtm_per_ml": r.mtm_per_ml,
                "assay": r.assay,
                "accession_id": r.accession_id,
                "event_id": r.event_id,
            }
            for r in rows
            if r.kind == ResultKind.CTDNA
        ],
        "imaging": [
            {
                "id": r.id,
                "performed_on": r.performed_on.isoformat() if r.performed_on else None,
                "modality": r.modality,
                "recist": r.recist.value if r.recist else None,
                "is_confirmed": r.is_confirmed,
                "event_id": r.event_id,
            }
            for r in rows
            if r.kind == ResultKind.IMAGING
        ],
        "tumor_markers": [
            {
                "id": r.id,
                "collected_at": r.collected_at.isoformat() if r.collected_at else None,
                "marker": r.marker,
                "value": r.value,
                "unit": r.unit,
            }
            for r in rows
            if r.kind == ResultKind.TUMOR_MARKER
        ],
        "progression": [
            {"progression_on": p.progression_on.isoformat(), "days_from_anchor": p.days_from_anchor}
            for p in pfs
        ],
    }
