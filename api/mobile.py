"""The companion app's API: activate with the SMS code, then the participant's own schedule,
open questionnaires, answers and message preferences. A participant token reaches nothing else."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import marshmallow as ma
from flask import g
from flask_smorest import Blueprint
from marshmallow import validate
from sqlmodel import col, select

from api.common import commit
from api.schemas import PatchSchema, StrictBoolean
from server.auth.web import Unauthorized, bearer_token
from server.clock import utcnow
from server.db import get_session
from server.errors import NotFound
from server.participants import mobile
from server.participants import service as participants
from server.participants.models import Locale, Participant
from server.schedules import service as schedules
from server.schedules.models import PENDING_STATUSES, EventType, ScheduleEvent
from server.surveys import service as surveys

blp = Blueprint("mobile", __name__, url_prefix="/api/v1/mobile", description="Companion app")


class ActivateSchema(ma.Schema):
    study = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=32))
    study_code = ma.fields.String(required=True, validate=validate.Length(min=1, max=32))
    code = ma.fields.String(required=True, validate=validate.Regexp(r"^\s*\d{6}\s*$"))


class AnswersSchema(ma.Schema):
    answers = ma.fields.Dict(
        keys=ma.fields.String(validate=validate.Length(min=1, max=64)),
        # Answer codes are small; the bound keeps any number a database can store.
        values=ma.fields.Integer(strict=True, validate=validate.Range(min=-1000, max=1000)),
        required=True,
    )
    submit = StrictBoolean(load_default=False)


class PreferencesSchema(PatchSchema):
    quiet_hours_start = ma.fields.Time()
    quiet_hours_end = ma.fields.Time()
    locale = ma.fields.String(validate=validate.OneOf([loc.value for loc in Locale]))


def authenticate_participant() -> Participant:
    """The participant behind the app's bearer token, or 401."""
    token = bearer_token()
    if token is None:
        raise Unauthorized("send 'Authorization: Bearer <token>' (POST /api/v1/mobile/activate)")
    g.login_via_request = True
    found = mobile.participant_for_token(session=get_session(), token=token, now=utcnow())
    if found is None:
        raise Unauthorized("the token is invalid, expired or revoked")
    g.participant, g.participant_token = found
    return found[0]


def me() -> Participant:
    participant = g.get("participant")
    if participant is None:
        raise Unauthorized("authentication required")
    return participant  # type: ignore[no-any-return]


@blp.route("/activate", methods=["POST"])
@blp.arguments(ActivateSchema)
@blp.response(201)
@blp.doc(security=[])
def activate(args: dict[str, Any]) -> dict[str, Any]:
    """Exchange the one-time SMS code for the app's token (scoped to this participant)."""
    session = get_session()
    token, row, participant = mobile.activate(
        session=session,
        study_key=args.get("study"),
        study_code=args["study_code"],
        code=args["code"],
        now=utcnow(),
    )
    commit()
    return {
        "token": token,
        "token_type": "Bearer",
        "expires_at": row.expires_at.isoformat(),
        "participant": {
            "study_code": participant.study_code,
            "locale": participant.locale.value,
            "timezone": participant.timezone,
        },
    }


@blp.route("/token", methods=["DELETE"])
@blp.response(204)
def revoke() -> None:
    """Sign this phone out (the token stops working)."""
    me()
    row = g.participant_token
    row.revoked_at = utcnow()
    get_session().add(row)
    commit()


@blp.route("/schedule")
@blp.response(200)
def schedule() -> list[dict[str, Any]]:
    """My upcoming draws, scans, visits and questionnaires, in my local time."""
    participant = me()
    today = schedules.local_today(participant, utcnow())
    events = (
        get_session()
        .exec(
            select(ScheduleEvent)
            .where(
                ScheduleEvent.participant_id == participant.id,
                col(ScheduleEvent.status).in_(list(PENDING_STATUSES)),
                col(ScheduleEvent.window_close_date) >= today,
                ScheduleEvent.event_type != EventType.DECISION_POINT,
            )
            .order_by(col(ScheduleEvent.target_at))
        )
        .all()
    )
    keep = (
        "id",
        "event_type",
        "label",
        "status",
        "target_date",
        "window_open_date",
        "window_close_date",
        "target_local",
        "window_open_local",
        "window_close_local",
        "time_zone",
        "instrument",
    )
    return [
        {k: v for k, v in schedules.event_dict(e, participant.timezone).items() if k in keep}
        for e in events
    ]


def _questionnaire(participant: Participant, event: ScheduleEvent) -> dict[str, Any]:
    session = get_session()
    instrument = surveys.instrument_for(event)
    wording = surveys.text_for(session=session, participant=participant, instrument=instrument)
    response = surveys.find_response(session, participant, event)
    return {
        "event_id": event.id,
        "instrument": instrument.key,
        "title": wording.title,
        "intro": wording.intro,
        # The site's loaded wording answered (None: the instrument file's own wording).
        "text_version": wording.text_version,
        "window_close_local": schedules.event_dict(event, participant.timezone)[
            "window_close_local"
        ],
        "status": response.status.value if response else "not_started",
        "answers": surveys.current_answers(session, response),
        "items": [
            {
                "id": q.id,
                "number": q.number,
                "text": q.text,
                "heading": q.heading,
                "required": q.required,
                "show_if": q.show_if.model_dump() if q.show_if else None,
                # The answers as the survey page shows them, in my language.
                "choices": [{"value": c.value, "label": c.label} for c in q.choices],
                "responses": instrument.answers_for(q.id).model_dump(mode="json"),
            }
            for q in wording.questions
        ],
    }


@blp.route("/questionnaires")
@blp.response(200)
def questionnaires() -> list[dict[str, Any]]:
    """My questionnaires open now, with their questions in my language and my saved answers (one
    whose text the site has not loaded in my language yet is not offered until it has)."""
    participant = me()
    now = utcnow()
    events = (
        get_session()
        .exec(
            select(ScheduleEvent)
            .where(
                ScheduleEvent.participant_id == participant.id,
                ScheduleEvent.event_type == EventType.QUESTIONNAIRE,
                col(ScheduleEvent.status).in_(list(PENDING_STATUSES)),
                col(ScheduleEvent.window_open_at) <= now,
                col(ScheduleEvent.window_close_at) > now,
            )
            .order_by(col(ScheduleEvent.target_at))
        )
        .all()
    )
    session = get_session()
    return [
        _questionnaire(participant, e)
        for e in events
        if surveys.is_offered(session=session, participant=participant, event=e)
    ]


@blp.route("/questionnaires/<int:event_id>/answers", methods=["POST"])
@blp.arguments(AnswersSchema)
@blp.response(200)
def answer(args: dict[str, Any], event_id: int) -> dict[str, Any]:
    """Save answers (partial saves allowed); `submit: true` sends them (twice is one response)."""
    participant = me()
    session = get_session()
    event = session.get(ScheduleEvent, event_id)
    if event is None or event.participant_id != participant.id:
        raise NotFound("questionnaire not found")
    response = surveys.save(
        session=session,
        participant=participant,
        event=event,
        answers=args["answers"],
        submit=args["submit"],
        channel="app",
        now=utcnow(),
    )
    commit()
    return {"response_id": response.id, "status": response.status.value}


def _preferences(participant: Participant) -> dict[str, Any]:
    return {
        "quiet_hours_start": participant.quiet_hours_start.strftime("%H:%M"),
        "quiet_hours_end": participant.quiet_hours_end.strftime("%H:%M"),
        "locale": participant.locale.value,
        "timezone": participant.timezone,
    }


@blp.route("/preferences", methods=["GET"])
@blp.response(200)
def preferences() -> dict[str, Any]:
    """My message preferences: quiet hours and language."""
    return _preferences(me())


@blp.route("/preferences", methods=["PATCH"], endpoint="update_preferences")
@blp.arguments(PreferencesSchema)
@blp.response(200)
def update_preferences(args: dict[str, Any]) -> dict[str, Any]:
    """Change my quiet hours or language (at least one of them)."""
    participant = participants.change_preferences(
        session=get_session(), participant=me(), changes=args, now=utcnow()
    )
    commit()
    return _preferences(participant)


# Calendar entries show on lock screens and shared calendars: plain words, no clinical detail.
CALENDAR_WORDS = {
    "en": {
        "draw": "Blood test",
        "scan": "Imaging appointment",
        "visit": "Clinic visit",
        "questionnaire": "Questionnaire",
    },
    "fr": {
        "draw": "Prise de sang",
        "scan": "Rendez-vous d'imagerie",
        "visit": "Consultation",
        "questionnaire": "Questionnaire",
    },
    "zh": {"draw": "抽血", "scan": "影像检查预约", "visit": "门诊就诊", "questionnaire": "问卷"},
}
WORD_OF_TYPE = {
    EventType.CTDNA_DRAW: "draw",
    EventType.BLOOD_WORK: "draw",
    EventType.TUMOR_MARKERS: "draw",
    EventType.IMAGING: "scan",
    EventType.CLINIC_VISIT: "visit",
    EventType.TREATMENT_CYCLE: "visit",
    EventType.QUESTIONNAIRE: "questionnaire",
}


@blp.route("/calendar.ics")
@blp.doc(
    responses={
        "200": {
            "description": "an iCalendar feed",
            "content": {"text/calendar": {"schema": {"type": "string"}}},
        }
    }
)
def calendar() -> Any:
    """My upcoming appointments as an iCalendar feed for the phone's calendar."""
    from flask import Response
    from icalendar import Calendar, Event

    participant = me()
    words = CALENDAR_WORDS.get(participant.locale.value, CALENDAR_WORDS["en"])
    today = schedules.local_today(participant, utcnow())
    events = (
        get_session()
        .exec(
            select(ScheduleEvent)
            .where(
                ScheduleEvent.participant_id == participant.id,
                col(ScheduleEvent.status).in_(list(PENDING_STATUSES)),
                col(ScheduleEvent.window_close_date) >= today,
                col(ScheduleEvent.event_type).in_(list(WORD_OF_TYPE)),
            )
            .order_by(col(ScheduleEvent.target_at))
        )
        .all()
    )
    cal = Calendar()
    cal.add("prodid", "-//Stepdown//companion//EN")
    cal.add("version", "2.0")
    cal.add("x-wr-calname", f"Stepdown {participant.study_code}")
    for event in events:
        entry = Event()
        entry.add("uid", f"stepdown-{participant.id}-{event.key}@stepdown")
        entry.add("summary", f"{words[WORD_OF_TYPE[event.event_type]]} ({participant.study_code})")
        entry.add("dtstart", event.target_at)
        entry.add("dtend", event.target_at + timedelta(hours=1))
        entry.add("dtstamp", utcnow())
        cal.add_component(entry)
    return Response(cal.to_ical(), mimetype="text/calendar")
