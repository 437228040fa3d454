"""Answers in: saved item by item (partial saves allowed), submitted once (a second submit is the
same response), scored, the questionnaire event completed, critical answers alerted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app, has_app_context
from sqlmodel import Session, col, select

from server import audit
from server.alerts import service as alerts
from server.alerts.models import AlertKind
from server.errors import Conflict, NotFound, ValidationFailed
from server.participants.models import Participant
from server.schedules import service as schedules
from server.schedules.models import EventStatus, EventType, ScheduleEvent
from server.surveys import rules, texts
from server.surveys.definition import Instrument
from server.surveys.models import ResponseStatus, SurveyAnswer, SurveyResponse, SurveyScore
from server.surveys.registry import init_app as init_app
from server.surveys.registry import instruments as instruments


def instrument_for(event: ScheduleEvent) -> Instrument:
    """The instrument a questionnaire event asks for."""
    if event.event_type != EventType.QUESTIONNAIRE or not event.instrument:
        raise NotFound("questionnaire not found")
    found = instruments().get(event.instrument)
    if found is None:
        raise NotFound(f"instrument {event.instrument!r} is not installed")
    return found


def find_response(
    session: Session, participant: Participant, event: ScheduleEvent
) -> SurveyResponse | None:
    """The participant's response to a questionnaire event (draft or submitted), if any."""
    return session.exec(
        select(SurveyResponse).where(
            SurveyResponse.participant_id == participant.id, SurveyResponse.event_id == event.id
        )
    ).first()


def current_answers(session: Session, response: SurveyResponse | None) -> dict[str, int]:
    """The answers saved so far."""
    if response is None:
        return {}
    return {
        a.item_id: a.value
        for a in session.exec(select(SurveyAnswer).where(SurveyAnswer.response_id == response.id))
    }


def save(
    *,
    session: Session,
    participant: Participant,
    event: ScheduleEvent,
    answers: dict[str, Any],
    submit: bool,
    channel: str,
    now: datetime,
) -> SurveyResponse:
    """Save answers (merged with earlier ones); with `submit`, check completeness, score, complete
    the event and alert on critical answers. Submitting again returns the submitted response."""
    instrument = instrument_for(event)
    existing = find_response(session, participant, event)
    if existing is not None and existing.status == ResponseStatus.SUBMITTED:
        if submit:
            return existing  # a double submit is one response
        raise Conflict("this questionnaire was already submitted")
    if event.status not in (EventStatus.PLANNED, EventStatus.OPEN, EventStatus.MISSED):
        raise Conflict(f"this questionnaire is {event.status.value}")
    wording = text_for(session=session, participant=participant, instrument=instrument)
    merged = {**current_answers(session, existing), **answers}
    problems = rules.validate_answers(instrument, merged, partial=not submit)
    if problems:
        raise ValidationFailed(
            "some answers are not valid", {f"answers.{k}": [v] for k, v in problems.items()}
        )
    response = existing or SurveyResponse(
        participant_id=participant.id,  # type: ignore[arg-type]
        event_id=event.id,  # type: ignore[arg-type]
        instrument_key=instrument.key,
        instrument_version=str(instrument.version),
        channel=channel,
        started_at=now,
    )
    # The wording answered: the loaded text's version (the last save's, at submission).
    response.text_version = wording.text_version
    session.add(response)
    session.flush()
    stored = {
        a.item_id: a
        for a in session.exec(select(SurveyAnswer).where(SurveyAnswer.response_id == response.id))
    }
    visible = set(rules.visible_items(instrument, merged))
    for item_id, value in merged.items():
        if item_id not in visible:
            continue
        row = stored.get(item_id)
        if row is None:
            session.add(
                SurveyAnswer(
                    response_id=response.id,  # type: ignore[arg-type]
                    item_id=item_id,
                    value=int(value),
                    answered_at=now,
                )
            )
        elif row.value != int(value):
            row.value, row.answered_at = int(value), now
            session.add(row)
    # Answers to items that a changed answer now hides are dropped.
    for item_id, row in stored.items():
        if item_id not in visible:
            session.delete(row)
    session.flush()
    if not submit:
        return response
    final = {k: v for k, v in merged.items() if k in visible}
    for key, result in rules.score(instrument, final).items():
        session.add(
            SurveyScore(
                response_id=response.id,  # type: ignore[arg-type]
                scale=key,
                raw=result.raw,
                score=result.score,
                answered=result.answered,
                total=result.total,
                is_missing=result.is_missing,
            )
        )
    response.status = ResponseStatus.SUBMITTED
    response.submitted_at = now
    session.add(response)
    session.flush()
    today = schedules.local_today(participant, now)
    in_window = event.window_open_date <= today <= event.window_close_date
    schedules.complete_event(
        session=session,
        participant=participant,
        event=event,
        completed_on=today,
        now=now,
        actor=f"participant:{participant.id}",
        reason=None if in_window else "answered late",
    )
    audit.record(
        session=session,
        actor=f"participant:{participant.id}",
        action="survey.submit",
        entity="survey_response",
        entity_id=response.id,
        site_id=participant.site_id,
        now=now,
        after={
            "instrument": instrument.key,
            "items": len(final),
            "channel": channel,
            "text_version": response.text_version,
        },
    )
    for critical in rules.critical_answers(instrument, final):
        alerts.open_alert(
            session=session,
            kind=AlertKind.CRITICAL_ANSWER,
            trigger_key=f"answer:{response.id}:{critical.item}",
            participant=participant,
            site_id=participant.site_id,
            summary=f"a questionnaire answer needs review "
            f"({instrument.key} {critical.item}, {critical.severity.value})",
            event_id=event.id,
            now=now,
            actor="system:surveys",
        )
    return response


def scores_over_time(*, session: Session, participant: Participant) -> dict[str, Any]:
    """Each scale's scores over time (submitted responses), by instrument."""
    rows = session.exec(
        select(SurveyResponse, SurveyScore)
        .join(SurveyScore, col(SurveyScore.response_id) == col(SurveyResponse.id))
        .where(
            SurveyResponse.participant_id == participant.id,
            SurveyResponse.status == ResponseStatus.SUBMITTED,
        )
        .order_by(col(SurveyResponse.submitted_at), col(SurveyScore.scale))
    ).all()
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for response, score in rows:
        out.setdefault(response.instrument_key, {}).setdefault(score.scale, []).append(
            {
                "submitted_at": response.submitted_at.isoformat()
                if response.submitted_at
                else None,
                "event_id": response.event_id,
                "score": score.score,
                "raw": score.raw,
                "is_missing": score.is_missing,
            }
        )
    return out


def text_for(
    *, session: Session, participant: Participant, instrument: Instrument
) -> texts.Wording:
    """The instrument in the participant's language, or Conflict when it has no usable text in
    it yet (a licensed instrument whose text the site has not loaded: nothing is asked)."""
    locale = participant.locale.value
    problem = texts.problem_for(session, instrument, locale)
    if problem is not None:
        raise Conflict(f"this questionnaire cannot be shown in your language yet ({problem})")
    return texts.wording_for(session, instrument, locale)


def is_offered(*, session: Session, participant: Participant, event: ScheduleEvent) -> bool:
    """Whether a questionnaire event can be shown to its participant now (its text exists)."""
    return not texts.questionnaire_waits(session, event=event, locale=participant.locale.value)


def use_instrument(
    *,
    session: Session,
    participant: Participant,
    event: ScheduleEvent,
    instrument_key: str,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    reason: str,
) -> ScheduleEvent:
    """Ask one questionnaire with another installed instrument, where the protocol leaves the
    instrument to the site (`site_defaults: [instrument]`, as HEROES does for its quality-of-life
    measures): audited with the reason; the event keeps it when the schedule is re-planned, and
    its reminders are looked at again (a questionnaire that waited for its text may now go)."""
    from server.schedules import reminders

    if event.event_type != EventType.QUESTIONNAIRE or event.participant_id != participant.id:
        raise NotFound("questionnaire not found")
    if instruments().get(instrument_key) is None:
        raise ValidationFailed(
            "no such instrument",
            fields={"instrument": [f"installed: {', '.join(sorted(instruments()))}"]},
        )
    if event.status not in (EventStatus.PLANNED, EventStatus.OPEN):
        raise Conflict(f"this questionnaire is {event.status.value}")
    if find_response(session, participant, event) is not None:
        raise Conflict("this questionnaire has answers already: its instrument stays")
    protocol = schedules.participant_protocol(session=session, participant=participant, now=now)
    if "instrument" not in protocol.item(event.item_id).site_defaults:
        raise Conflict("the protocol names this questionnaire's instrument: it cannot change")
    before = event.instrument
    event.instrument = instrument_key
    event.is_touched = True  # a re-plan from the protocol keeps the site's choice
    event.updated_at = now
    session.add(event)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action="schedule_event.instrument",
        entity="schedule_event",
        entity_id=event.id,
        site_id=participant.site_id,
        now=now,
        before={"instrument": before},
        after={"instrument": instrument_key},
        reason=reason,
    )
    reminders.materialize(session=session, now=now, participant_id=participant.id)
    return event


def survey_link(participant: Participant, event: ScheduleEvent) -> str | None:
    """The signed link of a questionnaire event (valid until its window closes)."""
    if not has_app_context():
        return None
    from server.surveys.links import make_token

    token = make_token(
        current_app.config["SECRET_KEY"],
        event.id,  # type: ignore[arg-type]
        event.window_close_at,
    )
    return f"{current_app.config['PUBLIC_BASE_URL']}/s/{token}"
