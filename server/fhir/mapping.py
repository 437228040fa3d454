"""Our rows as FHIR R4 resources (plain JSON dicts): pure functions, no database, no request.

Pseudonymous by construction: a participant appears only as a Patient with the study code as its
identifier; no name, phone, message text, acknowledgement code or link is ever read here.
The README's "FHIR R4 API" section has the mapping table (our field → FHIR element).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from server.fhir import codes
from server.surveys.definition import Instrument
from server.surveys.texts import Wording

Resource = dict[str, Any]


def instant(value: datetime | None) -> str | None:
    """An aware datetime as a FHIR instant/dateTime (UTC, seconds)."""
    if value is None:
        return None
    return value.isoformat(timespec="seconds")


def latest(*values: datetime | None) -> datetime | None:
    """The latest of some optional datetimes."""
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _meta(last_updated: datetime | None) -> dict[str, Any]:
    return {"lastUpdated": instant(last_updated)} if last_updated else {}


def ref(resource_type: str, resource_id: object, display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"reference": f"{resource_type}/{resource_id}"}
    if display:
        out["display"] = display
    return out


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str | None = None, text: str | None = None) -> Any:
    out: dict[str, Any] = {"coding": [coding(system, code, display)]}
    if text:
        out["text"] = text
    return out


def questionnaire_id(instrument_key: str) -> str:
    """A FHIR id for an instrument key (ids take no underscore)."""
    return instrument_key.replace("_", "-")


@dataclass(frozen=True)
class Subject:
    """A participant as the other resources point at them."""

    id: int
    study_key: str
    study_code: str

    def reference(self) -> dict[str, Any]:
        # Both the logical reference and the study code: a receiver can match either way (and
        # the results API reads `subject.identifier` back).
        return {
            "reference": f"Patient/{self.id}",
            "identifier": {
                "system": codes.study_system(self.study_key),
                "value": self.study_code,
            },
        }


# --- participants and studies --------------------------------------------------------------------


def patient(subject: Subject, *, locale: str, is_active: bool, updated_at: datetime) -> Resource:
    """The pseudonymous Patient: the study code only (no name, birth date or contact)."""
    return {
        "resourceType": "Patient",
        "id": str(subject.id),
        "meta": _meta(updated_at),
        "identifier": [
            {"system": codes.study_system(subject.study_key), "value": subject.study_code}
        ],
        "active": is_active,
        "communication": [
            {"language": concept("urn:ietf:bcp:47", locale), "preferred": True},
        ],
    }


def research_subject(
    subject: Subject,
    *,
    status: str,
    cohort: str | None,
    enrolled_at: datetime,
    withdrawn_at: datetime | None,
    updated_at: datetime,
) -> Resource:
    """A participant in their study: status (research-subject-status) and cohort as the arm."""
    out: Resource = {
        "resourceType": "ResearchSubject",
        "id": str(subject.id),
        "meta": _meta(updated_at),
        "identifier": [
            {"system": codes.study_system(subject.study_key), "value": subject.study_code}
        ],
        "status": codes.SUBJECT_STATUS[status],
        "period": {"start": instant(enrolled_at)},
        "study": ref("ResearchStudy", subject.study_key),
        "individual": ref("Patient", subject.id),
        "extension": [
            {
                "url": "urn:stepdown:extension:participant-status",
                "valueCoding": coding(codes.PARTICIPANT_STATUS, status),
            }
        ],
    }
    if withdrawn_at:
        out["period"]["end"] = instant(withdrawn_at)
    if cohort:
        out["assignedArm"] = cohort
        out["actualArm"] = cohort
    return out


def research_study(
    *,
    study_key: str,
    title: str,
    protocol_key: str,
    protocol_version: str | None,
    identifiers: Iterable[str],
    cohorts: Iterable[tuple[str, str]],
    anchor: str | None,
    created_at: datetime,
) -> Resource:
    """A study (one protocol): identifiers (NCT numbers on clinicaltrials.gov), cohorts as arms."""
    ids: list[dict[str, Any]] = [{"system": "urn:stepdown:study", "value": study_key}]
    for value in identifiers:
        if value.upper().startswith("NCT"):
            ids.append({"system": codes.CLINICALTRIALS_GOV, "value": value})
        else:
            ids.append({"value": value})
    protocol = protocol_key + (f" version {protocol_version}" if protocol_version else "")
    out: Resource = {
        "resourceType": "ResearchStudy",
        "id": study_key,
        "meta": _meta(created_at),
        "identifier": ids,
        "title": title,
        "status": "active",
        "arm": [{"name": key, "description": label} for key, label in cohorts],
        "description": f"Protocol {protocol}." + (f" Anchor: {anchor}." if anchor else ""),
    }
    if not out["arm"]:
        del out["arm"]
    return out


# --- the schedule ---------------------------------------------------------------------------------

# What kind of request each event type would be in the site's systems.
_ACTIVITY_KIND = {
    "ctdna_draw": "ServiceRequest",
    "blood_work": "ServiceRequest",
    "tumor_markers": "ServiceRequest",
    "imaging": "ServiceRequest",
    "clinic_visit": "Appointment",
    "questionnaire": "Task",
    "decision_point": "Task",
    "treatment_cycle": "MedicationRequest",
}


@dataclass(frozen=True)
class Activity:
    """One schedule event as the CarePlan needs it."""

    id: int
    event_type: str
    label: str
    status: str
    status_reason: str | None
    window_open_at: datetime
    window_close_at: datetime
    target_date: date
    completed_at: datetime | None
    is_out_of_window: bool
    instrument: str | None
    outcomes: tuple[str, ...] = ()  # references, e.g. "Observation/result-3"


def care_plan(
    subject: Subject,
    *,
    participant_status: str,
    protocol_version: str | None,
    activities: list[Activity],
    base_url: str,
    updated_at: datetime | None,
) -> Resource:
    """The participant's whole schedule: one activity per event, with its window and status."""
    status = {"completed": "completed", "withdrawn": "revoked"}.get(participant_status, "active")
    out: Resource = {
        "resourceType": "CarePlan",
        "id": str(subject.id),
        "meta": _meta(updated_at),
        "status": status,
        "intent": "plan",
        "title": f"{subject.study_key} schedule"
        + (f" (protocol version {protocol_version})" if protocol_version else ""),
        "subject": subject.reference(),
        "activity": [],
    }
    starts = [a.window_open_at for a in activities]
    if starts:
        out["period"] = {
            "start": instant(min(starts)),
            "end": instant(max(a.window_close_at for a in activities)),
        }
    for a in activities:
        detail: dict[str, Any] = {
            "kind": _ACTIVITY_KIND.get(a.event_type, "Task"),
            "code": concept(codes.EVENT_TYPE, a.event_type, text=a.label),
            "status": codes.ACTIVITY_STATUS[a.status],
            "statusReason": concept(codes.EVENT_STATUS, a.status, text=a.status_reason),
            "scheduledPeriod": {
                "start": instant(a.window_open_at),
                "end": instant(a.window_close_at),
            },
            "description": f"{a.label}: target {a.target_date.isoformat()}"
            + (", done out of window" if a.is_out_of_window else ""),
        }
        if a.instrument:
            detail["instantiatesCanonical"] = [
                f"{base_url}/fhir/Questionnaire/{questionnaire_id(a.instrument)}"
            ]
        activity: dict[str, Any] = {"id": f"event-{a.id}", "detail": detail}
        if a.outcomes:
            activity["outcomeReference"] = [{"reference": r} for r in a.outcomes]
        out["activity"].append(activity)
    if not out["activity"]:
        del out["activity"]
    return out


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """A lab or imaging result as the Observation needs it (accepted results only)."""

    id: int
    kind: str
    source: str
    accession_id: str
    event_id: int | None
    collected_at: datetime | None
    performed_on: date | None
    reported_at: datetime | None
    received_at: datetime
    reviewed_at: datetime | None
    assay: str | None
    call: str | None
    mtm_per_ml: float | None
    modality: str | None
    recist: str | None
    is_confirmed: bool | None
    marker: str | None
    value: float | None
    unit: str | None

    @property
    def effective(self) -> datetime | date | None:
        return self.collected_at or self.performed_on


def result_observation(subject: Subject, r: Result) -> Resource:
    """A ctDNA, imaging (RECIST) or tumour marker result as an Observation."""
    out: Resource = {
        "resourceType": "Observation",
        "id": f"result-{r.id}",
        "meta": _meta(latest(r.received_at, r.reviewed_at)),
        "identifier": [{"system": codes.accession_system(r.source), "value": r.accession_id}],
        "basedOn": [ref("CarePlan", subject.id)],
        "status": "final",
        "subject": subject.reference(),
        "performer": [{"display": r.source}],
    }
    effective = r.effective
    if isinstance(effective, datetime):
        out["effectiveDateTime"] = instant(effective)
    elif isinstance(effective, date):
        out["effectiveDateTime"] = effective.isoformat()
    if r.reported_at:
        out["issued"] = instant(r.reported_at)
    if r.kind == "ctdna":
        out["category"] = [concept(codes.OBS_CATEGORY, "laboratory", "Laboratory")]
        out["code"] = concept(
            codes.OBSERVATION_CODE,
            "ctdna",
            "Circulating tumour DNA, mean tumour molecules per mL of plasma",
            text=r.assay or "ctDNA",
        )
        if r.mtm_per_ml is not None:
            out["valueQuantity"] = {
                "value": r.mtm_per_ml,
                "unit": "MTM/mL",
                "system": codes.UCUM,
                "code": "{MTM}/mL",
            }
        else:
            out["dataAbsentReason"] = concept(codes.DATA_ABSENT, "unknown", "Unknown")
        if r.call in codes.CTDNA_INTERPRETATION:
            system, code, display = codes.CTDNA_INTERPRETATION[r.call]
            out["interpretation"] = [concept(system, code, display, text=r.call)]
    elif r.kind == "imaging":
        out["category"] = [concept(codes.OBS_CATEGORY, "imaging", "Imaging")]
        out["code"] = concept(
            codes.OBSERVATION_CODE,
            "recist-response",
            "Tumour response (RECIST 1.1)",
            text="Tumour response (RECIST 1.1)",
        )
        if r.recist:
            out["valueCodeableConcept"] = concept(
                codes.RECIST, r.recist, codes.RECIST_DISPLAY.get(r.recist)
            )
        else:
            out["dataAbsentReason"] = concept(codes.DATA_ABSENT, "unknown", "Unknown")
        if r.modality:
            out["method"] = {"text": r.modality}
        if r.is_confirmed:
            out["note"] = [{"text": "confirmed response"}]
    else:
        marker = r.marker or "marker"
        out["category"] = [concept(codes.OBS_CATEGORY, "laboratory", "Laboratory")]
        if marker in codes.MARKER_LOINC:
            loinc, display = codes.MARKER_LOINC[marker]
            out["code"] = concept(codes.LOINC, loinc, display, text=marker)
        else:
            out["code"] = concept(codes.OBSERVATION_CODE, f"marker-{marker}", text=marker)
        if r.value is not None:
            quantity: dict[str, Any] = {"value": r.value}
            if r.unit:
                quantity["unit"] = r.unit
                if r.unit in codes.UCUM_UNITS:
                    quantity |= {"system": codes.UCUM, "code": codes.UCUM_UNITS[r.unit]}
            out["valueQuantity"] = quantity
        else:
            out["dataAbsentReason"] = concept(codes.DATA_ABSENT, "unknown", "Unknown")
    return out


# --- questionnaires -------------------------------------------------------------------------------


def _translations(texts: Mapping[str, str], shown: str) -> dict[str, Any] | None:
    """The translation extension for a primitive (`_text`, `_display`): every other language."""
    extension = [
        {
            "url": codes.TRANSLATION,
            "extension": [
                {"url": "lang", "valueCode": lang},
                {"url": "content", "valueString": text},
            ],
        }
        for lang, text in sorted(texts.items())
        if lang != shown
    ]
    return {"extension": extension} if extension else None


def questionnaire(
    instrument: Instrument, *, wordings: Mapping[str, Wording], primary: str, base_url: str
) -> Resource:
    """An instrument: items with their answer options, enableWhen from `show_if`, the texts in
    `primary` with the other languages of `wordings` as translations. A licensed instrument's
    texts are those the site loaded (server.surveys.texts); a language with none loaded is left
    out, and with none at all the neutral placeholders ("Item 12") stand in."""
    qid = questionnaire_id(instrument.key)
    shown = {lang: {q.id: q for q in w.questions} for lang, w in wordings.items()}
    items = []
    for item in instrument.items:
        texts = {lang: questions[item.id].text for lang, questions in shown.items()}
        labels: dict[int, dict[str, str]] = {}
        for lang, questions in shown.items():
            for choice in questions[item.id].choices:
                labels.setdefault(choice.value, {})[lang] = choice.label
        system = codes.answer_system(instrument.key, item.responses)
        options = []
        for value, label in labels.items():
            option_coding: dict[str, Any] = coding(system, str(value), label.get(primary))
            translated = _translations(label, primary)
            if translated:
                option_coding["_display"] = translated
            options.append({"valueCoding": option_coding})
        entry: dict[str, Any] = {
            "linkId": item.id,
            "prefix": str(item.number),
            "text": texts[primary],
            "type": "choice",
            "required": item.required,
            "answerOption": options,
        }
        translated = _translations(texts, primary)
        if translated:
            entry["_text"] = translated
        if item.show_if is not None:
            source = instrument.item(item.show_if.item)
            source_system = codes.answer_system(instrument.key, source.responses)
            entry["enableWhen"] = [
                {
                    "question": item.show_if.item,
                    "operator": "=",
                    "answerCoding": coding(source_system, str(value)),
                }
                for value in item.show_if.in_
            ]
            if len(entry["enableWhen"]) > 1:
                entry["enableBehavior"] = "any"
        items.append(entry)
    titles = {lang: w.title for lang, w in wordings.items()}
    out: Resource = {
        "resourceType": "Questionnaire",
        "id": qid,
        "url": f"{base_url}/fhir/Questionnaire/{qid}",
        "version": str(instrument.version),
        "name": instrument.key,
        "title": titles[primary],
        "status": "active",
        "subjectType": ["Patient"],
        "language": primary,
        "item": items,
    }
    title_translations = _translations(titles, primary)
    if title_translations:
        out["_title"] = title_translations
    if instrument.licence:
        out["copyright"] = instrument.licence
    return out


@dataclass(frozen=True)
class Response:
    """A submitted questionnaire response with its answers."""

    id: int
    event_id: int
    instrument_key: str
    instrument_version: str
    submitted_at: datetime | None
    started_at: datetime
    answers: Mapping[str, int]


def questionnaire_response(
    subject: Subject,
    response: Response,
    *,
    instrument: Instrument | None,
    wording: Wording | None,
    locale: str,
    base_url: str,
) -> Resource:
    """A submitted response: each answer as the Questionnaire's coding, in the item's order,
    with the question and answer as the participant read them (`wording`)."""
    qid = questionnaire_id(response.instrument_key)
    out: Resource = {
        "resourceType": "QuestionnaireResponse",
        "id": str(response.id),
        "meta": _meta(response.submitted_at or response.started_at),
        "questionnaire": f"{base_url}/fhir/Questionnaire/{qid}|{response.instrument_version}",
        "status": "completed" if response.submitted_at else "in-progress",
        "subject": subject.reference(),
        "basedOn": [ref("CarePlan", subject.id)],
        "authored": instant(response.submitted_at or response.started_at),
        "language": locale,
    }
    questions = {q.id: q for q in wording.questions} if wording else {}
    items = []
    order = [i.id for i in instrument.items] if instrument else sorted(response.answers)
    for item_id in order:
        if item_id not in response.answers:
            continue
        value = response.answers[item_id]
        answer: dict[str, Any]
        entry: dict[str, Any] = {"linkId": item_id}
        question = questions.get(item_id)
        if instrument is not None and question is not None:
            entry["text"] = question.text
            label = next((c.label for c in question.choices if c.value == value), None)
            answer = {
                "valueCoding": coding(
                    codes.answer_system(instrument.key, question.responses), str(value), label
                )
            }
        else:
            answer = {"valueInteger": value}
        entry["answer"] = [answer]
        items.append(entry)
    if items:
        out["item"] = items
    return out


@dataclass(frozen=True)
class Score:
    """One scale score of a submitted response."""

    id: int
    response_id: int
    instrument_key: str
    scale: str
    label: str
    score: float | None
    raw: float | None
    answered: int
    total: int
    submitted_at: datetime


def score_observation(subject: Subject, s: Score) -> Resource:
    """A scale score as a survey Observation derived from its QuestionnaireResponse."""
    out: Resource = {
        "resourceType": "Observation",
        "id": f"score-{s.id}",
        "meta": _meta(s.submitted_at),
        "status": "final",
        "category": [concept(codes.OBS_CATEGORY, "survey", "Survey")],
        "code": concept(codes.SCALE, f"{s.instrument_key}.{s.scale}", s.label, text=s.label),
        "subject": subject.reference(),
        "effectiveDateTime": instant(s.submitted_at),
        "derivedFrom": [ref("QuestionnaireResponse", s.response_id)],
        "note": [{"text": f"{s.answered} of {s.total} items answered"}],
    }
    if s.score is not None:
        out["valueQuantity"] = {"value": round(s.score, 4), "unit": "score"}
    else:
        out["dataAbsentReason"] = concept(
            codes.DATA_ABSENT, "not-performed", "Not Performed", text="too few items answered"
        )
    return out


# --- alerts and messages --------------------------------------------------------------------------

# Alert level → flag-priority: critical high, urgent medium, routine low.
_FLAG_PRIORITY = {"critical": "PH", "urgent": "PM", "routine": "PL"}


@dataclass(frozen=True)
class AlertRow:
    """An alert as the Flag needs it (never its acknowledgement code)."""

    id: int
    kind: str
    level: str
    state: str
    summary: str
    opened_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None


def flag(subject: Subject, a: AlertRow) -> Resource:
    """An alert as a Flag: active until resolved, its kind as the code, its level as priority."""
    out: Resource = {
        "resourceType": "Flag",
        "id": str(a.id),
        "meta": {
            **_meta(latest(a.opened_at, a.acknowledged_at, a.resolved_at)),
            "tag": [coding(codes.ALERT_STATE, a.state)],
        },
        "status": "inactive" if a.state == "resolved" else "active",
        "category": [concept(codes.FLAG_CATEGORY, "clinical", "Clinical")],
        "code": concept(codes.ALERT_KIND, a.kind, text=a.summary),
        "subject": subject.reference(),
        "period": {"start": instant(a.opened_at)},
    }
    if a.resolved_at:
        out["period"]["end"] = instant(a.resolved_at)
    if a.level in _FLAG_PRIORITY:
        out["extension"] = [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/flag-priority",
                "valueCodeableConcept": concept(
                    "http://hl7.org/fhir/flag-priority-code", _FLAG_PRIORITY[a.level]
                ),
            }
        ]
    return out


@dataclass(frozen=True)
class MessageRow:
    """An SMS as the Communication needs it (never its text nor the phone number)."""

    id: int
    kind: str
    category: str
    status: str
    to_participant: bool
    alert_id: int | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    updated_at: datetime


def communication(subject: Subject, m: MessageRow) -> Resource:
    """One SMS: its kind, category, delivery status and times; no body, no number."""
    out: Resource = {
        "resourceType": "Communication",
        "id": str(m.id),
        "meta": _meta(m.updated_at),
        "status": codes.COMMUNICATION_STATUS.get(m.status, "unknown"),
        "statusReason": concept(codes.MESSAGE_STATUS, m.status),
        "category": [concept(codes.MESSAGE_CATEGORY, m.category)],
        "medium": [concept(codes.PARTICIPATION_MODE, "SMSWRIT", "SMS message")],
        "topic": concept(codes.MESSAGE_KIND, m.kind),
        "subject": subject.reference(),
        "recipient": [
            ref("Patient", subject.id) if m.to_participant else {"display": "care team member"}
        ],
    }
    if m.alert_id is not None:
        out["about"] = [ref("Flag", m.alert_id)]
    if m.sent_at:
        out["sent"] = instant(m.sent_at)
    if m.delivered_at:
        out["received"] = instant(m.delivered_at)
    return out


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> Resource:
    """An OperationOutcome with one issue (issue-type codes: not-found, invalid, login …)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
