"""Which scheduler process leads: any number may run, on any number of machines, exactly one runs
the jobs at a time, and a standby takes over within seconds of the leader's death.

PostgreSQL (`PgLeaderElector`): the leader holds a session-level advisory lock on a connection of
its own. The database guarantees one holder; the lock goes with the holder's session, so:

- kill -9 of the leader closes its socket: its backend ends and drops the lock; a standby, which
  tries every `poll` second, has it within about a second;
- a hung leader (stopped, deadlocked, its thread starved) or one cut off from the database keeps
  its session open, but stops renewing its heartbeat. A standby watches the holder's beat count on
  its own monotonic clock; unchanged for `lease` seconds, it ends every session of the holder
  (`pg_terminate_backend`, matched by the application_name each process gives its connections),
  which releases the lock and kills the holder's open transactions, then takes the lock;
- the old leader stops acting first: it counts as leader only until `self_lease` seconds (less
  than `lease`) after its last successful renewal, and every job transaction it commits first
  checks, under FOR SHARE, that the lease epoch is still its own (`guard`). A takeover bumps the
  epoch (waiting for, or ending, any transaction in the middle of that check), so once the new
  leader has begun, nothing of the old one commits. Jobs are idempotent: the brief overlap before
  that point, if any, is harmless.

SQLite (`SqliteLeader`): one machine, one scheduler. A second `stepdown scheduler` on the same
database file refuses to start (an exclusive lock on a file beside the database).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.clock import utcnow
from server.health.service import LEASE_NAME, Heartbeats, ProcessIdentity

log = logging.getLogger("stepdown.leader")

# pg_try_advisory_lock(int4, int4): 'STEP' and the scheduler's number. Advisory locks are per
# database, so test and benchmark databases on one server never meet.
LOCK_CLASS = 0x53544550
LOCK_ID = 1
# Defaults (seconds): try/renew every second; a holder silent for 10 s is fenced; a leader that
# could not renew for 7 s stops acting by itself. Failover after a hang: about 11 s.
POLL_SECONDS = 1.0
LEASE_SECONDS = 10.0
SELF_LEASE_FRACTION = 0.7


class NotLeader(RuntimeError):
    """This process may not commit as the scheduler leader (the lease moved or expired)."""


class AnotherSchedulerRunning(RuntimeError):
    """A second scheduler on a single-machine (SQLite) installation."""


class Leadership(Protocol):
    """What the scheduler asks of an elector."""

    @property
    def is_leader(self) -> bool: ...

    def guard(self, session: Session) -> None: ...

    def job_started(self) -> None: ...


# --- connection naming ----------------------------------------------------------------------------


def name_connections(engine: Engine, app_name: str) -> None:
    """Give every new PostgreSQL connection of this engine the process's application_name (a
    standby fences a hung leader by it) and TCP keepalives, so a call over a cut network fails
    in seconds instead of hanging for the kernel's 15 minutes."""
    if engine.dialect.name != "postgresql":
        return

    @event.listens_for(engine, "do_connect")
    def _name(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["application_name"] = app_name
        for key, value in KEEPALIVES.items():
            cparams.setdefault(key, value)

    engine.dispose()  # connections opened before this carry no name


KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
    "connect_timeout": 5,
}


def libpq_url(engine: Engine) -> str:
    """The engine's URL as libpq takes it (for the elector's own psycopg connection)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


# --- PostgreSQL ------------------------------------------------------------------------------


class PgLeaderElector:
    """Leader election on PostgreSQL (see the module docstring). `step()` is one round; `run()`
    loops it every `poll` seconds; tests drive `step()` with their own monotonic clock."""

    def __init__(
        self,
        *,
        url: str,
        identity: ProcessIdentity,
        poll: float = POLL_SECONDS,
        lease: float = LEASE_SECONDS,
        self_lease: float | None = None,
        stall: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = utcnow,
        on_elected: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.identity = identity
        self.poll = poll
        self.lease = lease
        self.self_lease = self_lease if self_lease is not None else lease * SELF_LEASE_FRACTION
        # A leader whose scheduler started no job for this long resigns (its timer is dead).
        self.stall = stall
        self.monotonic = monotonic
        self.clock = clock
        self.on_elected = on_elected
        self.epoch: int | None = None
        self.leader_since: float | None = None
        self._leader = False
        self._renewed = float("-inf")
        self._conn: Any = None
        self._registered = False
        self._seen: tuple[Any, ...] | None = None
        self._seen_since = 0.0
        self._resigned_until = float("-inf")
        self._last_job_started: float | None = None
        self._lock = threading.Lock()

    # --- what the scheduler asks ------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Leader, and renewed recently enough to still act as one."""
        return self._leader and self.monotonic() - self._renewed < self.self_lease

    def job_started(self) -> None:
        """The scheduler started a job (proof its timer is alive)."""
        self._last_job_started = self.monotonic()

    def guard(self, session: Session) -> None:
        """Make every commit of this job session check leadership first (the fence)."""
        epoch = self.epoch

        def check(s: Session) -> None:
            if not self.is_leader or self.epoch != epoch:
                raise NotLeader("this scheduler is no longer the leader")
            found = s.execute(
                sa.text("SELECT epoch FROM leader_lease WHERE name = :name FOR SHARE"),
                {"name": LEASE_NAME},
            ).scalar()
            if found != epoch:
                raise NotLeader(f"the lease moved on (epoch {found}, this leader's {epoch})")

        event.listen(session, "before_commit", check)

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Step every `poll` seconds until stopped, then leave cleanly."""
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self.poll)
        finally:
            self.close(clean=True)

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run the loop in a daemon thread."""
        thread = threading.Thread(target=self.run, args=(stop,), name="leader", daemon=True)
        thread.start()
        return thread

    def step(self) -> None:
        """One round: renew as leader, or try to become it (fencing a silent holder)."""
        with self._lock:
            started = self.monotonic()
            try:
                conn = self._connection()
                if self._leader:
                    self._renew(conn, started)
                else:
                    self._beat(conn)
                    if started >= self._resigned_until and not self._try_lock(conn):
                        self._watch_holder(conn, started)
            except Exception as exc:  # psycopg errors, a cut network, a terminated session
                log.warning("leader election: %s", str(exc).strip() or type(exc).__name__)
                self._drop_connection()
                if self._leader:
                    self._step_down("lost the database connection")

    # --- steps ----------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        import psycopg
        from psycopg.conninfo import make_conninfo

        conninfo = make_conninfo(self.url, application_name=self.identity.app_name, **KEEPALIVES)
        self._conn = psycopg.connect(conninfo, autocommit=True)
        self._conn.execute("SET statement_timeout = '5s'")
        if not self._registered:
            now = self.clock()
            self._conn.execute(
                "INSERT INTO process_heartbeat (id, role, host, pid, app_name, is_leader, beat,"
                " started_at, last_beat_at) VALUES (%s, %s, %s, %s, %s, false, 0, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    self.identity.id,
                    self.identity.role.value,
                    self.identity.host,
                    self.identity.pid,
                    self.identity.app_name,
                    now,
                    now,
                ),
            )
            self._registered = True
        return self._conn

    def _beat(self, conn: Any) -> None:
        conn.execute(
            "UPDATE process_heartbeat SET beat = beat + 1, last_beat_at = %s, is_leader = false,"
            " epoch = NULL, leader_since_at = NULL WHERE id = %s",
            (self.clock(), self.identity.id),
        )

    def _try_lock(self, conn: Any) -> bool:
        got = conn.execute(
            "SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (LOCK_CLASS, LOCK_ID)
        ).fetchone()
        if not got or not got[0]:
            return False
        try:
            self._take_over(conn)
        except Exception:
            # Keep nothing half-taken: release the lock and try again next round.
            with contextlib.suppress(Exception):
                conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", (LOCK_CLASS, LOCK_ID))
            raise
        return True

    def _take_over(self, conn: Any) -> None:
        now = self.clock()
        previous = conn.execute(
            "SELECT l.holder_id, h.app_name FROM leader_lease l"
            " LEFT JOIN process_heartbeat h ON h.id = l.holder_id WHERE l.name = %s",
            (LEASE_NAME,),
        ).fetchone()
        try:
            with conn.transaction():
                # The old leader's jobs check the epoch FOR SHARE just before they commit: wait
                # for those a moment, never for a hung one.
                conn.execute("SET LOCAL lock_timeout = '2s'")
                row = conn.execute(
                    "INSERT INTO leader_lease (name, epoch, holder_id, acquired_at)"
                    " VALUES (%s, 1, %s, %s) ON CONFLICT (name) DO UPDATE"
                    " SET epoch = leader_lease.epoch + 1, holder_id = EXCLUDED.holder_id,"
                    " acquired_at = EXCLUDED.acquired_at RETURNING epoch",
                    (LEASE_NAME, self.identity.id, now),
                ).fetchone()
                conn.execute(
                    "UPDATE process_heartbeat SET is_leader = true, epoch = %s,"
                    " leader_since_at = %s, beat = beat + 1, last_beat_at = %s WHERE id = %s",
                    (row[0], now, now, self.identity.id),
                )
        except Exception as exc:
            if previous is not None and previous[1] and "lock timeout" in str(exc):
                log.warning("old leader %s holds the lease row: ending its sessions", previous[0])
                self._terminate(conn, app_name=previous[1], pid=None)
            raise
        self.epoch = int(row[0])
        self._leader = True
        self._renewed = self.monotonic()
        self.leader_since = self._renewed
        self._last_job_started = None
        self._seen = None
        log.warning(
            "this scheduler (%s on %s, pid %s) is now the leader, epoch %s",
            self.identity.id,
            self.identity.host,
            self.identity.pid,
            self.epoch,
        )
        if self.on_elected is not None:
            try:
                self.on_elected()
            except Exception:
                log.exception("on_elected failed")

    def _renew(self, conn: Any, started: float) -> None:
        conn.execute(
            "UPDATE process_heartbeat SET beat = beat + 1, last_beat_at = %s, is_leader = true,"
            " epoch = %s WHERE id = %s",
            (self.clock(), self.epoch, self.identity.id),
        )
        lease = conn.execute(
            "SELECT epoch, holder_id FROM leader_lease WHERE name = %s", (LEASE_NAME,)
        ).fetchone()
        if lease is None or (lease[0], lease[1]) != (self.epoch, self.identity.id):
            self._step_down(f"the lease moved to {lease[1] if lease else 'nobody'}")
            self._drop_connection()  # closing the session frees the advisory lock, if held
            return
        self._renewed = started
        if self.stall is not None and self.leader_since is not None:
            last = self._last_job_started or self.leader_since
            if started - last > self.stall:
                log.error(
                    "no job started for %.0f s: this leader's timer is stuck; resigning",
                    started - last,
                )
                self._step_down("its scheduler stalled")
                self._drop_connection()
                # Give a standby the lock before trying again.
                self._resigned_until = started + self.lease

    def _watch_holder(self, conn: Any, now: float) -> None:
        holder = conn.execute(
            "SELECT l.pid, a.application_name FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory'"
            " AND l.classid = %s::int8::oid AND l.objid = %s::int8::oid"
            " AND l.objsubid = 2 AND l.granted"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (LOCK_CLASS, LOCK_ID),
        ).fetchone()
        if holder is None:
            self._seen = None  # free now: next round takes it
            return
        lease = conn.execute(
            "SELECT l.holder_id, h.beat FROM leader_lease l"
            " LEFT JOIN process_heartbeat h ON h.id = l.holder_id WHERE l.name = %s",
            (LEASE_NAME,),
        ).fetchone()
        seen = (holder[0], *(lease or (None, None)))
        if seen != self._seen:
            self._seen, self._seen_since = seen, now
            return
        if now - self._seen_since < self.lease:
            return
        log.warning(
            "the leader (backend %s, %s) has not renewed for %.0f s: ending its sessions",
            holder[0],
            holder[1],
            now - self._seen_since,
        )
        self._terminate(conn, app_name=holder[1], pid=holder[0])
        self._seen = None
        # Its backend exits a moment after the signal; then the lock is free.
        deadline = self.monotonic() + 2.0
        while self.monotonic() < deadline:
            if self._try_lock(conn):
                return
            time.sleep(0.05)

    @staticmethod
    def _terminate(conn: Any, *, app_name: str | None, pid: int | None) -> None:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND (pid = %s OR (%s::text IS NOT NULL AND application_name = %s))",
            (pid, app_name, app_name),
        )

    def _step_down(self, reason: str) -> None:
        was = self.epoch
        self._leader = False
        self.epoch = None
        self.leader_since = None
        log.warning("this scheduler is no longer the leader (epoch %s): %s", was, reason)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self, *, clean: bool) -> None:
        """Leave: mark the row stopped (clean exit) and close the session (frees the lock)."""
        with self._lock:
            if clean and self._conn is not None and not self._conn.closed:
                with contextlib.suppress(Exception):
                    self._conn.execute(
                        "UPDATE process_heartbeat SET stopped_at = %s, is_leader = false"
                        " WHERE id = %s",
                        (self.clock(), self.identity.id),
                    )
            self._leader = False
            self.epoch = None
            self._drop_connection()


# --- SQLite --------------------------------------------------------------------------------


def sqlite_lock_path(engine: Engine) -> Path | None:
    """The lock file beside a SQLite database file (None for an in-memory database)."""
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve().with_name(Path(database).name + ".scheduler.lock")


class SqliteLeader:
    """The only scheduler of a SQLite installation: it holds an exclusive lock on a file beside
    the database for its whole life (the kernel drops it when the process dies, even kill -9)."""

    epoch = None

    def __init__(self, engine: Engine, heartbeats: Heartbeats | None = None) -> None:
        self.path = sqlite_lock_path(engine)
        self.heartbeats = heartbeats
        self._file: IO[str] | None = None

    @property
    def is_leader(self) -> bool:
        return True

    def job_started(self) -> None:
        """Nothing to prove: no other scheduler can run."""

    def guard(self, session: Session) -> None:
        """No fence needed: no other scheduler can run."""

    def acquire(self) -> None:
        """Take the lock file or refuse with the reason and what to do."""
        if self.path is None:
            return
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AnotherSchedulerRunning(
                f"another `stepdown scheduler` is already running on this SQLite database "
                f"({holder}; lock file {self.path}). SQLite is one machine: run exactly one "
                "scheduler. To run several schedulers for failover, use PostgreSQL."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Let go of the lock file (a clean exit; a dead process drops it anyway)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
