"""Answers stored item by item with scores; the questionnaire event completes; a second submit is
one response; a critical answer opens an alert; staff see scores over time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from sqlmodel import select

from server.alerts.models import Alert
from server.errors import ValidationFailed
from server.schedules.models import EventStatus, ScheduleEvent
from server.surveys import service
from server.surveys.models import SurveyAnswer, SurveyResponse, SurveyScore

NOW = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)  # qol:1 (anchor 2027-01-04) window is open


def _qol1(db, participant):
    return db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == participant.id, ScheduleEvent.key == "qol:1"
        )
    ).one()


def _qlq_answers(**over):
    answers = {f"q{i}": 1 for i in range(1, 29)}
    answers.update({"q29": 5, "q30": 6})
    answers.update(over)
    return answers


def test_partial_save_then_submit_scores_and_completes(world, db, api_as):
    a1 = world.participants["A1"]
    event = _qol1(db, a1)
    with time_machine.travel(NOW, tick=False):
        draft = service.save(
            session=db,
            participant=a1,
            event=event,
            answers={"q1": 1, "q2": 2},
            submit=False,
            channel="web",
            now=datetime.now(UTC),
        )
        assert draft.status.value == "draft"
        with pytest.raises(ValidationFailed) as missing:
            service.save(
                session=db,
                participant=a1,
                event=event,
                answers={},
                submit=True,
                channel="web",
                now=datetime.now(UTC),
            )
        assert "answers.q3" in missing.value.fields
        answers = _qlq_answers(q1=1, q2=2, q3=1, q4=3, q5=2, q10=2, q12=3, q18=2)
        done = service.save(
            session=db,
            participant=a1,
            event=event,
            answers=answers,
            submit=True,
            channel="web",
            now=datetime.now(UTC),
        )
        again = service.save(
            session=db,
            participant=a1,
            event=event,
            answers=answers,
            submit=True,
            channel="app",
            now=datetime.now(UTC),
        )
        db.commit()
    assert again.id == done.id
    assert len(db.exec(select(SurveyResponse)).all()) == 1
    assert len(db.exec(select(SurveyAnswer).where(SurveyAnswer.response_id == done.id)).all()) == 30
    scores = {s.scale: s for s in db.exec(select(SurveyScore))}
    assert round(scores["PF2"].score, 2) == 73.33  # PF2 answers 1,2,1,3,2
    assert round(scores["FA"].score, 2) == 44.44  # FA answers 2,3,2
    assert scores["QL2"].score == 75.0  # 5 and 6
    db.expire_all()
    assert db.get(ScheduleEvent, event.id).status == EventStatus.COMPLETED
    body = api_as("nurse", "A").get(f"/api/v1/participants/{a1.id}/scores").get_json()
    assert round(body["instruments"]["eortc_qlq_c30"]["PF2"][0]["score"], 2) == 73.33
    assert api_as("nurse", "B").get(f"/api/v1/participants/{a1.id}/scores").status_code == 404


def test_out_of_range_answer_is_refused(world, db):
    a1 = world.participants["A1"]
    with time_machine.travel(NOW, tick=False), pytest.raises(ValidationFailed) as bad:
        service.save(
            session=db,
            participant=a1,
            event=_qol1(db, a1),
            answers={"q29": 9},
            submit=False,
            channel="web",
            now=datetime.now(UTC),
        )
    assert "answers.q29" in bad.value.fields


def test_a_critical_answer_opens_an_alert(world, db):
    a1 = world.participants["A1"]
    event = _qol1(db, a1)
    # This participant's questionnaire is the check-in (an instrument with critical answers).
    event.instrument = "qol_checkin"
    db.add(event)
    db.commit()
    # A new lump is a critical answer (config/instruments/qol_checkin.yaml); no fever, so the
    # "chills?" item stays hidden and unanswered.
    answers = {
        "wellbeing": 6,
        "fatigue": 1,
        "pain": 0,
        "breathlessness": 0,
        "appetite_loss": 1,
        "new_lump": 1,
        "fever": 0,
    }
    with time_machine.travel(NOW, tick=False):
        service.save(
            session=db,
            participant=a1,
            event=event,
            answers=answers,
            submit=True,
            channel="web",
            now=datetime.now(UTC),
        )
        db.commit()
    alerts = db.exec(select(Alert)).all()
    assert [a.kind.value for a in alerts] == ["critical_answer"]
