"""The scheduler process: APScheduler 3.x, one process, jobs defined in code under stable ids.

Web workers never start it. Each job opens its own session (one transaction per batch), reads the
one clock, and is safe to run twice: every job works from the database state, not from memory, so
a restart only means the next tick does the work (coalesce=True folds missed ticks into one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from flask import Flask
from sqlmodel import Session

from server.clock import utcnow
from server.db import get_db

log = logging.getLogger("stepdown.scheduler")

JobFn = Callable[..., Any]


@dataclass(frozen=True)
class JobSpec:
    """A scheduled job: stable id, interval in seconds, the function(session=, now=)."""

    id: str
    seconds: float
    fn: JobFn
    description: str


def job_specs() -> list[JobSpec]:
    """Every job the scheduler runs (imported late so the web app never needs them)."""
    from server import messaging
    from server.alerts import service as alerts
    from server.results import service as results
    from server.schedules import jobs as schedule_jobs
    from server.schedules import reminders

    return [
        JobSpec(
            "schedules.update_event_statuses",
            60,
            schedule_jobs.update_event_statuses,
            "open windows that have opened; mark events missed whose window has closed",
        ),
        JobSpec(
            "schedules.evaluate_decisions",
            60,
            schedule_jobs.evaluate_decisions,
            "open 'decision due' items whose inputs are all in",
        ),
        JobSpec(
            "reminders.materialize",
            300,
            reminders.materialize_job,
            "write participant reminders due in the next 48 hours to the outbox",
        ),
        JobSpec(
            "alerts.escalate",
            10,
            alerts.escalate_due,
            "notify the next tier of open alerts whose timeout passed",
        ),
        JobSpec(
            "alerts.watchdog",
            60,
            alerts.watchdog,
            "page operators when an open alert is 5 minutes past its next tier",
        ),
        JobSpec(
            "alerts.check_routes",
            6 * 3600,
            alerts.check_routes,
            "flag escalation tiers that reach nobody with a verified phone",
        ),
        JobSpec(
            "results.overdue",
            3600,
            results.overdue_results,
            "tell the coordinator when a result is later than the assay's turnaround",
        ),
        JobSpec(
            "outbox.expire_stale",
            300,
            messaging.expire_stale,
            "expire pending messages whose moment has passed",
        ),
    ]


def run_job(app: Flask, spec: JobSpec) -> Any:
    """Run one job in its own session and transaction, with the app context."""
    with app.app_context():
        database = get_db(app)
        session: Session
        with database.job_session() as session:
            result = spec.fn(session=session, now=utcnow())
        log.info("job %s: %s", spec.id, result)
        return result


def run_all_once(app: Flask) -> dict[str, Any]:
    """Run every job once (for `stepdown scheduler --once`, cron, and tests)."""
    return {spec.id: run_job(app, spec) for spec in job_specs()}


def build(app: Flask) -> BlockingScheduler:
    """A BlockingScheduler in UTC with every job registered."""
    scheduler = BlockingScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
    )
    for spec in job_specs():
        scheduler.add_job(
            run_job,
            "interval",
            seconds=spec.seconds,
            id=spec.id,
            name=spec.description,
            args=[app, spec],
            replace_existing=True,
            next_run_time=datetime.now(UTC),
        )
    return scheduler
