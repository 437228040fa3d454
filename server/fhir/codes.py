"""The code systems and codes the FHIR API uses (README, "FHIR R4 API": the mapping table).

Standard systems where one fits (LOINC for the tumour markers that have a code, HL7's observation
categories and interpretations, UCUM units); otherwise local `urn:stepdown:codes:*` systems,
whose codes are our own stored values so that nothing is lost in translation.
"""

from __future__ import annotations

from urllib.parse import quote

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
CLINICALTRIALS_GOV = "https://clinicaltrials.gov"

# Local systems: their codes are our stored values.
OBSERVATION_CODE = "urn:stepdown:codes:observation"
RECIST = "urn:stepdown:codes:recist"
CTDNA_CALL = "urn:stepdown:codes:ctdna-call"
EVENT_TYPE = "urn:stepdown:codes:event-type"
EVENT_STATUS = "urn:stepdown:codes:event-status"
PARTICIPANT_STATUS = "urn:stepdown:codes:participant-status"
ALERT_KIND = "urn:stepdown:codes:alert-kind"
ALERT_STATE = "urn:stepdown:codes:alert-state"
MESSAGE_KIND = "urn:stepdown:codes:message-kind"
MESSAGE_CATEGORY = "urn:stepdown:codes:message-category"
MESSAGE_STATUS = "urn:stepdown:codes:message-status"
SCALE = "urn:stepdown:codes:scale"
PROTOCOL = "urn:stepdown:protocol"


def study_system(study_key: str) -> str:
    """The identifier system of a study's participant codes (the results API reads the same)."""
    return f"urn:stepdown:study:{study_key}"


def accession_system(source: str) -> str:
    """The identifier system of a lab's accession ids."""
    return f"urn:stepdown:accession:{quote(source, safe='')}"


def answer_system(instrument_key: str, response_set: str) -> str:
    """The code system of one answer set of an instrument (codes are the stored values)."""
    return f"urn:stepdown:questionnaire:{instrument_key}:{response_set}"


# ctDNA calls as HL7 interpretations; the results API reads these codes back (server.results.fhir).
CTDNA_INTERPRETATION = {
    "positive": (INTERPRETATION, "POS", "Positive"),
    "negative": (INTERPRETATION, "NEG", "Negative"),
    "indeterminate": (INTERPRETATION, "IND", "Indeterminate"),
    "insufficient_sample": (CTDNA_CALL, "QNS", "Insufficient sample"),
}

RECIST_DISPLAY = {
    "CR": "Complete response",
    "PR": "Partial response",
    "SD": "Stable disease",
    "PD": "Progressive disease",
    "NE": "Not evaluable",
}

# Tumour markers with a LOINC code (serum or plasma); any other marker gets a local code.
MARKER_LOINC = {
    "CEA": ("2039-6", "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma"),
    "CA15-3": ("6875-9", "Cancer Ag 15-3 [Units/volume] in Serum or Plasma"),
}

# The units the results API takes, in UCUM.
UCUM_UNITS = {"U/mL": "U/mL", "ng/mL": "ng/mL", "µg/L": "ug/L"}


# Participant status → ResearchSubject.status (R4 research-subject-status).
SUBJECT_STATUS = {
    "screening": "screening",
    "active": "on-study-intervention",
    "off_treatment_monitoring": "on-study-observation",
    "resumed_treatment": "on-study-intervention",
    # Failed the entry gate: stays on maintenance therapy, not followed further in the trial.
    "continues_maintenance": "off-study",
    "completed": "off-study",
    "withdrawn": "withdrawn",
}

# Schedule event status → CarePlan.activity.detail.status (R4 care-plan-activity-status).
ACTIVITY_STATUS = {
    "planned": "scheduled",
    "open": "in-progress",
    "completed": "completed",
    "missed": "stopped",
    "cancelled": "cancelled",
    "not_applicable": "cancelled",
}

# Outbox status → Communication.status (R4 event-status).
COMMUNICATION_STATUS = {
    "pending": "preparation",
    "sending": "in-progress",
    "sent": "in-progress",
    "delivered": "completed",
    "undelivered": "stopped",
    "failed": "stopped",
    "expired": "not-done",
    "cancelled": "not-done",
    "opted_out": "not-done",
}
