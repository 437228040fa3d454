"""Every branch of the result rules, without a database."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from server.alerts.models import AlertKind, Level
from server.alerts.rules import (
    DEFAULT_POLICY,
    next_step,
    parse_ack,
    route,
    tiers,
)
from server.results.rules import ctdna_finding, imaging_finding, is_result_overdue

ALL = frozenset(
    {
        "ctdna_turns_positive",
        "ctdna_positive_at_baseline",
        "ctdna_redraw_on_failure",
        "imaging_progression",
        "result_overdue",
        "missed_ctdna_window",
    }
)


def test_positive_after_negatives_turns_positive():
    f = ctdna_finding(
        call="positive", prior_calls=["negative", "negative"], is_baseline=False, study_rules=ALL
    )
    assert f.alert == AlertKind.CTDNA_POSITIVE and "turned positive" in f.reason


def test_positive_at_baseline():
    f = ctdna_finding(call="positive", prior_calls=[], is_baseline=True, study_rules=ALL)
    assert f.alert == AlertKind.CTDNA_POSITIVE_BASELINE


def test_first_positive_without_history_counts_as_baseline():
    f = ctdna_finding(
        call="positive", prior_calls=["insufficient_sample"], is_baseline=False, study_rules=ALL
    )
    assert f.alert == AlertKind.CTDNA_POSITIVE_BASELINE


def test_positive_again_still_alerts():
    f = ctdna_finding(
        call="positive", prior_calls=["negative", "positive"], is_baseline=False, study_rules=ALL
    )
    assert f.alert == AlertKind.CTDNA_POSITIVE and f.reason == "positive again"


def test_negative_does_nothing():
    f = ctdna_finding(call="negative", prior_calls=["negative"], is_baseline=False, study_rules=ALL)
    assert f.alert is None and not f.redraw


@pytest.mark.parametrize("call", ["indeterminate", "insufficient_sample"])
def test_failed_test_asks_for_a_redraw_never_negative(call):
    f = ctdna_finding(call=call, prior_calls=["negative"], is_baseline=False, study_rules=ALL)
    assert f.redraw is True and f.alert == AlertKind.REDRAW_NEEDED
    off = ctdna_finding(
        call=call, prior_calls=[], is_baseline=False, study_rules=ALL - {"ctdna_redraw_on_failure"}
    )
    assert off.redraw is False and off.alert is None


def test_rules_the_study_does_not_apply_do_not_alert():
    f = ctdna_finding(
        call="positive",
        prior_calls=["negative"],
        is_baseline=False,
        study_rules=frozenset({"imaging_progression"}),
    )
    assert f.alert is None


@pytest.mark.parametrize(
    ("recist", "alert"),
    [("PD", AlertKind.PROGRESSION), ("SD", None), ("PR", None), ("CR", None), ("NE", None)],
)
def test_imaging(recist, alert):
    f = imaging_finding(recist=recist, study_rules=ALL)
    assert f.alert == alert
    assert f.pfs_event == (recist == "PD")


def test_progression_rule_off():
    assert imaging_finding(recist="PD", study_rules=frozenset()).alert is None


def test_result_overdue_after_turnaround():
    assert not is_result_overdue(
        done_on=date(2027, 1, 1), turnaround_days=14, today=date(2027, 1, 15)
    )
    assert is_result_overdue(done_on=date(2027, 1, 1), turnaround_days=14, today=date(2027, 1, 16))


def test_escalation_steps_then_repeats_then_stops():
    clinical = route(DEFAULT_POLICY, AlertKind.CTDNA_POSITIVE, Level.CRITICAL)
    assert next_step(clinical, 1, 0) == (2, 0)
    assert next_step(clinical, 2, 0) == (3, 0)
    # The default critical route does not repeat: after tier 3, the fail-safe.
    assert next_step(clinical, 3, 0) is None
    # A site's route with repeats: the last tier again, then done.
    repeated = {**clinical, "repeats": 2}
    assert next_step(repeated, 3, 0) == (3, 1)
    assert next_step(repeated, 3, 1) == (3, 2)
    assert next_step(repeated, 3, 2) is None
    follow = route(DEFAULT_POLICY, AlertKind.RESULT_OVERDUE, Level.ROUTINE)
    assert next_step(follow, 2, 0) is None


def test_the_default_critical_route_reaches_the_failsafe_within_gp47s_hour():
    chain = tiers(route(DEFAULT_POLICY, AlertKind.CTDNA_POSITIVE, Level.CRITICAL))
    minutes = timedelta(minutes=1)
    assert [(t.recipients, t.timeout, t.channel, t.call_after) for t in chain] == [
        ("on_call_nurses", 15 * minutes, "sms", 10 * minutes),
        ("nurses_and_coordinators", 15 * minutes, "sms", None),
        ("investigators", 15 * minutes, "both", None),
    ]
    # No repeats: the fail-safe when the last tier times out, 45 minutes after the first SMS,
    # leaving it 15 minutes of CLSI GP47's hour.
    assert route(DEFAULT_POLICY, AlertKind.PROGRESSION, Level.CRITICAL)["repeats"] == 0
    assert sum((t.timeout for t in chain), timedelta()) == 45 * minutes
    # Urgent (act today) is unchanged: 60 then 120 minutes, its fail-safe after 3 hours.
    urgent = tiers(route(DEFAULT_POLICY, AlertKind.CRITICAL_ANSWER, Level.URGENT))
    assert [(t.recipients, t.timeout) for t in urgent] == [
        ("nurses_and_coordinators", 60 * minutes),
        ("investigators", 120 * minutes),
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("ACK 482113", "482113"),
        ("ack482113", "482113"),
        (" 482113 ", "482113"),
        ("482 113", "482113"),
        ("ACK 482-113", "482113"),
        ("ACK: 482113!", "482113"),
        ("Ok 123456.", "123456"),
        ("ＡＣＫ　４８２１１３", "482113"),  # a full-width keyboard
        ("确认482113", "482113"),
        # Alerts opened before six digits keep their four.
        ("ACK 4821", "4821"),
        ("ack4821", "4821"),
        ("ACK", None),
        ("ACK 48211", None),
        ("ACK 4821134", None),
        ("ACK 48 21 13", None),
        ("ACK 4821 13", None),
        ("yes", None),
        ("ACK 12", None),
    ],
)
def test_parse_ack(body, code):
    assert parse_ack(body) == code
