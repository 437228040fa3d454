"""The long-running background processes, wired: `stepdown scheduler` and `stepdown dispatcher`.

A scheduler process keeps APScheduler's timer and runs the jobs only while it leads
(server/leader.py); a dispatcher sends SMS. Both write a heartbeat row while they live
(server/health), stop cleanly on SIGTERM or Ctrl-C (their row says so, the leader's lock is freed
at once), and leave nothing behind when killed: PostgreSQL drops a dead session's lock, the kernel
a dead process's lock file.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from flask import Flask

from server.db import get_db
from server.health.models import ProcessRole
from server.health.service import Heartbeats, ProcessIdentity

log = logging.getLogger("stepdown.processes")

# A dispatcher renews its row this often (readiness calls it dead after 30 s of silence).
DISPATCHER_BEAT_SECONDS = 5.0
# A SQLite scheduler (the only one) renews its row this often.
SQLITE_BEAT_SECONDS = 2.0


def stop_on_sigterm() -> None:
    """SIGTERM (systemd, `make run`) stops like Ctrl-C, so the `finally` blocks run."""

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)


def dispatcher_heartbeats(
    app: Flask, stop: threading.Event, identity: ProcessIdentity | None = None
) -> Heartbeats:
    """Register a dispatcher's heartbeat row and renew it until `stop`."""
    database = get_db(app)
    heartbeats = Heartbeats(
        database.session, identity or ProcessIdentity.new(ProcessRole.DISPATCHER)
    )
    heartbeats.register()
    heartbeats.beat_forever(stop, DISPATCHER_BEAT_SECONDS)
    return heartbeats


def pass_recorder(heartbeats: Heartbeats) -> Callable[[Any], None]:
    """The dispatcher's hook after each pass: its counts go to the heartbeat row."""

    def record(stats: Any) -> None:
        try:
            counts = {k: v for k, v in vars(stats).items() if not k.startswith("_") and v}
            heartbeats.record("dispatch", {"ok": True, "result": str(counts or "idle")[:200]})
        except Exception:
            log.warning("could not record the dispatch pass", exc_info=True)

    return record


def serve_scheduler(
    app: Flask,
    *,
    with_dispatcher: bool,
    announce: Callable[[str], None] = print,
) -> None:
    """Run a scheduler process until SIGTERM or Ctrl-C (PostgreSQL: leader or standby; SQLite:
    the only one, or refuse with AnotherSchedulerRunning)."""
    from server import messaging, scheduler
    from server.leader import PgLeaderElector, SqliteLeader, libpq_url, name_connections

    database = get_db(app)
    identity = ProcessIdentity.new(ProcessRole.SCHEDULER)
    heartbeats = Heartbeats(database.session, identity)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    sqlite_leader: SqliteLeader | None = None
    elector: PgLeaderElector | None = None
    if database.is_postgresql:
        name_connections(database.engine, identity.app_name)
        elector = PgLeaderElector(
            url=libpq_url(database.engine),
            identity=identity,
            lease=float(app.config.get("SCHEDULER_LEASE_SECONDS", 10)),
            # The escalation job starts every 10 s: a minute with no job at all is a dead timer.
            stall=60.0,
        )
        sched = scheduler.build(app, elector, heartbeats)
        elector.on_elected = lambda: scheduler.run_every_job_now(sched)
        threads.append(elector.start(stop))
        standing = "leader election on PostgreSQL (advisory lock); standby until elected"
    else:
        sqlite_leader = SqliteLeader(database.engine)
        sqlite_leader.acquire()  # or AnotherSchedulerRunning
        heartbeats.register()
        heartbeats.beat(is_leader=True)

        def beat() -> None:
            while not stop.wait(SQLITE_BEAT_SECONDS):
                try:
                    heartbeats.beat(is_leader=True)
                except Exception:
                    log.warning("scheduler heartbeat failed", exc_info=True)

        threads.append(threading.Thread(target=beat, name="heartbeat", daemon=True))
        threads[-1].start()
        sched = scheduler.build(app, sqlite_leader, heartbeats)
        standing = "the only scheduler of this SQLite database"
    sender: Heartbeats | None = None
    if with_dispatcher:
        sender = dispatcher_heartbeats(app, stop)
        threads.append(messaging.start_dispatcher_thread(app, stop))
    stop_on_sigterm()
    announce(f"scheduler {identity.id} ({standing}): " + ", ".join(j.id for j in sched.get_jobs()))
    try:
        sched.start()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if sched.running:
            sched.shutdown(wait=False)
        for thread in threads:
            thread.join(timeout=5)
        if elector is None:
            heartbeats.stop()
        if sender is not None:
            sender.stop()
        if sqlite_leader is not None:
            sqlite_leader.release()


def serve_dispatcher(app: Flask, *, announce: Callable[[str], None] = print) -> None:
    """Run an extra SMS dispatcher process until SIGTERM or Ctrl-C."""
    from server import messaging
    from server.leader import name_connections

    stop = threading.Event()
    stop_on_sigterm()
    identity = ProcessIdentity.new(ProcessRole.DISPATCHER)
    name_connections(get_db(app).engine, identity.app_name)
    heartbeats = dispatcher_heartbeats(app, stop, identity)
    thread = messaging.start_dispatcher_thread(app, stop)
    announce(f"dispatcher {identity.id} running")
    try:
        while thread.is_alive() and not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        thread.join(timeout=10)  # it hands back claimed rows it has not tried
        heartbeats.stop()
