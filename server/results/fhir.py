"""FHIR R4 Observation → our ctDNA result fields (fhir.resources R4B models validate the JSON)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from server.errors import ValidationFailed

# Interpretation codes (HL7 v3 ObservationInterpretation) and plain texts mapped to our calls.
_CALLS = {
    "POS": "positive",
    "positive": "positive",
    "DET": "positive",
    "detected": "positive",
    "NEG": "negative",
    "negative": "negative",
    "ND": "negative",
    "not detected": "negative",
    "IND": "indeterminate",
    "indeterminate": "indeterminate",
    "QNS": "insufficient_sample",
    "insufficient sample": "insufficient_sample",
    "insufficient_sample": "insufficient_sample",
}


def _call(obs: Any) -> str:
    concepts = []
    if obs.valueCodeableConcept is not None:
        concepts.append(obs.valueCodeableConcept)
    concepts.extend(obs.interpretation or [])
    for concept in concepts:
        for coding in concept.coding or []:
            for key in (coding.code, coding.display):
                if key and (key in _CALLS or key.lower() in _CALLS):
                    return _CALLS.get(key) or _CALLS[key.lower()]
        if concept.text and concept.text.lower() in _CALLS:
            return _CALLS[concept.text.lower()]
    # Unreadable: pass the text through; the service quarantines it (never read as negative).
    texts = [c.text for c in concepts if c.text] or ["(no call)"]
    return str(texts[0])[:40]


# Our result fields as an Observation names them (errors about them use these paths).
FIELD_NAMES = {"collected_at": "effectiveDateTime", "reported_at": "issued"}


def observation_to_ctdna(data: dict[str, Any]) -> dict[str, Any]:
    """Validate an R4 Observation and map it to the ctDNA result fields."""
    from fhir.resources.R4B.observation import Observation

    if data.get("resourceType") != "Observation":
        raise ValidationFailed(
            "resourceType must be Observation", {"resourceType": ["must be Observation"]}
        )
    try:
        obs = Observation.model_validate(data)
    except ValidationError as exc:
        fields: dict[str, list[str]] = {}
        for err in exc.errors():
            fields.setdefault(".".join(str(p) for p in err["loc"]) or "_schema", []).append(
                err["msg"]
            )
        raise ValidationFailed("not a valid FHIR R4 Observation", fields) from None
    problems: dict[str, list[str]] = {}
    accession = next((i.value for i in obs.identifier or [] if i.value), None)
    if not accession:
        problems["identifier"] = ["an identifier with the lab's accession id is required"]
    subject = obs.subject.identifier.value if obs.subject and obs.subject.identifier else None
    if not subject:
        problems["subject.identifier"] = ["the participant's study code is required"]
    collected = obs.effectiveDateTime
    if collected is None or getattr(collected, "tzinfo", None) is None:
        problems["effectiveDateTime"] = ["a collection time with a time zone is required"]
    if problems:
        raise ValidationFailed("incomplete ctDNA Observation", problems)
    mtm = obs.valueQuantity.value if obs.valueQuantity is not None else None
    lab = obs.performer[0].display if obs.performer and obs.performer[0].display else "fhir"
    # e.g. urn:stepdown:study:HEROES
    system = (obs.subject.identifier.system if obs.subject and obs.subject.identifier else "") or ""
    return {
        "lab": lab[:64],
        "study": system.split("study:")[-1] if "study:" in system else None,
        "study_code": subject,
        "accession_id": accession,
        "collected_at": collected,
        "reported_at": obs.issued,
        "assay": (obs.code.text or "ctDNA")[:64] if obs.code else "ctDNA",
        "call": _call(obs),
        "mtm_per_ml": float(mtm) if mtm is not None else None,
        "pam_mutation": None,
    }
