"""Issue 13, items 2 and 6: one send rate per sender across dispatchers, and no wait for a staff
alert.

What is proved here, with the real twilio library against the in-process fake Twilio:
- two dispatcher processes sharing a sender's slots in PostgreSQL, or in Redis, never send from
  it faster than its rate (gaps and one-second windows counted at the fake); the same two
  processes each limiting only themselves (the old behaviour) send twice as fast: the test can
  tell;
- the urgent lane sends a staff alert while the routine lane works through a reminder backlog
  on the same sender within one slot, and at once from a sender of its own;
- a claim takes what its sender sends in about a second, a nurse's alerts counting as one SMS
  (her bundle); the others wait in the queue, where later alerts can join their nurse's bundle;
- a staff alert's lease is seconds: after a crash between Twilio's acceptance and our record,
  or an answer lost in transit, the reaper settles it from the provider's log within a minute,
  never by sending it again; a row whose turn comes too late in its lease goes back unsent;
- a 429 pauses the sender for every caller (Retry-After).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlmodel import col

from notifications.dispatcher import Dispatcher, Lane
from notifications.fake_twilio import FakeTwilio
from notifications.models import (
    PRIORITY_STAFF_ALERT,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from notifications.ratelimit import MemoryRate
from server.clock import utcnow
from tests.notifications.harness import (
    DONE,
    REDIS_URL,
    Crash,
    Live,
    VirtualTime,
    creations,
    dispatcher_for,
    provider_for,
    redis_keyspace,
    run_processes,
    start_fake,
)

ON_POSTGRESQL = bool(os.environ.get("STEPDOWN_TEST_DATABASE_URL"))
ALERT_SENDER = "+15005550009"

only_postgresql = pytest.mark.skipif(
    not ON_POSTGRESQL,
    reason="several dispatcher processes need PostgreSQL (SQLite runs one); the PostgreSQL "
    "pass runs this",
)


def sender_of(message: Any) -> str:
    return str(message.from_ or message.messaging_service_sid)


def max_in_window(times: list[float], window: float) -> int:
    """The most sends in any `window` seconds."""
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t < start + window))
    return best


# --- two processes, one rate -------------------------------------------------------------------

# One dispatcher process (the routine lane a `stepdown dispatcher` runs), its slots in the store
# named on stdin; it waits for "go" so both start together, runs until nothing is due.
DISPATCHER_PROCESS = """
import json, sys
from dataclasses import asdict
from sqlmodel import Session
from notifications.dispatcher import Dispatcher, Lane
from notifications.providers import TwilioSmsProvider
from notifications.ratelimit import MemoryRate, rate_store
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
rates = (
    MemoryRate()
    if cfg["store"] == "memory"
    else rate_store(redis_url=cfg["redis_url"], engine=engine, prefix=cfg["prefix"])
)
dispatcher = Dispatcher(
    session_factory=lambda: Session(engine, expire_on_commit=False),
    provider=provider,
    callback_base_url=cfg["callback_base_url"],
    clock=lambda: at + timedelta(seconds=time.monotonic() - started),
    sender=cfg["from_number"],
    rate_per_second=cfg["rate"],
    rates=rates,
    lane=Lane.ROUTINE,
)
with engine.connect():
    pass  # connected and imported before the start signal
dispatcher.warm()  # the twilio client's lazy imports: ~0.1 s on the first send otherwise
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
print(json.dumps(asdict(dispatcher.run_once())), flush=True)
engine.dispose()
"""


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    with redis_keyspace(REDIS_URL) as prefix:
        yield prefix


def two_dispatchers(app: Flask, live: Live, *, store: str, rate: float, rows: int, **kw: Any):
    """Two dispatcher processes send `rows` due reminders from one long code; the fake's
    arrival times (monotonic, same clock for both) of every message, and each process's stats."""
    sender = f"+1555{uuid.uuid4().int % 10**7:07d}"  # fresh slots in the store
    live.enqueue_many(rows, now=utcnow() - timedelta(seconds=1))
    fake = start_fake(app, callback_delay=3600)
    try:
        cfg = {
            "now": utcnow().isoformat(),
            "database_url": live.engine.url.render_as_string(hide_password=False),
            "account_sid": app.config["TWILIO_ACCOUNT_SID"],
            "auth_token": app.config["TWILIO_AUTH_TOKEN"],
            "from_number": sender,
            "fake_url": fake.base_url,
            "callback_base_url": app.config["PUBLIC_BASE_URL"],
            "store": store,
            "rate": rate,
            "redis_url": kw.get("redis_url"),
            "prefix": kw.get("prefix", "stepdown-test"),
        }
        results = run_processes(DISPATCHER_PROCESS, cfg)
    finally:
        messages = fake.messages()
        fake.stop()
        if store == "postgresql":
            with live.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM sms_sender_rate WHERE sender = %s", (sender,))
    assert {sender_of(m) for m in messages} == {sender}
    assert all(r["sent"] > 0 for r in results), results  # both really sent
    assert sum(r["sent"] for r in results) == rows == len(messages)
    assert all(r.status in DONE for r in live.rows())
    return sorted(m.received_monotonic for m in messages)


RATE = 10.0  # a fast "long code", so the test takes seconds


@only_postgresql
def test_two_dispatcher_processes_keep_one_rate_through_postgresql(app: Flask, live: Live) -> None:
    times = two_dispatchers(app, live, store="postgresql", rate=RATE, rows=40)
    assert_one_rate(times)
    assert times[-1] - times[0] >= (len(times) - 1) / RATE - 0.05


def assert_one_rate(times: list[float]) -> None:
    """What the provider would count: never more than RATE arrivals in any second, and never two
    slots' worth at once. The store's clock grants the slots 1/(0.9 RATE) apart; arrivals at the
    fake jitter (a busy machine delays one send and not the next), so a single gap proves
    nothing, but any three arrivals span about two intervals."""
    assert max_in_window(times, 1.0) <= RATE, max_in_window(times, 1.0)
    spans = [c - a for a, c in zip(times, times[2:], strict=False)]
    assert min(spans) > 1.5 / RATE, min(spans)


@only_postgresql
def test_two_dispatcher_processes_keep_one_rate_through_redis(
    app: Flask, live: Live, redis_prefix: str
) -> None:
    times = two_dispatchers(
        app, live, store="redis", rate=RATE, rows=40, redis_url=REDIS_URL, prefix=redis_prefix
    )
    assert_one_rate(times)


@only_postgresql
def test_without_a_shared_store_two_processes_double_the_rate(app: Flask, live: Live) -> None:
    """The control: what issue 13 measured (each process limiting only itself)."""
    times = two_dispatchers(app, live, store="memory", rate=RATE, rows=40)
    assert max_in_window(times, 1.0) >= 1.6 * RATE


# --- lanes ------------------------------------------------------------------------------------


def run_lanes(dispatchers: list[Dispatcher], stop: threading.Event) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=d.run_forever, args=(stop, lambda s: stop.wait(min(s, 0.05))))
        for d in dispatchers
    ]
    for thread in threads:
        thread.start()
    return threads


@pytest.mark.parametrize("own_sender", [False, True], ids=["shared sender", "alert sender"])
def test_a_staff_alert_does_not_wait_for_the_reminder_backlog(
    app: Flask,
    live: Live,
    fake: FakeTwilio,
    own_sender: bool,
) -> None:
    rate = 4.0  # reminders every 0.25 s
    now = utcnow()
    live.enqueue(30, now=now, not_before=lambda i: now - timedelta(seconds=30))
    rates = MemoryRate()
    common: dict[str, Any] = {
        "rates": rates,
        "rate_per_second": rate,
        "alert_sender": ALERT_SENDER if own_sender else None,
        "alert_rate_per_second": 1.0,
    }
    urgent = dispatcher_for(app, live, fake, lane=Lane.URGENT, **common)
    routine = dispatcher_for(app, live, fake, lane=Lane.ROUTINE, **common)
    for lane in (urgent, routine):
        lane.warm()  # as start_dispatcher_thread does: a cold first send arrives late
    stop = threading.Event()
    threads = run_lanes([urgent, routine], stop)
    try:
        fake.wait_until(lambda: len(fake.messages()) >= 5, timeout=10)
        enqueued = time.monotonic()
        [alert] = live.enqueue(
            1,
            now=utcnow(),
            label="alert",
            priority=PRIORITY_STAFF_ALERT,
            category=MessageCategory.STAFF_ALERT,
        )
        body = live.get(alert).body
        fake.wait_until(lambda: any(m.body == body for m in fake.messages()), timeout=10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    messages = fake.messages()
    [sent] = [m for m in messages if m.body == body]
    waited = sent.received_monotonic - enqueued
    reminders_between = [
        m for m in messages if enqueued < m.received_monotonic < sent.received_monotonic
    ]
    # (Times on a busy CI machine: the lane's 50 ms poll and SQLite's write lock add up.)
    if own_sender:
        assert sender_of(sent) == ALERT_SENDER
        assert waited < 0.5, waited  # no slot to wait for: the poll, the claim, the call
    else:
        assert sender_of(sent) == app.config["TWILIO_FROM_NUMBER"]
        # At most the one slot in progress: never behind reminders already claimed (the
        # routine lane holds up to a second's worth of them).
        assert len(reminders_between) <= 1, len(reminders_between)
        assert waited < 1 / rate + 0.5, waited
    # The shared sender's rate held while both lanes ran.
    shared = sorted(
        m.received_monotonic for m in messages if sender_of(m) == app.config["TWILIO_FROM_NUMBER"]
    )
    # Slots are granted 1/rate apart; an HTTP call's own jitter may bring two arrivals closer,
    # never two slots' worth: any three sends span at least ~two intervals.
    assert all(c - a > 1.5 / rate for a, _, c in zip(shared, shared[1:], shared[2:])), shared
    assert max_in_window(shared, 1.0) <= rate + 1
    # Stopping handed back every reminder not tried.
    assert not [r for r in live.rows() if r.status == MessageStatus.SENDING]


def test_a_claim_takes_one_second_of_its_sender_counting_a_nurses_alerts_as_one_sms(
    app: Flask,
    live: Live,
    fake: FakeTwilio,
) -> None:
    now = utcnow()
    live.enqueue(10, now=now, not_before=lambda i: now - timedelta(seconds=1))
    alerts = live.enqueue(
        6,
        now=now,
        label="alert",
        priority=PRIORITY_STAFF_ALERT,
        category=MessageCategory.STAFF_ALERT,
    )
    # Alerts 0, 1 and 2 are for one nurse (a bundle, one SMS); 3, 4 and 5 for three others.
    with live.engine.begin() as conn:
        for i, message_id in enumerate(alerts):
            conn.execute(
                sa.update(OutboxMessage)
                .where(col(OutboxMessage.id) == message_id)
                .values(
                    to_e164="+12020000001" if i < 3 else f"+1202000010{i}",
                    bundle_item={"code": f"P-{i}", "ack": f"{100000 + i}"},
                )
            )
    everything = dispatcher_for(app, live, fake, rate_per_second=2)
    claimed = everything.claim()
    # Two SMS a second: the nurse's bundle (all three of her alerts) and the next nurse's alert.
    bundled = [r for r in claimed if r.priority == PRIORITY_STAFF_ALERT]
    assert [r.id for r in bundled] == [alerts[0], alerts[3]]
    assert "P-0" in bundled[0].body and "P-2" in bundled[0].body
    assert [r.bundled_into_id for r in map(live.get, alerts[1:3])] == [alerts[0]] * 2
    assert len([r for r in claimed if r.priority != PRIORITY_STAFF_ALERT]) == 2
    leases = {r.id: r.lease_until_at - r.last_attempt_at for r in claimed}  # type: ignore[operator]
    # Staff alerts: seconds (each its turn at the sender later); reminders: minutes.
    assert leases[alerts[0]] == timedelta(seconds=everything.urgent_lease_seconds)
    assert all(leases[r.id] >= timedelta(minutes=10) for r in claimed if r.id not in alerts)
    pending = [r for r in live.rows() if r.status == MessageStatus.PENDING]
    # What this claim left for anyone: 8 reminders and the two other nurses' alerts.
    assert sorted(r.id for r in pending if r.priority == PRIORITY_STAFF_ALERT) == alerts[4:]
    assert len(pending) == 10
    routine = dispatcher_for(app, live, fake, rate_per_second=2, lane=Lane.ROUTINE)
    assert [r.priority for r in routine.claim()] == [50, 50]
    urgent = dispatcher_for(app, live, fake, rate_per_second=2, lane=Lane.URGENT)
    assert sorted(r.id for r in urgent.claim()) == alerts[4:]
    unlimited = dispatcher_for(app, live, fake, rate_per_second=0, lane=Lane.ROUTINE)
    assert len(unlimited.claim()) == 6  # no rate, no cap: the rest at once


# --- the urgent lease and the reaper ----------------------------------------------------------


def alert_rows(live: Live, count: int = 1) -> list[int]:
    return live.enqueue(
        count,
        now=utcnow(),
        label="alert",
        priority=PRIORITY_STAFF_ALERT,
        category=MessageCategory.STAFF_ALERT,
    )


def test_a_crash_after_twilio_took_an_alert_is_settled_within_a_minute_without_resending(
    app: Flask,
    live: Live,
    fake: FakeTwilio,
) -> None:
    [message_id] = alert_rows(live)

    def crash(row: Any) -> None:
        raise Crash

    dispatcher = dispatcher_for(app, live, fake, after_provider_accepted=crash, lane=Lane.URGENT)
    with pytest.raises(Crash):
        dispatcher.run_once()
    assert live.get(message_id).status == MessageStatus.SENDING
    lease = dispatcher.urgent_lease_seconds
    assert lease <= 20

    # Another dispatcher's urgent lane reaps every 2 s: at the lease's end plus one round.
    later = dispatcher_for(
        app, live, fake, lane=Lane.URGENT, clock=lambda: utcnow() + timedelta(seconds=lease + 2)
    )
    stats = later.reap()
    assert (stats.reconciled, stats.retried) == (1, 0)
    [accepted] = fake.messages()
    row = live.get(message_id)
    assert row.provider_sid == accepted.sid and row.status in DONE
    assert later.run_once().claimed == 0
    assert len(creations(fake)) == 1


def test_an_alert_whose_answer_was_lost_is_found_in_the_provider_log(
    app: Flask,
    live: Live,
    fake: FakeTwilio,
) -> None:
    [message_id] = alert_rows(live)
    fake.hang_next(2.0, after_accept=True)  # Twilio took it; its answer never reaches us
    dispatcher = dispatcher_for(
        app, live, fake, provider=provider_for(app, fake, timeout=0.3), lane=Lane.URGENT
    )
    assert dispatcher.run_once().ambiguous == 1
    row = live.get(message_id)
    assert row.status == MessageStatus.SENDING and row.provider_sid is None
    assert dispatcher.reap().reconciled == 0  # its lease runs: a callback may still come
    later = dispatcher_for(
        app,
        live,
        fake,
        lane=Lane.URGENT,
        clock=lambda: utcnow() + timedelta(seconds=dispatcher.urgent_lease_seconds + 1),
    )
    assert later.reap().reconciled == 1
    assert live.get(message_id).status in DONE
    fake.wait_until(lambda: len(creations(fake)) == 1)  # the hung answer, logged once it ends
    assert len(fake.messages()) == 1 and len(creations(fake)) == 1


def test_a_row_whose_turn_comes_too_late_in_its_lease_goes_back_unsent(
    app: Flask,
    live: Live,
    fake: FakeTwilio,
) -> None:
    [message_id] = alert_rows(live)
    moment = [utcnow()]
    dispatcher = dispatcher_for(app, live, fake, clock=lambda: moment[0])
    [row] = dispatcher.claim()
    moment[0] += timedelta(seconds=dispatcher.urgent_lease_seconds - 5)  # inside the margin
    assert dispatcher.send(row).sent == 0
    assert fake.messages() == []
    back = live.get(message_id)
    assert (back.status, back.attempts) == (MessageStatus.PENDING, 0)


def test_a_429_pauses_the_sender_for_everyone(
    app: Flask,
    live: Live,
    fake: FakeTwilio,
) -> None:
    clock = VirtualTime()
    rates = MemoryRate(clock=clock.monotonic)
    ids = live.enqueue(2, now=utcnow())
    fake.throttle_next(1, retry_after=7)
    dispatcher = dispatcher_for(app, live, fake, rate_per_second=10, rates=rates, sleep=clock.sleep)
    stats = dispatcher.run_once()
    assert (stats.retried, stats.sent) == (1, 1)
    # The second row waited out the Retry-After (not just 0.1 s), as would every dispatcher
    # sharing the store: the pause is the sender's, not the row's.
    assert clock.slept >= 7
    assert [live.get(i).status for i in ids].count(MessageStatus.PENDING) == 1


# --- the process wiring -----------------------------------------------------------------------


def test_the_dispatcher_thread_runs_both_lanes_and_stops(
    app: Flask, live: Live, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.messaging import start_dispatcher_thread

    monkeypatch.setitem(app.config, "TWILIO_BASE_URL", fake.base_url)
    monkeypatch.setitem(app.config, "SMS_RATE_PER_SECOND", 0)  # no slots left in the store
    monkeypatch.setitem(app.config, "TWILIO_ALERT_FROM_NUMBER", ALERT_SENDER)
    live.enqueue(3, now=utcnow())
    [alert] = alert_rows(live)
    stop = threading.Event()
    thread = start_dispatcher_thread(app, stop)
    try:
        fake.wait_until(lambda: len(fake.messages()) == 4, timeout=10)
        lanes = {t.name for t in threading.enumerate()}
        assert {"dispatcher", "dispatcher-urgent"} <= lanes
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    assert "dispatcher-urgent" not in {t.name for t in threading.enumerate()}
    by_body = {m.body: m for m in fake.messages()}
    assert sender_of(by_body[live.get(alert).body]) == ALERT_SENDER
    participants_sender = app.config["TWILIO_FROM_NUMBER"]
    assert {sender_of(m) for m in fake.messages()} == {ALERT_SENDER, participants_sender}
    assert all(r.status in DONE for r in live.rows())
