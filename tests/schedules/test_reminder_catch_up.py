"""Which reminders go when their moment has passed, and the incremental reminder job.

The decision (`rules.reminder_verdicts`) is pure and tested without a database: each reminder at
its moment or not at all (nothing planned before the participant's consent, nothing whose moment
has passed), only while its text is still true, and one reminder rather than several of the same
event at once. The job reads only the events whose `next_reminder_at` has come within its
horizon; a long run of ticks writes exactly what looking at every event each time would write.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic, sleep
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask.testing import FlaskClient
from sqlmodel import Session, col, select

from notifications.models import MessageLog, MessageStatus, OutboxMessage
from server.participants.mobile import ParticipantToken
from server.participants.models import Participant
from server.schedules import reminders
from server.schedules.models import ScheduleEvent
from server.schedules.rules import ReminderSlot, reminder_verdicts
from server.schedules.service import participant_protocol, reschedule_event
from tests import factories

PARIS = ZoneInfo("Europe/Paris")


def paris(day: str, hhmm: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time.fromisoformat(hhmm), PARIS).astimezone(
        UTC
    )


# A 09:00 draw on Monday 2027-03-29 with HEROES' ctDNA plan.
DRAW_AT = paris("2027-03-29", "09:00")
CLOSE_AT = paris("2027-04-06", "00:00")
SLOTS = [
    ReminderSlot(
        "window_soon", paris("2027-03-19", "09:00"), paris("2027-03-19", "09:00"), DRAW_AT
    ),
    ReminderSlot("day_before", paris("2027-03-28", "09:00"), paris("2027-03-28", "09:00"), DRAW_AT),
    ReminderSlot("morning_of", paris("2027-03-29", "08:00"), paris("2027-03-29", "08:00"), DRAW_AT),
    ReminderSlot("overdue", paris("2027-04-01", "09:00"), paris("2027-04-01", "09:00"), CLOSE_AT),
]
LONG_AGO = paris("2026-12-01", "16:00")


def verdicts(
    now: datetime, owed_from: datetime = LONG_AGO, slots: list[ReminderSlot] = SLOTS
) -> dict[str, tuple[datetime | None, str]]:
    return {
        v.kind: (v.send_at, v.why) for v in reminder_verdicts(slots, now=now, owed_from=owed_from)
    }


def test_on_time_reminders_go_at_their_moment() -> None:
    now = paris("2027-03-10", "12:00")
    assert verdicts(now) == {s.kind: (s.not_before_at, "on time") for s in SLOTS}


def test_nothing_planned_before_consent_is_caught_up() -> None:
    """Enrolled (consent given) on Sunday at 17:54 with the draw on Monday: the window_soon and
    day_before moments came before the participant could be texted."""
    now = owed = paris("2027-03-28", "17:54")
    got = verdicts(now, owed)
    assert got["window_soon"] == (None, "before consent")
    assert got["day_before"] == (None, "before consent")
    assert got["morning_of"] == (paris("2027-03-29", "08:00"), "on time")
    assert got["overdue"][1] == "on time"


def test_a_reminder_whose_moment_has_passed_is_never_caught_up() -> None:
    """The job gets to the event at 23:30 (it was down, or the event was just moved there): the
    day_before reminder's moment (09:00) has passed. It does not go, not even at 08:00 while the
    draw is still ahead: the participant gets the morning_of reminder, on time."""
    now = paris("2027-03-28", "23:30")
    got = verdicts(now)
    assert got["window_soon"] == (None, "passed")
    assert got["day_before"] == (None, "passed")
    assert got["morning_of"] == (paris("2027-03-29", "08:00"), "on time")
    # A second after its moment is too late; at its moment exactly it goes.
    moment = SLOTS[3].not_before_at
    assert verdicts(moment)["overdue"] == (moment, "on time")
    assert verdicts(moment + timedelta(seconds=1))["overdue"] == (None, "passed")


def test_no_reminder_announces_a_moment_that_has_passed() -> None:
    """A reminder held out of the night until after the draw ("blood test on Monday at 09:00"
    at 09:30) would be about the past: it does not go."""
    late_riser = ReminderSlot(
        "morning_of", paris("2027-03-29", "08:00"), paris("2027-03-29", "09:30"), DRAW_AT
    )
    got = verdicts(paris("2027-03-27", "12:00"), slots=[late_riser])
    assert got["morning_of"] == (None, "expired")


def test_two_reminders_at_the_same_moment_become_one() -> None:
    """A 22:30 day_before reminder held until 08:00 by quiet hours would go with the 08:00
    morning_of one: the participant gets one SMS, the later reminder's."""
    night = ReminderSlot(
        "day_before", paris("2027-03-28", "22:30"), paris("2027-03-29", "08:00"), DRAW_AT
    )
    got = verdicts(paris("2027-03-27", "12:00"), slots=[night, SLOTS[2]])
    assert got == {
        "day_before": (None, "superseded by morning_of"),
        "morning_of": (paris("2027-03-29", "08:00"), "on time"),
    }


# --- the incremental job ------------------------------------------------------------------------


def enrol(db: Session, world: factories.World, code: str, phone: str, **kw: object) -> Participant:
    with time_machine.travel(factories.SCENARIO_ENROLLED_AT, tick=False):
        participant = factories.make_participant(
            db,
            world.staff[("coordinator", "A")],
            world.sites["A"],
            world.study,  # type: ignore[arg-type]
            code,
            **{"phone": phone, "has_sms_consent": True, **kw},  # type: ignore[arg-type]
        )
        db.commit()
    return participant


def keys(db: Session, participant_id: int | None) -> set[str]:
    return set(
        db.exec(
            select(OutboxMessage.dedupe_key).where(
                OutboxMessage.participant_id == participant_id,
                col(OutboxMessage.dedupe_key).startswith("reminder:"),
            )
        ).all()
    )


def pending_events(db: Session, participant_id: int | None) -> list[ScheduleEvent]:
    db.expire_all()
    return list(
        db.exec(
            select(ScheduleEvent).where(
                ScheduleEvent.participant_id == participant_id,
                col(ScheduleEvent.status).in_(["planned", "open"]),
            )
        ).all()
    )


@pytest.mark.usefixtures("texts_loaded_before_the_stories")
def test_each_event_knows_when_its_next_reminder_is_due(
    db: Session, world: factories.World
) -> None:
    p = enrol(db, world, "A-950", "+33612340950")
    now = factories.SCENARIO_ENROLLED_AT
    protocol = participant_protocol(session=db, participant=p, now=now)
    for event in pending_events(db, p.id):
        beyond = [
            v.send_at
            for v in reminders.decide(protocol, p, event, now=now).verdicts
            if v.send_at is not None and v.send_at > now + reminders.HORIZON
        ]
        assert event.next_reminder_at == (min(beyond) if beyond else None), event.key
    # A tick right after writes nothing and reads no event.
    with time_machine.travel(now, tick=False):
        assert reminders.materialize_job(session=db, now=now) == {"events": 0, "created": 0}


@pytest.mark.usefixtures("texts_loaded_before_the_stories")
def test_a_tick_reads_only_the_events_whose_reminder_has_come(
    db: Session, world: factories.World
) -> None:
    p = enrol(db, world, "A-951", "+33612340951")
    baseline = next(e for e in pending_events(db, p.id) if e.key == "ctdna_baseline:1")
    assert baseline.next_reminder_at == paris("2026-12-04", "09:00")  # window_soon
    # Two days before window_soon's moment, one event of this participant is due (and maybe
    # others of the world's participants, never more than a handful).
    tick = paris("2026-12-02", "09:00")
    with time_machine.travel(tick, tick=False):
        result = reminders.materialize_job(session=db, now=tick)
    assert result["created"] >= 1 and result["events"] <= 5
    assert any(k.endswith(":window_soon:sms:c" + k.rsplit(":c", 1)[1]) for k in keys(db, p.id))
    # Written in one statement per chunk, each row with its trail's first step.
    [row] = db.exec(
        select(OutboxMessage).where(
            OutboxMessage.participant_id == p.id,
            col(OutboxMessage.dedupe_key).contains(":window_soon:"),
        )
    ).all()
    trail = db.exec(select(MessageLog).where(MessageLog.message_id == row.id)).all()
    assert [(t.status, t.source, t.at) for t in trail] == [(MessageStatus.PENDING, "enqueue", tick)]
    assert row.not_before_at == paris("2026-12-04", "09:00") and row.segments >= 1
    db.expire_all()
    assert db.get(ScheduleEvent, baseline.id).next_reminder_at == paris("2026-12-13", "09:00")


@pytest.mark.usefixtures("texts_loaded_before_the_stories")
def test_a_moved_event_is_looked_at_again(db: Session, world: factories.World) -> None:
    p = enrol(db, world, "A-952", "+33612340952")
    baseline = next(e for e in pending_events(db, p.id) if e.key == "ctdna_baseline:1")
    first = paris("2026-12-03", "10:00")
    with time_machine.travel(first, tick=False):
        reminders.materialize_job(session=db, now=first)  # window_soon, for 12-04 09:00
    now = paris("2026-12-05", "10:00")
    with time_machine.travel(now, tick=False):
        reminders.materialize_job(session=db, now=now)
        reschedule_event(
            session=db,
            participant=p,
            event=baseline,
            target_date=date(2026, 12, 7),
            now=now,
            actor="test",
            reason="the participant asked",
        )
        db.commit()
    rows = db.exec(
        select(OutboxMessage).where(OutboxMessage.ref == reminders.event_ref(baseline.id))
    ).all()
    # reminder:<participant>:<event key, with a colon>:<target day>:<kind>:sms:c<epoch>
    by_key = {tuple(r.dedupe_key.split(":")[4:6]): r for r in rows}
    # The old date's reminders are cancelled; the new date's coming ones are written at once.
    assert by_key[("2026-12-14", "window_soon")].status != MessageStatus.PENDING
    assert by_key[("2026-12-07", "day_before")].not_before_at == paris("2026-12-06", "09:00")
    db.expire_all()
    assert db.get(ScheduleEvent, baseline.id).next_reminder_at == paris("2026-12-10", "09:00")


@pytest.mark.usefixtures("texts_loaded_before_the_stories")
@pytest.mark.parametrize("who", ["staff", "participant"])
def test_new_quiet_hours_bring_back_a_reminder_they_had_ruled_out(
    db: Session, world: factories.World, client: FlaskClient, who: str
) -> None:
    """Awake only from 09:30, a participant gets no "morning of" reminder for a 09:00 draw
    (it would come after it): the day before at 10:00 the job has nothing left to write for the
    draw until the overdue nudge. Staff then set her quiet hours to end at 07:00: the draw's
    08:00 reminder is written at once (the job alone would not look at the draw again before
    the nudge's moment). The same holds when she changes them herself in the app."""
    from server.participants import service as participants

    p = enrol(db, world, "A-954", "+33612340954")
    p.quiet_hours_end = time(9, 30)
    db.add(p)
    db.commit()
    draw = next(e for e in pending_events(db, p.id) if e.key == "ctdna:1")  # 2027-03-29 09:00
    now = paris("2027-03-28", "10:00")
    with time_machine.travel(now, tick=False):
        reminders.materialize(session=db, now=now, participant_id=p.id)
        db.commit()
        db.expire_all()
        assert db.get(ScheduleEvent, draw.id).next_reminder_at == paris("2027-04-01", "09:30")
        assert not [k for k in keys(db, p.id) if ":ctdna:1:" in k and ":morning_of:" in k]
        if who == "staff":
            participants.update(
                session=db,
                user=world.staff[("coordinator", "A")],
                participant=db.get(Participant, p.id),
                changes={"quiet_hours_end": time(7, 0)},
                reason="she wakes early",
                now=now,
            )
            db.commit()
        else:
            token = "app-token-of-A-954"
            db.add(
                ParticipantToken(
                    participant_id=p.id,
                    token_hash=hashlib.sha256(token.encode()).hexdigest(),
                    created_at=now,
                    expires_at=now + timedelta(days=30),
                )
            )
            db.commit()
            r = client.patch(
                "/api/v1/mobile/preferences",
                headers={"Authorization": f"Bearer {token}"},
                json={"quiet_hours_end": "07:00"},
            )
            assert r.status_code == 200, r.get_json()
    written = [k for k in keys(db, p.id) if ":ctdna:1:" in k and ":morning_of:" in k]
    assert len(written) == 1
    row = db.exec(select(OutboxMessage).where(OutboxMessage.dedupe_key == written[0])).one()
    assert row.not_before_at == paris("2027-03-29", "08:00")
    db.expire_all()
    assert db.get(ScheduleEvent, draw.id).next_reminder_at == paris("2027-04-01", "09:00")


@pytest.mark.usefixtures("texts_loaded_before_the_stories")
def test_a_participant_who_cannot_be_texted_costs_nothing_until_consent_comes_back(
    db: Session, world: factories.World
) -> None:
    from server.messaging import set_sms_consent

    p = enrol(db, world, "A-953", "+33612340953")
    baseline = next(e for e in pending_events(db, p.id) if e.key == "ctdna_baseline:1")
    now = paris("2026-12-02", "12:00")
    with time_machine.travel(now, tick=False):
        set_sms_consent(
            session=db, participant=p, consent=False, now=now, actor="test", reason="STOP", link="x"
        )
        db.commit()
        # The baseline draw's window_soon reminder (12-04 09:00) has come within the horizon:
        # the job reads the event once, writes nothing for it, and forgets it.
        reminders.materialize_job(session=db, now=now)
        db.commit()
        assert keys(db, p.id) == set()
        assert db.get(ScheduleEvent, baseline.id).next_reminder_at is None  # type: ignore[union-attr]
        due = reminders.due_events_statement(now + timedelta(hours=1))
        assert baseline.id not in db.exec(due).all()
    later = paris("2026-12-03", "12:00")
    with time_machine.travel(later, tick=False):
        set_sms_consent(
            session=db,
            participant=p,
            consent=True,
            now=later,
            actor="test",
            reason="START",
            link="x",
        )
        db.commit()
    assert {e.next_reminder_at for e in pending_events(db, p.id)} - {None}
    written = [k for k in keys(db, p.id) if k.endswith(f":c{int(later.timestamp())}")]
    assert [k.split(":")[5] for k in written] == ["window_soon"]  # 2026-12-04 09:00


@pytest.mark.usefixtures("texts_loaded_before_the_stories")
def test_ticks_write_exactly_what_looking_at_every_event_would(
    db: Session, world: factories.World
) -> None:
    """Five weeks of ticks every 8 hours for three participants (one of them with odd quiet
    hours): the incremental job writes, tick by tick, the same reminders as a full pass over
    every pending event of each participant (the old job), and none is ever written late."""
    people = [
        enrol(db, world, "A-960", "+33612340960"),
        enrol(db, world, "A-961", "+33612340961", anchor_date=date(2027, 1, 18)),
        enrol(db, world, "A-962", "+33612340962", anchor_date=date(2026, 12, 28)),
    ]
    people[2].quiet_hours_start, people[2].quiet_hours_end = time(20), time(9, 30)
    db.add(people[2])
    db.commit()
    ids = [p.id for p in people]
    tick = factories.SCENARIO_ENROLLED_AT
    end = tick + timedelta(days=35)
    while tick < end:
        with time_machine.travel(tick, tick=False):
            reminders.materialize_job(session=db, now=tick)
            before = {pid: keys(db, pid) for pid in ids}
            for pid in ids:
                full = reminders.materialize(session=db, now=tick, participant_id=pid)
                assert full["created"] == 0, (tick, pid)
            assert {pid: keys(db, pid) for pid in ids} == before
        tick += timedelta(hours=8)
    rows = db.exec(
        select(OutboxMessage).where(
            col(OutboxMessage.participant_id).in_(ids), OutboxMessage.category == "reminder"
        )
    ).all()
    assert len(rows) > 10
    for row in rows:
        assert row.created_at <= row.not_before_at, row.dedupe_key  # written ahead, never late


# --- a mass event in short transactions -----------------------------------------------------------


def commits_of(db: Session) -> list[int]:
    """Counts, at each commit of this session, the events marked missed so far."""
    import sqlalchemy as sa

    marks: list[int] = []

    def count(session: Session) -> None:
        marks.append(
            session.connection()
            .execute(sa.text("SELECT count(*) FROM schedule_event WHERE status = 'missed'"))
            .scalar_one()
        )

    sa.event.listen(db, "before_commit", count)
    return marks


def test_the_missed_window_pass_commits_in_small_batches(
    db: Session, world: factories.World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enrolled with an anchor a year back: every window of that year is closed, and the job
    marks them missed (each missed ctDNA draw opening an alert) in transactions of BATCH events."""
    from server.alerts.models import Alert
    from server.schedules import jobs

    monkeypatch.setattr(jobs, "BATCH", 4)
    p = enrol(db, world, "A-970", "+33612340970", anchor_date=date(2026, 1, 5))
    db.commit()
    missed_before = len(
        db.exec(select(ScheduleEvent).where(ScheduleEvent.status == "missed")).all()
    )
    marks = commits_of(db)
    now = factories.SCENARIO_ENROLLED_AT
    with time_machine.travel(now, tick=False):
        result = jobs.update_event_statuses(session=db, now=now)
    assert result["missed"] >= 9
    steps = [b - a for a, b in zip([missed_before, *marks], marks, strict=False)]
    assert len(marks) == -(-result["missed"] // 4) and max(steps) <= 4, steps
    alerts = db.exec(select(Alert).where(Alert.participant_id == p.id)).all()
    assert len(alerts) >= 4  # the missed ctDNA draws: opened batch by batch, with their events


def test_escalation_commits_every_few_alerts(
    db: Session, world: factories.World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from server.alerts import service as alerts
    from server.alerts.models import Alert, AlertKind

    monkeypatch.setattr(alerts, "ESCALATE_COMMIT_EVERY", 3)
    now = factories.SCENARIO_ENROLLED_AT
    for n, role in enumerate(("nurse", "coordinator", "investigator")):
        user = world.staff[(role, "A")]
        user.phone_e164, user.is_phone_verified = f"+3361000097{n}", True
        db.add(user)
    p = enrol(db, world, "A-971", "+33612340971")
    with time_machine.travel(now, tick=False):
        opened = [
            alerts.open_alert(
                session=db,
                kind=AlertKind.CTDNA_POSITIVE,
                trigger_key=f"mass:{n}",
                participant=p,
                site_id=p.site_id,
                summary="needs a look",
                now=now,
            )[0]
            for n in range(7)
        ]
        db.commit()
    due = [a for a in opened if a.next_tier_at is not None]
    assert len(due) == 7
    commits: list[int] = []
    sa.event.listen(db, "before_commit", lambda session: commits.append(1))
    later = max(a.next_tier_at for a in due if a.next_tier_at) + timedelta(seconds=1)
    with time_machine.travel(later, tick=False):
        result = alerts.escalate_due(session=db, now=later)
    assert result["advanced"] + result["exhausted"] == 7
    assert len(commits) == 3  # 3 + 3 + 1
    db.expire_all()
    assert {a.tier for a in db.exec(select(Alert).where(Alert.participant_id == p.id))} == {2}


def test_on_sqlite_a_waiting_writer_gets_in_between_two_batches(tmp_path: Path) -> None:
    """SQLite has one writer: a job working through batches steps aside after each commit
    (jobs.yield_to_writers), so a lab's result waiting for the lock goes in after the batch
    at hand, not after the whole job (without it, it waited the whole job: seconds)."""
    import threading

    import sqlalchemy as sa

    from server.db import make_engine
    from server.schedules.jobs import yield_to_writers

    engine = make_engine(f"sqlite:///{tmp_path / 'one-writer.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (who TEXT)")
    batch_s, batches = 0.15, 12
    started = threading.Event()

    def job() -> None:
        with Session(engine) as session:
            for _ in range(batches):
                session.execute(sa.text("INSERT INTO t VALUES ('job')"))
                started.set()
                sleep(batch_s)  # the batch's work, holding the write lock
                session.commit()
                yield_to_writers(session)

    worker = threading.Thread(target=job)
    worker.start()
    started.wait(5)
    began = monotonic()
    with Session(engine) as session:
        session.execute(sa.text("INSERT INTO t VALUES ('lab')"))
        session.commit()
    waited = monotonic() - began
    worker.join()
    engine.dispose()
    # In after the batch it waited for (or the next one), long before the job's end.
    assert waited < 3 * batch_s < batches * batch_s / 2, waited
