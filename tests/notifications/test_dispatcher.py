"""Dispatcher reliability: the real twilio library against the in-process fake Twilio server.

What is proved here (reliability-security.md checks 6, 8, 11, 12, 13):
- a dispatcher killed between Twilio's acceptance and its own commit ends with exactly one message,
  settled either by the signed status callback or, without callbacks, by the reaper reading the
  provider's log;
- two dispatchers over 2,000 due rows (PostgreSQL, FOR UPDATE SKIP LOCKED) send each row once;
- ten simulated minutes of 500/503/429 (and sends that hang after Twilio accepted them) end with
  every message delivered exactly once, with Retry-After honoured and no message given up;
- 21610 (recipient unsubscribed) is final, withdraws the participant's SMS consent with an audit
  row and tells the site's care team;
- staff alerts are claimed before reminders; the per-sender rate limit holds.

Most of these tests need real commits seen by other connections (threads, a served app), so they do
not use the `db` fixture's rolled-back transaction: the `live` fixture writes outbox rows with
`outbox.enqueue` on the app's engine, commits, and deletes exactly the rows it made afterwards. The
21610 test needs a participant, staff and audit rows (the audit table refuses DELETE), so it runs
inside the `db` fixture instead; its dispatcher is single-threaded and joins that transaction.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlmodel import Session, select
from werkzeug.serving import make_server

from notifications import dispatcher as dispatcher_module
from notifications import outbox
from notifications.fake_twilio import FakeTwilio
from notifications.messages import MessageKind
from notifications.models import (
    PRIORITY_REMINDER,
    PRIORITY_STAFF_ALERT,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from notifications.ratelimit import MemoryRate, interval
from server.audit import AuditEvent
from server.clock import utcnow
from server.messaging import build_dispatcher
from tests import factories
from tests.notifications.harness import (
    DONE,
    Crash,
    Live,
    VirtualTime,
    creations,
    dispatcher_for,
    provider_for,
    run_processes,
    start_fake,
)

ROOT = Path(__file__).resolve().parents[2]
ON_POSTGRESQL = bool(os.environ.get("STEPDOWN_TEST_DATABASE_URL"))


# --- a. crash after Twilio accepted, before our commit --------------------------------------


@pytest.fixture
def served_app(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app served over HTTP on 127.0.0.1, so the fake can post its signed callbacks.

    PUBLIC_BASE_URL is the URL Twilio calls and signs, so here it is the served address.
    """
    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", url)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_crash_after_accept_is_settled_by_the_signed_status_callback(
    app: Flask, live: Live, served_app: str
) -> None:
    fake = start_fake(app, callbacks_enabled=True, callback_delay=0.2)
    try:
        [message_id] = live.enqueue(1, now=utcnow())
        seen: list[tuple[MessageStatus, str | None]] = []

        def crash(row: OutboxMessage) -> None:
            fresh = live.get(row.id)  # type: ignore[arg-type]
            seen.append((fresh.status, fresh.provider_sid))
            raise Crash

        dispatcher = dispatcher_for(
            app, live, fake, callback_base_url=served_app, after_provider_accepted=crash
        )
        with pytest.raises(Crash):
            dispatcher.run_once()
        # Twilio has the message; our database knows nothing of it.
        assert seen == [(MessageStatus.SENDING, None)]

        [accepted] = fake.wait_for_messages(1)
        assert accepted.status_callback == f"{served_app}/twilio/status/{message_id}"
        settled = fake.wait_for_callbacks(accepted.sid, 2)
        assert [(c.params["MessageStatus"], c.http_status) for c in settled.callbacks] == [
            ("sent", 204),
            ("delivered", 204),
        ]

        row = live.get(message_id)
        assert row.status == MessageStatus.DELIVERED
        assert row.provider_sid == accepted.sid
        assert row.sent_at is not None and row.delivered_at is not None
        assert [(e.status, e.source) for e in live.log(message_id)][-2:] == [
            (MessageStatus.SENT, "callback"),
            (MessageStatus.DELIVERED, "callback"),
        ]

        # The dispatcher restarts after the lease ran out: nothing to reconcile, nothing to send.
        restarted = dispatcher_for(
            app,
            live,
            fake,
            callback_base_url=served_app,
            clock=lambda: utcnow() + timedelta(seconds=dispatcher.lease_seconds + 60),
        )
        assert restarted.reap().reconciled == 0
        assert restarted.run_once().claimed == 0
        assert len(fake.messages()) == 1
        assert len(creations(fake)) == 1
    finally:
        fake.stop()


def test_crash_after_accept_without_callbacks_is_adopted_by_the_reaper(
    app: Flask, live: Live, fake: FakeTwilio
) -> None:
    [message_id] = live.enqueue(1, now=utcnow())

    def crash(row: OutboxMessage) -> None:
        raise Crash

    dispatcher = dispatcher_for(app, live, fake, after_provider_accepted=crash)
    with pytest.raises(Crash):
        dispatcher.run_once()
    row = live.get(message_id)
    assert (row.status, row.provider_sid) == (MessageStatus.SENDING, None)

    # While the lease runs, the reaper leaves the row alone (a callback may still come).
    assert dispatcher.reap().reconciled == 0
    assert live.get(message_id).status == MessageStatus.SENDING

    restarted = dispatcher_for(
        app, live, fake, clock=lambda: utcnow() + timedelta(seconds=dispatcher.lease_seconds + 1)
    )
    stats = restarted.reap()
    assert (stats.reconciled, stats.retried, stats.failed) == (1, 0, 0)
    [accepted] = fake.messages()
    row = live.get(message_id)
    assert row.provider_sid == accepted.sid
    assert row.status in DONE
    assert live.log(message_id)[-1].source == "reconcile"
    assert any(c.operation == "list" for c in fake.api_calls())  # it asked before deciding

    assert restarted.run_once().claimed == 0
    assert len(creations(fake)) == 1
    assert len(fake.messages()) == 1


def test_crash_before_the_provider_call_is_sent_once_after_the_lease(
    app: Flask, live: Live, fake: FakeTwilio
) -> None:
    """The other side of the same coin: the provider never got it, so the reaper resends it."""
    [message_id] = live.enqueue(1, now=utcnow())
    real = provider_for(app, fake)

    class DiesBeforeCalling:
        def send_sms(self, **kw: Any) -> Any:
            raise Crash

        def find_messages(self, **kw: Any) -> Any:
            return real.find_messages(**kw)

    with pytest.raises(Crash):
        dispatcher_for(app, live, fake, provider=DiesBeforeCalling()).run_once()
    assert fake.messages() == []

    later = utcnow() + timedelta(seconds=601)
    restarted = dispatcher_for(app, live, fake, clock=lambda: later)
    assert restarted.reap().retried == 1
    assert live.get(message_id).status == MessageStatus.PENDING
    later += timedelta(minutes=10)  # past the backoff
    assert restarted.run_once().sent == 1
    assert len(fake.messages()) == 1
    assert live.get(message_id).status in DONE


# --- b. two dispatchers, 2,000 rows -------------------------------------------------------------


# One dispatcher process: what the scheduler process runs, minus the loop. It reads its settings
# as JSON on stdin, waits for "go" on the next line so both start together, runs one pass and
# prints its stats as JSON.
DISPATCHER_PROCESS = """
import json, sys
from dataclasses import asdict
from sqlmodel import Session
from notifications.dispatcher import Dispatcher
from notifications.providers import TwilioSmsProvider
from server.db import make_engine
import server.models  # every table, so foreign keys resolve

cfg = json.loads(sys.stdin.readline())
# The test's clock, running on from its frozen moment (the suite never reads the real date).
import time
from datetime import datetime, timedelta
started, at = time.monotonic(), datetime.fromisoformat(cfg["now"])
engine = make_engine(cfg["database_url"])
provider = TwilioSmsProvider(
    cfg["account_sid"], cfg["auth_token"], from_number=cfg["from_number"], base_url=cfg["fake_url"]
)
dispatcher = Dispatcher(
    session_factory=lambda: Session(engine, expire_on_commit=False),
    provider=provider,
    callback_base_url=cfg["callback_base_url"],
    clock=lambda: at + timedelta(seconds=time.monotonic() - started),
    rate_per_second=0,
)
with engine.connect():
    pass  # connected and imported before the start signal
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
print(json.dumps(asdict(dispatcher.run_once())), flush=True)
engine.dispose()
"""


@pytest.mark.skipif(
    not ON_POSTGRESQL,
    reason="SQLite runs exactly one dispatcher by design (no FOR UPDATE SKIP LOCKED); "
    "this runs in the PostgreSQL pass",
)
def test_two_dispatcher_processes_send_2000_rows_exactly_once(app: Flask, live: Live) -> None:
    assert live.engine.dialect.name == "postgresql"
    total = 2000
    ids = live.enqueue_many(total, now=utcnow() - timedelta(seconds=1))
    assert len(ids) == total
    # Callbacks off and status changes far away: the fake only records, fast.
    fake = start_fake(app, callback_delay=3600)
    try:
        cfg = {
            "now": utcnow().isoformat(),
            "database_url": live.engine.url.render_as_string(hide_password=False),
            "account_sid": app.config["TWILIO_ACCOUNT_SID"],
            "auth_token": app.config["TWILIO_AUTH_TOKEN"],
            "from_number": app.config["TWILIO_FROM_NUMBER"],
            "fake_url": fake.base_url,
            "callback_base_url": app.config["PUBLIC_BASE_URL"],
        }
        results = run_processes(DISPATCHER_PROCESS, cfg)
    finally:
        messages = fake.messages()
        calls = creations(fake)
        fake.stop()

    # Both really worked, at the same time, and together claimed each row once.
    assert all(r["sent"] > 0 for r in results), results
    assert sum(r["claimed"] for r in results) == total
    assert sum(r["sent"] for r in results) == total

    assert len(calls) == total
    assert len(messages) == total
    bodies = Counter(m.body for m in messages)
    assert len(bodies) == total and max(bodies.values()) == 1
    assert len({m.status_callback for m in messages}) == total  # one message per outbox id

    rows = live.rows()
    assert [r.id for r in rows] == ids
    assert all(r.status in DONE and r.attempts == 1 for r in rows)
    assert {r.provider_sid for r in rows} == {m.sid for m in messages}


# --- c. ten minutes of 500/429 --------------------------------------------------------------


def test_ten_minute_outage_ends_with_every_message_sent_exactly_once(
    app: Flask, live: Live, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Time is simulated (time-machine moves the dispatcher's clock, and the fake's, which runs in
    this process); backoff waits are clock arithmetic, never sleeps.

    The fake's 5xx and 429 record nothing (Twilio never processed the request), but our client
    cannot know that for a 5xx: those rows stay `sending` until the reaper has asked the provider's
    log. Two sends hang after the fake accepted them (the client times out): the reaper must find
    and adopt them, not resend. Jitter is pinned to its low end, the unluckiest case for a retry
    budget counted in attempts.
    """
    monkeypatch.setattr(dispatcher_module, "random", SimpleNamespace(uniform=lambda lo, hi: lo))
    start = datetime(2027, 3, 1, 7, 0, tzinfo=UTC)
    step = 5
    outage = 600
    retry_after = 45

    def fault_for(second: int) -> tuple[str, Any]:
        minute = second // 60
        return [
            ("throttle", None),
            ("error", 500),
            ("throttle", retry_after),
            ("error", 503),
            ("hang", 502),
        ][minute % 5]

    with time_machine.travel(start, tick=False) as traveller:
        reminders = live.enqueue(
            60, now=start, not_before=lambda i: start + timedelta(seconds=(i % 12) * 50)
        )
        alerts = live.enqueue(
            20,
            now=start,
            label="alert",
            priority=PRIORITY_STAFF_ALERT,
            category=MessageCategory.STAFF_ALERT,
            not_before=lambda i: start + timedelta(seconds=(i % 10) * 55),
        )
        dispatcher = dispatcher_for(app, live, fake, provider=provider_for(app, fake, timeout=0.5))
        for second in range(0, outage, step):
            mode, arg = fault_for(second)
            fake.clear_faults()
            if mode == "hang":
                hangs_left = 2 - len(fake.messages())
                if hangs_left > 0:
                    # Twilio takes these two, but its answers never reach us.
                    fake.add_fault("hang", count=hangs_left, seconds=1.0, after_accept=True)
                fake.add_fault("error", count=10**6, status=arg)
            elif mode == "error":
                fake.add_fault("error", count=10**6, status=arg)
            else:
                fake.add_fault("throttle", count=10**6, retry_after=arg)
            now = utcnow()
            dispatcher.run_once()
            dispatcher.reap()
            if arg == retry_after:
                pushed = [r for r in live.rows() if r.last_attempt_at == now]
                assert all(
                    r.status == MessageStatus.PENDING
                    and r.not_before_at >= now + timedelta(seconds=retry_after)
                    for r in pushed
                )
            traveller.shift(step)

        hung = {m.sid for m in fake.messages()}
        assert len(hung) == 2  # only the two hung ones got through
        assert not [r.id for r in live.rows() if r.status == MessageStatus.FAILED], "gave up"

        fake.clear_faults()
        for _ in range(2 * 3600 // step):  # the provider is back; give it two simulated hours
            dispatcher.run_once()
            dispatcher.reap()
            if all(r.status not in outbox.OPEN_STATUSES for r in live.rows()):
                break
            traveller.shift(step)

    rows = live.rows()
    assert [r.id for r in rows] == reminders + alerts
    assert all(r.status in DONE for r in rows), Counter(r.status for r in rows)
    messages = fake.messages()
    bodies = Counter(m.body for m in messages)
    assert sorted(bodies) == sorted(r.body for r in rows)
    assert max(bodies.values()) == 1, [b for b, n in bodies.items() if n > 1]
    assert {r.provider_sid for r in rows} == {m.sid for m in messages}
    # The hung sends were found at the provider and adopted, not sent again.
    adopted = [r for r in rows if r.provider_sid in hung]
    assert len(adopted) == 2
    assert all(live.log(r.id)[-1].source == "reconcile" for r in adopted)  # type: ignore[arg-type]
    # Every other row lived through the outage: at least one failed attempt before its send.
    assert all(r.attempts > 1 for r in rows if r.provider_sid not in hung)


# --- d. 21610: unsubscribed recipient ------------------------------------------------------


def test_unsubscribed_number_is_opted_out_consent_withdrawn_and_care_team_told(
    app: Flask, db: Session, world: factories.World
) -> None:
    a1 = world.participants["A1"]
    phones = {
        ("coordinator", "A"): "+33600000001",
        ("nurse", "A"): "+33600000002",
        ("coordinator", "B"): "+16175550001",
    }
    for key, phone in phones.items():
        staff = world.staff[key]
        staff.phone_e164 = phone
        staff.is_phone_verified = True
        db.add(staff)
    # Whatever the hour this runs at, quiet hours must not hold the reminder back here.
    a1.quiet_hours_start = a1.quiet_hours_end = clock_time(0, 0)
    db.add(a1)
    now = utcnow()
    # Only what this test writes is due (the welcome SMS from enrolment is set aside).
    outbox.cancel_where(db, participant_id=a1.id, now=now, reason="test setup")
    due, _ = outbox.enqueue(
        db,
        dedupe_key="test:21610:due",
        category=MessageCategory.REMINDER,
        kind=MessageKind.REMINDER_BLOOD_DRAW.value,
        to=a1.phone_e164,  # type: ignore[arg-type]
        locale="fr",
        body="Stepdown: rappel A-001",
        priority=PRIORITY_REMINDER,
        participant_id=a1.id,
        now=now,
    )
    later, _ = outbox.enqueue(
        db,
        dedupe_key="test:21610:later",
        category=MessageCategory.REMINDER,
        kind=MessageKind.REMINDER_BLOOD_DRAW.value,
        to=a1.phone_e164,  # type: ignore[arg-type]
        locale="fr",
        body="Stepdown: rappel A-001 (demain)",
        priority=PRIORITY_REMINDER,
        participant_id=a1.id,
        not_before_at=now + timedelta(days=1),
        now=now,
    )
    db.commit()

    fake = start_fake(app)
    try:
        fake.unsubscribe(a1.phone_e164)  # type: ignore[arg-type]
        dispatcher = build_dispatcher(app, provider=provider_for(app, fake), rate_per_second=0)
        stats = dispatcher.run_once()
        assert stats.opted_out == 1
        db.expire_all()

        row = db.get(OutboxMessage, due.id)
        assert row is not None
        assert (row.status, row.error_code, row.attempts) == (MessageStatus.OPTED_OUT, 21610, 1)
        pending = db.get(OutboxMessage, later.id)
        assert pending is not None and pending.status == MessageStatus.OPTED_OUT

        participant = db.get(type(a1), a1.id)
        assert participant is not None and participant.has_sms_consent is False
        [event] = db.exec(
            select(AuditEvent).where(
                AuditEvent.action == "participant.sms_consent",
                AuditEvent.entity_id == str(a1.id),
            )
        ).all()
        assert event.actor == "system:sms-provider"
        assert (event.before, event.after) == (
            {"has_sms_consent": True},
            {"has_sms_consent": False},
        )
        assert "21610" in (event.reason or "")

        notices = db.exec(
            select(OutboxMessage).where(
                OutboxMessage.kind == MessageKind.PARTICIPANT_UNREACHABLE.value
            )
        ).all()
        assert sorted(n.to_e164 for n in notices) == ["+33600000001", "+33600000002"]
        assert all(n.category == MessageCategory.STAFF_NOTICE for n in notices)
        assert all("A-001" in n.body for n in notices)
        # Same pass: the notices went out; the unsubscribed number was tried once, never again.
        assert all(n.status in DONE for n in notices)
        assert sorted(m.to for m in fake.messages()) == ["+33600000001", "+33600000002"]
        assert dispatcher.run_once().claimed == 0
        assert [c.to for c in creations(fake)].count(a1.phone_e164) == 1
    finally:
        fake.stop()


# --- e. priority ----------------------------------------------------------------------------


def test_staff_alert_enqueued_after_100_reminders_is_claimed_first(
    app: Flask, live: Live, fake: FakeTwilio
) -> None:
    now = utcnow()
    live.enqueue(100, now=now, not_before=lambda i: now - timedelta(minutes=10))
    [alert] = live.enqueue(
        1,
        now=now,
        label="alert",
        priority=PRIORITY_STAFF_ALERT,
        category=MessageCategory.STAFF_ALERT,
    )
    dispatcher = dispatcher_for(app, live, fake, batch_size=10)
    first = dispatcher.claim()
    assert first[0].id == alert
    assert [r.priority for r in first] == [PRIORITY_STAFF_ALERT] + [PRIORITY_REMINDER] * 9
    for row in first:
        dispatcher.send(row)
    dispatcher.run_once()
    messages = fake.messages()
    assert len(messages) == 101
    assert messages[0].body == live.get(alert).body


# --- f. per-sender rate limit ----------------------------------------------------------------


def test_per_sender_rate_limit_spaces_sends(app: Flask, live: Live, fake: FakeTwilio) -> None:
    clock = VirtualTime()
    now = utcnow()
    # Interleaved in due order: a0, b0, a1, b1, ...
    live.enqueue(
        10,
        now=now,
        label="a",
        sender="+15550000001",
        not_before=lambda i: now - timedelta(seconds=100 - 2 * i),
    )
    live.enqueue(
        10,
        now=now,
        label="b",
        sender="+15550000002",
        not_before=lambda i: now - timedelta(seconds=99 - 2 * i),
    )
    provider = provider_for(app, fake)
    stamps: list[tuple[str, float]] = []

    class Timed:
        def send_sms(self, **kw: Any) -> Any:
            stamps.append((kw["body"].split()[1], clock.now))
            return provider.send_sms(**kw)

    started = time.monotonic()
    stats = dispatcher_for(
        app,
        live,
        fake,
        provider=Timed(),
        rate_per_second=5,
        rates=MemoryRate(clock=clock.monotonic),
        sleep=clock.sleep,
    ).run_once()
    assert stats.sent == 20
    assert time.monotonic() - started < 5  # no real sleeping happened

    for sender in ("a", "b"):
        times = [t for s, t in stamps if s == sender]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) == 10
        assert min(gaps) >= interval(5) - 1e-9  # 5 a second, paced at 90 %: 4.5 a second
        assert times[-1] - times[0] >= 9 * interval(5) - 1e-9
    # Two senders have two buckets: 20 messages took as long as 10 from one sender.
    assert clock.slept == pytest.approx(9 * interval(5), abs=0.01)
