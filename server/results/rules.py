"""Pure decisions about results: what a ctDNA call or an imaging response means."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

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
