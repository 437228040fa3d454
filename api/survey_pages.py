"""The mobile web survey opened from the reminder SMS: no app, no login, one questionnaire.

The questions come in short steps ("Step 3 of 6", server.surveys.rules.steps), each a plain form:
Next saves that step's answers (a draft) and shows the next one, Back the one before, the last
step sends. Everything works without JavaScript; survey.js only moves the focus (to the step's
heading, or to the list of problems) for screen readers and keyboards. Every word is in the
participant's language, problems included; the questions are the instrument's own wording or the
text the site loaded for it (server/surveys/texts.py). A questionnaire with no text in the
participant's language is not shown (its reminders wait too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.wrappers import Response

from api.page_kit import whole_number
from server.clock import utcnow
from server.db import get_session
from server.errors import Conflict, DomainError, NotFound
from server.participants.models import Participant
from server.schedules.models import ScheduleEvent
from server.surveys import rules
from server.surveys import service as surveys
from server.surveys.definition import Instrument
from server.surveys.links import LinkExpired, LinkInvalid, read_token
from server.surveys.models import ResponseStatus
from server.surveys.texts import Question, Wording

bp = Blueprint("survey", __name__)

WORDS = {
    "en": {
        "submit": "Send my answers",
        "next": "Next",
        "back": "Back",
        "step": "Step {n} of {total}",
        "optional": "optional",
        "kept": "Your answers are kept at each step: you can stop and come back to this link.",
        "choose": "Please choose an answer.",
        "invalid": "This answer is not one of the choices: please choose again.",
        "question": "Question {n}",
        "problem": "{question}: {message}",
        "fix": "Please answer the questions marked below.",
        "thanks": "Thank you!",
        "thanks_body": "Your answers were sent to your care team.",
        "expired": "This link has expired.",
        "expired_body": "Please ask your care team for a new link, or answer in the app.",
        "invalid_link": "This link does not work.",
        "invalid_link_body": "Please check you opened the whole link from the SMS, or ask your "
        "care team.",
        "done": "You have already answered this questionnaire.",
        "done_body": "Thank you. Nothing else to do.",
        "closed": "This questionnaire is closed.",
        "closed_body": "There is nothing to answer now. Your care team can tell you more.",
        "not_ready": "This questionnaire is not ready yet.",
        "not_ready_body": "Your care team is preparing it in your language. We will send you a "
        "new message when it is ready.",
        "stale": "This page was open for too long.",
        "stale_body": "Please open the link from your SMS again: the answers you already sent "
        "at each step are kept.",
    },
    "fr": {
        "submit": "Envoyer mes réponses",
        "next": "Suivant",
        "back": "Retour",
        "step": "Étape {n} sur {total}",
        "optional": "facultatif",
        "kept": "Vos réponses sont enregistrées à chaque étape : vous pouvez vous arrêter et "
        "revenir plus tard par ce lien.",
        "choose": "Merci de choisir une réponse.",
        "invalid": "Cette réponse ne fait pas partie des choix : merci de choisir à nouveau.",
        "question": "Question {n}",
        "problem": "{question} : {message}",
        "fix": "Merci de répondre aux questions signalées ci-dessous.",
        "thanks": "Merci !",
        "thanks_body": "Vos réponses ont été transmises à votre équipe soignante.",
        "expired": "Ce lien a expiré.",
        "expired_body": "Demandez un nouveau lien à votre équipe soignante, ou répondez "
        "dans l'application.",
        "invalid_link": "Ce lien ne fonctionne pas.",
        "invalid_link_body": "Vérifiez que vous avez ouvert le lien complet du SMS, ou "
        "contactez votre équipe soignante.",
        "done": "Vous avez déjà répondu à ce questionnaire.",
        "done_body": "Merci. Il n'y a rien d'autre à faire.",
        "closed": "Ce questionnaire est clos.",
        "closed_body": "Il n'y a rien à remplir pour l'instant. Votre équipe soignante peut "
        "vous en dire plus.",
        "not_ready": "Ce questionnaire n'est pas encore prêt.",
        "not_ready_body": "Votre équipe soignante le prépare dans votre langue. Nous vous "
        "enverrons un nouveau message quand il sera prêt.",
        "stale": "Cette page est restée ouverte trop longtemps.",
        "stale_body": "Merci d'ouvrir à nouveau le lien de votre SMS : les réponses déjà "
        "envoyées à chaque étape sont conservées.",
    },
    "zh": {
        "submit": "提交我的回答",
        "next": "下一步",
        "back": "上一步",
        "step": "第 {n} 步，共 {total} 步",
        "optional": "选答",
        "kept": "每一步的回答都会保存：您可以随时停下，稍后再通过此链接继续。",
        "choose": "请选择一个答案。",
        "invalid": "此回答不在选项中，请重新选择。",
        "question": "第{n}题",
        "problem": "{question}：{message}",
        "fix": "请回答下面标出的问题。",
        "thanks": "谢谢！",
        "thanks_body": "您的回答已发送给您的医疗团队。",
        "expired": "此链接已过期。",
        "expired_body": "请向您的医疗团队索取新链接，或在应用中作答。",
        "invalid_link": "此链接无效。",
        "invalid_link_body": "请确认您打开的是短信中的完整链接，或联系您的医疗团队。",
        "done": "您已经回答过这份问卷。",
        "done_body": "谢谢，无需其他操作。",
        "closed": "这份问卷已关闭。",
        "closed_body": "目前没有需要填写的内容。您的医疗团队可以告诉您更多信息。",
        "not_ready": "这份问卷尚未准备好。",
        "not_ready_body": "您的医疗团队正在准备您的语言版本。准备好后，我们会再给您发送短信。",
        "stale": "此页面打开的时间太长了。",
        "stale_body": "请重新打开短信中的链接：您在每一步已提交的回答都已保存。",
    },
}
ACTIONS = ("next", "back", "send")


def words_for(lang: str) -> dict[str, str]:
    """The page's words in a language (English when it has none)."""
    return WORDS.get(lang, WORDS["en"])


def _problem(kind: str, lang: str, status: int) -> tuple[str, int]:
    words = words_for(lang)
    return render_template(
        "survey_message.html", lang=lang, title=words[kind], body=words[f"{kind}_body"]
    ), status


def _browser_language() -> str:
    return request.accept_languages.best_match(["en", "fr", "zh"]) or "en"


def _load(token: str) -> tuple[Participant, ScheduleEvent] | tuple[str, int]:
    lang = _browser_language()
    try:
        event_id = read_token(current_app.config["SECRET_KEY"], token, utcnow())
    except LinkExpired:
        return _problem("expired", lang, 410)
    except LinkInvalid:
        return _problem("invalid_link", lang, 404)
    session = get_session()
    event = session.get(ScheduleEvent, event_id)
    participant = session.get(Participant, event.participant_id) if event else None
    if participant is None or event is None:
        return _problem("invalid_link", lang, 404)
    return participant, event


@dataclass
class Survey:
    """One participant's questionnaire as the page walks it: its steps and what is shown."""

    instrument: Instrument
    wording: Wording
    steps: list[list[str]]

    @classmethod
    def of(cls, instrument: Instrument, wording: Wording) -> Survey:
        headings = {q.id for q in wording.questions if q.heading}
        return cls(instrument, wording, rules.steps(instrument, headings))

    def question(self, item_id: str) -> Question:
        return next(q for q in self.wording.questions if q.id == item_id)

    def visible_steps(self, answers: dict[str, Any]) -> list[int]:
        """Indexes (1-based, stable) of the steps with a question shown given these answers."""
        shown = set(rules.visible_items(self.instrument, answers))
        return [i for i, ids in enumerate(self.steps, start=1) if shown & set(ids)]

    def may_grow(self, index: int, answers: dict[str, Any]) -> bool:
        """Whether a step after `index` may still be shown: it asks a question that depends on
        an answer not given yet (the check-in's "chills?" after "fever?")."""
        for ids in self.steps[index:]:
            for item_id in ids:
                condition = self.instrument.item(item_id).show_if
                if condition is not None and condition.item not in answers:
                    return True
        return False

    def step_of(self, item_id: str) -> int:
        return next(i for i, ids in enumerate(self.steps, start=1) if item_id in ids)

    def resume_at(self, answers: dict[str, Any]) -> int:
        """Where a returning participant continues: the first step with a required question
        left unanswered, else the last step (to send)."""
        shown = rules.visible_items(self.instrument, answers)
        for item_id in shown:
            if self.instrument.item(item_id).required and item_id not in answers:
                return self.step_of(item_id)
        visible = self.visible_steps(answers)
        return visible[-1] if visible else 1

    def settle(self, index: int, answers: dict[str, Any]) -> int:
        """A requested step that is shown: itself, else the next shown one (else the last)."""
        visible = self.visible_steps(answers)
        later = [i for i in visible if i >= index]
        if later:
            return later[0]
        return visible[-1] if visible else 1


def _render(
    participant: Participant,
    survey: Survey,
    index: int,
    answers: dict[str, Any],
    errors: dict[str, str],
    *,
    token: str,
    move_focus: bool,
    status: int = 200,
) -> tuple[str, int]:
    lang = participant.locale.value
    words = words_for(lang)
    visible = survey.visible_steps(answers)
    position = visible.index(index) + 1 if index in visible else 1
    shown = set(rules.visible_items(survey.instrument, answers))
    questions = [survey.question(i) for i in survey.steps[index - 1] if i in shown]
    problems = [
        (q, errors[q.id]) for q in survey.wording.questions if q.id in errors and q.id in shown
    ]
    return render_template(
        "survey.html",
        lang=lang,
        words=words,
        title=survey.wording.title,
        intro=survey.wording.intro if position == 1 else None,
        heading=questions[0].heading if questions else None,
        questions=questions,
        answers=answers,
        errors=errors,
        problems=problems,
        code=participant.study_code,
        step=index,
        position=position,
        total=len(visible),
        # The last step sends; a step whose answers may add one (a branch) offers Next.
        is_last=position == len(visible) and not survey.may_grow(index, answers),
        progress=words["step"].format(n=position, total=len(visible)),
        action=url_for("survey.survey", token=token),
        move_focus=move_focus,
    ), status


def _go(token: str, index: int) -> Response:
    return redirect(url_for("survey.survey", token=token, step=index), code=303)


def _form_answers(survey: Survey, index: int) -> tuple[dict[str, int], dict[str, str]]:
    """The answers the form sent for its step (others are ignored), and values not offered."""
    given: dict[str, int] = {}
    invalid: dict[str, str] = {}
    for item_id in survey.steps[index - 1]:
        raw = request.form.get(f"item-{item_id}")
        if raw is None or raw.strip() == "":
            continue
        value = whole_number(raw, lo=-1000, hi=1000)  # answer codes are small
        if value is None or not survey.instrument.answers_for(item_id).accepts(value):
            invalid[item_id] = raw
            continue
        given[item_id] = value
    return given, invalid


@bp.route("/s/<token>", methods=["GET", "POST"])
def survey(token: str) -> Any:
    """One questionnaire on a phone, a short step at a time: answer, Next, send, thank you."""
    loaded = _load(token)
    if not isinstance(loaded[0], Participant):
        return loaded
    participant, event = loaded  # type: ignore[misc]
    session = get_session()
    lang = participant.locale.value
    words = words_for(lang)
    existing = surveys.find_response(session, participant, event)
    if existing is not None and existing.status == ResponseStatus.SUBMITTED:
        return _problem("done", lang, 200)
    try:
        instrument = surveys.instrument_for(event)
        wording = surveys.text_for(session=session, participant=participant, instrument=instrument)
    except NotFound:
        return _problem("invalid_link", lang, 404)
    except Conflict:
        return _problem("not_ready", lang, 409)
    form = Survey.of(instrument, wording)
    saved = surveys.current_answers(session, existing)

    if request.method == "GET":
        asked = whole_number(request.args.get("step", ""), lo=1, hi=len(form.steps))
        index = form.settle(asked, saved) if asked else form.resume_at(saved)
        return _render(participant, form, index, saved, {}, token=token, move_focus=bool(asked))

    asked = whole_number(request.form.get("step", ""), lo=1, hi=len(form.steps)) or 1
    action = request.form.get("action", "next")
    action = action if action in ACTIONS else "next"
    given, invalid = _form_answers(form, asked)
    answers = {**saved, **given}
    shown = set(rules.visible_items(instrument, answers))
    errors = {item_id: words["invalid"] for item_id in invalid}
    if action != "back":
        for item_id in form.steps[asked - 1]:
            item = instrument.item(item_id)
            if item.required and item_id in shown and item_id not in answers:
                errors.setdefault(item_id, words["choose"])
    keep = {k: v for k, v in given.items() if k in shown and k not in errors}
    if action == "next" and not [i for i in form.visible_steps(answers) if i > asked]:
        action = "send"  # Next on a step whose answers added no further step: all asked
    try:
        if keep or (action == "send" and not errors):
            surveys.save(
                session=session,
                participant=participant,
                event=event,
                answers=keep,
                submit=action == "send" and not errors,
                channel="web",
                now=utcnow(),
            )
    except Conflict:
        session.rollback()
        return _problem("closed", lang, 409)
    except DomainError as exc:
        # Submitting found a question left unanswered elsewhere (a step skipped by hand):
        # show the first step that has one, with every problem in the participant's words.
        session.rollback()
        problems = {k.split(".", 1)[-1]: v for k, v in exc.fields.items()}
        errors = {
            item_id: words["choose"] if msgs == ["required"] else words["invalid"]
            for item_id, msgs in problems.items()
            if item_id in {i.id for i in instrument.items}
        }
        first = min((form.step_of(i) for i in errors), default=asked)
        answers = {**surveys.current_answers(session, existing), **keep}
        return _render(
            participant, form, first, answers, errors, token=token, move_focus=True, status=422
        )
    session.commit()
    if errors:
        return _render(
            participant,
            form,
            form.settle(asked, answers),
            answers,
            errors,
            token=token,
            move_focus=True,
            status=422,
        )
    if action == "send":
        return render_template(
            "survey_message.html", lang=lang, title=words["thanks"], body=words["thanks_body"]
        )
    visible = form.visible_steps(answers)
    if action == "back":
        earlier = [i for i in visible if i < asked]
        return _go(token, earlier[-1] if earlier else (visible[0] if visible else 1))
    later = [i for i in visible if i > asked]
    return _go(token, later[0] if later else form.settle(asked, answers))


@bp.errorhandler(CSRFError)
def _form_expired(error: CSRFError) -> tuple[str, int]:
    """A step sent without its form's token (the page stayed open across a browser restart, or
    came from elsewhere): a page in the participant's words, not the staff error page."""
    loaded = _load(str((request.view_args or {}).get("token", "")))
    lang = loaded[0].locale.value if isinstance(loaded[0], Participant) else _browser_language()
    return _problem("stale", lang, 400)
