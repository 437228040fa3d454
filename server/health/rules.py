"""Pure decisions about the background processes: is Stepdown ready to keep its promises, is a
process alive, what the staff banner says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# No scheduler leader has finished a job for this long: escalations and reminders have stopped.
LEADER_TICK_STALE = timedelta(minutes=2)
# A dispatcher beats every few seconds; this long without a beat, it is dead or cut off.
DISPATCHER_STALE = timedelta(seconds=30)
# A staff alert SMS due this long and not yet handed to the provider.
STAFF_ALERT_UNSENT = timedelta(seconds=60)
# Any process not heard from for this long is shown as stale on the status page.
PROCESS_STALE = timedelta(seconds=30)


@dataclass(frozen=True)
class Facts:
    """What readiness is decided from (gathered by the service in a few cheap queries)."""

    leader_tick_at: datetime | None
    dispatcher_beat_at: datetime | None
    oldest_unsent_staff_alert_since: datetime | None
    is_read_only: bool


@dataclass(frozen=True)
class Problem:
    """One reason Stepdown is not ready: a stable code and a sentence for a person."""

    code: str
    message: str


READ_ONLY = Problem("database_read_only", "the database is read-only")


def age(moment: datetime | None, now: datetime) -> timedelta | None:
    """How long ago a moment was (None stays None; a moment ahead of now counts as zero)."""
    if moment is None:
        return None
    return max(timedelta(0), now - moment)


def words(span: timedelta) -> str:
    """A duration for people: '45 s', '150 s', '7 min', '3 h 5 min', '2 days'."""
    seconds = int(span.total_seconds())
    if seconds < 180:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def leader_problem(tick_at: datetime | None, now: datetime) -> Problem | None:
    """No scheduler leader has finished a job within LEADER_TICK_STALE."""
    since = age(tick_at, now)
    if since is None:
        return Problem("no_leader_tick", "no scheduler has ever run a job")
    if since > LEADER_TICK_STALE:
        return Problem("no_leader_tick", f"no scheduler leader has run a job for {words(since)}")
    return None


def dispatcher_problem(beat_at: datetime | None, now: datetime) -> Problem | None:
    """No SMS dispatcher has beaten within DISPATCHER_STALE."""
    since = age(beat_at, now)
    if since is None:
        return Problem("no_dispatcher", "no SMS dispatcher has ever run")
    if since > DISPATCHER_STALE:
        return Problem("no_dispatcher", f"no SMS dispatcher alive (last heard {words(since)} ago)")
    return None


def staff_alert_problem(unsent_since: datetime | None, now: datetime) -> Problem | None:
    """The oldest due staff alert SMS has waited longer than STAFF_ALERT_UNSENT."""
    since = age(unsent_since, now)
    if since is not None and since > STAFF_ALERT_UNSENT:
        return Problem(
            "staff_alert_unsent", f"a staff alert SMS has been due and unsent for {words(since)}"
        )
    return None


def readiness(facts: Facts, now: datetime) -> list[Problem]:
    """Every reason not to be ready (empty: ready)."""
    problems = [
        leader_problem(facts.leader_tick_at, now),
        dispatcher_problem(facts.dispatcher_beat_at, now),
        staff_alert_problem(facts.oldest_unsent_staff_alert_since, now),
    ]
    if facts.is_read_only:
        problems.append(READ_ONLY)
    return [p for p in problems if p is not None]


def banner(
    leader_tick_at: datetime | None, dispatcher_beat_at: datetime | None, now: datetime
) -> str | None:
    """What Today tells staff when the background work that pages them has stopped, or None."""
    stopped = []
    tick = age(leader_tick_at, now)
    if tick is None or tick > LEADER_TICK_STALE:
        stopped.append(
            "alert escalation and reminders have not run "
            + ("since Stepdown started" if tick is None else f"for {words(tick)}")
        )
    beat = age(dispatcher_beat_at, now)
    if beat is None or beat > DISPATCHER_STALE:
        stopped.append("no SMS is being sent")
    if not stopped:
        return None
    return (
        "Stepdown's background processes have stopped: "
        + "; ".join(stopped)
        + ". Nobody is paged for new alerts: check this page and tell your administrator."
    )


def process_state(last_beat_at: datetime, stopped_at: datetime | None, now: datetime) -> str:
    """'stopped' (it said goodbye), 'alive', or 'stale' (not heard from lately)."""
    if stopped_at is not None:
        return "stopped"
    since = age(last_beat_at, now)
    return "alive" if since is not None and since <= PROCESS_STALE else "stale"
