"""Answers in: saved item by item (partial saves allowed), submitted once (a second submit is the
same response), scored, the questionnaire event completed, critical answers alerted."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from flask import current_app, has_app_context
from sqlmodel import Session, col, select

from config.settings import INSTRUMENTS_DIR
from server import audit
from server.alerts import service as alerts
from server.alerts.models import AlertKind
from server.errors import Conflict, NotFound, ValidationFailed
from server.participants.models import Participant
from server.schedules import service as schedules
from server.schedules.models import EventStatus, EventType, ScheduleEvent
from server.surveys import rules
from server.surveys.definition import Instrument, load_all
from server.surveys.models import ResponseStatus, SurveyAnswer, SurveyResponse, SurveyScore


def init_app(app: Any) -> None:
    """Load every instrument file; a bad one stops the app with file and field named."""
    app.extensions["instruments"] = load_all(app.config["INSTRUMENTS_DIR"])


@functools.cache
def _default() -> dict[str, Instrument]:
    return load_all(INSTRUMENTS_DIR)


def instruments() -> dict[str, Instrument]:
    """The instruments, by key."""
    if has_app_context() and "instruments" in current_app.extensions:
        return current_app.extensions["instruments"]  # type: ignore[no-any-return]
    return _default()


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
        after={"instrument": instrument.key, "items": len(final), "channel": channel},
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


def options_for(instrument: Instrument, item_id: str, locale: str) -> list[dict[str, Any]]:
    """An item's answer choices as (value, label) in a language, for a form."""
    responses = instrument.answers_for(item_id)
    data = responses.model_dump(mode="json")
    out = []
    if data.get("options"):
        for option in data["options"]:
            label = option["label"]
            out.append(
                {
                    "value": option["value"],
                    "label": label.get(locale) or label.get("en")
                    if isinstance(label, dict)
                    else str(label),
                }
            )
        return out
    low, high = int(data["min"]), int(data["max"])
    anchors = data.get("anchors") or {}
    for value in range(low, high + 1):
        anchor = anchors.get(str(value)) or anchors.get(value)
        label = (anchor.get(locale) or anchor.get("en")) if isinstance(anchor, dict) else None
        out.append({"value": value, "label": f"{value} – {label}" if label else str(value)})
    return out


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
