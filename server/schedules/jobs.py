"""Scheduled jobs about schedules. Each takes (session, now), works in batches, is idempotent.

A batch is one short transaction: a mass event (a month of back-dated enrolments closes thousands
of windows at once, each missed ctDNA window opening an alert) is worked through in many commits,
so the job never holds the database's locks (SQLite's one writer) for more than a fraction of a
second and the API's writes get in between.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server import audit
from server.participants.models import Participant
from server.schedules.models import EventStatus, ScheduleEvent

# Events per transaction of the missed-window pass: each may open an alert (its audit row, its
# tier-1 SMS), a few milliseconds each at rest and tens on a busy machine (bench/reminders.py's
# mass event: 50 held PostgreSQL for 3.3 s on a loaded 2-CPU machine).
BATCH = 20
SYSTEM_ACTOR = "system:scheduler"
# SQLite has one writer at a time, and a connection waiting for the lock retries on a timer (up
# to every 100 ms): a job that began its next batch at once would take the lock again first, and
# the API's writes would wait for the whole job (bench/reminders.py's mass event: a lab's results
# took 5.5 s each). Between two batches the job steps aside this long.
SQLITE_YIELD_S = 0.1


def yield_to_writers(session: Session) -> None:
    """Between two committed batches, let writers waiting for SQLite's lock have it."""
    if session.get_bind().dialect.name == "sqlite":
        time.sleep(SQLITE_YIELD_S)


def _claim(session: Session, q: Any) -> Any:
    # Two schedulers by mistake only compete: locked rows are skipped, never done twice.
    # (SQLite ignores the clause; it runs exactly one scheduler.)
    return q.limit(BATCH).with_for_update(skip_locked=True)


def update_event_statuses(*, session: Session, now: datetime) -> dict[str, int]:
    """Open windows that have opened; mark missed the events whose window has closed."""
    missed = 0
    while True:
        rows = session.exec(
            _claim(
                session,
                select(ScheduleEvent, Participant.site_id)
                .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
                .where(
                    col(ScheduleEvent.status).in_([EventStatus.PLANNED, EventStatus.OPEN]),
                    col(ScheduleEvent.window_close_at) <= now,
                )
                .order_by(col(ScheduleEvent.id)),
            )
        ).all()
        if not rows:
            break
        for event, site_id in rows:
            before = event.status
            event.status = EventStatus.MISSED
            event.updated_at = now
            session.add(event)
            # A missed window is a change to trial data: it goes in the audit trail.
            audit.record(
                session=session,
                actor=SYSTEM_ACTOR,
                action="event.missed",
                entity="schedule_event",
                entity_id=event.id,
                site_id=site_id,
                now=now,
                before={"status": before.value},
                after={"status": EventStatus.MISSED.value},
                reason="window closed without completion",
            )
            missed += 1
        session.flush()
        on_missed(session=session, events=[e for e, _ in rows], now=now)
        session.commit()
        yield_to_writers(session)
    # Opening a window is derived state (no clinical fact changes): one bulk UPDATE.
    opened = session.execute(
        sa.update(ScheduleEvent)
        .where(
            col(ScheduleEvent.status) == EventStatus.PLANNED,
            col(ScheduleEvent.window_open_at) <= now,
            col(ScheduleEvent.window_close_at) > now,
        )
        .values(status=EventStatus.OPEN, updated_at=now)
    )
    return {"opened": int(opened.rowcount or 0), "missed": missed}  # type: ignore[attr-defined]


def on_missed(*, session: Session, events: list[ScheduleEvent], now: datetime) -> None:
    """What follows a missed window: a missed ctDNA draw tells the coordinator."""
    from server.results.service import on_missed_events

    on_missed_events(session=session, events=events, now=now)


def evaluate_decisions(*, session: Session, now: datetime) -> dict[str, int]:
    """Open 'decision due' items whose inputs are in (see schedules.service)."""
    from server.schedules.service import open_due_decisions

    return {"opened": open_due_decisions(session=session, now=now)}
