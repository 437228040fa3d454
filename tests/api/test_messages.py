"""A participant's messages for staff: history with the status trail, cancel, resend; scoped."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlmodel import select

from notifications import outbox
from notifications.models import MessageStatus, OutboxMessage
from server import messaging
from server.audit import AuditEvent
from server.schedules import reminders
from tests import clock, factories

P = "/api/v1/participants"
PHONE = "+33612340101"


def _enrol_at(db, world, moment, code, phone):
    with time_machine.travel(moment, tick=False):
        p = factories.make_participant(
            db,
            world.staff[("coordinator", "A")],
            world.sites["A"],
            world.study,
            code,
            anchor_date=clock.day("2027-01-04"),
            phone=phone,
            has_sms_consent=True,
        )
        db.commit()
    return p


@pytest.fixture
def a1(world, db):
    """Like the world's A1 but anchored relative to the clock: enrolled at 15:00 Paris on the
    clock's day, its baseline draw window opens six days later, so its "window soon" reminder is
    due in three days."""
    return _enrol_at(db, world, clock.local(clock.today(), "15:00"), "A-101", PHONE)


def _reminders_soon(db, participant_id):
    # The baseline draw window opens on day 6 (Paris): its "window soon" reminder is on day 3.
    db.expire_all()  # see what the API requests committed
    with time_machine.travel(clock.moment("2026-12-03T12:00"), tick=False):
        reminders.materialize(session=db, now=clock.utcnow(), participant_id=participant_id)
    db.commit()
    rows = db.exec(
        select(OutboxMessage)
        .where(OutboxMessage.participant_id == participant_id)
        .order_by(OutboxMessage.id)
    ).all()
    # The app activation code sent at enrolment is not what these tests look at.
    return [r for r in rows if r.kind != "activation_code"]


def test_enrolment_with_consent_queues_one_welcome(world, db, a1):
    rows = db.exec(select(OutboxMessage).where(OutboxMessage.participant_id == a1.id)).all()
    assert [r.kind for r in rows] == ["welcome", "activation_code"]
    assert "A-101" in rows[0].body
    assert rows[0].to_e164 == PHONE and rows[0].locale == "fr"
    # A welcome not sent within three days (an outage) expires rather than arriving late.
    assert rows[0].expires_at == rows[0].not_before_at + timedelta(days=3)
    messaging.expire_stale(session=db, now=rows[0].not_before_at + timedelta(days=2))
    assert rows[0].status == MessageStatus.PENDING
    messaging.expire_stale(session=db, now=rows[0].not_before_at + timedelta(days=3, minutes=1))
    assert rows[0].status == MessageStatus.EXPIRED
    # A2 has no phone and no consent: nothing.
    assert not db.exec(
        select(OutboxMessage).where(OutboxMessage.participant_id == world.participants["A2"].id)
    ).all()


def test_no_activation_code_goes_into_the_participants_night(world, db, api_as):
    """A code lives 30 minutes: sent at night it would wait for the morning and be dead on arrival
    while staff were told it was sent. Enrolment at night skips it; asking for one is a 409."""
    night = clock.local(clock.today(), "23:30")
    p = _enrol_at(db, world, night, "A-102", "+33612340102")
    rows = db.exec(select(OutboxMessage).where(OutboxMessage.participant_id == p.id)).all()
    assert [r.kind for r in rows] == ["welcome"]
    assert rows[0].not_before_at == clock.local(clock.today() + timedelta(days=1), "08:00")
    api = api_as("coordinator", "A")
    with time_machine.travel(night, tick=False):
        refused = api.post(f"{P}/{p.id}/activation")
    assert refused.status_code == 409
    assert "quiet hours" in refused.get_json()["error"]["message"]
    assert "08:00" in refused.get_json()["error"]["message"]
    db.expire_all()
    assert (
        len(db.exec(select(OutboxMessage).where(OutboxMessage.participant_id == p.id)).all()) == 1
    )
    with time_machine.travel(clock.local(clock.today() + timedelta(days=1), "08:00"), tick=False):
        sent = api.post(f"{P}/{p.id}/activation")
    assert sent.status_code == 202, sent.get_json()
    db.expire_all()
    kinds = [
        r.kind for r in db.exec(select(OutboxMessage).where(OutboxMessage.participant_id == p.id))
    ]
    assert kinds == ["welcome", "activation_code"]


def test_history_shows_intended_and_trail(world, db, api_as, a1):
    rows = _reminders_soon(db, a1.id)
    kinds = [r.kind for r in rows]
    assert kinds == ["welcome", "reminder_blood_draw"]
    reminder = rows[1]
    # 3 days before the window opens, at 09:00 Paris.
    assert reminder.not_before_at == clock.local(clock.day("2026-12-04"), "09:00")
    body = api_as("nurse", "A").get(f"{P}/{a1.id}/messages").get_json()
    assert [m["kind"] for m in body] == ["reminder_blood_draw", "activation_code", "welcome"]
    assert body[0]["status"] == "pending"
    assert [e["status"] for e in body[0]["log"]] == ["pending"]
    assert body[0]["to"] == PHONE
    monitor = api_as("monitor", "A").get(f"{P}/{a1.id}/messages").get_json()
    assert monitor[0]["to"] == "+33•••••••01"


def test_materialize_twice_writes_nothing_new(world, db, a1):
    first = _reminders_soon(db, a1.id)
    second = _reminders_soon(db, a1.id)
    assert [r.id for r in first] == [r.id for r in second]


def test_completing_the_event_cancels_its_reminders(world, db, api_as, a1):
    rows = _reminders_soon(db, a1.id)
    reminder = rows[1]
    event_id = int(reminder.ref.split(":")[1])
    with time_machine.travel(clock.moment("2026-12-03T12:00"), tick=False):
        resp = api_as("nurse", "A").post(
            f"{P}/{a1.id}/events/{event_id}/complete",
            json={"completed_on": clock.day("2026-12-03").isoformat(), "reason": "drawn early"},
        )
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert db.get(OutboxMessage, reminder.id).status == MessageStatus.CANCELLED


def test_cancel_and_resend(world, db, api_as, a1):
    reminder = _reminders_soon(db, a1.id)[1]
    api = api_as("coordinator", "A")
    url = f"{P}/{a1.id}/messages/{reminder.id}"
    assert api.post(f"{url}/cancel", json={}).status_code == 422
    resp = api.post(f"{url}/cancel", json={"reason": "participant called, already booked"})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "cancelled"
    assert api.post(f"{url}/cancel", json={"reason": "again"}).status_code == 409
    resent = api.post(f"{url}/resend", json={"reason": "booking fell through"})
    assert resent.status_code == 201, resent.get_json()
    assert resent.get_json()["id"] != reminder.id
    assert resent.get_json()["status"] == "pending"
    actions = [
        a.action for a in db.exec(select(AuditEvent).where(AuditEvent.entity == "outbox_message"))
    ]
    assert actions == ["message.cancel", "message.resend"]


def test_a_sent_message_cannot_be_cancelled(world, db, api_as, a1):
    welcome = _reminders_soon(db, a1.id)[0]
    outbox.advance(db, welcome, MessageStatus.SENDING, source="test", now=clock.utcnow())
    db.commit()
    resp = api_as("coordinator", "A").post(
        f"{P}/{a1.id}/messages/{welcome.id}/cancel", json={"reason": "too late"}
    )
    assert resp.status_code == 409


def test_messages_are_scoped_and_role_gated(world, db, api_as, a1):
    b1 = world.participants["B1"]
    reminder = _reminders_soon(db, a1.id)[1]
    assert api_as("nurse", "B").get(f"{P}/{a1.id}/messages").status_code == 404
    # Someone else's message through one's own participant: 404.
    resp = api_as("coordinator", "B").post(
        f"{P}/{b1.id}/messages/{reminder.id}/cancel", json={"reason": "x"}
    )
    assert resp.status_code == 404
    resp = api_as("monitor", "A").post(
        f"{P}/{a1.id}/messages/{reminder.id}/cancel", json={"reason": "x"}
    )
    assert resp.status_code == 403
    db.expire_all()
    assert db.get(OutboxMessage, reminder.id).status == MessageStatus.PENDING


def test_quiet_hours_are_per_participant(world, db, api_as, a1):
    resp = api_as("coordinator", "A").patch(
        f"{P}/{a1.id}", json={"quiet_hours_start": "20:00", "quiet_hours_end": "10:00"}
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["quiet_hours_end"] == "10:00:00"
    rows = _reminders_soon(db, a1.id)
    # 09:00 falls in the participant's quiet hours now: deferred to 10:00 Paris, not dropped.
    assert rows[1].not_before_at == clock.local(clock.day("2026-12-04"), "10:00")
    assert rows[1].intended_at == clock.local(clock.day("2026-12-04"), "09:00")
