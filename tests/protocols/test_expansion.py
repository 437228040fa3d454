"""Schedule expansion and re-anchoring, checked against timelines computed by hand.

Expected dates are written literally or with plain timedelta arithmetic from the protocol text,
never by calling the engine.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from config.settings import PROTOCOLS_DIR
from server.protocols.definition import Protocol, load_all, parse_protocol
from server.protocols.rules import (
    Choice,
    PlannedEvent,
    expand_schedule,
    plan_treatment,
    reanchor_item,
    timeline,
)

PARIS = ZoneInfo("Europe/Paris")
W12 = timedelta(weeks=12)


@pytest.fixture(scope="module")
def protocols() -> dict[str, Protocol]:
    return load_all(PROTOCOLS_DIR)


def days(n: int) -> timedelta:
    return timedelta(days=n)


def plan(events: list[PlannedEvent]) -> dict[str, tuple[date, date, date]]:
    """key -> (target, window open, window close)."""
    return {e.key: (e.target_date, e.window_open_date, e.window_close_date) for e in events}


def around(target: date, early: int, late: int) -> tuple[date, date, date]:
    return (target, target - days(early), target + days(late))


def quarterly_on_day(first: date, count: int) -> list[date]:
    """Every 3 months from `first` (day <= 28, so no month-end clamping is involved)."""
    out = []
    for k in range(count):
        month0 = first.month - 1 + 3 * k
        out.append(date(first.year + month0 // 12, month0 % 12 + 1, first.day))
    return out


# --- HEROES -----------------------------------------------------------------------------------


def test_heroes_stop_cohort_timeline(protocols: dict[str, Protocol]) -> None:
    anchor = date(2025, 1, 13)  # a Monday; 3 years later is 2028-01-13, 1095 days on
    events = expand_schedule(
        protocols["heroes"], cohort="stop", anchor_date=anchor, tz="Europe/Paris"
    )
    expected: dict[str, tuple[date, date, date]] = {
        "ctdna_baseline:1": around(date(2024, 12, 23), 7, 7),  # 21 days before the stop
    }
    # ctDNA and imaging every 12 weeks from week 12; 13 x 84 = 1092 <= 1095 days.
    for k in range(1, 14):
        expected[f"ctdna:{k}"] = around(anchor + k * W12, 7, 7)
        expected[f"imaging:{k}"] = around(anchor + k * W12, 14, 14)
    qol = [
        date(2025, 1, 13),  # baseline
        date(2025, 4, 13),  # 3 months
        date(2025, 7, 13),  # 6 months
        date(2026, 1, 13),  # 12 months
        date(2026, 7, 13),  # then every 6 months ...
        date(2027, 1, 13),
        date(2027, 7, 13),
        date(2028, 1, 13),  # ... to 3 years
    ]
    for k, day in enumerate(qol, start=1):
        expected[f"qol:{k}"] = around(day, 7, 14)
    assert plan(events) == expected
    # Sorted by date, and the draws and scans expect their results.
    assert [e.target_date for e in events] == sorted(e.target_date for e in events)
    first_ctdna = next(e for e in events if e.key == "ctdna:1")
    assert (first_ctdna.expects_result, first_ctdna.result_turnaround_days) == ("ctdna", 14)
    assert next(e for e in events if e.key == "qol:1").instrument == "eortc_qlq_c30"
    assert next(e for e in events if e.key == "qol:5").phase == "every_6_months"
    # 09:00 in Paris: 08:00 UTC in winter, 07:00 UTC in summer.
    assert next(e for e in events if e.key == "qol:1").target_at == datetime(
        2025, 1, 13, 8, tzinfo=UTC
    )
    assert first_ctdna.target_date == date(2025, 4, 7)
    assert first_ctdna.target_at == datetime(2025, 4, 7, 7, tzinfo=UTC)


def test_heroes_continue_cohort_only_has_the_baseline_draw(protocols: dict[str, Protocol]) -> None:
    events = expand_schedule(protocols["heroes"], cohort="continue", anchor_date=date(2025, 1, 13))
    assert plan(events) == {"ctdna_baseline:1": around(date(2024, 12, 23), 7, 7)}


def test_a_month_end_anchor_keeps_the_month_end(protocols: dict[str, Protocol]) -> None:
    events = expand_schedule(protocols["heroes"], cohort="stop", anchor_date=date(2025, 8, 31))
    qol = [e.target_date for e in events if e.item_id == "qol"]
    assert qol == [
        date(2025, 8, 31),
        date(2025, 11, 30),  # +3 months: November has 30 days
        date(2026, 2, 28),  # +6 months
        date(2026, 8, 31),  # +12 months
        date(2027, 2, 28),  # every 6 months after, aiming at the 31st again
        date(2027, 8, 31),
        date(2028, 2, 29),  # leap year
        date(2028, 8, 31),  # 3 years
    ]


# --- Free-HER ---------------------------------------------------------------------------------


def test_free_her_timeline(protocols: dict[str, Protocol]) -> None:
    anchor = date(2025, 3, 3)  # 3 years later: 2028-03-03, 1096 days (29 Feb 2028 included)
    events = expand_schedule(protocols["free-her"], cohort="stop", anchor_date=anchor)
    expected: dict[str, tuple[date, date, date]] = {}
    for k in range(1, 14):  # 13 x 84 = 1092 <= 1096
        expected[f"ctdna:{k}"] = around(anchor + k * W12, 7, 7)
        expected[f"routine_bloods:{k}"] = around(anchor + k * W12, 7, 7)
        expected[f"imaging:{k}"] = around(anchor + k * W12, 14, 14)
    follow_up = [  # months 42, 48, 54, 60, 66, 72
        date(2028, 9, 3),
        date(2029, 3, 3),
        date(2029, 9, 3),
        date(2030, 3, 3),
        date(2030, 9, 3),
        date(2031, 3, 3),
    ]
    for k, day in enumerate(follow_up, start=1):
        expected[f"follow_up_visit:{k}"] = around(day, 14, 14)
    assert plan(events) == expected
    # The protocol's default zone: New York, 09:00 local (EST -5 in March 3, EDT -4 in May).
    by_key = {e.key: e for e in events}
    assert by_key["follow_up_visit:2"].target_at == datetime(2029, 3, 3, 14, tzinfo=UTC)
    assert by_key["ctdna:1"].target_date == date(2025, 5, 26)
    assert by_key["ctdna:1"].target_at == datetime(2025, 5, 26, 13, tzinfo=UTC)
    assert by_key["routine_bloods:1"].expects_result is None


# --- STOP-HER2 --------------------------------------------------------------------------------


def test_stop_her2_stop_cohort_timeline(protocols: dict[str, Protocol]) -> None:
    anchor = date(2025, 1, 6)  # week 1 day 1; 10 years on = 2035-01-06 = day 3652
    events = expand_schedule(
        protocols["stop-her2"], cohort="stop", anchor_date=anchor, tz="America/New_York"
    )
    expected: dict[str, tuple[date, date, date]] = {
        # "scans 30 days prior to starting study"
        "baseline_scan:1": (anchor, anchor - days(30), anchor),
    }
    # Visit, tumor markers, research blood: weeks 4-6 (day 35, window days 28-42), week 12,
    # then every 12 weeks to 10 years: 12k weeks for k = 1..43 (43 x 84 = 3612 <= 3652).
    for item in ("visit", "tumor_markers", "research_blood"):
        expected[f"{item}:1"] = (anchor + days(35), anchor + days(28), anchor + days(42))
        for k in range(1, 44):
            expected[f"{item}:{k + 1}"] = around(anchor + k * W12, 7, 7)
    # Scans: every 12 weeks +/- 2 weeks in year 1 (weeks 12, 24, 36, 48) ...
    for k in range(1, 5):
        expected[f"restaging_scan:{k}"] = around(anchor + k * W12, 14, 14)
    # ... then every 3 months from the week-48 scan (2025-12-08) to 10 years.
    assert anchor + 4 * W12 == date(2025, 12, 8)
    for k, day in enumerate(quarterly_on_day(date(2026, 3, 8), 36), start=5):
        expected[f"restaging_scan:{k}"] = around(day, 14, 14)
    assert plan(events) == expected
    scans = [e for e in events if e.item_id == "restaging_scan"]
    assert scans[-1].target_date == date(2034, 12, 8)
    assert [e.phase for e in scans[3:5]] == ["year_1", "after_year_1"]
    assert all(e.is_reanchoring for e in scans)
    assert "every" in scans[4].site_defaults  # the 3-month interval is the site default
    assert "every" not in scans[0].site_defaults
    assert {e.modality for e in scans} == {"ct_or_mri"}


def test_stop_her2_visits_in_weeks_4_to_6_then_12_weekly(protocols: dict[str, Protocol]) -> None:
    anchor = date(2025, 1, 6)
    visits = [
        e
        for e in expand_schedule(protocols["stop-her2"], cohort="stop", anchor_date=anchor)
        if e.item_id == "visit"
    ]
    assert (visits[0].window_open_date - anchor).days == 28  # 4 weeks
    assert (visits[0].window_close_date - anchor).days == 42  # 6 weeks
    assert [(v.target_date - anchor).days for v in visits[1:4]] == [84, 168, 252]


def test_stop_her2_continue_cohort_scans_stay_12_weekly(protocols: dict[str, Protocol]) -> None:
    anchor = date(2025, 1, 6)
    events = expand_schedule(protocols["stop-her2"], cohort="continue", anchor_date=anchor)
    scans = plan([e for e in events if e.item_id.startswith("restaging")])
    assert scans == {
        f"restaging_scan_on_treatment:{k}": around(anchor + k * W12, 14, 14) for k in range(1, 44)
    }
    assert sum(1 for e in events if e.item_id == "visit") == 44


# --- Time zones -------------------------------------------------------------------------------

WEEKLY = textwrap.dedent(
    """\
    study: DST-TEST
    title: Weekly draws
    version: 1
    locale: fr
    anchor: Day 1
    cohorts: [{key: all, label: Everyone}]
    schedule:
      - id: draw
        type: blood_work
        label: Weekly draw
        first: 0 days
        every: 1 week
        until: 35 weeks
        window: {early_days: 0, late_days: 0}
    """
)


def test_paris_keeps_nine_o_clock_across_both_dst_changes() -> None:
    protocol = parse_protocol(WEEKLY, file="dst.yaml")
    events = expand_schedule(
        protocol, cohort="all", anchor_date=date(2025, 3, 23), tz="Europe/Paris"
    )
    by_date = {e.target_date: e for e in events}
    # Last Sunday of March 2025 is the 30th; last Sunday of October is the 26th.
    assert date(2025, 3, 30) in by_date and date(2025, 10, 26) in by_date
    for event in events:
        local = event.target_at.astimezone(PARIS)
        assert (local.date(), local.hour, local.minute) == (event.target_date, 9, 0)
    assert by_date[date(2025, 3, 23)].target_at == datetime(2025, 3, 23, 8, tzinfo=UTC)
    assert by_date[date(2025, 3, 30)].target_at == datetime(2025, 3, 30, 7, tzinfo=UTC)
    assert by_date[date(2025, 10, 19)].target_at == datetime(2025, 10, 19, 7, tzinfo=UTC)
    assert by_date[date(2025, 10, 26)].target_at == datetime(2025, 10, 26, 8, tzinfo=UTC)
    offsets = [e.target_at.astimezone(PARIS).utcoffset() for e in events]
    assert offsets[0] == timedelta(hours=1)
    assert offsets[1] == timedelta(hours=2)
    assert offsets[-1] == timedelta(hours=1)
    # A window day runs local midnight to local midnight: 23 hours in March, 25 in October.
    spring = by_date[date(2025, 3, 30)]
    assert spring.window_open_at == datetime(2025, 3, 29, 23, tzinfo=UTC)
    assert spring.window_close_at == datetime(2025, 3, 30, 22, tzinfo=UTC)
    autumn = by_date[date(2025, 10, 26)]
    assert autumn.window_open_at == datetime(2025, 10, 25, 22, tzinfo=UTC)
    assert autumn.window_close_at == datetime(2025, 10, 26, 23, tzinfo=UTC)
    assert all(e.target_at.tzinfo is UTC for e in events)


def test_the_participant_zone_wins_over_the_protocol_default(
    protocols: dict[str, Protocol],
) -> None:
    anchor = date(2025, 1, 13)
    paris = expand_schedule(protocols["heroes"], cohort="stop", anchor_date=anchor)
    reunion = expand_schedule(
        protocols["heroes"], cohort="stop", anchor_date=anchor, tz="Indian/Reunion"
    )
    assert paris[1].target_date == reunion[1].target_date == anchor
    assert paris[1].target_at == datetime(2025, 1, 13, 8, tzinfo=UTC)
    assert reunion[1].target_at == datetime(2025, 1, 13, 5, tzinfo=UTC)  # UTC+4


def test_no_zone_anywhere_is_an_error() -> None:
    protocol = parse_protocol(WEEKLY, file="dst.yaml")
    with pytest.raises(ValueError, match="no time zone"):
        expand_schedule(protocol, cohort="all", anchor_date=date(2025, 1, 1))
    with pytest.raises(ValueError, match="not an IANA time zone"):
        expand_schedule(protocol, cohort="all", anchor_date=date(2025, 1, 1), tz="Mars/Olympus")
    with pytest.raises(ValueError, match="no cohort 'stop'"):
        expand_schedule(protocol, cohort="stop", anchor_date=date(2025, 1, 1), tz="UTC")


# --- Month ends -------------------------------------------------------------------------------

MONTHLY = textwrap.dedent(
    """\
    study: MONTH-END
    title: Monthly questionnaire
    version: 1
    locale: en
    time_zone: UTC
    anchor: Day 1
    cohorts: [{key: all, label: Everyone}]
    schedule:
      - id: monthly
        type: questionnaire
        instrument: qol_checkin
        label: Monthly check-in
        first: 1 month
        every: 1 month
        until: 12 months
        window: {early_days: 0, late_days: 3}
      - id: after_weeks
        type: clinic_visit
        label: Visit
        phases:
          - {name: weekly, first: 0 days, every: 1 week, count: 2}
          - {name: monthly, every: 1 month, count: 3}
        window: {early_days: 0, late_days: 0}
    """
)


def test_a_jan_31_anchor_does_not_skip_february() -> None:
    protocol = parse_protocol(MONTHLY, file="month-end.yaml")
    events = expand_schedule(protocol, cohort="all", anchor_date=date(2025, 1, 31))
    monthly = [e.target_date for e in events if e.item_id == "monthly"]
    assert monthly == [
        date(2025, 2, 28),
        date(2025, 3, 31),
        date(2025, 4, 30),
        date(2025, 5, 31),
        date(2025, 6, 30),
        date(2025, 7, 31),
        date(2025, 8, 31),
        date(2025, 9, 30),
        date(2025, 10, 31),
        date(2025, 11, 30),
        date(2025, 12, 31),
        date(2026, 1, 31),  # until 12 months is inclusive
    ]
    leap = expand_schedule(protocol, cohort="all", anchor_date=date(2024, 1, 31))
    assert [e.target_date for e in leap if e.item_id == "monthly"][:3] == [
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2024, 4, 30),
    ]
    # A monthly phase after a weekly one counts from the last weekly date (Feb 7 -> Mar 7 ...).
    visits = [e.target_date for e in events if e.item_id == "after_weeks"]
    assert visits == [
        date(2025, 1, 31),
        date(2025, 2, 7),
        date(2025, 3, 7),
        date(2025, 4, 7),
        date(2025, 5, 7),
    ]


# --- Re-anchoring -----------------------------------------------------------------------------


def test_a_scan_done_10_days_late_moves_the_next_scans(protocols: dict[str, Protocol]) -> None:
    anchor = date(2025, 1, 6)
    done = anchor + days(84 + 10)  # scan 1 was due at week 12
    events = reanchor_item(
        protocols["stop-her2"],
        cohort="stop",
        anchor_date=anchor,
        item_id="restaging_scan",
        sequence=1,
        completed_on=done,
    )
    expected = {
        "restaging_scan:2": around(done + W12, 14, 14),  # day 178
        "restaging_scan:3": around(done + 2 * W12, 14, 14),  # day 262
        "restaging_scan:4": around(done + 3 * W12, 14, 14),  # day 346, still in year 1
    }
    assert done + 3 * W12 == date(2025, 12, 18)
    # After year 1 the 3-month interval applies, from the last (moved) scan.
    for k, day in enumerate(quarterly_on_day(date(2026, 3, 18), 36), start=5):
        expected[f"restaging_scan:{k}"] = around(day, 14, 14)
    assert plan(events) == expected
    assert [e.phase for e in events[2:4]] == ["year_1", "after_year_1"]


def test_a_late_scan_near_the_year_boundary_starts_the_quarterly_phase(
    protocols: dict[str, Protocol],
) -> None:
    anchor = date(2025, 1, 6)
    # Scan 4 (due day 336) done on day 359 = 2025-12-31: still in year 1 (ends day 365), but the
    # next 12-week date is past it, so the 3-month phase starts from the 31st.
    events = reanchor_item(
        protocols["stop-her2"],
        cohort="stop",
        anchor_date=anchor,
        item_id="restaging_scan",
        sequence=4,
        completed_on=date(2025, 12, 31),
    )
    assert [e.target_date for e in events[:5]] == [
        date(2026, 3, 31),
        date(2026, 6, 30),
        date(2026, 9, 30),
        date(2026, 12, 31),
        date(2027, 3, 31),
    ]
    assert events[0].key == "restaging_scan:5"
    # Done after year 1 ended: the quarterly phase continues from the actual date.
    later = reanchor_item(
        protocols["stop-her2"],
        cohort="stop",
        anchor_date=anchor,
        item_id="restaging_scan",
        sequence=4,
        completed_on=date(2026, 1, 11),
    )
    assert [e.target_date for e in later[:2]] == [date(2026, 4, 11), date(2026, 7, 11)]


def test_reanchor_edge_cases(protocols: dict[str, Protocol]) -> None:
    stop_her2 = protocols["stop-her2"]
    anchor = date(2025, 1, 6)
    kwargs = {"anchor_date": anchor, "sequence": 1, "completed_on": anchor + days(40)}
    # Visits do not re-anchor: nothing to re-plan.
    assert reanchor_item(stop_her2, cohort="stop", item_id="visit", **kwargs) == []  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no schedule item"):
        reanchor_item(stop_her2, cohort="stop", item_id="scan", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not planned for cohort"):
        reanchor_item(stop_her2, cohort="continue", item_id="restaging_scan", **kwargs)  # type: ignore[arg-type]
    # A completion after the item's last phase leaves nothing to plan.
    assert (
        reanchor_item(
            stop_her2,
            cohort="stop",
            anchor_date=anchor,
            item_id="restaging_scan",
            sequence=40,
            completed_on=date(2035, 2, 1),
        )
        == []
    )


# --- NCT07239271 ------------------------------------------------------------------------------


def test_nct07239271_control_arm(protocols: dict[str, Protocol]) -> None:
    anchor = date(2025, 9, 1)  # cycle 1 day 1
    events = expand_schedule(protocols["nct07239271"], cohort="control", anchor_date=anchor)
    expected = {f"cycle:{n}": around(anchor + days(21 * (n - 1)), 0, 3) for n in range(1, 7)}
    expected["imaging_control:1"] = around(anchor + days(42), 7, 0)  # after C2
    expected["imaging_control:2"] = around(anchor + days(84), 7, 0)  # after C4
    assert plan(events) == expected
    assert {e.regimen for e in events if e.item_id == "cycle"} == {"tcbhp"}
    # 09:00 in Shanghai (UTC+8, no DST) is 01:00 UTC.
    assert events[0].target_at == datetime(2025, 9, 1, 1, tzinfo=UTC)


def test_nct07239271_adaptive_arm_before_any_decision(protocols: dict[str, Protocol]) -> None:
    anchor = date(2025, 9, 1)
    events = expand_schedule(protocols["nct07239271"], cohort="adaptive", anchor_date=anchor)
    assert plan(events) == {
        "ctdna_baseline:1": around(anchor, 14, 0),
        "cycle:1": around(anchor, 0, 3),
        "ctdna_c1:1": around(anchor + days(21), 3, 0),  # after cycle 1
        "cycle:2": around(anchor + days(21), 0, 3),
        "imaging_c2:1": around(anchor + days(42), 7, 0),  # after cycle 2
        "decision_c2:1": around(anchor + days(42), 0, 3),
        "cycle:3": around(anchor + days(42), 0, 3),
        "cycle:4": around(anchor + days(63), 0, 3),
        "imaging_c4:1": around(anchor + days(84), 7, 0),  # after cycle 4
        "decision_c4:1": around(anchor + days(84), 0, 3),
        "cycle:5": around(anchor + days(84), 0, 3),
        "cycle:6": around(anchor + days(105), 0, 3),
    }
    # Same-day events: the draw, scan and decision come before the cycle they precede.
    assert [e.key for e in events[4:7]] == ["imaging_c2:1", "decision_c2:1", "cycle:3"]
    regimens = {e.key: e.regimen for e in events if e.item_id == "cycle"}
    assert regimens == {
        "cycle:1": "nab_p_hp",
        "cycle:2": "nab_p_hp",
        "cycle:3": None,
        "cycle:4": None,
        "cycle:5": None,
        "cycle:6": None,
    }
    decision = next(e for e in events if e.key == "decision_c2:1")
    assert decision.decision_id == "after_c2"
    assert next(e for e in events if e.key == "cycle:3").decision_id == "after_c2"


def test_a_delayed_cycle_moves_the_later_cycles_and_checkpoints(
    protocols: dict[str, Protocol],
) -> None:
    anchor = date(2025, 9, 1)
    given = anchor + days(21 + 4)  # cycle 2 given 4 days late
    events = reanchor_item(
        protocols["nct07239271"],
        cohort="adaptive",
        anchor_date=anchor,
        item_id="cycle",
        sequence=2,
        completed_on=given,
        choices={"after_c2": Choice("tcbhp", 2)},
    )
    assert plan(events) == {
        "imaging_c2:1": around(given + days(21), 7, 0),
        "decision_c2:1": around(given + days(21), 0, 3),
        "cycle:3": around(given + days(21), 0, 3),
        "cycle:4": around(given + days(42), 0, 3),
        "imaging_c4:1": around(given + days(63), 7, 0),
        "decision_c4:1": around(given + days(63), 0, 3),
        "cycle:5": around(given + days(63), 0, 3),
        "cycle:6": around(given + days(84), 0, 3),
    }
    assert [e.regimen for e in events if e.item_id == "cycle"] == ["tcbhp", "tcbhp", None, None]


def test_plan_treatment_from_a_later_cycle(protocols: dict[str, Protocol]) -> None:
    anchor = date(2025, 9, 1)
    events = plan_treatment(
        protocols["nct07239271"], cohort="control", anchor_date=anchor, from_cycle=5
    )
    assert plan(events) == {
        "imaging_control:2": around(anchor + days(84), 7, 0),
        "cycle:5": around(anchor + days(84), 0, 3),
        "cycle:6": around(anchor + days(105), 0, 3),
    }


# --- Whole timelines --------------------------------------------------------------------------


def test_keys_are_unique_and_windows_hold_the_target(protocols: dict[str, Protocol]) -> None:
    for protocol in protocols.values():
        for cohort in protocol.cohort_keys():
            events = expand_schedule(protocol, cohort=cohort, anchor_date=date(2024, 2, 29))
            keys = [e.key for e in events]
            assert len(keys) == len(set(keys)), (protocol.study, cohort)
            for e in events:
                assert e.window_open_date <= e.target_date <= e.window_close_date
                assert e.window_open_at < e.target_at < e.window_close_at
                assert len(e.key) <= 80


def test_timeline_preview_is_plain_json(protocols: dict[str, Protocol]) -> None:
    data = timeline(protocols["nct07239271"], cohort="adaptive", anchor_date=date(2025, 9, 1))
    json.dumps(data)
    assert data["time_zone"] == "Asia/Shanghai"
    assert data["events"][0]["target_local"] == "2025-09-01T09:00:00+08:00"
    assert data["events"][0]["target_at"] == "2025-09-01T01:00:00Z"
    assert [d["id"] for d in data["decisions"]] == ["after_c2", "after_c4"]
    # Every combination has a rule; the report counts those left to the care team on purpose.
    assert [d["uncovered"] for d in data["decisions"]] == [[], []]
    assert [(d["combinations"], d["team_decides"]) for d in data["decisions"]] == [
        (162, 78),
        (12, 6),
    ]
    assert [c["key"] for c in data["participant_choices"]] == ["scan_modality"]
    phases = {(p["item_id"], p["phase"]): p["count"] for p in data["phases"]}
    assert phases[("cycle", "nab_p_hp")] == 2

    stop = timeline(protocols["stop-her2"], cohort="stop", anchor_date=date(2025, 1, 6))
    phases = {(p["item_id"], p["phase"]): p for p in stop["phases"]}
    assert phases[("restaging_scan", "year_1")]["count"] == 4
    assert phases[("restaging_scan", "after_year_1")]["first"] == "2026-03-08"
