"""The mobile web survey behind the reminder SMS link: signed, expiring, one questionnaire, in the
participant's language; an expired or used link gets a clear page."""

from __future__ import annotations

import html as html_lib
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from sqlmodel import select

from notifications.models import OutboxMessage
from server.participants.models import Locale
from server.schedules import reminders
from server.schedules.models import EventStatus, ScheduleEvent
from server.surveys.links import LinkInvalid, make_token, read_token
from server.surveys.models import SurveyResponse
from server.surveys.service import survey_link
from tests import factories

NOW = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)


def _qol1(db, participant):
    return db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == participant.id, ScheduleEvent.key == "qol:1"
        )
    ).one()


def _link_from_sms(app, db, participant):
    with (
        app.app_context(),
        time_machine.travel(datetime(2026, 12, 28, 12, 0, tzinfo=UTC), tick=False),
    ):
        # The "opens" reminder of qol:1 (window opens 2026-12-28, reminder at 09:00) caught up
        # three hours late; "nudge" (12-30) is written ahead.
        reminders.materialize(session=db, now=datetime.now(UTC), participant_id=participant.id)
    db.commit()
    sms = db.exec(
        select(OutboxMessage).where(
            OutboxMessage.participant_id == participant.id,
            OutboxMessage.kind == "reminder_questionnaire",
        )
    ).all()
    assert sms, "no questionnaire reminder was written"
    link = re.search(r"https?://\S+/s/[0-9a-f-]+", sms[0].body).group(0)
    return link.split("/s/")[1], sms[0].body


def test_token_tampering_is_refused():
    token = make_token("k", 2, NOW + timedelta(days=1))
    assert read_token("k", token, NOW) == 2
    forged = token.replace(token.split("-")[0], "3", 1)
    for bad in (forged, token[:-1] + ("0" if token[-1] != "0" else "1"), "nonsense"):
        try:
            read_token("k", bad, NOW)
        except LinkInvalid:
            continue
        raise AssertionError(f"{bad} was accepted")


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _csrf(html: str) -> str:
    return CSRF.search(html).group(1)


def _text(response) -> str:
    return html_lib.unescape(response.get_data(as_text=True))


def _step_of(response) -> int:
    """The step a redirect (303) sends to."""
    assert response.status_code == 303, response.status_code
    return int(parse_qs(urlsplit(response.headers["Location"]).query)["step"][0])


def test_answer_from_the_sms_link_step_by_step(app, client, db, world):
    a1 = factories.a1_in_scenario(db, world)  # reads French; the site loaded a (made-up) text
    token, body = _link_from_sms(app, db, a1)
    assert "cancer" not in body.lower()
    url = f"/s/{token}"
    with time_machine.travel(NOW, tick=False):
        page = client.get(url)
        assert page.status_code == 200
        html = _text(page)
        assert 'lang="fr"' in html and 'name="viewport"' in html
        assert "http://" not in html.split("<body")[0].replace("http://www.w3.org", "")
        # The site's text, in short steps with progress; no "Question 1 (obligatoire)".
        assert "<h1>Questionnaire inventé</h1>" in html
        assert "Question inventée 1 (fr)" in html and "Question inventée 5 (fr)" not in html
        assert "Étape 1 sur 8" in html and '<progress value="1" max="8"' in html
        assert "obligatoire" not in html and "(required)" not in html
        assert html.count('role="radiogroup"') == 4 and "Question inventée answer 4" in html
        assert "Suivant" in html and "Envoyer mes réponses" not in html and "Retour" not in html
        csrf = _csrf(html)

        # Next with nothing chosen: every message in French, at each question and in a summary.
        empty = client.post(url, data={"csrf_token": csrf, "step": "1", "action": "next"})
        assert empty.status_code == 422
        html = _text(empty)
        assert html.count("Merci de choisir une réponse.") == 2 * 4  # at the field and in the list
        assert "Merci de répondre aux questions signalées ci-dessous." in html
        assert 'role="alert"' in html and 'aria-invalid="true"' in html
        assert 'aria-describedby="err-q1"' in html and "Question 1 : Merci" in html
        assert ">required" not in html and ": required" not in html

        # A value that is not an answer (a hand-made form) is named in French too.
        odd = {"csrf_token": csrf, "step": "1", "action": "next", "item-q1": "9"}
        html = _text(client.post(url, data=odd))
        assert "Cette réponse ne fait pas partie des choix" in html

        # Step 1 answered: Next saves it (a draft) and goes on.
        step1 = {f"item-q{i}": "2" for i in range(1, 5)}
        moved = client.post(url, data={"csrf_token": csrf, "step": "1", "action": "next"} | step1)
        assert _step_of(moved) == 2
        draft = db.exec(select(SurveyResponse)).one()
        assert draft.status.value == "draft" and draft.text_version == 1
        html = _text(client.get(moved.headers["Location"]))
        assert "Étape 2 sur 8" in html and "Question inventée 5 (fr)" in html and "Retour" in html
        # Back keeps what was chosen; opening the link again resumes where it stopped.
        back = client.post(url, data={"csrf_token": csrf, "step": "2", "action": "back"})
        assert _step_of(back) == 1
        assert 'value="2" checked' in _text(client.get(back.headers["Location"]))
        assert "Étape 2 sur 8" in _text(client.get(url))

        # The other steps, one tap per question; the loaded heading starts step 3.
        step = 2
        answers = {f"q{i}": "1" for i in range(5, 29)} | {"q29": "5", "q30": "6"}
        while True:
            html = _text(client.get(f"{url}?step={step}"))
            shown = re.findall(r'name="item-(q\d+)"', html)
            if "q8" in shown:
                assert "Question inventée: heading" in html
            form = {"csrf_token": csrf, "step": str(step)}
            form |= {f"item-{q}": answers[q] for q in dict.fromkeys(shown)}
            if "Envoyer mes réponses" in html:
                assert "Étape 8 sur 8" in html
                done = client.post(url, data=form | {"action": "send"})
                break
            step = _step_of(client.post(url, data=form | {"action": "next"}))
        assert done.status_code == 200 and "Merci" in _text(done)
        assert "déjà répondu" in _text(client.get(url))
    db.expire_all()
    assert db.get(ScheduleEvent, _qol1(db, a1).id).status == EventStatus.COMPLETED
    [response] = db.exec(select(SurveyResponse)).all()
    assert response.status.value == "submitted" and response.text_version == 1


def test_sending_with_a_step_skipped_shows_that_step(app, client, db, world):
    a1 = factories.a1_in_scenario(db, world)
    token, _ = _link_from_sms(app, db, a1)
    url = f"/s/{token}"
    with time_machine.travel(NOW, tick=False):
        csrf = _csrf(_text(client.get(url)))
        # A hand-made "send" from the last step, steps 1-7 never answered.
        sent = client.post(
            url,
            data={
                "csrf_token": csrf,
                "step": "8",
                "action": "send",
                "item-q29": "4",
                "item-q30": "4",
            },
        )
        assert sent.status_code == 422
        html = _text(sent)
        assert "Étape 1 sur 8" in html and "Merci de choisir une réponse." in html
    assert db.exec(select(SurveyResponse)).all() == []  # nothing half-sent


CHECKIN = {
    "en": ("How are you today?", "Overall, how do you feel today?", "Step 1 of 3", "Next"),
    "fr": (
        "Comment allez-vous aujourd'hui ?",
        "Dans l'ensemble, comment vous sentez-vous aujourd'hui ?",
        "Étape 1 sur 3",
        "Suivant",
    ),
    "zh": ("您今天感觉怎么样？", "总的来说，您今天感觉如何？", "第 1 步，共 3 步", "下一步"),
}


@pytest.mark.parametrize("locale", ["en", "fr", "zh"])
def test_the_check_in_in_each_language_with_its_branch(app, client, db, world, locale):
    participant = factories.a1_in_scenario(
        db, world, code=f"A-9{locale}", phone=f"+3361234{ord(locale[0]):04d}", locale=Locale(locale)
    )
    event = _qol1(db, participant)
    event.instrument = "qol_checkin"  # this participant's questionnaire is the check-in
    db.add(event)
    db.commit()
    title, first, progress, next_word = CHECKIN[locale]
    with app.app_context(), time_machine.travel(NOW, tick=False):
        url = urlsplit(survey_link(participant, event)).path
    with time_machine.travel(NOW, tick=False):
        html = _text(client.get(url))
        assert f'lang="{locale}"' in html
        assert title in html and first in html and progress in html and next_word in html
        assert "Item 1" not in html and "第1题" not in html
        csrf = _csrf(html)
        data = {"csrf_token": csrf, "action": "next"}
        assert _step_of(client.post(url, data=data | {"step": "1", "item-wellbeing": "7"})) == 2
        severity = {
            f"item-{i}": "0" for i in ("fatigue", "pain", "breathlessness", "appetite_loss")
        }
        assert _step_of(client.post(url, data=data | {"step": "2"} | severity)) == 3
        # A fever: the chills question appears in a fourth step.
        assert (
            _step_of(
                client.post(url, data=data | {"step": "3", "item-new_lump": "0", "item-fever": "1"})
            )
            == 4
        )
        html = _text(client.get(f"{url}?step=4"))
        assert CHECKIN[locale][2].replace("3", "4").replace("1", "4", 1) in html
        assert 'name="item-chills"' in html
        done = client.post(
            url, data={"csrf_token": csrf, "step": "4", "action": "send", "item-chills": "0"}
        )
        assert done.status_code == 200
    [response] = db.exec(select(SurveyResponse)).all()
    assert response.status.value == "submitted" and response.text_version is None


def test_a_form_without_its_token_gets_a_page_in_the_participants_words(app, client, db, world):
    a1 = factories.a1_in_scenario(db, world)
    token, _ = _link_from_sms(app, db, a1)
    with time_machine.travel(NOW, tick=False):
        stale = client.post(f"/s/{token}", data={"step": "1", "action": "next", "item-q1": "1"})
    assert stale.status_code == 400
    html = _text(stale)
    assert 'lang="fr"' in html and "restée ouverte trop longtemps" in html


def test_expired_link_gets_a_clear_page(app, client, db, world):
    a1 = factories.a1_in_scenario(db, world)
    token, _ = _link_from_sms(app, db, a1)
    with time_machine.travel(datetime(2027, 2, 1, tzinfo=UTC), tick=False):  # window closed
        r = client.get(f"/s/{token}", headers={"Accept-Language": "fr"})
    assert r.status_code == 410
    assert "expiré" in r.get_data(as_text=True)
    assert client.get("/s/0-0-0").status_code == 404


def test_the_link_fits_a_chinese_sms():
    from notifications.messages import MessageKind, render

    link = "https://stepdown.example-hospital.org/s/" + make_token(
        "k" * 40, 1234567, datetime(2030, 1, 1, tzinfo=UTC)
    )
    for locale in ("en", "fr", "zh"):
        text = render(
            MessageKind.REMINDER_QUESTIONNAIRE,
            locale,
            code="HER-0001-XYZ",
            deadline=NOW.date(),
            link=link,
        )
        assert link in text, locale


DEMO_CHECKIN = {
    "HER-005": ('lang="fr"', "Comment allez-vous aujourd'hui ?", "Étape 1 sur 3"),
    "HER-006": ('lang="en"', "Overall, how do you feel today?", "Step 1 of 3"),
    "HER-007": ('lang="zh"', "总的来说，您今天感觉如何？", "第 1 步，共 3 步"),
}


def test_the_demo_links_the_check_in_in_french_english_and_chinese(app, client, db):
    from server.audit import AuditEvent
    from server.participants.models import Participant

    at = datetime(2027, 3, 10, 9, 0, tzinfo=UTC)
    with time_machine.travel(at, tick=False):
        seeded = app.test_cli_runner().invoke(args=["seed-demo", "--if-empty"])
    assert seeded.exit_code == 0, seeded.output
    for code, (lang, question, progress) in DEMO_CHECKIN.items():
        assert code in seeded.output
        participant = db.exec(select(Participant).where(Participant.study_code == code)).one()
        sms = db.exec(
            select(OutboxMessage).where(
                OutboxMessage.participant_id == participant.id,
                OutboxMessage.kind == "reminder_questionnaire",
                OutboxMessage.status == "pending",
            )
        ).all()
        assert sms, f"{code} has no questionnaire SMS waiting for the dispatcher"
        link = re.search(r"https?://\S+/s/[0-9a-f-]+", sms[-1].body).group(0)
        with time_machine.travel(at, tick=False):
            page = client.get(urlsplit(link).path)
        assert page.status_code == 200, code
        html = _text(page)
        assert lang in html and question in html and progress in html, code
        # The coordinator's choice of the check-in for this questionnaire is in the audit trail.
        [chosen] = db.exec(
            select(AuditEvent).where(
                AuditEvent.action == "schedule_event.instrument",
                AuditEvent.entity_id == str(_qol1(db, participant).id),
            )
        ).all()
        assert chosen.before == {"instrument": "eortc_qlq_c30"}
        assert chosen.after == {"instrument": "qol_checkin"} and chosen.reason


def test_the_site_chooses_the_check_in_only_before_any_answer(app, client, db, world):
    from server.errors import Conflict, NotFound, ValidationFailed
    from server.surveys import service as surveys

    a1 = factories.a1_in_scenario(db, world)
    qol1 = _qol1(db, a1)
    choose = dict(
        session=db, participant=a1, now=NOW, actor="staff:1", reason="the site's check-in"
    )
    with pytest.raises(ValidationFailed):
        surveys.use_instrument(event=qol1, instrument_key="sf_36", **choose)
    other = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == a1.id, ScheduleEvent.key == "ctdna_baseline:1"
        )
    ).one()
    with pytest.raises(NotFound):
        surveys.use_instrument(event=other, instrument_key="qol_checkin", **choose)
    surveys.use_instrument(event=qol1, instrument_key="qol_checkin", **choose)
    db.commit()
    with app.app_context(), time_machine.travel(NOW, tick=False):
        url = urlsplit(survey_link(a1, qol1)).path
    with time_machine.travel(NOW, tick=False):
        html = _text(client.get(url))
        assert "Dans l'ensemble, comment vous sentez-vous aujourd'hui ?" in html
        data = {"csrf_token": _csrf(html), "step": "1", "action": "next", "item-wellbeing": "6"}
        assert _step_of(client.post(url, data=data)) == 2
    # Answers exist: the instrument stays.
    with pytest.raises(Conflict):
        surveys.use_instrument(event=qol1, instrument_key="eortc_qlq_c30", **choose)
