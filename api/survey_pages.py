"""The mobile web survey opened from the reminder SMS: no app, no login, one questionnaire."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template, request

from api.page_kit import whole_number
from server.clock import utcnow
from server.db import get_session
from server.errors import DomainError
from server.participants.models import Participant
from server.schedules.models import ScheduleEvent
from server.surveys import service as surveys
from server.surveys.links import LinkExpired, LinkInvalid, read_token
from server.surveys.models import ResponseStatus

bp = Blueprint("survey", __name__)

WORDS = {
    "en": {
        "submit": "Send my answers",
        "required": "required",
        "thanks": "Thank you!",
        "thanks_body": "Your answers were sent to your care team.",
        "expired": "This link has expired.",
        "expired_body": "Please ask your care team for a new link, or answer in the app.",
        "invalid": "This link does not work.",
        "invalid_body": "Please check you opened the whole link from the SMS, or ask your "
        "care team.",
        "done": "You have already answered this questionnaire.",
        "done_body": "Thank you. Nothing else to do.",
        "fix": "Please check the answers marked below.",
    },
    "fr": {
        "submit": "Envoyer mes réponses",
        "required": "obligatoire",
        "thanks": "Merci !",
        "thanks_body": "Vos réponses ont été transmises à votre équipe soignante.",
        "expired": "Ce lien a expiré.",
        "expired_body": "Demandez un nouveau lien à votre équipe soignante, ou répondez "
        "dans l'application.",
        "invalid": "Ce lien ne fonctionne pas.",
        "invalid_body": "Vérifiez que vous avez ouvert le lien complet du SMS, ou "
        "contactez votre équipe soignante.",
        "done": "Vous avez déjà répondu à ce questionnaire.",
        "done_body": "Merci. Il n'y a rien d'autre à faire.",
        "fix": "Merci de vérifier les réponses signalées ci-dessous.",
    },
    "zh": {
        "submit": "提交我的回答",
        "required": "必答",
        "thanks": "谢谢！",
        "thanks_body": "您的回答已发送给您的医疗团队。",
        "expired": "此链接已过期。",
        "expired_body": "请向您的医疗团队索取新链接，或在应用中作答。",
        "invalid": "此链接无效。",
        "invalid_body": "请确认您打开的是短信中的完整链接，或联系您的医疗团队。",
        "done": "您已经回答过这份问卷。",
        "done_body": "谢谢，无需其他操作。",
        "fix": "请检查下面标出的回答。",
    },
}


def _problem(kind: str, lang: str, status: int) -> tuple[str, int]:
    words = WORDS.get(lang, WORDS["en"])
    return render_template(
        "survey_message.html", lang=lang, title=words[kind], body=words[f"{kind}_body"]
    ), status


def _load(token: str) -> tuple[Participant, ScheduleEvent] | tuple[str, int]:
    lang = request.accept_languages.best_match(["en", "fr", "zh"]) or "en"
    try:
        event_id = read_token(current_app.config["SECRET_KEY"], token, utcnow())
    except LinkExpired:
        return _problem("expired", lang, 410)
    except LinkInvalid:
        return _problem("invalid", lang, 404)
    session = get_session()
    event = session.get(ScheduleEvent, event_id)
    participant = session.get(Participant, event.participant_id) if event else None
    if participant is None or event is None:
        return _problem("invalid", lang, 404)
    return participant, event


def _page(
    participant: Participant,
    event: ScheduleEvent,
    answers: dict[str, Any],
    errors: dict[str, list[str]],
    status: int = 200,
) -> tuple[str, int]:
    instrument = surveys.instrument_for(event)
    lang = participant.locale.value
    items = [
        {
            "id": item.id,
            "number": item.number,
            "text": item.text_in(lang),
            "required": item.required,
            "show_if": item.show_if.model_dump() if item.show_if else None,
            "options": surveys.options_for(instrument, item.id, lang),
        }
        for item in instrument.items
    ]
    return render_template(
        "survey.html",
        lang=lang,
        words=WORDS.get(lang, WORDS["en"]),
        title=instrument.title.get(lang) or instrument.title.get("en"),
        items=items,
        answers=answers,
        errors=errors,
        code=participant.study_code,
    ), status


@bp.route("/s/<token>", methods=["GET", "POST"])
def survey(token: str) -> Any:
    """One questionnaire on a phone: answer, send, thank-you page."""
    loaded = _load(token)
    if not isinstance(loaded[0], Participant):
        return loaded
    participant, event = loaded  # type: ignore[misc]
    session = get_session()
    lang = participant.locale.value
    existing = surveys.find_response(session, participant, event)
    if existing is not None and existing.status == ResponseStatus.SUBMITTED:
        return _problem("done", lang, 200)
    if request.method == "GET":
        return _page(participant, event, surveys.current_answers(session, existing), {})
    answers: dict[str, Any] = {}
    for key, value in request.form.items():
        number = whole_number(value, lo=-1000, hi=1000)  # answer codes are small
        if key.startswith("item-") and number is not None:
            answers[key[5:]] = number
    try:
        surveys.save(
            session=session,
            participant=participant,
            event=event,
            answers=answers,
            submit=True,
            channel="web",
            now=utcnow(),
        )
    except DomainError as exc:
        session.rollback()
        fields = {k.split(".", 1)[-1]: v for k, v in exc.fields.items()}
        return _page(participant, event, answers, fields, 422)
    session.commit()
    words = WORDS.get(lang, WORDS["en"])
    return render_template(
        "survey_message.html", lang=lang, title=words["thanks"], body=words["thanks_body"]
    )
