"""Leader election of the scheduler processes (server/leader.py).

On PostgreSQL: two electors against the test database, driven round by round (`step()`), each
with its own monotonic clock so a "hung" leader is one whose clock and steps stand still. These
commit for real (outside the per-test transaction), so every row they write is removed after.
On SQLite (both passes): the lock file that makes a second scheduler refuse to start.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from config import settings
from server.app import create_app
from server.db import make_engine
from server.health.models import ProcessRole
from server.health.service import ProcessIdentity
from server.leader import (
    AnotherSchedulerRunning,
    NotLeader,
    PgLeaderElector,
    SqliteLeader,
    libpq_url,
    name_connections,
)

ON_POSTGRESQL = bool(os.environ.get("STEPDOWN_TEST_DATABASE_URL"))
postgresql_only = pytest.mark.skipif(
    not ON_POSTGRESQL,
    reason="leader election runs on PostgreSQL (SQLite has one scheduler: see the lock file "
    "tests); this runs in the PostgreSQL pass",
)


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def pg(database_url: str) -> Iterator[Engine]:
    """An engine on the test database (autocommit); cleans the election's rows afterwards."""
    engine = make_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        with engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
                    " current_database() AND application_name LIKE 'stepdown-scheduler-%'"
                )
            )
            conn.exec_driver_sql("DELETE FROM process_heartbeat")
            conn.exec_driver_sql(
                "UPDATE leader_lease SET holder_id = NULL, acquired_at = NULL"
                " WHERE name = 'scheduler'"
            )
        engine.dispose()


def elector(engine: Engine, clock: Clock) -> PgLeaderElector:
    return PgLeaderElector(
        url=libpq_url(engine),
        identity=ProcessIdentity.new(ProcessRole.SCHEDULER),
        lease=10.0,
        monotonic=clock,
    )


def terminate(engine: Engine, app_name: str) -> None:
    """pg_terminate_backend every session of a process, and wait until they are gone."""
    with engine.connect() as conn:
        ended = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = :n"
            ),
            {"n": app_name},
        ).scalar()
        assert ended and ended >= 1
        for _ in range(200):
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                {"n": app_name},
            ).scalar()
            if not left:
                return
            time.sleep(0.01)
    raise AssertionError(f"sessions of {app_name} still there")


def lease_row(engine: Engine) -> tuple[int, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT epoch, holder_id FROM leader_lease WHERE name = 'scheduler'")
        ).one()
    return int(row[0]), row[1]


def heartbeat(engine: Engine, process_id: str) -> tuple[bool, int | None, int]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT is_leader, epoch, beat FROM process_heartbeat WHERE id = :i"),
            {"i": process_id},
        ).one()
    return bool(row[0]), row[1], int(row[2])


@postgresql_only
def test_one_leader_and_the_standby_takes_over_when_the_leaders_connection_is_killed(pg):
    clock = Clock()
    a, b = elector(pg, clock), elector(pg, clock)
    try:
        a.step()
        b.step()
        assert a.is_leader and not b.is_leader
        first = a.epoch
        assert first is not None and lease_row(pg) == (first, a.identity.id)
        assert heartbeat(pg, a.identity.id)[:2] == (True, first)
        assert heartbeat(pg, b.identity.id)[:2] == (False, None)
        for _ in range(3):  # renewals keep it so; the standby keeps trying
            clock.advance(1)
            a.step()
            b.step()
            assert a.is_leader and not b.is_leader and a.epoch == first

        # The leader's database session dies (its machine lost, a proxy reset, a DBA's kill).
        terminate(pg, a.identity.app_name)
        b.step()
        assert b.is_leader and b.epoch == first + 1
        assert lease_row(pg) == (first + 1, b.identity.id)
        # The old leader learns it at its next round and stands by; it cannot take the lock back.
        a.step()
        assert not a.is_leader and a.epoch is None
        a.step()
        b.step()
        assert not a.is_leader and b.is_leader
        assert heartbeat(pg, a.identity.id)[:2] == (False, None)
        assert heartbeat(pg, b.identity.id)[:2] == (True, first + 1)
    finally:
        a.close(clean=True)
        b.close(clean=True)


@postgresql_only
def test_a_clean_exit_hands_over_at_the_next_round(pg):
    clock = Clock()
    a, b = elector(pg, clock), elector(pg, clock)
    try:
        a.step()
        b.step()
        assert a.is_leader
        a.close(clean=True)  # SIGTERM: the session ends, the lock with it
        b.step()
        assert b.is_leader
        with pg.connect() as conn:
            stopped = conn.execute(
                sa.text("SELECT stopped_at IS NOT NULL FROM process_heartbeat WHERE id = :i"),
                {"i": a.identity.id},
            ).scalar()
        assert stopped
    finally:
        a.close(clean=True)
        b.close(clean=True)


@postgresql_only
def test_a_hung_leader_is_fenced_off_and_can_commit_nothing_after_the_takeover(pg, database_url):
    clock_a, clock_b = Clock(), Clock()
    a, b = elector(pg, clock_a), elector(pg, clock_b)
    # The hung leader's job connections carry its application_name, as in a scheduler process.
    jobs = make_engine(database_url, poolclass=NullPool)
    name_connections(jobs, a.identity.app_name)
    try:
        a.step()
        b.step()
        assert a.is_leader
        # A job of A's is in the middle of its transaction when A hangs (SIGSTOP, a wedged
        # thread): A renews no more, its own clock stands still, so it still believes it leads.
        hung = Session(bind=jobs)
        a.guard(hung)
        hung.execute(sa.text("SELECT 1"))
        # The standby sees the holder's beat count stand still; not for long enough yet ...
        for _ in range(9):
            clock_b.advance(1)
            b.step()
            assert not b.is_leader
        # ... then, after the lease (10 s), it ends A's sessions and takes over.
        clock_b.advance(1.5)
        b.step()
        assert b.is_leader and b.epoch == (a.epoch or 0) + 1
        assert a.is_leader, "A has not noticed: its clock and its rounds stood still"
        # A wakes: the transaction it had open went with its sessions.
        with pytest.raises(sa.exc.DBAPIError):
            hung.commit()
        hung.close()
        # A new job transaction of A's, before A's next round: the fence refuses the commit.
        late = Session(bind=jobs)
        a.guard(late)
        late.execute(sa.text("SELECT 1"))
        with pytest.raises(NotLeader, match="lease moved on"):
            late.commit()
        late.close()
        a.step()
        assert not a.is_leader and b.is_leader
    finally:
        jobs.dispose()
        a.close(clean=True)
        b.close(clean=True)


@postgresql_only
def test_the_leaders_own_clock_stops_it_acting_before_a_standby_may_take_over(pg):
    clock = Clock()
    a = elector(pg, clock)
    try:
        a.step()
        assert a.is_leader
        clock.advance(6.9)
        assert a.is_leader
        clock.advance(0.2)  # 7 s without a renewal (70 % of the 10 s a standby waits)
        assert not a.is_leader
        with Session(bind=pg) as session:
            a.guard(session)
            with pytest.raises(NotLeader, match="no longer the leader"):
                session.commit()
        a.step()  # a renewal that succeeds restores it
        assert a.is_leader
    finally:
        a.close(clean=True)


@postgresql_only
def test_a_new_leader_runs_every_job_at_once(pg):
    clock = Clock()
    elected: list[int | None] = []
    a = elector(pg, clock)
    a.on_elected = lambda: elected.append(a.epoch)
    try:
        a.step()
        a.step()
        assert elected == [a.epoch]  # once per takeover, not per renewal
    finally:
        a.close(clean=True)


# --- SQLite -----------------------------------------------------------------------------------


def test_a_second_scheduler_on_one_sqlite_database_refuses_to_start(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'one.db'}")
    first, second = SqliteLeader(engine), SqliteLeader(engine)
    first.acquire()
    try:
        with pytest.raises(AnotherSchedulerRunning) as refused:
            second.acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message
        assert "SQLite is one machine" in message and "PostgreSQL" in message
        assert str(tmp_path / "one.db.scheduler.lock") in message
    finally:
        first.release()
    second.acquire()  # the first one gone, the next one starts
    second.release()
    engine.dispose()


def test_stepdown_scheduler_refuses_with_the_reason_while_another_runs(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    config = settings.TestingConfig()
    config.DATABASE_URL = url
    app = create_app(config)
    holder = SqliteLeader(make_engine(url))
    holder.acquire()
    try:
        runner = app.test_cli_runner()
        for args in (["scheduler"], ["scheduler", "--once"]):
            result = runner.invoke(args=args)
            assert result.exit_code == 1, result.output
            assert "another `stepdown scheduler` is already running" in result.output
    finally:
        holder.release()
