"""Heartbeats, /readyz, Today's banner, the status page and command, the dead-man's switch.

Every heartbeat here is written by the code the processes run (`Heartbeats`, `run_job`) with the
suite's frozen clock, and compared with utcnow(): moving the clock is how a scheduler "stops".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from notifications import outbox
from notifications.models import (
    PRIORITY_STAFF_ALERT,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from server import scheduler
from server.clock import utcnow
from server.db import get_db, make_engine
from server.health import rules
from server.health import service as health
from server.health.models import ProcessHeartbeat, ProcessRole
from server.health.service import Heartbeats, ProcessIdentity


def start(app: Flask, role: ProcessRole) -> Heartbeats:
    """A process starts: its heartbeat row, written as the process writes it."""
    beats = Heartbeats(get_db(app).session, ProcessIdentity.new(role))
    beats.register()
    return beats


class Leading:
    """A leadership that always leads (the SQLite scheduler's)."""

    is_leader = True

    def guard(self, session: Session) -> None:
        pass

    def job_started(self) -> None:
        pass


class Standing:
    """A standby's leadership: never runs a job."""

    is_leader = False

    def guard(self, session: Session) -> None:
        raise AssertionError("a standby opens no job session")

    def job_started(self) -> None:
        raise AssertionError("a standby starts no job")


def spec(job_id: str) -> scheduler.JobSpec:
    return next(s for s in scheduler.job_specs() if s.id == job_id)


def tick(app: Flask, beats: Heartbeats, job_id: str = "alerts.watchdog") -> Any:
    """The scheduler leader runs one job, as APScheduler would call it."""
    return scheduler.run_job(app, spec(job_id), Leading(), beats)


def readyz(client: Any) -> tuple[int, dict[str, Any]]:
    resp = client.get("/readyz")
    return resp.status_code, resp.get_json()


# --- readiness ----------------------------------------------------------------------------------


def test_readyz_is_503_within_2_minutes_of_every_scheduler_stopping_and_200_when_one_starts(
    app, db, client, frozen_clock
):
    status, body = readyz(client)
    assert status == 503  # nothing has ever run
    assert {p["code"] for p in body["problems"]} == {"no_leader_tick", "no_dispatcher"}
    assert "no scheduler has ever run a job" in body["reasons"]

    leader = start(app, ProcessRole.SCHEDULER)
    dispatcher = start(app, ProcessRole.DISPATCHER)
    assert tick(app, leader) == {"stalled": 0, "unsent_sms": 0}
    status, body = readyz(client)
    assert (status, body["status"], body["reasons"]) == (200, "ready", [])
    assert body["scheduler_last_job_at"] == utcnow().isoformat()

    # Every scheduler stops (the dispatcher lives on, beating every few seconds).
    stopped_at = utcnow()
    for seconds in (30, 60, 90, 120):
        frozen_clock.move_to(stopped_at + timedelta(seconds=seconds))
        dispatcher.beat()
        assert readyz(client)[0] == 200, seconds
    frozen_clock.move_to(stopped_at + timedelta(seconds=121))
    dispatcher.beat()
    status, body = readyz(client)
    assert status == 503 and body["status"] == "not_ready"
    assert [p["code"] for p in body["problems"]] == ["no_leader_tick"]
    assert body["reasons"] == ["no scheduler leader has run a job for 121 s"]
    assert client.get("/readyz").headers["Retry-After"] == "10"
    assert client.get("/healthz").status_code == 200  # liveness is another question

    # One scheduler starts (a new process: a new row) and runs its first job.
    restarted = start(app, ProcessRole.SCHEDULER)
    assert readyz(client)[0] == 503  # started is not enough: it must have run a job
    tick(app, restarted, "outbox.expire_stale")
    assert readyz(client)[0] == 200


def test_a_standby_runs_no_job_and_does_not_count_as_a_tick(app, db, client):
    standby = start(app, ProcessRole.SCHEDULER)
    start(app, ProcessRole.DISPATCHER)
    assert scheduler.run_job(app, spec("alerts.watchdog"), Standing(), standby) is None
    status, body = readyz(client)
    assert status == 503 and body["problems"][0]["code"] == "no_leader_tick"


def test_readyz_is_503_when_no_dispatcher_is_alive(app, db, client, frozen_clock):
    leader = start(app, ProcessRole.SCHEDULER)
    dispatcher = start(app, ProcessRole.DISPATCHER)
    tick(app, leader)
    assert readyz(client)[0] == 200
    frozen_clock.shift(timedelta(seconds=31))
    tick(app, leader)
    status, body = readyz(client)
    assert status == 503 and [p["code"] for p in body["problems"]] == ["no_dispatcher"]
    assert body["reasons"] == ["no SMS dispatcher alive (last heard 31 s ago)"]
    dispatcher.beat()
    assert readyz(client)[0] == 200
    dispatcher.stop()  # a clean exit is not alive either
    assert readyz(client)[0] == 503


def staff_alert(db: Session, key: str, **values: Any) -> OutboxMessage:
    row, _ = outbox.enqueue(
        db,
        dedupe_key=key,
        category=MessageCategory.STAFF_ALERT,
        kind="alert_new",
        to="+33600000001",
        locale="en",
        body="Action needed",
        priority=PRIORITY_STAFF_ALERT,
        now=utcnow(),
        not_before_at=values.pop("not_before_at", None),
    )
    for name, value in values.items():
        setattr(row, name, value)
    db.add(row)
    db.flush()
    return row


def test_readyz_is_503_when_a_due_staff_alert_waits_more_than_60_s(app, db, client, frozen_clock):
    leader, dispatcher = start(app, ProcessRole.SCHEDULER), start(app, ProcessRole.DISPATCHER)
    now = utcnow()
    staff_alert(db, "later", not_before_at=now + timedelta(hours=10))  # business hours: not due
    row = staff_alert(db, "due", not_before_at=now - timedelta(seconds=60))
    tick(app, leader)
    assert readyz(client)[0] == 200  # 60 s is the limit, not yet over it
    frozen_clock.shift(timedelta(seconds=2))
    tick(app, leader)
    dispatcher.beat()
    status, body = readyz(client)
    assert status == 503 and [p["code"] for p in body["problems"]] == ["staff_alert_unsent"]
    assert body["oldest_unsent_staff_alert_since"] == (now - timedelta(seconds=60)).isoformat()
    # Retried after an error, its not_before_at moves on; it has waited since its first try.
    outbox.log(db, row, MessageStatus.SENDING, "dispatcher", at=now - timedelta(seconds=30))
    row.not_before_at = utcnow() + timedelta(seconds=20)
    db.add(row)
    db.flush()
    assert health.oldest_unsent_staff_alert(db, utcnow()) == now - timedelta(seconds=30)
    assert readyz(client)[0] == 200
    frozen_clock.shift(timedelta(seconds=29))
    tick(app, leader)
    dispatcher.beat()
    assert readyz(client)[0] == 503
    # Handed to the provider: no longer waiting.
    outbox.advance(db, row, MessageStatus.SENT, source="dispatcher", now=utcnow())
    db.flush()
    assert readyz(client)[0] == 200


def test_a_read_only_database_is_not_ready(database_url):
    engine = make_engine(database_url, poolclass=NullPool)  # its own: nothing goes back to a pool
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":  # as on a hot standby
                conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            else:
                conn.exec_driver_sql("PRAGMA query_only = ON")
            conn.commit()
            with Session(bind=conn) as session:
                assert health.database_is_read_only(session)
                problems = health.readiness(session, utcnow()).problems
                assert "database_read_only" in {p.code for p in problems}
        with engine.connect() as conn, Session(bind=conn) as session:
            assert not health.database_is_read_only(session)
    finally:
        engine.dispose()


def test_readiness_rules_name_every_reason():
    now = utcnow()
    facts = rules.Facts(
        leader_tick_at=now - timedelta(minutes=7),
        dispatcher_beat_at=None,
        oldest_unsent_staff_alert_since=now - timedelta(seconds=95),
        is_read_only=True,
    )
    assert [p.message for p in rules.readiness(facts, now)] == [
        "no scheduler leader has run a job for 7 min",
        "no SMS dispatcher has ever run",
        "a staff alert SMS has been due and unsent for 95 s",
        "the database is read-only",
    ]
    fine = rules.Facts(now, now - timedelta(seconds=30), now - timedelta(seconds=60), False)
    assert rules.readiness(fine, now) == []


# --- Today's banner ------------------------------------------------------------------------------


BANNER = 'class="system-down"'


def test_today_shows_a_red_banner_while_the_scheduler_is_stale(app, db, web_as, frozen_clock):
    web = web_as("nurse", "A")
    page = web.text("/")
    assert BANNER in page and "have not run since Stepdown started" in page
    leader, dispatcher = start(app, ProcessRole.SCHEDULER), start(app, ProcessRole.DISPATCHER)
    tick(app, leader)
    assert BANNER not in web.text("/")
    frozen_clock.shift(timedelta(minutes=2, seconds=1))
    dispatcher.beat()
    page = web.text("/")
    assert BANNER in page
    assert "alert escalation and reminders have not run for 121 s" in page
    assert "no SMS is being sent" not in page
    assert BANNER in web_as("monitor", "A").text("/")  # every member of staff sees it
    tick(app, leader)
    assert BANNER not in web.text("/")


# --- status page and command ---------------------------------------------------------------------


def test_the_status_page_and_command_show_the_same_processes(app, db, web_as, frozen_clock):
    leader = start(app, ProcessRole.SCHEDULER)
    leader.beat(is_leader=True, epoch=4)
    tick(app, leader)
    standby = start(app, ProcessRole.SCHEDULER)
    dispatcher = start(app, ProcessRole.DISPATCHER)
    frozen_clock.shift(timedelta(seconds=40))
    dispatcher.beat()
    standby.beat()

    page = web_as("admin", "A").text("/admin/status")
    assert "Not ready" not in page and "Ready" in page
    for hb in (leader, standby, dispatcher):
        assert hb.identity.id in page
    assert "leader" in page and "standby" in page and "stale" in page  # the leader: 40 s silent
    assert "alerts.watchdog" in page and "{&#39;stalled&#39;: 0, &#39;unsent_sms&#39;: 0}" in page
    assert web_as("nurse", "A").get("/admin/status").status_code == 403

    report = health.status(db, utcnow())
    lines = health.status_lines(report)
    assert lines[0] == "READY"
    text = "\n".join(lines)
    for hb in (leader, standby, dispatcher):
        assert hb.identity.id in text
    assert "alerts.watchdog: {'stalled': 0, 'unsent_sms': 0}" in text
    as_json = health.status_dict(report)
    assert as_json["readiness"]["status"] == "ready"
    standing = {p["id"]: (p["standing"], p["state"]) for p in as_json["processes"]}
    assert standing[leader.identity.id] == ("was leader", "stale")
    assert standing[standby.identity.id] == ("standby", "alive")
    assert standing[dispatcher.identity.id] == ("—", "alive")


def test_stepdown_status_exits_1_when_not_ready(app, db):
    result = app.test_cli_runner().invoke(args=["status", "--json"])
    assert result.exit_code == 1, result.output
    body = json.loads(result.output)
    assert body["readiness"]["status"] == "not_ready"
    leader, _ = start(app, ProcessRole.SCHEDULER), start(app, ProcessRole.DISPATCHER)
    tick(app, leader)
    result = app.test_cli_runner().invoke(args=["status"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "READY"


# --- the dead-man's switch -----------------------------------------------------------------------


class Monitor:
    """A Healthchecks-style monitor on 127.0.0.1: records every ping."""

    def __init__(self) -> None:
        self.pings: list[tuple[str, str]] = []
        pings = self.pings

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                pings.append((self.path, self.rfile.read(length).decode()))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/3f1c0b2e"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def monitor(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Monitor]:
    fake = Monitor()
    monkeypatch.setitem(app.config, "HEARTBEAT_URL", fake.url)
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_the_leader_pings_the_heartbeat_url_with_readiness(app, db, monitor, frozen_clock):
    leader = start(app, ProcessRole.SCHEDULER)
    dispatcher = start(app, ProcessRole.DISPATCHER)
    assert tick(app, leader, "health.deadman") == "ok -> HTTP 200"
    assert monitor.pings == [("/ping/3f1c0b2e", "ready")]
    assert leader.results["health.deadman"]["ok"] is True

    # The dispatchers died: the ping says so (the monitor alerts at once on /fail).
    frozen_clock.shift(timedelta(minutes=1))
    assert tick(app, leader, "health.deadman") == "fail -> HTTP 200"
    assert monitor.pings[-1] == (
        "/ping/3f1c0b2e/fail",
        "no SMS dispatcher alive (last heard 60 s ago)",
    )
    dispatcher.beat()
    tick(app, leader, "health.deadman")
    assert monitor.pings[-1] == ("/ping/3f1c0b2e", "ready")


def test_no_leader_no_ping_and_a_dead_monitor_is_a_failed_job(app, db, monitor):
    standby = start(app, ProcessRole.SCHEDULER)
    scheduler.run_job(app, spec("health.deadman"), Standing(), standby)
    assert monitor.pings == []  # silence: the monitor's grace period runs out and it alerts
    monitor.server.shutdown()
    monitor.server.server_close()
    leader = start(app, ProcessRole.SCHEDULER)
    with pytest.raises(OSError):
        tick(app, leader, "health.deadman")
    assert leader.results["health.deadman"]["ok"] is False
    # A failing job is no tick: a leader whose every job fails is reported, not "ready".
    row = db.get(ProcessHeartbeat, leader.identity.id)
    assert row is not None and row.last_tick_at is None
    assert row.last_results["health.deadman"]["error"].startswith("URLError")


def test_the_leader_prunes_heartbeats_of_processes_gone_a_week(app, db, frozen_clock):
    old = start(app, ProcessRole.DISPATCHER)
    frozen_clock.shift(timedelta(days=7, seconds=1))
    leader = start(app, ProcessRole.SCHEDULER)
    tick(app, leader, "health.deadman")
    ids = set(db.exec(sa.select(ProcessHeartbeat.id)).scalars())  # type: ignore[call-overload]
    assert old.identity.id not in ids and leader.identity.id in ids


def test_banner_and_ping_words():
    assert rules.words(timedelta(seconds=59)) == "59 s"
    assert rules.words(timedelta(minutes=7, seconds=5)) == "7 min"
    assert rules.words(timedelta(hours=3, minutes=5)) == "3 h 5 min"
    assert rules.words(timedelta(days=3)) == "3 days"
    with time_machine.travel(utcnow(), tick=False):
        assert rules.banner(utcnow(), utcnow(), utcnow()) is None
