"""CDISC ODM 1.3.2 export of a study, for the sponsor's EDC (REDCap, OpenClinica, Medidata).

One document per study (optionally limited to sites): the study's metadata (a StudyEventDef per
kind of schedule event, the forms, item groups, items and code lists), AdminData (sites as
Locations, the audit trail's actors as Users), ClinicalData with one SubjectData per participant
(SubjectKey = the study code), one StudyEventData per schedule event (its status and dates as the
`Form.schedule_event` items), the results and questionnaire answers as item data, and the audit
trail as AuditRecords. OIDs of items are valid REDCap variable names (lower case, `_`), so REDCap's
"create project from ODM" keeps them; the README has the mapping table.

Pseudonymous and secret-free by construction: the export reads only the columns listed below
(never a phone number, an SMS body, an activation or acknowledgement code, a token or a link), and
audit before/after values pass through `_scrub`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlmodel import Session, col, or_, select

from server.audit import AuditEvent
from server.auth.models import Role, StaffUser
from server.errors import NotFound
from server.participants.models import Participant, ParticipantStatus, Site
from server.protocols.definition import EventType
from server.protocols.models import Study
from server.protocols.service import find_protocol
from server.results.models import CtdnaCall, LabResult, Recist, ResultKind, ResultStatus
from server.schedules.models import Decision, EventStatus, ScheduleEvent
from server.surveys.definition import Instrument
from server.surveys.models import ResponseStatus, SurveyAnswer, SurveyResponse, SurveyScore
from server.surveys.service import instruments

NS = "http://www.cdisc.org/ns/odm/v1.3"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
LOCALES = ("en", "fr", "zh")
# The audit entities that are trial data of a participant (not accounts, SMS or sites).
AUDITED_ENTITIES = ("participant", "schedule_event", "lab_result", "survey_response", "decision")
# Keys of audit before/after values never exported (contact data and bearer secrets).
_SECRET_KEY = re.compile(
    r"phone|e164|token|secret|password|email|body|link|url|hash|ack|activation|code",
    re.IGNORECASE,
)
_SAFE_KEYS = {"study_code", "site_code"}


@dataclass(frozen=True)
class ItemSpec:
    """One ODM ItemDef: our field, its OID (a REDCap variable name), type and code list."""

    oid: str
    name: str
    data_type: str
    source: str
    length: int | None = None
    codelist: str | None = None
    question: dict[str, str] | None = None


@dataclass
class FormSpec:
    oid: str
    name: str
    group_oid: str
    items: list[ItemSpec] = field(default_factory=list)
    repeating: bool = False


def _codes(values: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    return [(v, {"en": v.replace("_", " ")}) for v in values]


CODELISTS: dict[str, tuple[str, list[tuple[str, dict[str, str]]]]] = {
    "CL.participant_status": ("Participant status", _codes(s.value for s in ParticipantStatus)),
    "CL.event_type": ("Schedule event type", _codes(t.value for t in EventType)),
    "CL.event_status": ("Schedule event status", _codes(s.value for s in EventStatus)),
    "CL.ctdna_call": ("ctDNA call", _codes(c.value for c in CtdnaCall)),
    "CL.recist": ("RECIST 1.1 response", _codes(r.value for r in Recist)),
    "CL.yes_no": ("Yes / No", [("1", {"en": "Yes"}), ("0", {"en": "No"})]),
}

PARTICIPANT = FormSpec(
    "Form.participant",
    "Participant",
    "participant.main",
    [
        ItemSpec("study_code", "Study code", "text", "participant.study_code", 32),
        ItemSpec("site_code", "Site", "text", "site.code", 32),
        ItemSpec("cohort", "Cohort", "text", "participant.cohort", 32),
        ItemSpec(
            "participant_status",
            "Status",
            "text",
            "participant.status",
            32,
            "CL.participant_status",
        ),
        ItemSpec("anchor_date", "Anchor date", "date", "participant.anchor_date"),
        ItemSpec(
            "protocol_version", "Protocol version", "text", "participant.protocol_version", 32
        ),
        ItemSpec("enrolled_at", "Entered in Stepdown", "datetime", "participant.created_at"),
        ItemSpec("withdrawn_at", "Withdrawn", "datetime", "participant.withdrawn_at"),
    ],
)
SCHEDULE_EVENT = FormSpec(
    "Form.schedule_event",
    "Schedule event",
    "schedule_event.main",
    [
        ItemSpec("evt_key", "Event key", "text", "schedule_event.key", 80),
        ItemSpec("evt_label", "Event", "text", "schedule_event.label", 200),
        ItemSpec(
            "evt_type", "Event type", "text", "schedule_event.event_type", 32, "CL.event_type"
        ),
        ItemSpec("evt_status", "Status", "text", "schedule_event.status", 32, "CL.event_status"),
        ItemSpec("evt_target_date", "Target date", "date", "schedule_event.target_date"),
        ItemSpec("evt_window_open", "Window opens", "date", "schedule_event.window_open_date"),
        ItemSpec("evt_window_close", "Window closes", "date", "schedule_event.window_close_date"),
        ItemSpec("evt_completed_on", "Done on", "date", "schedule_event.completed_on"),
        ItemSpec(
            "evt_out_of_window",
            "Done outside its window",
            "integer",
            "schedule_event.is_out_of_window",
            1,
            "CL.yes_no",
        ),
        ItemSpec("evt_phase", "Phase", "text", "schedule_event.phase", 64),
        ItemSpec("evt_status_reason", "Status reason", "text", "schedule_event.status_reason", 500),
    ],
)
CTDNA = FormSpec(
    "Form.ctdna",
    "ctDNA result",
    "ctdna.main",
    [
        ItemSpec("ctdna_accession", "Accession id", "text", "lab_result.accession_id", 64),
        ItemSpec("ctdna_lab", "Lab", "text", "lab_result.source", 64),
        ItemSpec("ctdna_assay", "Assay", "text", "lab_result.assay", 64),
        ItemSpec("ctdna_collected_at", "Collected", "datetime", "lab_result.collected_at"),
        ItemSpec("ctdna_reported_at", "Reported", "datetime", "lab_result.reported_at"),
        ItemSpec("ctdna_call", "Call", "text", "lab_result.call", 32, "CL.ctdna_call"),
        ItemSpec("ctdna_mtm_per_ml", "MTM/mL", "float", "lab_result.mtm_per_ml"),
    ],
)
IMAGING = FormSpec(
    "Form.imaging",
    "Imaging response",
    "imaging.main",
    [
        ItemSpec("img_accession", "Accession id", "text", "lab_result.accession_id", 64),
        ItemSpec("img_lab", "Source", "text", "lab_result.source", 64),
        ItemSpec("img_modality", "Modality", "text", "lab_result.modality", 32),
        ItemSpec("img_performed_on", "Scan date", "date", "lab_result.performed_on"),
        ItemSpec("img_reported_at", "Reported", "datetime", "lab_result.reported_at"),
        ItemSpec("img_recist", "RECIST 1.1", "text", "lab_result.recist", 8, "CL.recist"),
        ItemSpec(
            "img_confirmed", "Confirmed", "integer", "lab_result.is_confirmed", 1, "CL.yes_no"
        ),
    ],
)
MARKERS = FormSpec(
    "Form.tumor_markers",
    "Tumour marker",
    "tumor_markers.main",
    [
        ItemSpec("tm_accession", "Accession id", "text", "lab_result.accession_id", 64),
        ItemSpec("tm_lab", "Lab", "text", "lab_result.source", 64),
        # Free text, no code list: REDCap's choice codes take no hyphen ("CA15-3").
        ItemSpec("tm_marker", "Marker", "text", "lab_result.marker", 32),
        ItemSpec("tm_value", "Value", "float", "lab_result.value"),
        ItemSpec("tm_unit", "Unit", "text", "lab_result.unit", 16),
        ItemSpec("tm_collected_at", "Collected", "datetime", "lab_result.collected_at"),
    ],
)
RESULT_FORMS = {
    ResultKind.CTDNA: CTDNA,
    ResultKind.IMAGING: IMAGING,
    ResultKind.TUMOR_MARKER: MARKERS,
}
# Which result forms each kind of schedule event may hold.
EVENT_FORMS: dict[str, list[FormSpec]] = {
    EventType.CTDNA_DRAW.value: [CTDNA],
    EventType.BLOOD_WORK.value: [MARKERS],
    EventType.TUMOR_MARKERS.value: [MARKERS],
    EventType.IMAGING.value: [IMAGING],
}
UNSCHEDULED = "Event.unscheduled"


def event_oid(event_type: str) -> str:
    return f"Event.{event_type}"


def oid_part(text: str) -> str:
    """A fragment usable in a REDCap variable name: lower case letters, digits and `_`."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "x"


def instrument_form(instrument: Instrument) -> tuple[FormSpec, dict[str, Any]]:
    """A questionnaire as a form: one integer item per question (its answers a code list), its
    submission time and channel, and one float item per scale score."""
    key = oid_part(instrument.key)
    codelists: dict[str, tuple[str, list[tuple[str, dict[str, str]]]]] = {}
    for set_id, responses in instrument.responses.items():
        options = []
        for value in responses.values:
            labels: dict[str, str] = {}
            for opt in responses.options or []:
                if opt.value == value:
                    labels = {loc: str(opt.label.get(loc) or value) for loc in LOCALES}
            anchor = responses.anchors.get(value)
            if not labels and anchor:
                labels = {
                    loc: f"{value} ({anchor.get(loc) or ''})".replace(" ()", "") for loc in LOCALES
                }
            options.append((str(value), labels or {"en": str(value)}))
        codelists[f"CL.{key}.{oid_part(set_id)}"] = (
            f"{instrument.key} {set_id}",
            options,
        )
    items = [
        ItemSpec(f"{key}_submitted_at", "Submitted", "datetime", "survey_response.submitted_at"),
        ItemSpec(f"{key}_channel", "Answered on", "text", "survey_response.channel", 16),
    ]
    for item in instrument.items:
        question = None
        if not item.is_licensed:
            question = {loc: item.text_in(loc) for loc in LOCALES}
        items.append(
            ItemSpec(
                f"{key}_{oid_part(item.id)}",
                f"Item {item.number}",
                "integer",
                f"survey_answer.value (item {item.id})",
                codelist=f"CL.{key}.{oid_part(item.responses)}",
                question=question,
            )
        )
    for scale in instrument.scales:
        items.append(
            ItemSpec(
                f"{key}_score_{oid_part(scale.key)}",
                f"{scale.label} (score)",
                "float",
                f"survey_score.score (scale {scale.key})",
            )
        )
    form = FormSpec(f"Form.{key}", str(instrument.title.get("en") or key), f"{key}.main", items)
    return form, codelists


@dataclass
class Export:
    """The document and what it holds (for the audit row and the command's summary)."""

    xml: bytes
    subjects: int
    study_events: int
    item_data: int
    audit_records: int
    site_ids: list[int]


def _protocol_instruments(protocol_key: str) -> list[Instrument]:
    try:
        definition = find_protocol(protocol_key).model_dump(mode="json")
    except NotFound:  # a study whose file is gone: its questionnaires are those recorded
        definition = {}
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            value = node.get("instrument")
            if isinstance(value, str):
                used.add(value)
            for sub in node.values():
                walk(sub)
        elif isinstance(node, list):
            for sub in node:
                walk(sub)

    walk(definition)
    loaded = instruments()
    return [loaded[k] for k in sorted(used) if k in loaded]


def _value(value: Any) -> str | None:
    """An ODM value: ISO dates and UTC datetimes, 1/0 booleans, plain numbers and text."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite hands back naive UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "value") and not isinstance(value, int | float):
        return str(value.value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _scrub(values: dict[str, Any] | None) -> dict[str, Any]:
    """Audit before/after without contact data or secrets."""
    out: dict[str, Any] = {}
    for key, value in (values or {}).items():
        if key not in _SAFE_KEYS and _SECRET_KEY.search(key):
            continue
        out[key] = _scrub(value) if isinstance(value, dict) else value
    return out


def _changes(before: dict[str, Any], after: dict[str, Any]) -> str:
    parts = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        parts.append(f"{key}: {old} -> {new}" if key in before else f"{key}: {new}")
    text = "; ".join(parts)
    return text[:900] + ("…" if len(text) > 900 else "")


def _sub(
    parent: ET.Element,
    tag: str,
    attrib: dict[str, str | None] | None = None,
    text: str | None = None,
) -> ET.Element:
    element = ET.SubElement(
        parent, f"{{{NS}}}{tag}", {k: v for k, v in (attrib or {}).items() if v is not None}
    )
    if text is not None:
        element.text = text
    return element


def _translated(parent: ET.Element, tag: str, texts: dict[str, str]) -> None:
    holder = _sub(parent, tag)
    for loc, text in texts.items():
        if text:
            _sub(holder, "TranslatedText", {XML_LANG: loc}, text)


def _user_oid(actor: str) -> str:
    return "USR." + re.sub(r"[^A-Za-z0-9_.-]+", ".", actor).strip(".")[:80]


def build(
    *,
    session: Session,
    study: Study,
    site_ids: list[int] | None,
    now: datetime,
    source_version: str = "",
) -> Export:
    """The ODM 1.3.2 document of a study at the given sites (all of them when None)."""
    ET.register_namespace("", NS)
    study_oid = f"ST.{oid_part(study.key).upper()}"
    mdv_oid = f"MDV.{oid_part(study.key).upper()}.1"
    q = select(Participant).where(Participant.study_id == study.id)
    if site_ids is not None:
        q = q.where(col(Participant.site_id).in_(site_ids))
    participants = session.exec(q.order_by(col(Participant.study_code))).all()
    pids = [p.id for p in participants]
    sites: dict[int, Site] = {
        s.id: s  # type: ignore[misc]
        for s in session.exec(
            select(Site).where(col(Site.id).in_(site_ids)) if site_ids is not None else select(Site)
        ).all()
    }
    events_by_p: dict[int, list[ScheduleEvent]] = defaultdict(list)
    results_by_p: dict[int, list[LabResult]] = defaultdict(list)
    responses: dict[int, SurveyResponse] = {}
    answers: dict[int, list[SurveyAnswer]] = defaultdict(list)
    scores: dict[int, list[SurveyScore]] = defaultdict(list)
    if pids:
        for e in session.exec(
            select(ScheduleEvent)
            .where(col(ScheduleEvent.participant_id).in_(pids))
            .order_by(col(ScheduleEvent.target_at), col(ScheduleEvent.id))
        ).all():
            events_by_p[e.participant_id].append(e)
        for r in session.exec(
            select(LabResult)
            .where(
                col(LabResult.participant_id).in_(pids),
                LabResult.status == ResultStatus.ACCEPTED,
            )
            .order_by(col(LabResult.id))
        ).all():
            results_by_p[r.participant_id or 0].append(r)
        for resp in session.exec(
            select(SurveyResponse).where(
                col(SurveyResponse.participant_id).in_(pids),
                SurveyResponse.status == ResponseStatus.SUBMITTED,
            )
        ).all():
            responses[resp.event_id] = resp
        rids = [r.id for r in responses.values()]
        if rids:
            for a in session.exec(
                select(SurveyAnswer).where(col(SurveyAnswer.response_id).in_(rids))
            ).all():
                answers[a.response_id].append(a)
            for s in session.exec(
                select(SurveyScore).where(col(SurveyScore.response_id).in_(rids))
            ).all():
                scores[s.response_id].append(s)

    # Metadata: the forms, their items and code lists.
    instrument_forms: dict[str, FormSpec] = {}
    codelists = dict(CODELISTS)
    instrument_of: dict[str, Instrument] = {}
    # The protocol's questionnaires, and any a site chose instead (surveys.use_instrument).
    chosen = {e.instrument for evs in events_by_p.values() for e in evs if e.instrument}
    chosen |= {r.instrument_key for r in responses.values()}
    loaded = instruments()
    wanted = {i.key: i for i in _protocol_instruments(study.protocol_key)}
    wanted |= {k: loaded[k] for k in sorted(chosen) if k in loaded and k not in wanted}
    for instrument in wanted.values():
        form, lists = instrument_form(instrument)
        instrument_forms[instrument.key] = form
        instrument_of[instrument.key] = instrument
        codelists.update(lists)
    event_forms: dict[str, list[FormSpec]] = {
        t.value: [SCHEDULE_EVENT, *EVENT_FORMS.get(t.value, [])] for t in EventType
    }
    event_forms[EventType.QUESTIONNAIRE.value] += list(instrument_forms.values())
    forms = [PARTICIPANT, SCHEDULE_EVENT, CTDNA, IMAGING, MARKERS, *instrument_forms.values()]

    root = ET.Element(
        f"{{{NS}}}ODM",
        {
            "FileType": "Snapshot",
            "Granularity": "All",
            "FileOID": f"STEPDOWN.{study_oid}.{now.astimezone(UTC):%Y%m%dT%H%M%SZ}",
            "CreationDateTime": _value(now) or "",
            "ODMVersion": "1.3.2",
            "Originator": "Stepdown",
            "SourceSystem": "Stepdown",
            "SourceSystemVersion": source_version or "unknown",
            "Description": f"{study.key}: schedule, results, questionnaires and audit trail",
        },
    )
    st = _sub(root, "Study", {"OID": study_oid})
    gv = _sub(st, "GlobalVariables")
    _sub(gv, "StudyName", text=study.key)
    _sub(gv, "StudyDescription", text=study.title)
    _sub(gv, "ProtocolName", text=study.key)
    mdv = _sub(
        st,
        "MetaDataVersion",
        {"OID": mdv_oid, "Name": f"{study.key} (Stepdown)", "Description": study.title},
    )
    protocol = _sub(mdv, "Protocol")
    event_defs = [("Event.enrolment", "Enrolment", "No", "Common", [PARTICIPANT])]
    event_defs += [
        (
            event_oid(t.value),
            t.value.replace("_", " ").capitalize(),
            "Yes",
            "Scheduled",
            event_forms[t.value],
        )
        for t in EventType
    ]
    event_defs.append(
        (UNSCHEDULED, "Unscheduled result", "Yes", "Unscheduled", [CTDNA, IMAGING, MARKERS])
    )
    for n, (oid, _name, _rep, _type, _forms) in enumerate(event_defs, start=1):
        _sub(
            protocol,
            "StudyEventRef",
            {"StudyEventOID": oid, "OrderNumber": str(n), "Mandatory": "No"},
        )
    for oid, name, repeating, kind, event_form_list in event_defs:
        sed = _sub(
            mdv, "StudyEventDef", {"OID": oid, "Name": name, "Repeating": repeating, "Type": kind}
        )
        for n, form in enumerate(event_form_list, start=1):
            _sub(sed, "FormRef", {"FormOID": form.oid, "OrderNumber": str(n), "Mandatory": "No"})
    for form in forms:
        fd = _sub(mdv, "FormDef", {"OID": form.oid, "Name": form.name, "Repeating": "No"})
        _sub(fd, "ItemGroupRef", {"ItemGroupOID": form.group_oid, "Mandatory": "Yes"})
    for form in forms:
        ig = _sub(
            mdv, "ItemGroupDef", {"OID": form.group_oid, "Name": form.name, "Repeating": "No"}
        )
        for n, item in enumerate(form.items, start=1):
            _sub(
                ig,
                "ItemRef",
                {
                    "ItemOID": item.oid,
                    "OrderNumber": str(n),
                    "Mandatory": "Yes" if item.oid == "study_code" else "No",
                    "KeySequence": "1" if item.oid == "study_code" else None,
                },
            )
    for form in forms:
        for item in form.items:
            attrs = {
                "OID": item.oid,
                "Name": item.name,
                "DataType": item.data_type,
                "Length": str(item.length)
                if item.length and item.data_type in ("text", "integer")
                else None,
                "Comment": f"Stepdown: {item.source}",
            }
            idef = _sub(mdv, "ItemDef", attrs)
            if item.question:
                _translated(idef, "Question", item.question)
            else:
                _translated(idef, "Question", {"en": item.name})
            if item.codelist:
                _sub(idef, "CodeListRef", {"CodeListOID": item.codelist})
    for oid, (name, options) in codelists.items():
        integer = all(re.fullmatch(r"-?\d+", v) for v, _ in options)
        cl = _sub(
            mdv,
            "CodeList",
            {"OID": oid, "Name": name, "DataType": "integer" if integer else "text"},
        )
        for value, labels in options:
            item_el = _sub(cl, "CodeListItem", {"CodedValue": value})
            _translated(item_el, "Decode", labels)

    # Audit trail, restricted to these participants' trial data.
    ids: dict[str, set[str]] = {
        "participant": {str(i) for i in pids},
        "schedule_event": {str(e.id) for evs in events_by_p.values() for e in evs},
        "lab_result": {str(r.id) for rs in results_by_p.values() for r in rs},
        "survey_response": {str(r.id) for r in responses.values()},
        "decision": {
            str(d)
            for d in (
                session.exec(
                    select(Decision.id).where(col(Decision.participant_id).in_(pids))
                ).all()
                if pids
                else []
            )
        },
    }
    audit_rows = []
    if pids:
        candidates = session.exec(
            select(AuditEvent)
            .where(
                col(AuditEvent.entity).in_(AUDITED_ENTITIES),
                or_(
                    col(AuditEvent.site_id).in_({p.site_id for p in participants}),
                    col(AuditEvent.site_id).is_(None),
                ),
            )
            .order_by(col(AuditEvent.at), col(AuditEvent.id))
        ).all()
        audit_rows = [r for r in candidates if r.entity_id in ids.get(r.entity, set())]
    # AdminData: sites and actors.
    admin = _sub(root, "AdminData", {"StudyOID": study_oid})
    staff_ids = {r.actor_user_id for r in audit_rows if r.actor_user_id is not None}
    staff = (
        {
            u.id: u
            for u in session.exec(select(StaffUser).where(col(StaffUser.id).in_(staff_ids))).all()
        }
        if staff_ids
        else {}
    )
    actors = sorted({r.actor for r in audit_rows} | {"system"})
    for actor in actors:
        user_type = "Other"
        match = re.fullmatch(r"staff:(\d+)", actor)
        person = staff.get(int(match.group(1))) if match else None
        if person is not None and person.role == Role.INVESTIGATOR:
            user_type = "Investigator"
        elif actor.startswith(("hl7:", "cli:import", "lab")):
            user_type = "Lab"
        user = _sub(admin, "User", {"OID": _user_oid(actor), "UserType": user_type})
        _sub(user, "LoginName", text=actor)
        if person is not None:
            _sub(user, "DisplayName", text=f"{person.full_name} ({person.role.value})")
    location_sites = sorted(sites.values(), key=lambda s: s.code)
    for site in location_sites:
        loc = _sub(
            admin,
            "Location",
            {"OID": f"LOC.{site.code}", "Name": site.name, "LocationType": "Site"},
        )
        _sub(
            loc,
            "MetaDataVersionRef",
            {
                "StudyOID": study_oid,
                "MetaDataVersionOID": mdv_oid,
                "EffectiveDate": _value(study.created_at.date()) or "",
            },
        )
    fallback_location = f"LOC.{location_sites[0].code}" if location_sites else "LOC.STEPDOWN"
    if not location_sites:
        loc = _sub(
            admin,
            "Location",
            {"OID": fallback_location, "Name": "Stepdown", "LocationType": "Other"},
        )
        _sub(
            loc,
            "MetaDataVersionRef",
            {
                "StudyOID": study_oid,
                "MetaDataVersionOID": mdv_oid,
                "EffectiveDate": _value(now.date()) or "",
            },
        )

    # ClinicalData.
    clinical = _sub(root, "ClinicalData", {"StudyOID": study_oid, "MetaDataVersionOID": mdv_oid})
    counts = {"events": 0, "items": 0}

    def item_group(
        parent: ET.Element, form: FormSpec, values: dict[str, Any], repeat: str | None = None
    ) -> None:
        fd = _sub(parent, "FormData", {"FormOID": form.oid, "FormRepeatKey": repeat})
        ig = _sub(fd, "ItemGroupData", {"ItemGroupOID": form.group_oid})
        for item in form.items:
            value = _value(values.get(item.oid))
            if value is not None:
                _sub(ig, "ItemData", {"ItemOID": item.oid, "Value": value})
                counts["items"] += 1

    for p in participants:
        p_site = sites.get(p.site_id)
        sd = _sub(clinical, "SubjectData", {"SubjectKey": p.study_code})
        if p_site is not None:
            _sub(sd, "SiteRef", {"LocationOID": f"LOC.{p_site.code}"})
        enrol = _sub(sd, "StudyEventData", {"StudyEventOID": "Event.enrolment"})
        counts["events"] += 1
        item_group(
            enrol,
            PARTICIPANT,
            {
                "study_code": p.study_code,
                "site_code": p_site.code if p_site else None,
                "cohort": p.cohort,
                "participant_status": p.status,
                "anchor_date": p.anchor_date,
                "protocol_version": p.protocol_version,
                "enrolled_at": p.created_at,
                "withdrawn_at": p.withdrawn_at,
            },
        )
        by_event: dict[int, list[LabResult]] = defaultdict(list)
        unscheduled: list[LabResult] = []
        for r in results_by_p.get(p.id or 0, []):
            (by_event[r.event_id] if r.event_id else unscheduled).append(r)
        repeat_of: dict[str, int] = defaultdict(int)
        for e in events_by_p.get(p.id or 0, []):
            kind = e.event_type.value
            repeat_of[kind] += 1
            sed = _sub(
                sd,
                "StudyEventData",
                {"StudyEventOID": event_oid(kind), "StudyEventRepeatKey": str(repeat_of[kind])},
            )
            counts["events"] += 1
            item_group(
                sed,
                SCHEDULE_EVENT,
                {
                    "evt_key": e.key,
                    "evt_label": e.label,
                    "evt_type": e.event_type,
                    "evt_status": e.status,
                    "evt_target_date": e.target_date,
                    "evt_window_open": e.window_open_date,
                    "evt_window_close": e.window_close_date,
                    "evt_completed_on": e.completed_on,
                    "evt_out_of_window": e.is_out_of_window,
                    "evt_phase": e.phase,
                    "evt_status_reason": e.status_reason,
                },
            )
            for r in by_event.get(e.id or 0, []):
                item_group(sed, RESULT_FORMS[r.kind], result_values(r))
            response = responses.get(e.id or 0)
            if response is not None and response.instrument_key in instrument_forms:
                item_group(
                    sed,
                    instrument_forms[response.instrument_key],
                    response_values(response, answers[response.id or 0], scores[response.id or 0]),
                )
        for n, r in enumerate(unscheduled, start=1):
            sed = _sub(
                sd, "StudyEventData", {"StudyEventOID": UNSCHEDULED, "StudyEventRepeatKey": str(n)}
            )
            counts["events"] += 1
            item_group(sed, RESULT_FORMS[r.kind], result_values(r))

    records = _sub(clinical, "AuditRecords") if audit_rows else None
    for row in audit_rows:
        assert records is not None
        row_site = sites.get(row.site_id) if row.site_id is not None else None
        ar = _sub(records, "AuditRecord", {"ID": f"AR.{row.id}"})
        _sub(ar, "UserRef", {"UserOID": _user_oid(row.actor)})
        _sub(
            ar,
            "LocationRef",
            {"LocationOID": f"LOC.{row_site.code}" if row_site else fallback_location},
        )
        _sub(ar, "DateTimeStamp", text=_value(row.at))
        changes = _changes(_scrub(row.before), _scrub(row.after))
        reason = (
            row.action
            + (f": {row.reason}" if row.reason else "")
            + (f" ({changes})" if changes else "")
        )
        _sub(ar, "ReasonForChange", text=reason[:1900])
        _sub(ar, "SourceID", text=f"{row.entity}:{row.entity_id}")
    ET.indent(root, space=" ")
    xml = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Export(
        xml=xml,
        subjects=len(participants),
        study_events=counts["events"],
        item_data=counts["items"],
        audit_records=len(audit_rows),
        site_ids=sorted(sites)
        if site_ids is not None
        else sorted({p.site_id for p in participants}),
    )


def result_values(r: LabResult) -> dict[str, Any]:
    """A result's item values, by item OID."""
    if r.kind == ResultKind.CTDNA:
        return {
            "ctdna_accession": r.accession_id,
            "ctdna_lab": r.source,
            "ctdna_assay": r.assay,
            "ctdna_collected_at": r.collected_at,
            "ctdna_reported_at": r.reported_at,
            "ctdna_call": r.call,
            "ctdna_mtm_per_ml": r.mtm_per_ml,
        }
    if r.kind == ResultKind.IMAGING:
        return {
            "img_accession": r.accession_id,
            "img_lab": r.source,
            "img_modality": r.modality,
            "img_performed_on": r.performed_on,
            "img_reported_at": r.reported_at,
            "img_recist": r.recist,
            "img_confirmed": r.is_confirmed,
        }
    return {
        "tm_accession": r.accession_id,
        "tm_lab": r.source,
        "tm_marker": r.marker,
        "tm_value": r.value,
        "tm_unit": r.unit,
        "tm_collected_at": r.collected_at,
    }


def response_values(
    response: SurveyResponse, answers: list[SurveyAnswer], scores: list[SurveyScore]
) -> dict[str, Any]:
    """A submitted questionnaire's item values, by item OID."""
    key = oid_part(response.instrument_key)
    values: dict[str, Any] = {
        f"{key}_submitted_at": response.submitted_at,
        f"{key}_channel": response.channel,
    }
    for a in answers:
        values[f"{key}_{oid_part(a.item_id)}"] = a.value
    for s in scores:
        values[f"{key}_score_{oid_part(s.scale)}"] = s.score
    return values


def record_export(
    *,
    session: Session,
    export: Export,
    study: Study,
    actor: str,
    actor_user_id: int | None,
    via: str,
    now: datetime,
) -> None:
    """Audit an ODM export (`study.export`): who, which study and sites, how much."""
    from server import audit

    audit.record_export(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        entity="study",
        view="odm",
        filters={"study": study.key, "via": via, "format": "CDISC ODM 1.3.2"},
        row_count=export.subjects,
        site_ids=export.site_ids,
        now=now,
    )
