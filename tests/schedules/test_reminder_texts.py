"""What a participant receives, and when: every reminder kind in each locale with its exact send
moment, from enrolment through the reminder job and the dispatcher, in snapshots.

Each locale has its participants in its own place (en: Boston, fr: Paris, zh: Shanghai) and the
same stories: enrolled ahead of a HEROES baseline draw and questionnaire; a STOP-HER2 baseline scan
and first visit (with its two blood draws); enrolled with an anchor ten days back (an open
questionnaire window whose reminders' moments are gone); enrolled the day before a draw; enrolled
on a visit day at 07:00; a visit moved to the next day before and after its day_before moment. Time
runs through a small simulation: the reminder job once a day (and whenever a service writes
reminders), the dispatcher at every moment a message is due, so each SMS is recorded at the moment
it reaches the provider. Texts are shown as staff see them (secrets replaced by markers).

Snapshots live in tests/schedules/snapshots/reminders.<locale>.json; after a deliberate change,
rewrite them with `UPDATE_SNAPSHOTS=1 pytest tests/schedules/test_reminder_texts.py` and review
the diff like code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask import Flask
from sqlmodel import Session, col, select

from notifications import outbox
from notifications.models import MessageStatus, OutboxMessage
from notifications.providers import RecordingProvider
from server.messaging import build_dispatcher
from server.participants.models import Locale, Participant, Site
from server.protocols.models import Study
from server.schedules import reminders
from server.schedules.models import ScheduleEvent
from server.schedules.service import participant_protocol, reschedule_event
from tests import factories

# The world's questionnaire texts were there before the stories (CI moves the suite's clock).
pytestmark = pytest.mark.usefixtures("texts_loaded_before_the_stories")

SNAPSHOT_DIR = Path(__file__).parent / "snapshots"
UPDATE_SNAPSHOTS = os.environ.get("UPDATE_SNAPSHOTS") == "1"


@dataclass(frozen=True)
class Place:
    locale: Locale
    tz: str
    site: str  # the world's site key
    phone_prefix: str  # a mobile number without its last 4 digits


PLACES = {
    "en": Place(Locale.EN, "America/New_York", "B", "+1617253"),
    "fr": Place(Locale.FR, "Europe/Paris", "A", "+3361234"),
    "zh": Place(Locale.ZH, "Asia/Shanghai", "A", "+861380013"),
}


def at(place: Place, day: str, hhmm: str) -> datetime:
    """A wall-clock time where the participant lives, as a UTC instant."""
    local = datetime.combine(date.fromisoformat(day), time.fromisoformat(hhmm), ZoneInfo(place.tz))
    return local.astimezone(UTC)


class Story:
    """Participants of one locale, and what reaches their phones."""

    def __init__(self, app: Flask, db: Session, world: factories.World, place: Place) -> None:
        self.app, self.db, self.world, self.place = app, db, world, place
        self.provider = RecordingProvider()
        self.numbers = 0
        self.stop_her2 = db.exec(select(Study).where(Study.key == "STOP-HER2")).first()
        if self.stop_her2 is None:
            self.stop_her2 = factories.make_study(db, "STOP-HER2", "stop-her2")

    def enrol(
        self, code: str, when: datetime, anchor: date, *, study: str = "HEROES"
    ) -> Participant:
        self.numbers += 1
        site: Site = self.world.sites[self.place.site]
        with time_machine.travel(when, tick=False), self.app.app_context():
            participant = factories.make_participant(
                self.db,
                self.world.staff[("coordinator", self.place.site)],
                site,
                self.world.study if study == "HEROES" else self.stop_her2,  # type: ignore[arg-type]
                code,
                anchor_date=anchor,
                timezone=self.place.tz,
                locale=self.place.locale,
                phone=f"{self.place.phone_prefix}5{self.numbers:03d}",
                has_sms_consent=True,
            )
            self.db.commit()
        return participant

    def event(self, participant: Participant, key: str) -> ScheduleEvent:
        return self.db.exec(
            select(ScheduleEvent).where(
                ScheduleEvent.participant_id == participant.id, ScheduleEvent.key == key
            )
        ).one()

    def run(self, people: list[Participant], start: datetime, end: datetime) -> list[str]:
        """Run time from `start` to `end`: the job daily at 01:00 UTC, the dispatcher whenever
        something is due. What reached these participants' phones, in order."""
        ids = [p.id for p in people]
        phones = {p.phone_e164: p for p in people}
        dispatcher = build_dispatcher(self.app, provider=self.provider, rate_per_second=0)
        first_call = len(self.provider.calls)
        moment, next_job = start, start
        while moment <= end:
            with time_machine.travel(moment, tick=False), self.app.app_context():
                if moment >= next_job:
                    reminders.materialize_job(session=self.db, now=moment)
                    self.db.commit()
                    next_job = datetime.combine(moment.date() + timedelta(days=1), time(1), UTC)
                while dispatcher.run_once().claimed:
                    pass
            self.db.expire_all()
            due = self.db.exec(
                select(OutboxMessage.not_before_at)
                .where(
                    col(OutboxMessage.participant_id).in_(ids),
                    OutboxMessage.status == MessageStatus.PENDING,
                    col(OutboxMessage.not_before_at) > moment,
                )
                .order_by(col(OutboxMessage.not_before_at))
                .limit(1)
            ).first()
            moment = min(next_job, due) if due is not None else next_job
        return [
            self._line(phones[c.to], c)
            for c in self.provider.calls[first_call:]
            if c.to in phones and c.sid is not None
        ]

    def _line(self, participant: Participant, call: object) -> str:
        row_id = int(call.status_callback.rsplit("/", 1)[1])  # type: ignore[attr-defined]
        row = self.db.get(OutboxMessage, row_id)
        assert row is not None
        sent: datetime = call.at  # type: ignore[attr-defined]
        local = sent.astimezone(ZoneInfo(participant.timezone))
        kind = row.kind
        if row.dedupe_key.startswith("reminder:"):
            kind += "/" + row.dedupe_key.split(":")[-3]
        text = outbox.shown_body(row)
        return f"{local:%a %Y-%m-%d %H:%M:%S} {participant.study_code} {kind}: {text}"


def stories(app: Flask, db: Session, world: factories.World, place: Place) -> dict[str, list[str]]:
    s = Story(app, db, world, place)
    out: dict[str, list[str]] = {}

    # HEROES, anchor Monday 2027-01-04: baseline draw Monday 2026-12-14 09:00 (window 12-07 to
    # 12-21), first questionnaire window 2026-12-28 to 2027-01-18.
    ahead = s.enrol("E-101", at(place, "2026-12-01", "10:00"), date(2027, 1, 4))
    out["heroes: enrolled two weeks ahead of the baseline draw, no draw recorded"] = s.run(
        [ahead], at(place, "2026-12-01", "10:00"), at(place, "2027-01-20", "00:00")
    )

    # STOP-HER2, anchor Monday 2027-01-11: baseline scan window 2026-12-12 to 2027-01-11, first
    # visit with its tumour-marker and research draws Monday 2027-02-15.
    scans = s.enrol("E-102", at(place, "2026-12-01", "10:00"), date(2027, 1, 11), study="STOP")
    out["stop-her2: baseline scan and first visit with two draws, nothing recorded"] = s.run(
        [scans], at(place, "2026-12-01", "10:00"), at(place, "2027-02-16", "00:00")
    )

    # Enrolled on Wednesday 2027-01-20 at 17:54 with the anchor ten days back: the first
    # questionnaire's window (01-03 to 01-24) is open, its reminders' moments (01-03, 01-05) gone.
    late = s.enrol("E-103", at(place, "2027-01-20", "17:54"), date(2027, 1, 10))
    out["heroes: enrolled with the anchor ten days back"] = s.run(
        [late], at(place, "2027-01-20", "17:54"), at(place, "2027-01-31", "00:00")
    )

    # Enrolled on Sunday 2027-02-07 at 17:54, the baseline draw on Monday 09:00.
    eve = s.enrol("E-104", at(place, "2027-02-07", "17:54"), date(2027, 3, 1))
    out["heroes: enrolled the evening before the baseline draw"] = s.run(
        [eve], at(place, "2027-02-07", "17:54"), at(place, "2027-02-12", "00:00")
    )

    # Enrolled at 07:00 on the day of the first visit and its draws (Monday 2027-03-08, 09:00).
    visit_day = s.enrol("E-105", at(place, "2027-03-08", "07:00"), date(2027, 2, 1), study="STOP")
    out["stop-her2: enrolled at 07:00 on the day of a 09:00 visit"] = s.run(
        [visit_day], at(place, "2027-03-08", "07:00"), at(place, "2027-03-09", "00:00")
    )

    # Enrolled long before; on Wednesday 2027-02-10 the first visit (Monday 02-15) is moved to
    # Thursday 02-11 (09:00): at 07:30, before its day_before moment (Wednesday 09:00), and
    # another's at 10:00, after it (no catch-up: the next reminder would be on the day).
    moved = s.enrol("E-106", at(place, "2026-12-01", "10:00"), date(2027, 1, 11), study="STOP")
    missed = s.enrol("E-107", at(place, "2026-12-01", "10:00"), date(2027, 1, 11), study="STOP")
    sent = []
    for who, hhmm, until in ((moved, "07:30", "09:30"), (missed, "10:00", "23:59")):
        when = at(place, "2027-02-10", hhmm)
        with time_machine.travel(when, tick=False), app.app_context():
            reminders.materialize_job(session=db, now=when)
            reschedule_event(
                session=db,
                participant=who,
                event=s.event(who, "visit:1"),
                target_date=date(2027, 2, 11),
                now=when,
                actor="test",
                reason="the participant asked",
            )
            db.commit()
        sent += s.run([who], when, at(place, "2027-02-11", until))
    out["stop-her2: visit moved to the next day at 07:30; another's at 10:00"] = sent
    return out


@pytest.mark.parametrize("locale", sorted(PLACES))
def test_reminders_sent_match_snapshot(
    app: Flask, db: Session, world: factories.World, locale: str
) -> None:
    actual = stories(app, db, world, PLACES[locale])
    path = SNAPSHOT_DIR / f"reminders.{locale}.json"
    if UPDATE_SNAPSHOTS:
        SNAPSHOT_DIR.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_SNAPSHOTS=1 and review it"
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert actual == expected


@pytest.mark.parametrize("days_back", [3, 10])
def test_a_back_dated_enrolment_gets_the_welcome_first_and_no_reminder_for_a_past_moment(
    app: Flask, db: Session, world: factories.World, days_back: int
) -> None:
    place = PLACES["fr"]
    story = Story(app, db, world, place)
    enrolled = at(place, "2027-01-20", "17:54")
    participant = story.enrol("E-200", enrolled, date(2027, 1, 20) - timedelta(days=days_back))
    # The test can fail: the first questionnaire's window is open, and its reminders' moments
    # came before the enrolment while their text was still true (the old job sent them then).
    protocol = participant_protocol(session=db, participant=participant, now=enrolled)
    questionnaire = story.event(participant, "qol:1")
    gone = [
        r
        for r in reminders.plan_event(protocol, participant, questionnaire)
        if r.not_before_at < enrolled < r.expires_at
    ]
    assert [r.kind for r in gone] == ["opens", "nudge"]

    sent = story.run([participant], enrolled, enrolled + timedelta(days=20))
    assert [line.split(" ")[4] for line in sent] == ["welcome:", "activation_code:"]
    rows = db.exec(
        select(OutboxMessage).where(OutboxMessage.participant_id == participant.id)
    ).all()
    assert all(r.intended_at >= enrolled for r in rows), [(r.kind, r.intended_at) for r in rows]
    assert min(rows, key=lambda r: r.sent_at or datetime.max.replace(tzinfo=UTC)).kind == "welcome"


def test_the_welcome_goes_first_even_when_a_reminder_was_queued_before_it(
    app: Flask, db: Session, world: factories.World
) -> None:
    """Enrolled the evening before a draw in quiet hours (22:30): the welcome waits for 08:00,
    and so does the "morning of" reminder queued before it: the welcome is handed over first."""
    place = PLACES["fr"]
    story = Story(app, db, world, place)
    enrolled = at(place, "2027-02-07", "22:30")
    participant = story.enrol("E-201", enrolled, date(2027, 3, 1))  # draw Monday 02-08 09:00
    rows = db.exec(
        select(OutboxMessage)
        .where(OutboxMessage.participant_id == participant.id)
        .order_by(col(OutboxMessage.id))
    ).all()
    assert [r.kind for r in rows] == ["reminder_blood_draw", "welcome"]  # no code at night
    assert {r.not_before_at for r in rows} == {at(place, "2027-02-08", "08:00")}
    sent = story.run([participant], enrolled, at(place, "2027-02-08", "12:00"))
    assert [[*line.split(" ")[1:3], line.split(" ")[4]] for line in sent] == [
        ["2027-02-08", "08:00:00", "welcome:"],
        ["2027-02-08", "08:00:05", "reminder_blood_draw/morning_of:"],
    ]
