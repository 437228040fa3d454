"""Pure decisions about results: what a ctDNA call or an imaging response means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from server.alerts.models import AlertKind

CTDNA_CALLS = ("positive", "negative", "indeterminate", "insufficient_sample")
RECIST = ("CR", "PR", "SD", "PD", "NE")


@dataclass(frozen=True)
class Finding:
    """What to do about a result: an alert (or none), a redraw, a PFS event, and why."""

    alert: AlertKind | None = None
    redraw: bool = False
    pfs_event: bool = False
    reason: str = ""


def ctdna_finding(
    *, call: str, prior_calls: list[str], is_baseline: bool, study_rules: frozenset[str]
) -> Finding:
    """A ctDNA call in the light of the participant's earlier calls (oldest first).

    A failed test is never read as negative: it asks for a redraw. Positive at baseline and a turn
    to positive after negative results are the two alerting cases; a positive that follows a
    positive still alerts (a duplicate alert is better than a missed one).
    """
    if call in ("indeterminate", "insufficient_sample"):
        if "ctdna_redraw_on_failure" in study_rules:
            return Finding(
                AlertKind.REDRAW_NEEDED,
                redraw=True,
                reason=f"ctDNA test {call.replace('_', ' ')}: redraw needed",
            )
        return Finding(reason=f"ctDNA test {call}; the study asks for no redraw")
    if call != "positive":
        return Finding(reason="negative")
    valid_prior = [c for c in prior_calls if c in ("positive", "negative")]
    if is_baseline or not valid_prior:
        if "ctdna_positive_at_baseline" in study_rules or "ctdna_turns_positive" in study_rules:
            return Finding(AlertKind.CTDNA_POSITIVE_BASELINE, reason="positive at baseline")
        return Finding(reason="positive at baseline; no rule of the study alerts on it")
    if "ctdna_turns_positive" not in study_rules:
        return Finding(reason="positive; no rule of the study alerts on it")
    if valid_prior[-1] == "negative":
        return Finding(AlertKind.CTDNA_POSITIVE, reason="turned positive after negative results")
    return Finding(AlertKind.CTDNA_POSITIVE, reason="positive again")


def imaging_finding(*, recist: str, study_rules: frozenset[str]) -> Finding:
    """Progression (PD) opens a progression alert and records a PFS event."""
    if recist == "PD" and "imaging_progression" in study_rules:
        return Finding(AlertKind.PROGRESSION, pfs_event=True, reason="radiological progression")
    return Finding(reason=f"RECIST {recist}")


def is_result_overdue(*, done_on: date, turnaround_days: int, today: date) -> bool:
    """Whether a draw's result is later than the assay's turnaround."""
    return today > done_on + timedelta(days=turnaround_days)


# --- plausibility of a result's dates ---------------------------------------------------------

# How far ahead of our clock a lab's clock may run (settings: RESULT_CLOCK_SKEW_SECONDS).
DEFAULT_CLOCK_SKEW = timedelta(minutes=10)
# A result whose participant is unknown has no time zone: its dates are read in the first zone on
# Earth to begin a day (UTC+14). A day that has not begun there has begun nowhere, and a report
# from before that day began there was from before it everywhere: only the certainly wrong is
# refused.
FIRST_ZONE = timezone(timedelta(hours=14))


def _allowance(skew: timedelta) -> str:
    seconds = int(skew.total_seconds())
    if seconds % 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def implausible_dates(
    *,
    collected_at: datetime | None,
    reported_at: datetime | None,
    performed_on: date | None,
    now: datetime,
    skew: timedelta,
    zone: tzinfo | None = None,
    earliest: date | None = None,
    earliest_why: str = "",
    names: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """What is impossible about a result's dates, by field (empty: nothing).

    A sample or report later than now plus `skew` (clocks differ), a scan on a day that has not
    begun in `zone`, a report before its sample or before its scan's day, and (when `earliest` is
    given: the participant's enrolment day minus the protocol's look-back) a sample or scan before
    that day in `zone`. `names` renames the fields for the caller's format (FHIR: effectiveDateTime,
    issued)."""

    def name(field: str) -> str:
        return (names or {}).get(field, field)

    problems: dict[str, list[str]] = {}

    def refuse(field: str, message: str) -> None:
        problems.setdefault(name(field), []).append(message)

    where = zone or FIRST_ZONE
    latest = now + skew
    future = f"is in the future (later than now plus the {_allowance(skew)} allowed for clocks)"
    if collected_at is not None and collected_at > latest:
        refuse("collected_at", future)
    if reported_at is not None and reported_at > latest:
        refuse("reported_at", future)
    if performed_on is not None and performed_on > latest.astimezone(where).date():
        refuse("performed_on", "is a day that has not begun yet")
    if reported_at is not None and collected_at is not None and reported_at < collected_at:
        refuse(
            "reported_at", f"is before {name('collected_at')}: a result cannot precede its sample"
        )
    if (
        reported_at is not None
        and performed_on is not None
        and reported_at < datetime.combine(performed_on, time(0), where)
    ):
        refuse(
            "reported_at",
            f"is before the day of {name('performed_on')}: a report cannot precede its scan",
        )
    if earliest is not None:
        if collected_at is not None and collected_at.astimezone(where).date() < earliest:
            refuse("collected_at", f"is before {earliest.isoformat()}: {earliest_why}")
        if performed_on is not None and performed_on < earliest:
            refuse("performed_on", f"is before {earliest.isoformat()}: {earliest_why}")
    return problems
