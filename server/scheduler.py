"""The scheduler process: APScheduler 3.x is the timer, jobs are defined in code under stable ids.

Web workers never start it. Any number of scheduler processes may run (server/leader.py): all keep
the timer, only the elected leader runs the jobs, and a leader's job commits only while its lease
holds. Each job opens its own session (one transaction per batch), reads the one clock, and is safe
to run twice: every job works from the database state, not from memory, so a restart or a takeover
only means the next tick does the work (coalesce=True folds missed ticks into one). Every job's
outcome goes to the process's heartbeat row (server/health).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.blocking import BlockingScheduler
from flask import Flask
from sqlmodel import Session

from server.clock import utcnow
from server.db import get_db

if TYPE_CHECKING:
    from server.health.service import Heartbeats
    from server.leader import Leadership

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
    from server.alerts import voice
    from server.fhir import subscriptions as fhir_subscriptions
    from server.health import service as health
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
            5,
            alerts.escalate_due,
            "notify the next tier of open alerts whose timeout passed",
        ),
        JobSpec(
            "alerts.calls",
            10,
            voice.place_due_calls,
            "place the alert phone calls that are due (the voice tier)",
        ),
        JobSpec(
            "alerts.watchdog",
            15,
            alerts.watchdog,
            "page operators when an open alert is 5 minutes past its next tier, or its SMS is "
            "not with the provider 60 s after it was due",
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
        JobSpec(
            "fhir.subscriptions",
            10,
            fhir_subscriptions.run,
            "queue and deliver FHIR subscription notifications (a lane apart from the SMS)",
        ),
        JobSpec(
            "health.deadman",
            60,
            health.deadman_ping,
            "ping HEARTBEAT_URL (the outside dead-man's switch) with readiness; prune heartbeats",
        ),
    ]


def run_job(
    app: Flask,
    spec: JobSpec,
    leader: Leadership | None = None,
    heartbeats: Heartbeats | None = None,
) -> Any:
    """Run one job in its own session and transaction, with the app context. With a `leader`,
    only while this process leads, and its commit is fenced by the lease; the outcome goes to
    the `heartbeats` row."""
    from server.health.service import failure_of, outcome_of
    from server.leader import NotLeader

    if leader is not None:
        if not leader.is_leader:
            return None  # a standby keeps the timer and waits
        leader.job_started()
    started = time.monotonic()
    with app.app_context():
        database = get_db(app)
        session: Session
        try:
            with database.job_session() as session:
                if leader is not None:
                    leader.guard(session)
                result = spec.fn(session=session, now=utcnow())
        except NotLeader as exc:
            log.warning("job %s: not committed: %s", spec.id, exc)
            return None
        except Exception as exc:
            if heartbeats is not None:
                _record(heartbeats, spec.id, failure_of(exc, time.monotonic() - started))
            raise
        # A tick that found nothing to do is DEBUG: `make run` shows what happens, not the timer.
        log.log(logging.INFO if did_work(result) else logging.DEBUG, "job %s: %s", spec.id, result)
        if heartbeats is not None:
            _record(heartbeats, spec.id, outcome_of(result, time.monotonic() - started))
        return result


# Result keys that count what a job looked at, not what it did.
LOOKED_AT = frozenset({"events", "checked", "scanned", "seen"})


def did_work(result: Any) -> bool:
    """Whether a job's result says it did something: a non-zero count, or a dict or list holding
    one (None, 0, {}, {"sent": 0, "failed": 0} and {"events": 3, "created": 0} are nothing)."""
    if isinstance(result, dict):
        return any(did_work(v) for k, v in result.items() if k not in LOOKED_AT)
    if isinstance(result, list | tuple | set):
        return any(did_work(v) for v in result)
    return bool(result)


def _record(heartbeats: Heartbeats, job_id: str, outcome: dict[str, Any]) -> None:
    try:
        heartbeats.record(job_id, outcome)
    except Exception:  # a heartbeat that cannot be written must not fail the job
        log.warning("could not record job %s in the heartbeat", job_id, exc_info=True)


def run_all_once(app: Flask) -> dict[str, Any]:
    """Run every job once (for `stepdown scheduler --once`, cron, and tests)."""
    return {spec.id: run_job(app, spec) for spec in job_specs()}


def build(
    app: Flask, leader: Leadership | None = None, heartbeats: Heartbeats | None = None
) -> BlockingScheduler:
    """A BlockingScheduler in UTC with every job registered (run only while `leader` leads)."""
    # APScheduler logs every run ("Running job …", "… executed successfully") and every job it
    # adds at INFO: our jobs log what they did instead (run_job), so keep its warnings only.
    for name in ("apscheduler.executors.default", "apscheduler.scheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)
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
            args=[app, spec, leader, heartbeats],
            replace_existing=True,
            next_run_time=datetime.now(UTC),
        )
    return scheduler


def run_every_job_now(scheduler: BlockingScheduler) -> None:
    """A new leader does every job at once rather than at each job's next tick (an escalation
    due during the failover must not wait another interval)."""
    moment = datetime.now(UTC)
    for job in scheduler.get_jobs():
        job.modify(next_run_time=moment)
