"""The mobile web survey behind the reminder SMS link: signed, expiring, one questionnaire, in the
participant's language; an expired or used link gets a clear page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import time_machine
from sqlmodel import select

from notifications.models import OutboxMessage
from server.schedules import reminders
from server.schedules.models import EventStatus, ScheduleEvent
from server.surveys.links import LinkInvalid, make_token, read_token
from server.surveys.models import SurveyResponse
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
        time_machine.travel(datetime(2027, 1, 3, 12, 0, tzinfo=UTC), tick=False),
    ):
        # The "opens" reminder of qol:1 (window opens 2026-12-28) caught up; "nudge" too.
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


def test_answer_from_the_sms_link_then_the_link_is_used(app, client, db, world):
    a1 = factories.a1_in_scenario(db, world)  # reads French
    token, body = _link_from_sms(app, db, a1)
    assert "cancer" not in body.lower()
    with time_machine.travel(NOW, tick=False):
        page = client.get(f"/s/{token}")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert 'lang="fr"' in html and "Envoyer mes réponses" in html
        assert 'name="viewport"' in html and "http://" not in html.split("<body")[0].replace(
            "http://www.w3.org", ""
        )
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        incomplete = client.post(f"/s/{token}", data={"csrf_token": csrf, "item-q1": "1"})
        assert incomplete.status_code == 422
        form = {"csrf_token": csrf} | {f"item-q{i}": "1" for i in range(1, 29)}
        form |= {"item-q29": "5", "item-q30": "6"}
        done = client.post(f"/s/{token}", data=form)
        assert done.status_code == 200
        assert "Merci" in done.get_data(as_text=True)
        again = client.get(f"/s/{token}")
        assert "déjà répondu" in again.get_data(as_text=True).replace("&#39;", "'")
    db.expire_all()
    assert db.get(ScheduleEvent, _qol1(db, a1).id).status == EventStatus.COMPLETED
    assert len(db.exec(select(SurveyResponse)).all()) == 1


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
            when=NOW,
            tz="Asia/Shanghai",
            link=link,
        )
        assert link in text, locale
