"""A questionnaire whose instrument has no text in the participant's language is not sent: its
reminders wait (the reminder job asks server.surveys.texts.availability), the survey page says it
is not ready, Today tells the coordinator why; loading the text releases it, one reminder then.
The demo shows both: HER-003's French questionnaire goes, HER-004's English one waits.

The text file used here is made up (tests/surveys/data): the EORTC wording is licensed and is not
in this repository."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import time_machine
from sqlmodel import select

from notifications.models import OutboxMessage
from server.auth.models import StaffUser
from server.schedules import reminders
from server.schedules.models import ScheduleEvent
from server.surveys import texts
from server.surveys.models import InstrumentText
from server.surveys.registry import instruments
from server.surveys.service import survey_link
from tests import factories
from tests.conftest import Web

MADEUP_FR = Path(__file__).parent / "data" / "eortc_qlq_c30.madeup-fr.yaml"
OPEN = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)  # qol:1 (anchor 2027-01-04) is open


def c30():
    return instruments()["eortc_qlq_c30"]


def _materialize(app, db, participant, at: datetime) -> list[OutboxMessage]:
    with app.app_context(), time_machine.travel(at, tick=False):
        reminders.materialize(session=db, now=datetime.now(UTC), participant_id=participant.id)
    db.commit()
    return list(
        db.exec(
            select(OutboxMessage).where(
                OutboxMessage.participant_id == participant.id,
                OutboxMessage.kind == "reminder_questionnaire",
            )
        ).all()
    )


def test_a_questionnaire_without_text_waits_until_the_site_loads_it(app, client, db) -> None:
    world = factories.build_world(db, with_texts=False)
    a1 = factories.a1_in_scenario(db, world)  # reads French
    b_reader = factories.a1_in_scenario(
        db, world, code="A-902", phone="+33612340902", locale=factories.Locale.EN
    )
    # qol:1's window opens on 2026-12-28 at 09:00 in Paris, with its first reminder; the day
    # before, the scheduler would write it, but there is no text to send.
    before = datetime(2026, 12, 27, 12, 0, tzinfo=UTC)
    assert _materialize(app, db, a1, before) == []
    qol1 = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == a1.id, ScheduleEvent.key == "qol:1"
        )
    ).one()
    with time_machine.travel(before, tick=False):
        with app.app_context():
            link = survey_link(a1, qol1)
        page = client.get(urlsplit(link).path)
        assert page.status_code == 409
        html = page.get_data(as_text=True)
        assert 'lang="fr"' in html and "pas encore prêt" in html

        # Today tells the coordinator which questionnaires wait, and why.
        web = Web(app.test_client())
        assert web.login(world.staff[("coordinator", "A")].email).status_code == 302
        today = web.text("/")
        section = today.split('id="questionnaire-texts"', 1)[1].split("</section>", 1)[0]
        assert "EORTC QLQ-C30 (version 3.0)</strong> in French: no French text loaded" in section
        assert "in English: no English text loaded" in section
        assert "A-901" in section and "A-902" in section
        assert "stepdown instruments load-text eortc_qlq_c30 --locale fr FILE" in section
        assert "the first window opens 2026-12-28" in section
        # Another site's coordinator sees their own participant (B-001 reads English), not
        # site A's.
        other = Web(app.test_client())
        assert other.login(world.staff[("coordinator", "B")].email).status_code == 302
        theirs = other.text("/").split('id="questionnaire-texts"', 1)[1].split("</section>")[0]
        assert "B-001" in theirs and "A-90" not in theirs and "in French" not in theirs

    # The site loads its French text: the reminder job looks again at once and writes the
    # reminder, with its link, and the page shows the loaded questions; the English reader
    # still waits.
    with app.app_context():
        texts.load_text(
            session=db,
            instrument=c30(),
            locale="fr",
            raw=MADEUP_FR.read_bytes(),
            source_file=MADEUP_FR.name,
            actor="cli:site-admin",
            now=before + timedelta(hours=1),
        )
    db.commit()
    later = before + timedelta(hours=1, minutes=5)
    [sms] = _materialize(app, db, a1, later)
    assert "/s/" in sms.body and sms.intended_at == datetime(2026, 12, 28, 8, 0, tzinfo=UTC)
    assert _materialize(app, db, b_reader, later) == []
    with time_machine.travel(OPEN, tick=False):
        html = client.get(urlsplit(link).path)
        assert html.status_code == 200
        assert "Question fictive 1 : marcher longtemps ?" in html.get_data(as_text=True)
        web = Web(app.test_client())
        assert web.login(world.staff[("coordinator", "A")].email).status_code == 302
        today = web.text("/")
        section = today.split('id="questionnaire-texts"', 1)[1].split("</section>", 1)[0]
        assert "in French" not in section and "A-902" in section


def test_a_text_loaded_after_the_reminders_were_due_sends_one_then(app, db) -> None:
    world = factories.build_world(db, with_texts=False)
    a1 = factories.a1_in_scenario(db, world)
    # The job ran all along (the window opened on 2026-12-28, the nudge was on 2026-12-30):
    # nothing was written, and the job stopped looking at the waiting questionnaire.
    for day in (27, 28, 29, 30, 31):
        assert _materialize(app, db, a1, datetime(2026, 12, day, 12, 0, tzinfo=UTC)) == []
    qol1 = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == a1.id, ScheduleEvent.key == "qol:1"
        )
    ).one()
    assert qol1.next_reminder_at is None
    # The French text comes on 5 January at 11:00 in Paris, the window still open: one reminder
    # (the latest planned, the nudge) goes then, not both and not none.
    loaded_at = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)
    with app.app_context(), time_machine.travel(loaded_at, tick=False):
        texts.load_text(
            session=db,
            instrument=c30(),
            locale="fr",
            raw=MADEUP_FR.read_bytes(),
            source_file=MADEUP_FR.name,
            actor="cli:site-admin",
            now=loaded_at,
        )
    db.commit()
    [sms] = _materialize(app, db, a1, loaded_at + timedelta(minutes=1))
    assert sms.not_before_at == loaded_at and "/s/" in sms.body
    assert ":nudge:" in sms.dedupe_key


def test_the_demo_sends_the_french_questionnaire_and_holds_the_english_one(app, db) -> None:
    from server.participants.models import Participant

    at = datetime(2027, 3, 10, 9, 0, tzinfo=UTC)
    with time_machine.travel(at, tick=False):
        result = app.test_cli_runner().invoke(args=["seed-demo", "--if-empty"])
    assert result.exit_code == 0, result.output
    assert "HER-004" in result.output
    codes = {p.study_code: p for p in db.exec(select(Participant))}
    waiting = {
        code: db.exec(
            select(OutboxMessage).where(
                OutboxMessage.participant_id == codes[code].id,
                OutboxMessage.kind == "reminder_questionnaire",
                OutboxMessage.status == "pending",
            )
        ).all()
        for code in ("HER-003", "HER-004")
    }
    assert waiting["HER-003"] and not waiting["HER-004"]
    loaded = db.exec(select(InstrumentText)).one()
    admin = db.exec(select(StaffUser).where(StaffUser.email == "admin@demo.stepdown.test")).one()
    assert (loaded.locale.value, loaded.version) == ("fr", 1)
    assert loaded.loaded_by == f"staff:{admin.id}"  # the demo's administrator loaded it
    with time_machine.travel(at, tick=False):
        shown = texts.wording_for(db, c30(), "fr")
        assert shown.questions[0].text.startswith("Question de démonstration 1")
        [row] = texts.waiting_for_text(
            session=db,
            site_ids=[codes["HER-004"].site_id],
            now=at,
        )
    assert (row.locale, row.problem) == ("en", "no English text loaded")
    assert [code for _, code in row.codes] == ["HER-004"]
