"""Heartbeats, readiness, the status report and the dead-man's switch.

Every scheduler and dispatcher process writes one `process_heartbeat` row and renews it while it
lives (`Heartbeats`). Readiness (`/readyz`, `stepdown status`, the admin status page) and the
banner on Today read those rows; the scheduler leader pings an outside monitor every minute
(`deadman_ping`), so that Stepdown's own death is noticed by something that did not die with it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlmodel import Session, col, func, select

from notifications.models import (
    PRIORITY_STAFF_ALERT,
    MessageCategory,
    MessageLog,
    MessageStatus,
    OutboxMessage,
)
from server.clock import utcnow
from server.health import rules
from server.health.models import LeaderLease, ProcessHeartbeat, ProcessRole

log = logging.getLogger("stepdown.health")

LEASE_NAME = "scheduler"
# Heartbeat rows of processes gone this long are deleted by the leader.
KEEP_GONE_PROCESSES = timedelta(days=7)
# How long the dead-man ping may take (the monitor is outside; never hang a job on it).
PING_TIMEOUT_SECONDS = 10


# --- process identity and heartbeats ------------------------------------------------------------


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a background process is: a fresh id per start, its host, pid and connection name."""

    id: str
    role: ProcessRole
    host: str
    pid: int

    @classmethod
    def new(cls, role: ProcessRole) -> ProcessIdentity:
        return cls(uuid.uuid4().hex[:16], role, socket.gethostname()[:255], os.getpid())

    @property
    def app_name(self) -> str:
        """The PostgreSQL application_name of this process's connections (at most 63 bytes)."""
        return f"stepdown-{self.role.value}-{self.id}"


@dataclass
class Heartbeats:
    """Writes one process's heartbeat row: registered at start, renewed by `beat`, job or pass
    results by `record`, `stop` at a clean exit. Each write is its own short transaction."""

    session_factory: Callable[[], Session]
    identity: ProcessIdentity
    clock: Callable[[], datetime] = utcnow
    results: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def register(self) -> None:
        """Insert this process's row."""
        now = self.clock()
        with self.session_factory() as session, session.begin():
            session.add(
                ProcessHeartbeat(
                    id=self.identity.id,
                    role=self.identity.role,
                    host=self.identity.host,
                    pid=self.identity.pid,
                    app_name=self.identity.app_name,
                    started_at=now,
                    last_beat_at=now,
                )
            )

    def _update(self, **values: Any) -> None:
        with self.session_factory() as session, session.begin():
            session.execute(
                sa.update(ProcessHeartbeat)
                .where(col(ProcessHeartbeat.id) == self.identity.id)
                .values(**values)
            )

    def beat(self, *, is_leader: bool = False, epoch: int | None = None) -> None:
        """Renew the row (this process is alive)."""
        self._update(
            beat=ProcessHeartbeat.beat + 1,  # type: ignore[operator]
            last_beat_at=self.clock(),
            is_leader=is_leader,
            epoch=epoch,
        )

    def record(self, key: str, outcome: dict[str, Any]) -> None:
        """Keep the latest outcome under `key` (a job id, or "dispatch"); a success is a tick (a
        leader whose every job fails is not ticking, and readiness says so)."""
        now = self.clock()
        with self._lock:
            self.results[key] = {"at": now.isoformat(), **outcome}
            snapshot = dict(self.results)
        ticked = {"last_tick_at": now} if outcome.get("ok") else {}
        self._update(last_results=snapshot, last_beat_at=now, **ticked)

    def stop(self) -> None:
        """A clean exit: no longer leader, stopped now."""
        try:
            self._update(stopped_at=self.clock(), is_leader=False)
        except Exception:  # the database may be what stopped us
            log.warning("could not mark process %s stopped", self.identity.id, exc_info=True)

    def beat_forever(self, stop: threading.Event, every: float) -> threading.Thread:
        """Renew the row every `every` seconds in a daemon thread until `stop` is set."""

        def run() -> None:
            while not stop.wait(every):
                try:
                    self.beat()
                except Exception:
                    log.warning("heartbeat of %s failed", self.identity.app_name, exc_info=True)

        thread = threading.Thread(target=run, name=f"heartbeat-{self.identity.role}", daemon=True)
        thread.start()
        return thread


def outcome_of(result: Any, seconds: float) -> dict[str, Any]:
    """A job's result as the heartbeat keeps it (short, JSON-ready)."""
    text = result if isinstance(result, str) else repr(result)
    return {"ok": True, "seconds": round(seconds, 3), "result": text[:200]}


def failure_of(exc: BaseException, seconds: float) -> dict[str, Any]:
    """A job's failure as the heartbeat keeps it."""
    return {
        "ok": False,
        "seconds": round(seconds, 3),
        "error": f"{type(exc).__name__}: {exc}"[:200],
    }


# --- readiness ----------------------------------------------------------------------------------


def _latest(session: Session, role: ProcessRole, column: Any) -> datetime | None:
    return session.exec(
        select(func.max(column)).where(ProcessHeartbeat.role == role)  # type: ignore[arg-type]
    ).one()


def leader_tick_at(session: Session) -> datetime | None:
    """When a scheduler leader last finished a job (standbys never run any)."""
    return _latest(session, ProcessRole.SCHEDULER, ProcessHeartbeat.last_tick_at)


def dispatcher_beat_at(session: Session) -> datetime | None:
    """When a running dispatcher last beat (stopped ones do not count)."""
    return session.exec(
        select(func.max(ProcessHeartbeat.last_beat_at)).where(
            ProcessHeartbeat.role == ProcessRole.DISPATCHER,
            col(ProcessHeartbeat.stopped_at).is_(None),
        )
    ).one()


def oldest_unsent_staff_alert(session: Session, now: datetime) -> datetime | None:
    """Since when the longest-waiting due staff alert SMS has been waiting to reach the provider.

    A message is due from its first attempt (a retry pushes `not_before_at` on, so that column
    alone would hide a provider outage) or, never tried, from `not_before_at` (business-hours
    alerts are queued ahead). Open staff alerts are few: this reads them all.
    """
    first_try = (
        select(func.min(MessageLog.at))
        .where(
            col(MessageLog.message_id) == col(OutboxMessage.id),
            MessageLog.status == MessageStatus.SENDING,
        )
        .scalar_subquery()
    )
    rows = session.exec(
        select(OutboxMessage.not_before_at, first_try).where(
            col(OutboxMessage.status).in_([MessageStatus.PENDING, MessageStatus.SENDING]),
            OutboxMessage.priority == PRIORITY_STAFF_ALERT,
            OutboxMessage.category == MessageCategory.STAFF_ALERT,
        )
    ).all()
    due = [tried or not_before for not_before, tried in rows]
    due = [moment for moment in due if moment <= now]
    return min(due) if due else None


def database_is_read_only(session: Session) -> bool:
    """Whether this database refuses writes (a PostgreSQL standby or read-only setting; a
    read-only SQLite file or connection)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return bool(
            session.execute(
                sa.text(
                    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"
                )
            ).scalar()
        )
    try:
        if session.execute(sa.text("PRAGMA query_only")).scalar():
            return True
    except sa.exc.OperationalError as exc:  # refused to begin (see `readiness`)
        if "readonly" in str(exc):
            session.rollback()
            return True
        raise
    path = bind.engine.url.database if hasattr(bind, "engine") else None
    return bool(path) and path != ":memory:" and not os.access(str(path), os.W_OK)


def facts(session: Session, now: datetime) -> rules.Facts:
    """What readiness is decided from."""
    return rules.Facts(
        leader_tick_at=leader_tick_at(session),
        dispatcher_beat_at=dispatcher_beat_at(session),
        oldest_unsent_staff_alert_since=oldest_unsent_staff_alert(session, now),
        is_read_only=database_is_read_only(session),
    )


@dataclass(frozen=True)
class Readiness:
    """Ready or not, why, and the facts behind it."""

    problems: list[rules.Problem]
    facts: rules.Facts
    now: datetime

    @property
    def is_ready(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The /readyz body (no hosts, no phone numbers: anyone may ask)."""
        f = self.facts

        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "status": "ready" if self.is_ready else "not_ready",
            "reasons": [p.message for p in self.problems],
            "problems": [{"code": p.code, "message": p.message} for p in self.problems],
            "checked_at": self.now.isoformat(),
            "scheduler_last_job_at": iso(f.leader_tick_at),
            "dispatcher_last_beat_at": iso(f.dispatcher_beat_at),
            "oldest_unsent_staff_alert_since": iso(f.oldest_unsent_staff_alert_since),
            "database_read_only": f.is_read_only,
        }


def readiness(session: Session, now: datetime) -> Readiness:
    """Decide readiness now."""
    try:
        found = facts(session, now)
    except sa.exc.OperationalError as exc:
        # SQLite begins every transaction for writing (BEGIN IMMEDIATE): a read-only file or
        # connection refuses even to begin, so nothing else can be read.
        if "readonly" not in str(exc).replace("read-only", "readonly"):
            raise
        session.rollback()
        found = rules.Facts(None, None, None, is_read_only=True)
        return Readiness([rules.READ_ONLY], found, now)
    return Readiness(rules.readiness(found, now), found, now)


def today_banner(session: Session, now: datetime) -> str | None:
    """The red banner of Today when the scheduler or every dispatcher has gone quiet (one small
    query on a table of a few rows)."""
    rows = session.exec(
        select(
            ProcessHeartbeat.role,
            func.max(ProcessHeartbeat.last_tick_at),
            func.max(
                sa.case(
                    (col(ProcessHeartbeat.stopped_at).is_(None), ProcessHeartbeat.last_beat_at),
                    else_=None,
                )
            ),
        ).group_by(ProcessHeartbeat.role)
    ).all()
    latest = {role: (tick, beat) for role, tick, beat in rows}
    tick = latest.get(ProcessRole.SCHEDULER, (None, None))[0]
    beat = latest.get(ProcessRole.DISPATCHER, (None, None))[1]
    return rules.banner(tick, beat, now)


# --- the status report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessRow:
    """One process as the status page and `stepdown status` show it."""

    heartbeat: ProcessHeartbeat
    state: str
    beat_age: timedelta | None
    tick_age: timedelta | None

    @property
    def standing(self) -> str:
        if self.heartbeat.role == ProcessRole.DISPATCHER:
            return "—"
        if self.state != "alive":
            return "was leader" if self.heartbeat.is_leader else "was standby"
        return "leader" if self.heartbeat.is_leader else "standby"


@dataclass(frozen=True)
class StatusReport:
    """Readiness plus every process heard from lately, and the lease."""

    readiness: Readiness
    processes: list[ProcessRow]
    lease_epoch: int | None
    lease_holder: str | None
    heartbeat_url_set: bool


def epoch_seconds(moment: datetime) -> float:
    """A moment as seconds since the epoch (SQLite gives naive UTC)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def status(
    session: Session, now: datetime, *, within: timedelta = timedelta(days=1)
) -> StatusReport:
    """Everything `stepdown status` and the admin page show."""
    rows = session.exec(
        select(ProcessHeartbeat).where(col(ProcessHeartbeat.last_beat_at) >= now - within)
    ).all()
    processes = [
        ProcessRow(
            heartbeat=row,
            state=rules.process_state(row.last_beat_at, row.stopped_at, now),
            beat_age=rules.age(row.last_beat_at, now),
            tick_age=rules.age(row.last_tick_at, now),
        )
        for row in rows
    ]
    # Schedulers first, the live leader at the top; the living before the gone; newest first.
    processes.sort(
        key=lambda p: (
            p.heartbeat.role != ProcessRole.SCHEDULER,
            p.state != "alive",
            not p.heartbeat.is_leader,
            -epoch_seconds(p.heartbeat.started_at),
        )
    )
    lease = session.get(LeaderLease, LEASE_NAME)
    url = current_app.config.get("HEARTBEAT_URL") if has_app_context() else None
    return StatusReport(
        readiness=readiness(session, now),
        processes=processes,
        lease_epoch=lease.epoch if lease else None,
        lease_holder=lease.holder_id if lease else None,
        heartbeat_url_set=bool(url),
    )


def status_dict(report: StatusReport) -> dict[str, Any]:
    """The status report as JSON (`stepdown status --json`)."""

    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "readiness": report.readiness.as_dict(),
        "lease": {"epoch": report.lease_epoch, "holder": report.lease_holder},
        "heartbeat_url_set": report.heartbeat_url_set,
        "processes": [
            {
                "id": row.heartbeat.id,
                "role": row.heartbeat.role.value,
                "standing": row.standing,
                "state": row.state,
                "host": row.heartbeat.host,
                "pid": row.heartbeat.pid,
                "epoch": row.heartbeat.epoch,
                "started_at": iso(row.heartbeat.started_at),
                "last_beat_at": iso(row.heartbeat.last_beat_at),
                "leader_since_at": iso(row.heartbeat.leader_since_at),
                "last_tick_at": iso(row.heartbeat.last_tick_at),
                "last_results": row.heartbeat.last_results or {},
                "stopped_at": iso(row.heartbeat.stopped_at),
            }
            for row in report.processes
        ],
    }


def status_lines(report: StatusReport) -> list[str]:
    """The status report as text (`stepdown status`)."""
    ready = report.readiness
    out = [
        "READY" if ready.is_ready else "NOT READY",
        *[f"  - {p.message}" for p in ready.problems],
        f"leader lease: epoch {report.lease_epoch}, held by {report.lease_holder or 'nobody'}",
        "dead-man's switch: "
        + (
            "pinging HEARTBEAT_URL every minute"
            if report.heartbeat_url_set
            else "HEARTBEAT_URL not set"
        ),
        "",
        f"{'role':<11} {'standing':<11} {'state':<8} {'host':<20} {'pid':>7}  "
        f"{'last beat':>10}  {'last job':>10}  process",
    ]
    for row in report.processes:
        hb = row.heartbeat
        beat = rules.words(row.beat_age) + " ago" if row.beat_age is not None else "never"
        tick = rules.words(row.tick_age) + " ago" if row.tick_age is not None else "never"
        out.append(
            f"{hb.role.value:<11} {row.standing:<11} {row.state:<8} {hb.host[:20]:<20} "
            f"{hb.pid:>7}  {beat:>10}  {tick:>10}  {hb.id}"
        )
        for key, outcome in sorted((hb.last_results or {}).items()):
            shown = (
                outcome.get("result")
                if outcome.get("ok")
                else "FAILED " + str(outcome.get("error"))
            )
            out.append(f"    {key}: {shown} ({outcome.get('seconds')} s, {outcome.get('at')})")
    if not report.processes:
        out.append("(no scheduler or dispatcher heard from in the last day)")
    return out


# --- the dead-man's switch -----------------------------------------------------------------------


def ping(url: str, problems: list[rules.Problem]) -> str:
    """Ping a Healthchecks-style URL: the URL itself when ready, `<url>/fail` with the reasons
    as the body when not (the monitor then alerts at once instead of waiting for silence)."""
    target = url.rstrip("/") + ("/fail" if problems else "")
    body = "\n".join(p.message for p in problems).encode() or b"ready"
    request = urllib.request.Request(  # noqa: S310 - the operator's configured monitor URL
        target, data=body, method="POST", headers={"User-Agent": "stepdown-deadman"}
    )
    with urllib.request.urlopen(request, timeout=PING_TIMEOUT_SECONDS) as answer:  # noqa: S310
        return f"{'fail' if problems else 'ok'} -> HTTP {answer.status}"


def deadman_ping(*, session: Session, now: datetime) -> str:
    """The leader's minute job: prune old heartbeat rows, then ping HEARTBEAT_URL (if set) with
    readiness. Only a leader that runs jobs pings, so silence means no scheduler is working."""
    session.execute(
        sa.delete(ProcessHeartbeat).where(
            col(ProcessHeartbeat.last_beat_at) < now - KEEP_GONE_PROCESSES
        )
    )
    url = current_app.config.get("HEARTBEAT_URL") if has_app_context() else None
    if not url:
        return "no HEARTBEAT_URL"
    # The leader running this job is itself ticking: readiness is about the rest.
    problems = [p for p in readiness(session, now).problems if p.code != "no_leader_tick"]
    try:
        return ping(url, problems)
    except (urllib.error.URLError, OSError) as exc:
        log.error("dead-man ping to the heartbeat monitor failed: %s", exc)
        raise
