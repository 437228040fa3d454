"""Participant reminders: local wall-clock time across DST, quiet hours, expiry
(reliability-security.md checks 9 and 11: "no reminder for yesterday's draw").

HEROES participants are enrolled through the factories (Europe/Paris, 09:00 events; reminder plan
for ctDNA draws: window_soon 3 days before the window opens, day_before, morning_of at 08:00,
overdue 3 days after), reminders are written by `reminders.materialize`, and the dispatcher that
sends (or expires) them runs against a RecordingProvider inside the test's transaction. The clock
is frozen with time-machine wherever the code reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask import Flask
from sqlmodel import Session, col, select

from config.settings import PROTOCOLS_DIR
from notifications.dispatcher import Dispatcher
from notifications.models import MessageLog, MessageStatus, OutboxMessage
from notifications.providers import RecordingProvider
from server.db import get_db
from server.participants.models import Participant
from server.protocols.definition import Reminder, load_protocol
from server.schedules import reminders
from server.schedules.models import EventType, ScheduleEvent
from server.schedules.service import participant_protocol
from tests import factories

PARIS = ZoneInfo("Europe/Paris")


def frozen(iso: str) -> Any:
    return time_machine.travel(datetime.fromisoformat(iso).replace(tzinfo=UTC), tick=False)


def enrol(db: Session, world: factories.World, code: str, anchor: date, phone: str) -> Participant:
    """A HEROES participant at site A (Paris) who consented to SMS."""
    with frozen("2026-12-01T10:00:00"):
        participant = factories.make_participant(
            db,
            world.staff[("coordinator", "A")],
            world.sites["A"],
            world.study,  # type: ignore[arg-type]
            code,
            anchor_date=anchor,
            phone=phone,
            has_sms_consent=True,
        )
    db.commit()
    return participant


def event(db: Session, participant_id: int | None, key: str) -> ScheduleEvent:
    found = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == participant_id, ScheduleEvent.key == key
        )
    ).one()
    return found


def reminder_rows(db: Session, ev: ScheduleEvent) -> dict[str, OutboxMessage]:
    """The event's outbox rows by reminder kind (the kind is in the dedupe key)."""
    db.expire_all()
    rows = db.exec(
        select(OutboxMessage).where(OutboxMessage.ref == reminders.event_ref(ev.id))
    ).all()
    # reminder:<participant>:<event key>:<target day>:<kind>:sms:c<consent epoch>
    return {r.dedupe_key.split(":")[-3]: r for r in rows}


def local(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment.astimezone(PARIS)


def utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def dispatcher(app: Flask, provider: RecordingProvider) -> Dispatcher:
    """A dispatcher inside the test's transaction (its sessions join it through savepoints)."""
    return Dispatcher(
        session_factory=get_db(app).session,
        provider=provider,
        callback_base_url=app.config["PUBLIC_BASE_URL"],
        rate_per_second=0,
    )


def sent_for(provider: RecordingProvider, row: OutboxMessage) -> list[Any]:
    return [
        c for c in provider.calls if c.status_callback and c.status_callback.endswith(f"/{row.id}")
    ]


@pytest.fixture
def provider() -> Iterator[RecordingProvider]:
    yield RecordingProvider()


# --- 1. 09:00 local on both sides of a DST change ---------------------------------------------

# The baseline ctDNA draw is 21 days before the anchor, at 09:00 Paris time. Expected moments are
# UTC: 09:00 is 08:00Z in winter (CET) and 07:00Z in summer (CEST).
DST_CASES = {
    # Saturday before the spring change (Sunday 2027-03-28): all CET but the overdue nudge.
    "2027-03-27": {
        "window_soon": "2027-03-17T08:00",
        "day_before": "2027-03-26T08:00",
        "morning_of": "2027-03-27T07:00",  # 08:00 CET
        "overdue": "2027-03-30T07:00",  # 09:00 CEST
    },
    # Monday after it: the day_before reminder falls on the change day itself.
    "2027-03-29": {
        "window_soon": "2027-03-19T08:00",
        "day_before": "2027-03-28T07:00",
        "morning_of": "2027-03-29T06:00",  # 08:00 CEST
        "overdue": "2027-04-01T07:00",
    },
    # Saturday before the autumn change (Sunday 2027-10-31).
    "2027-10-30": {
        "window_soon": "2027-10-20T07:00",
        "day_before": "2027-10-29T07:00",
        "morning_of": "2027-10-30T06:00",
        "overdue": "2027-11-02T08:00",  # 09:00 CET
    },
    # Monday after it: day_before on the change day.
    "2027-11-01": {
        "window_soon": "2027-10-22T07:00",
        "day_before": "2027-10-31T08:00",
        "morning_of": "2027-11-01T07:00",
        "overdue": "2027-11-04T08:00",
    },
}
LOCAL_TIME = {
    "window_soon": time(9),
    "day_before": time(9),
    "morning_of": time(8),
    "overdue": time(9),
}


@pytest.mark.parametrize("target", sorted(DST_CASES))
def test_reminders_land_at_local_wall_clock_time_across_dst(
    db: Session, world: factories.World, target: str
) -> None:
    target_day = date.fromisoformat(target)
    participant = enrol(db, world, "A-900", target_day + timedelta(days=21), "+33612340900")
    baseline = event(db, participant.id, "ctdna_baseline:1")
    assert baseline.target_date == target_day

    now = datetime.combine(target_day - timedelta(days=12), time(), UTC)
    with frozen(now.isoformat()):
        first = reminders.materialize(
            session=db, now=now, horizon=timedelta(days=20), participant_id=participant.id
        )
        again = reminders.materialize(
            session=db, now=now, horizon=timedelta(days=20), participant_id=participant.id
        )
    assert first["created"] >= 4
    assert again["created"] == 0  # one key per reminder: running the job again writes nothing

    rows = reminder_rows(db, baseline)
    expected = DST_CASES[target]
    assert sorted(rows) == sorted(expected)
    for kind, iso in expected.items():
        row = rows[kind]
        assert row.not_before_at == utc(iso), kind
        assert local(row.not_before_at).time() == LOCAL_TIME[kind], kind
        assert row.intended_at == row.not_before_at  # 08:00 and 09:00 are outside quiet hours
    # Reminders announcing the draw ("blood test on ... at 09:00") expire at that moment: after
    # it they would speak of the past. The nudge after it lasts until the window closes.
    for kind in ("window_soon", "day_before", "morning_of"):
        assert rows[kind].expires_at == baseline.target_at, kind
        assert local(rows[kind].expires_at) == datetime.combine(target_day, time(9), PARIS)
    assert rows["overdue"].expires_at == baseline.window_close_at


@pytest.mark.parametrize("zone_name", ["Europe/Paris", "America/New_York"])
def test_every_day_of_a_year_keeps_its_local_time(zone_name: str) -> None:
    """plan_event for a 09:00 ctDNA draw on each day of 2027, DST days included, in two zones
    whose clocks change on different dates: each reminder at its wall-clock time, on its day."""
    protocol = load_protocol(PROTOCOLS_DIR / "heroes.yaml")
    zone = ZoneInfo(zone_name)
    participant = Participant(
        study_id=1,
        site_id=1,
        study_code="X-001",
        timezone=zone_name,
        quiet_hours_start=time(21),
        quiet_hours_end=time(8),
    )
    day = date(2027, 1, 1)
    while day.year == 2027:
        ev = ScheduleEvent(
            id=1,
            participant_id=1,
            key="ctdna:1",
            item_id="ctdna",
            sequence=1,
            label="Signatera ctDNA draw",
            protocol_version="1",
            event_type=EventType.CTDNA_DRAW,
            target_date=day,
            window_open_date=day - timedelta(days=7),
            window_close_date=day + timedelta(days=7),
            target_at=datetime.combine(day, time(9), zone).astimezone(UTC),
            window_open_at=datetime.combine(day - timedelta(days=7), time(), zone).astimezone(UTC),
            window_close_at=datetime.combine(day + timedelta(days=8), time(), zone).astimezone(UTC),
        )
        planned = {p.kind: p for p in reminders.plan_event(protocol, participant, ev)}
        expected_days = {
            "window_soon": day - timedelta(days=10),
            "day_before": day - timedelta(days=1),
            "morning_of": day,
            "overdue": day + timedelta(days=3),
        }
        assert sorted(planned) == sorted(expected_days)
        for kind, when in expected_days.items():
            moment = planned[kind].not_before_at
            assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
            assert moment.astimezone(zone).replace(tzinfo=None) == datetime.combine(
                when, LOCAL_TIME[kind]
            ), (day, kind)
        day += timedelta(days=1)


# --- 2. quiet hours and expiry --------------------------------------------------------------


def with_reminders(protocol: Any, *specs: dict[str, str]) -> Any:
    """The protocol with another reminder plan for ctDNA draws."""
    plan = dict(protocol.reminders)
    plan[EventType.CTDNA_DRAW] = [Reminder.model_validate(s) for s in specs]
    return protocol.model_copy(update={"reminders": plan})


def test_reminder_due_at_2230_waits_until_0800_next_morning(
    app: Flask, db: Session, world: factories.World, provider: RecordingProvider
) -> None:
    a1 = factories.a1_in_scenario(db, world)  # default quiet hours 21:00-08:00, Paris
    ev = event(db, a1.id, "ctdna:1")  # 2027-03-29 09:00 CEST
    now = utc("2027-03-27T12:00:00")
    protocol = with_reminders(
        participant_protocol(session=db, participant=a1, now=now),
        {"kind": "late", "offset": "-1 day", "at": "22:30"},
    )
    [plan] = reminders.plan_event(protocol, a1, ev)
    assert local(plan.intended_at) == datetime(2027, 3, 28, 22, 30, tzinfo=PARIS)
    assert local(plan.not_before_at) == datetime(2027, 3, 29, 8, 0, tzinfo=PARIS)
    assert plan.not_before_at == utc("2027-03-29T06:00:00")

    created = reminders.enqueue_event_reminders(
        db, protocol=protocol, participant=a1, event=ev, now=now
    )
    db.commit()
    assert created == 1
    row = reminder_rows(db, ev)["late"]
    assert row.not_before_at == plan.not_before_at

    send = dispatcher(app, provider)
    for moment in ("2027-03-28T20:31:00", "2027-03-29T05:59:59"):  # 22:31 and 07:59:59 local
        with frozen(moment):
            send.run_once()
        assert reminder_rows(db, ev)["late"].status == MessageStatus.PENDING
        assert sent_for(provider, row) == []
    with frozen("2027-03-29T06:00:00"):  # 08:00 local
        send.run_once()
    assert reminder_rows(db, ev)["late"].status == MessageStatus.SENT
    assert len(sent_for(provider, row)) == 1


def test_per_participant_quiet_hours_are_honoured(db: Session, world: factories.World) -> None:
    early_riser = enrol(db, world, "A-901", date(2027, 1, 4), "+33612340901")
    late_sleeper = enrol(db, world, "A-902", date(2027, 1, 4), "+33612340902")
    late_sleeper.quiet_hours_start, late_sleeper.quiet_hours_end = time(21), time(9, 30)
    night_owl = enrol(db, world, "A-903", date(2027, 1, 4), "+33612340903")
    night_owl.quiet_hours_start, night_owl.quiet_hours_end = time(23, 30), time(7)
    db.add_all([late_sleeper, night_owl])
    db.commit()

    now = utc("2027-03-27T12:00:00")
    with frozen(now.isoformat()):
        for p in (early_riser, late_sleeper, night_owl):
            reminders.materialize(session=db, now=now, participant_id=p.id)
    db.commit()

    def moments(p: Participant) -> dict[str, time]:
        rows = reminder_rows(db, event(db, p.id, "ctdna:1"))
        return {k: local(r.not_before_at).time() for k, r in rows.items() if k != "window_soon"}

    assert moments(early_riser) == {"day_before": time(9), "morning_of": time(8)}
    # Awake at 09:30 only: the "morning of" reminder would arrive after the 09:00 draw, so it is
    # not written; the day before's goes at 09:30.
    assert moments(late_sleeper) == {"day_before": time(9, 30)}
    assert moments(night_owl) == {"day_before": time(9), "morning_of": time(8)}

    # A 22:30 reminder: the 21:00-08:00 participant waits for the morning, the owl does not.
    protocol = with_reminders(
        participant_protocol(session=db, participant=night_owl, now=now),
        {"kind": "late", "offset": "-1 day", "at": "22:30"},
    )
    for p, expected in (
        (early_riser, datetime(2027, 3, 29, 8, 0, tzinfo=PARIS)),
        (night_owl, datetime(2027, 3, 28, 22, 30, tzinfo=PARIS)),
    ):
        [plan] = reminders.plan_event(protocol, p, event(db, p.id, "ctdna:1"))
        assert local(plan.not_before_at) == expected


def test_expired_reminder_is_expired_by_the_dispatcher_not_sent(
    app: Flask, db: Session, world: factories.World, provider: RecordingProvider
) -> None:
    a1 = factories.a1_in_scenario(db, world)
    ev = event(db, a1.id, "ctdna:1")  # the draw is on Monday 2027-03-29
    now = utc("2027-03-27T12:00:00")
    with frozen(now.isoformat()):
        reminders.materialize(session=db, now=now, participant_id=a1.id)
    db.commit()
    rows = reminder_rows(db, ev)
    assert {"day_before", "morning_of"} <= set(rows)

    # The dispatcher was down until late on the day of the draw, after the day ended in Paris.
    with frozen("2027-03-29T22:30:00"):  # 00:30 on Tuesday, Paris
        stats = dispatcher(app, provider).run_once()
        # The reminder job running again does not bring them back either.
        reminders.materialize(session=db, now=datetime.now(UTC), participant_id=a1.id)
    assert stats.expired >= 3
    after = reminder_rows(db, ev)
    for kind in ("day_before", "morning_of"):
        row = after[kind]
        assert row.status == MessageStatus.EXPIRED, kind
        assert sent_for(provider, row) == [], kind
        [last] = db.exec(
            select(MessageLog)
            .where(MessageLog.message_id == row.id)
            .order_by(col(MessageLog.id).desc())
            .limit(1)
        ).all()
        assert (last.status, last.source) == (MessageStatus.EXPIRED, "dispatcher")


def test_no_reminder_for_yesterdays_draw(db: Session, world: factories.World) -> None:
    """The reminder job catching up after the draw writes no reminder announcing it."""
    a1 = factories.a1_in_scenario(db, world)
    ev = event(db, a1.id, "ctdna:1")
    now = utc("2027-03-29T22:00:00")  # midnight in Paris: the draw day is over
    with frozen(now.isoformat()):
        reminders.materialize(session=db, now=now, horizon=timedelta(days=5), participant_id=a1.id)
    rows = reminder_rows(db, ev)
    assert set(rows) == {"overdue"}  # only the nudge after the draw is still to come


def test_a_reminder_whose_moment_has_passed_is_not_written(
    app: Flask, db: Session, world: factories.World, provider: RecordingProvider
) -> None:
    """The reminder job gets to the draw at 23:30 Paris (it was down for two days): the
    day_before reminder's moment (09:00) has passed. It is not written, not even for the
    morning while the draw is still ahead: nothing reaches the phone for it."""
    a1 = factories.a1_in_scenario(db, world)
    ev = event(db, a1.id, "ctdna:1")  # Monday 2027-03-29 09:00 CEST
    now = utc("2027-03-28T21:30:00")  # Sunday 23:30 CEST
    protocol = with_reminders(
        participant_protocol(session=db, participant=a1, now=now),
        {"kind": "day_before", "offset": "-1 day"},
    )
    with frozen(now.isoformat()):
        created = reminders.enqueue_event_reminders(
            db, protocol=protocol, participant=a1, event=ev, now=now
        )
    assert created == 0 and reminder_rows(db, ev) == {}
    # Two minutes before its moment, the same job writes it, for 09:00.
    before = utc("2027-03-28T06:58:00")
    with frozen(before.isoformat()):
        reminders.enqueue_event_reminders(
            db, protocol=protocol, participant=a1, event=ev, now=before
        )
    row = reminder_rows(db, ev)["day_before"]
    assert local(row.not_before_at) == datetime(2027, 3, 28, 9, 0, tzinfo=PARIS)
    with frozen("2027-03-28T07:00:00"):  # 09:00 CEST
        dispatcher(app, provider).run_once()
    assert reminder_rows(db, ev)["day_before"].status == MessageStatus.SENT


def test_a_job_late_on_an_event_sends_only_what_is_still_ahead(
    app: Flask, db: Session, world: factories.World, provider: RecordingProvider
) -> None:
    """The same late tick with HEROES' own plan: the window_soon and day_before moments have
    passed; the participant gets one SMS about the draw, the morning_of one at 08:00."""
    a1 = factories.a1_in_scenario(db, world)
    ev = event(db, a1.id, "ctdna:1")  # Monday 2027-03-29 09:00 CEST
    now = utc("2027-03-28T21:30:00")  # Sunday 23:30 CEST
    with frozen(now.isoformat()):
        reminders.materialize(session=db, now=now, participant_id=a1.id)
    verdicts = {
        v.kind: v.why
        for v in reminders.decide(
            participant_protocol(session=db, participant=a1, now=now), a1, ev, now=now
        ).verdicts
    }
    assert verdicts == {
        "window_soon": "passed",
        "day_before": "passed",
        "morning_of": "on time",
        "overdue": "on time",
    }
    rows = reminder_rows(db, ev)
    assert sorted(rows) == ["morning_of"]
    with frozen("2027-03-29T06:00:00"):  # 08:00 CEST
        dispatcher(app, provider).run_once()
    assert reminder_rows(db, ev)["morning_of"].status == MessageStatus.SENT
    # (The scan and the questionnaire of the same days have their own reminders.)
    assert len([c for c in provider.calls if "prise de sang" in c.body]) == 1


def test_stop_then_start_brings_the_coming_reminders_back(
    db: Session, world: factories.World
) -> None:
    from server.messaging import set_sms_consent

    # Baseline draw target 2027-03-29 (anchor + 21 days): its window opens 03-22.
    p = enrol(db, world, "A-230", date(2027, 4, 19), "+33612340230")
    ev = event(db, p.id, "ctdna_baseline:1")
    with frozen("2027-03-27T12:00:00"):
        now = datetime.now(UTC)
        reminders.materialize(session=db, now=now, participant_id=p.id)
        before = reminder_rows(db, ev)
        assert "day_before" in before and "morning_of" in before
        set_sms_consent(
            session=db, participant=p, consent=False, now=now, actor="test", reason="STOP", link="x"
        )
        db.commit()
        assert {r.status for r in reminder_rows(db, ev).values()} == {MessageStatus.OPTED_OUT}
    with frozen("2027-03-27T13:00:00"):
        set_sms_consent(
            session=db,
            participant=p,
            consent=True,
            now=datetime.now(UTC),
            actor="test",
            reason="START",
            link="x",
        )
        db.commit()
    db.expire_all()
    rows = db.exec(
        select(OutboxMessage).where(OutboxMessage.ref == reminders.event_ref(ev.id))
    ).all()
    pending = [r for r in rows if r.status == MessageStatus.PENDING]
    # The reminders still ahead are back (each once); the old rows stay opted out. The
    # window_soon one (meant for 03-19) is not: nothing planned before START is caught up.
    assert sorted(r.dedupe_key.split(":")[-3] for r in pending) == ["day_before", "morning_of"]
    assert all(r.status == MessageStatus.OPTED_OUT for r in rows if r not in pending)


def test_the_dispatcher_holds_a_backlog_until_quiet_hours_end(
    app: Flask, db: Session, world: factories.World, provider: RecordingProvider
) -> None:
    from server.messaging import build_dispatcher  # the production wiring, quiet-hours hook on

    p = enrol(db, world, "A-231", date(2027, 4, 19), "+33612340231")
    ev = event(db, p.id, "ctdna_baseline:1")
    with frozen("2027-03-27T12:00:00"):
        reminders.materialize(session=db, now=datetime.now(UTC), participant_id=p.id)
        db.commit()
    row = reminder_rows(db, ev)["day_before"]  # 2027-03-28 09:00 Paris
    # The dispatcher was down; it comes back at 23:30 Paris the same day (an outage's backlog).
    with frozen("2027-03-28T21:30:00"):
        build_dispatcher(app, provider=provider, rate_per_second=0).run_once()
    assert sent_for(provider, row) == []
    db.expire_all()
    held = db.get(OutboxMessage, row.id)
    assert held is not None and held.status == MessageStatus.PENDING
    # Still about tomorrow's draw, so it is not expired: it waits for 08:00 Paris, then goes.
    assert local(held.not_before_at) == datetime(2027, 3, 29, 8, 0, tzinfo=PARIS)
    with frozen("2027-03-29T06:00:00"):
        build_dispatcher(app, provider=provider, rate_per_second=0).run_once()
    assert len(sent_for(provider, row)) == 1
