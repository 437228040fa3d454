"""The FHIR read API's queries: every search starts from the participants the caller may see.

A staff user sees the participants of their sites (server.auth.scoping), a participant's app token
only themselves, and only what the companion app shows them: their record, schedule,
questionnaires, answers and scores, never lab results, alerts (care-team work) or messages.
Anything outside the scope is absent: a read answers 404, a search leaves it out of the Bundle.

Subjects, ids and categories filter in SQL; dates, `_lastUpdated`, codes and statuses are matched
on the mapped resources (a search is narrowed by scope and subject first, so the rows left are one
site's at most), then the result is sorted by date and paged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from sqlmodel import Session, and_, col, or_, select

from notifications.models import MessageCategory, OutboxMessage
from server.alerts.models import Alert
from server.auth.models import StaffUser
from server.auth.scoping import visible_site_ids_subquery
from server.fhir import mapping
from server.fhir.mapping import Resource, Subject
from server.fhir.search import Query, SearchError, Token
from server.participants.models import Participant, ParticipantStatus
from server.protocols import service as protocols
from server.protocols.models import Study
from server.results.models import LabResult, ResultStatus
from server.schedules.models import EventType, ScheduleEvent
from server.surveys import service as surveys
from server.surveys import texts
from server.surveys.definition import Instrument
from server.surveys.models import (
    InstrumentText,
    ResponseStatus,
    SurveyAnswer,
    SurveyResponse,
    SurveyScore,
)
from server.surveys.texts import Wording

# Resource types a participant's app token may read (the companion app's own view).
PARTICIPANT_TYPES = frozenset(
    {
        "Patient",
        "ResearchSubject",
        "ResearchStudy",
        "CarePlan",
        "Questionnaire",
        "QuestionnaireResponse",
        "Observation",
    }
)
# ... and of Observations, only the survey scores (results are given by the care team).
PARTICIPANT_OBSERVATION_CATEGORIES = frozenset({"survey"})


@dataclass(frozen=True)
class Scope:
    """Whom a caller may see: a staff user's sites, or one participant (their app token)."""

    user: StaffUser | None = None
    participant_id: int | None = None

    @property
    def is_participant(self) -> bool:
        return self.participant_id is not None

    def condition(self) -> Any:
        """The WHERE clause on participant that keeps the scope."""
        if self.participant_id is not None:
            return Participant.id == self.participant_id
        assert self.user is not None
        return col(Participant.site_id).in_(visible_site_ids_subquery(self.user))


@dataclass(frozen=True)
class Found:
    """One matched resource, with the dates searches filter and sort on."""

    resource: Resource
    when: datetime | date | None = None

    @property
    def last_updated(self) -> datetime | None:
        value = self.resource.get("meta", {}).get("lastUpdated")
        return datetime.fromisoformat(value) if value else None

    def sort_key(self) -> tuple[datetime, str]:
        when = self.when
        if isinstance(when, date) and not isinstance(when, datetime):
            when = datetime.combine(when, datetime.min.time(), UTC)
        return (when or datetime.min.replace(tzinfo=UTC), str(self.resource.get("id")))


def _int_ids(values: Iterable[str], prefix: str = "") -> list[int]:
    """Ids like "12" (or "result-12" with a prefix) as integers; anything else matches nothing."""
    out = []
    for value in values:
        if prefix:
            if not value.startswith(prefix):
                continue
            value = value[len(prefix) :]
        if value.isdigit() and len(value) <= 10:
            out.append(int(value))
    return out


def subjects(
    session: Session, scope: Scope, query: Query
) -> dict[int, tuple[Subject, Participant]]:
    """The participants in scope that the search's subject parameters name (all when none)."""
    stmt = (
        select(Participant, Study.key)
        .join(Study, col(Study.id) == col(Participant.study_id))
        .where(scope.condition())
    )
    if query.subjects:
        stmt = stmt.where(col(Participant.id).in_(_int_ids(query.subjects)))
    rows = session.exec(stmt).all()
    out: dict[int, tuple[Subject, Participant]] = {}
    for participant, study_key in rows:
        if query.subject_identifiers and not any(
            _identifier_matches(t, study_key, participant.study_code)
            for t in query.subject_identifiers
        ):
            continue
        assert participant.id is not None
        out[participant.id] = (
            Subject(participant.id, study_key, participant.study_code),
            participant,
        )
    return out


def _by_id(query: Query) -> Query:
    """Patient, ResearchSubject and CarePlan share the participant's id: `_id` narrows the
    participants in SQL (when no subject parameter does already)."""
    if query.ids and not query.subjects:
        return replace(query, subjects=list(query.ids))
    return query


def _identifier_matches(token: Token, study_key: str, study_code: str) -> bool:
    from server.fhir.codes import study_system

    if token.code != study_code:
        return False
    return token.system is None or token.system == study_system(study_key)


# --- one builder per resource type ---------------------------------------------------------------


def _patients(session: Session, scope: Scope, query: Query, base_url: str) -> list[Found]:
    out = []
    for subject, p in subjects(session, scope, _by_id(query)).values():
        if query.ids and str(subject.id) not in query.ids:
            continue
        resource = mapping.patient(
            subject,
            locale=p.locale.value,
            is_active=p.status not in (ParticipantStatus.WITHDRAWN, ParticipantStatus.COMPLETED),
            updated_at=p.updated_at,
        )
        out.append(Found(resource, p.created_at))
    return out


def _research_subjects(session: Session, scope: Scope, query: Query, base_url: str) -> list[Found]:
    out = []
    for subject, p in subjects(session, scope, _by_id(query)).values():
        if query.ids and str(subject.id) not in query.ids:
            continue
        if query.studies and subject.study_key not in query.studies:
            continue
        resource = mapping.research_subject(
            subject,
            status=p.status.value,
            cohort=p.cohort,
            enrolled_at=p.created_at,
            withdrawn_at=p.withdrawn_at,
            updated_at=p.updated_at,
        )
        if query.statuses and resource["status"] not in query.statuses:
            continue
        out.append(Found(resource, p.created_at))
    return out


def _research_studies(session: Session, scope: Scope, query: Query, base_url: str) -> list[Found]:
    stmt = select(Study)
    if scope.is_participant:
        stmt = stmt.where(
            col(Study.id).in_(
                select(Participant.study_id).where(Participant.id == scope.participant_id)
            )
        )
    out = []
    for study in session.exec(stmt.order_by(col(Study.id))):
        if query.ids and study.key not in query.ids:
            continue
        try:
            protocol = protocols.find_protocol(study.protocol_key)
        except Exception:  # a study whose protocol file is gone still exists
            protocol = None
        resource = mapping.research_study(
            study_key=study.key,
            title=study.title,
            protocol_key=study.protocol_key,
            protocol_version=protocol.version if protocol else None,
            identifiers=protocol.identifiers if protocol else [],
            cohorts=[(c.key, c.label) for c in protocol.cohorts] if protocol else [],
            anchor=protocol.anchor if protocol else None,
            created_at=study.created_at,
        )
        if query.subject_identifiers and not any(
            t.matches(resource["identifier"]) for t in query.subject_identifiers
        ):
            continue
        out.append(Found(resource, study.created_at))
    return out


def _care_plans(session: Session, scope: Scope, query: Query, base_url: str) -> list[Found]:
    chosen = subjects(session, scope, _by_id(query))
    if not chosen:
        return []
    ids = list(chosen)
    events = session.exec(
        select(ScheduleEvent)
        .where(col(ScheduleEvent.participant_id).in_(ids))
        .order_by(
            col(ScheduleEvent.participant_id), col(ScheduleEvent.target_at), col(ScheduleEvent.id)
        )
    ).all()
    outcomes: dict[int, list[str]] = {}
    for result_id, event_id in session.exec(
        select(LabResult.id, LabResult.event_id).where(
            col(LabResult.participant_id).in_(ids),
            LabResult.status == ResultStatus.ACCEPTED,
            col(LabResult.event_id).is_not(None),
        )
    ):
        outcomes.setdefault(event_id, []).append(f"Observation/result-{result_id}")  # type: ignore[arg-type]
    for response_id, event_id in session.exec(
        select(SurveyResponse.id, SurveyResponse.event_id).where(
            col(SurveyResponse.participant_id).in_(ids),
            SurveyResponse.status == ResponseStatus.SUBMITTED,
        )
    ):
        outcomes.setdefault(event_id, []).append(f"QuestionnaireResponse/{response_id}")
    by_participant: dict[int, list[ScheduleEvent]] = {}
    for event in events:
        by_participant.setdefault(event.participant_id, []).append(event)
    out = []
    for pid, (subject, p) in chosen.items():
        if query.ids and str(pid) not in query.ids:
            continue
        mine = by_participant.get(pid, [])
        activities = [
            mapping.Activity(
                id=e.id,  # type: ignore[arg-type]
                event_type=e.event_type.value,
                label=e.label,
                status=e.status.value,
                status_reason=e.status_reason,
                window_open_at=e.window_open_at,
                window_close_at=e.window_close_at,
                target_date=e.target_date,
                completed_at=e.completed_at,
                is_out_of_window=e.is_out_of_window,
                instrument=e.instrument,
                outcomes=tuple(
                    r
                    for r in outcomes.get(e.id, [])  # type: ignore[arg-type]
                    # An app token reads no results: not even that one exists.
                    if not (scope.is_participant and r.startswith("Observation/"))
                ),
            )
            for e in mine
            # The app does not show decision points (the care team's); neither does this.
            if not (scope.is_participant and e.event_type == EventType.DECISION_POINT)
        ]
        resource = mapping.care_plan(
            subject,
            participant_status=p.status.value,
            protocol_version=p.protocol_version,
            activities=activities,
            base_url=base_url,
            updated_at=mapping.latest(p.updated_at, *(e.updated_at for e in mine)),
        )
        if query.statuses and resource["status"] not in query.statuses:
            continue
        out.append(Found(resource, p.created_at))
    return out


def _result_rows(session: Session, ids: list[int], query: Query) -> list[LabResult]:
    stmt = select(LabResult).where(
        col(LabResult.participant_id).in_(ids), LabResult.status == ResultStatus.ACCEPTED
    )
    result_ids = _int_ids(query.ids, "result-")
    if query.ids:
        stmt = stmt.where(col(LabResult.id).in_(result_ids))
    return list(session.exec(stmt.order_by(col(LabResult.id))).all())


def _score_rows(
    session: Session, ids: list[int], query: Query
) -> list[tuple[SurveyScore, SurveyResponse]]:
    stmt = (
        select(SurveyScore, SurveyResponse)
        .join(SurveyResponse, col(SurveyResponse.id) == col(SurveyScore.response_id))
        .where(
            col(SurveyResponse.participant_id).in_(ids),
            SurveyResponse.status == ResponseStatus.SUBMITTED,
        )
    )
    if query.ids:
        stmt = stmt.where(col(SurveyScore.id).in_(_int_ids(query.ids, "score-")))
    return list(session.exec(stmt.order_by(col(SurveyScore.id))).all())


def _observations(session: Session, scope: Scope, query: Query, base_url: str) -> list[Found]:
    chosen = subjects(session, scope, query)
    if not chosen:
        return []
    ids = list(chosen)
    out: list[Found] = []
    if not scope.is_participant:
        for r in _result_rows(session, ids, query):
            subject = chosen[r.participant_id][0]  # type: ignore[index]
            row = mapping.Result(
                id=r.id,  # type: ignore[arg-type]
                kind=r.kind.value,
                source=r.source,
                accession_id=r.accession_id,
                event_id=r.event_id,
                collected_at=r.collected_at,
                performed_on=r.performed_on,
                reported_at=r.reported_at,
                received_at=r.received_at,
                reviewed_at=r.reviewed_at,
                assay=r.assay,
                call=r.call.value if r.call else None,
                mtm_per_ml=r.mtm_per_ml,
                modality=r.modality,
                recist=r.recist.value if r.recist else None,
                is_confirmed=r.is_confirmed,
                marker=r.marker,
                value=r.value,
                unit=r.unit,
            )
            out.append(Found(mapping.result_observation(subject, row), row.effective))
    instruments = surveys.instruments()
    for score, response in _score_rows(session, ids, query):
        subject = chosen[response.participant_id][0]
        instrument = instruments.get(response.instrument_key)
        label = score.scale
        if instrument is not None:
            with contextlib.suppress(KeyError):  # a scale dropped from a later edition
                label = instrument.scale(score.scale).label
        when = response.submitted_at or response.started_at
        row_score = mapping.Score(
            id=score.id,  # type: ignore[arg-type]
            response_id=response.id,  # type: ignore[arg-type]
            instrument_key=response.instrument_key,
            scale=score.scale,
            label=label,
            score=score.score,
            raw=score.raw,
            answered=score.answered,
            total=score.total,
            submitted_at=when,
        )
        out.append(Found(mapping.score_observation(subject, row_score), when))
    allowed = PARTICIPANT_OBSERVATION_CATEGORIES if scope.is_participant else None
    return [
        f
        for f in out
        if (
            not query.categories
            or any(t.matches(_codings(f, "category")) for t in query.categories)
        )
        and (not query.codes or any(t.matches(_codings(f, "code")) for t in query.codes))
        and (allowed is None or any(c.get("code") in allowed for c in _codings(f, "category")))
    ]


def _codings(found: Found, element: str) -> list[dict[str, Any]]:
    value = found.resource.get(element)
    concepts = value if isinstance(value, list) else [value] if value else []
    return [c for concept in concepts for c in concept.get("coding", [])]


def _questionnaires(session: Session, scope: Scope, query: Query, base_url: str) -> list[Found]:
    out = []
    for _key, instrument in sorted(surveys.instruments().items()):
        wordings, primary = _wordings(session, instrument)
        resource = mapping.questionnaire(
            instrument, wordings=wordings, primary=primary, base_url=base_url
        )
        if query.ids and resource["id"] not in query.ids:
            continue
        if query.questionnaires and not (
            {resource["url"], resource["name"], f"{resource['url']}|{resource['version']}"}
            & set(query.questionnaires)
        ):
            continue
        out.append(Found(resource, None))
    return out


LANGUAGES = ("en", "fr", "zh")


def _wordings(session: Session, instrument: Instrument) -> tuple[dict[str, Wording], str]:
    """The instrument's wording in each language it can be shown in (a licensed one: where the
    site loaded its text), and the language to lead with (English when it is one of them)."""
    found = {
        lang: texts.wording_for(session, instrument, lang)
        for lang in LANGUAGES
        if texts.problem_for(session, instrument, lang) is None
    }
    if not found:
        found["en"] = texts.wording(instrument, "en", None)  # placeholders only
    return found, "en" if "en" in found else next(iter(found))


def _answered_wording(
    session: Session, instrument: Instrument | None, response: SurveyResponse, locale: str
) -> Wording | None:
    """The wording the participant answered: the loaded text's version they saw, if any."""
    if instrument is None:
        return None
    text = None
    if response.text_version is not None:
        text = session.exec(
            select(InstrumentText).where(
                InstrumentText.instrument_key == instrument.key,
                InstrumentText.locale == locale,
                InstrumentText.version == response.text_version,
            )
        ).first()
    return texts.wording(instrument, locale, text)


def _questionnaire_responses(
    session: Session, scope: Scope, query: Query, base_url: str
) -> list[Found]:
    chosen = subjects(session, scope, query)
    if not chosen:
        return []
    stmt = select(SurveyResponse).where(
        col(SurveyResponse.participant_id).in_(list(chosen)),
        SurveyResponse.status == ResponseStatus.SUBMITTED,
    )
    if query.ids:
        stmt = stmt.where(col(SurveyResponse.id).in_(_int_ids(query.ids)))
    responses = session.exec(stmt.order_by(col(SurveyResponse.id))).all()
    answers: dict[int, dict[str, int]] = {}
    if responses:
        for a in session.exec(
            select(SurveyAnswer).where(col(SurveyAnswer.response_id).in_([r.id for r in responses]))
        ):
            answers.setdefault(a.response_id, {})[a.item_id] = a.value
    instruments = surveys.instruments()
    out = []
    for r in responses:
        subject, participant = chosen[r.participant_id]
        resource = mapping.questionnaire_response(
            subject,
            mapping.Response(
                id=r.id,  # type: ignore[arg-type]
                event_id=r.event_id,
                instrument_key=r.instrument_key,
                instrument_version=r.instrument_version,
                submitted_at=r.submitted_at,
                started_at=r.started_at,
                answers=answers.get(r.id, {}),  # type: ignore[arg-type]
            ),
            instrument=instruments.get(r.instrument_key),
            wording=_answered_wording(
                session, instruments.get(r.instrument_key), r, participant.locale.value
            ),
            locale=participant.locale.value,
            base_url=base_url,
        )
        if query.questionnaires and not any(
            resource["questionnaire"].split("|")[0] == q.split("|")[0]
            or q == mapping.questionnaire_id(r.instrument_key)
            for q in query.questionnaires
        ):
            continue
        if query.statuses and resource["status"] not in query.statuses:
            continue
        out.append(Found(resource, r.submitted_at))
    return out


def _flags(session: Session, scope: Scope, query: Query, base_url: str) -> list[Found]:
    chosen = subjects(session, scope, query)
    if not chosen:
        return []
    stmt = select(Alert).where(col(Alert.participant_id).in_(list(chosen)))
    if query.ids:
        stmt = stmt.where(col(Alert.id).in_(_int_ids(query.ids)))
    out = []
    for a in session.exec(stmt.order_by(col(Alert.id))):
        subject = chosen[a.participant_id][0]  # type: ignore[index]
        resource = mapping.flag(
            subject,
            mapping.AlertRow(
                id=a.id,  # type: ignore[arg-type]
                kind=a.kind.value,
                level=a.level.value,
                state=a.state.value,
                summary=a.summary,
                opened_at=a.opened_at,
                acknowledged_at=a.acknowledged_at,
                resolved_at=a.resolved_at,
            ),
        )
        if query.statuses and resource["status"] not in query.statuses:
            continue
        out.append(Found(resource, a.opened_at))
    return out


def _communications(session: Session, scope: Scope, query: Query, base_url: str) -> list[Found]:
    chosen = subjects(session, scope, query)
    if not chosen:
        return []
    ids = list(chosen)
    alert_subject = {
        a_id: pid
        for a_id, pid in session.exec(
            select(Alert.id, Alert.participant_id).where(col(Alert.participant_id).in_(ids))
        )
    }
    refs = [f"alert:{a_id}" for a_id in alert_subject]
    stmt = select(OutboxMessage).where(
        or_(
            col(OutboxMessage.participant_id).in_(ids),
            and_(
                col(OutboxMessage.category) == MessageCategory.STAFF_ALERT,
                col(OutboxMessage.ref).in_(refs),
            ),
        )
    )
    if query.ids:
        stmt = stmt.where(col(OutboxMessage.id).in_(_int_ids(query.ids)))
    out = []
    for m in session.exec(stmt.order_by(col(OutboxMessage.id))):
        alert_id = None
        if m.ref and m.ref.startswith("alert:") and m.ref[6:].isdigit():
            alert_id = int(m.ref[6:])
        pid = m.participant_id if m.participant_id in chosen else alert_subject.get(alert_id or 0)
        if pid not in chosen:
            continue
        subject = chosen[pid][0]  # type: ignore[index]
        resource = mapping.communication(
            subject,
            mapping.MessageRow(
                id=m.id,  # type: ignore[arg-type]
                kind=m.kind,
                category=m.category.value,
                status=m.status.value,
                to_participant=m.staff_user_id is None and m.participant_id is not None,
                alert_id=alert_id if alert_id in alert_subject else None,
                created_at=m.created_at,
                sent_at=m.sent_at,
                delivered_at=m.delivered_at,
                failed_at=m.failed_at,
                updated_at=m.updated_at,
            ),
        )
        if query.categories and not any(
            t.matches(_codings(Found(resource), "category")) for t in query.categories
        ):
            continue
        if query.statuses and resource["status"] not in query.statuses:
            continue
        out.append(Found(resource, m.sent_at or m.created_at))
    return out


BUILDERS: dict[str, Callable[[Session, Scope, Query, str], list[Found]]] = {
    "Patient": _patients,
    "ResearchStudy": _research_studies,
    "ResearchSubject": _research_subjects,
    "CarePlan": _care_plans,
    "Observation": _observations,
    "Questionnaire": _questionnaires,
    "QuestionnaireResponse": _questionnaire_responses,
    "Flag": _flags,
    "Communication": _communications,
}


@dataclass(frozen=True)
class Page:
    """One page of a search: its resources and how many matched in all."""

    resources: list[Resource]
    total: int


def readable(scope: Scope, resource_type: str) -> bool:
    """Whether the caller may read this resource type at all."""
    return resource_type in BUILDERS and (
        not scope.is_participant or resource_type in PARTICIPANT_TYPES
    )


def search(
    *, session: Session, scope: Scope, resource_type: str, query: Query, base_url: str
) -> Page:
    """Run a search: scope and subject in SQL, then dates, sorting (by date, then id) and paging."""
    if resource_type not in BUILDERS:
        raise SearchError(f"unknown resource type {resource_type!r}", "not-supported")
    if not readable(scope, resource_type):
        return Page([], 0)  # care-team resources: none is a participant's to read
    found = BUILDERS[resource_type](session, scope, query, base_url)
    found = [
        f
        for f in found
        if all(d.matches(f.when) for d in query.dates)
        and all(d.matches(f.last_updated) for d in query.last_updated)
    ]
    found.sort(key=Found.sort_key)
    page = found[query.offset : query.offset + query.count]
    return Page([f.resource for f in page], len(found))


def read(
    *, session: Session, scope: Scope, resource_type: str, resource_id: str, base_url: str
) -> Resource | None:
    """One resource by id, or None when absent or outside the caller's scope."""
    if not readable(scope, resource_type):
        return None
    query = Query(ids=[resource_id], count=1)
    found = BUILDERS[resource_type](session, scope, query, base_url)
    return next((f.resource for f in found if f.resource.get("id") == resource_id), None)
