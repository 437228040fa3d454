"""NCT07239271 decision tables: every branch, the no-match cases, and re-planning after a choice."""

from __future__ import annotations

import itertools
import textwrap
from datetime import date, timedelta

import pytest

from config.settings import PROTOCOLS_DIR
from server.protocols.definition import DecisionTable, Protocol, load_protocol, parse_protocol
from server.protocols.rules import (
    NO_MATCH,
    Choice,
    evaluate_decision,
    expand_schedule,
    plan_after_decision,
    uncovered_combinations,
)

ANCHOR = date(2025, 9, 1)


@pytest.fixture(scope="module")
def nct() -> Protocol:
    return load_protocol(f"{PROTOCOLS_DIR}/nct07239271.yaml")


@pytest.fixture(scope="module")
def after_c2(nct: Protocol) -> DecisionTable:
    return nct.decision("after_c2")


@pytest.fixture(scope="module")
def after_c4(nct: Protocol) -> DecisionTable:
    return nct.decision("after_c4")


def facts(baseline: str, c1: str, response: str, pam: object) -> dict[str, object]:
    return {
        "ctdna_baseline": baseline,
        "ctdna_after_c1": c1,
        "response": response,
        "pam_mutation": pam,
    }


# --- After cycle 2 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "rule_id", "regimen"),
    [
        # ctDNA (-) and PR -> continue Nab-P+HP
        (facts("negative", "negative", "PR", False), "ctdna_neg_pr", "nab_p_hp"),
        (facts("negative", "negative", "PR", "unknown"), "ctdna_neg_pr", "nab_p_hp"),
        # ctDNA (-) and non-PR -> TCbHP x2
        (facts("negative", "negative", "SD", False), "ctdna_neg_non_pr", "tcbhp"),
        (facts("negative", "negative", "PD", True), "ctdna_neg_non_pr", "tcbhp"),
        # ctDNA (+) and no PAM mutation -> PyroHT x2
        (facts("negative", "positive", "PR", False), "ctdna_pos_no_pam", "pyroht"),
        (facts("positive", "positive", "SD", False), "ctdna_pos_no_pam", "pyroht"),
        # ctDNA (+) at baseline or after C1 and PAM mutation -> EveroHT x2
        (facts("positive", "negative", "PR", True), "ctdna_pos_baseline_pam", "everoht"),
        (facts("positive", "positive", "PD", True), "ctdna_pos_baseline_pam", "everoht"),
        (facts("negative", "positive", "SD", True), "ctdna_pos_c1_pam", "everoht"),
        # Facts as text, in any case.
        (facts("Negative", "POSITIVE", "pr", "true"), "ctdna_pos_c1_pam", "everoht"),
    ],
)
def test_after_c2_branches(
    after_c2: DecisionTable, given: dict[str, object], rule_id: str, regimen: str
) -> None:
    outcome = evaluate_decision(after_c2, given)
    assert outcome.is_match
    assert (outcome.rule_id, outcome.regimen, outcome.cycles) == (rule_id, regimen, 2)
    assert outcome.options == (regimen,)
    assert rule_id in outcome.explanation and regimen in outcome.explanation


@pytest.mark.parametrize(
    "given",
    [
        facts("negative", "negative", "CR", False),  # CR: the seed names PR only
        facts("negative", "negative", "NE", False),  # not evaluable
        facts("positive", "negative", "PR", False),  # baseline (+), C1 (-), no PAM: not stated
        facts("negative", "positive", "SD", "unknown"),  # PAM status unknown
        {"response": "PR"},  # ctDNA results not known yet
        facts("negative", "negative", "PR", None) | {"ctdna_after_c1": None},
    ],
)
def test_after_c2_no_match_leaves_it_to_the_care_team(
    after_c2: DecisionTable, given: dict[str, object]
) -> None:
    outcome = evaluate_decision(after_c2, given)
    assert not outcome.is_match
    assert (outcome.rule_id, outcome.regimen, outcome.options, outcome.cycles) == (
        None,
        None,
        (),
        None,
    )
    assert outcome.explanation.startswith(NO_MATCH)
    assert NO_MATCH == "no rule matched — care team decides"


def test_after_c2_no_match_says_what_is_missing(after_c2: DecisionTable) -> None:
    outcome = evaluate_decision(after_c2, {"response": "PR", "ctdna_baseline": "negative"})
    assert "not known: ctdna_after_c1, pam_mutation" in outcome.explanation


def test_after_c2_uncovered_combinations_are_exactly_the_unstated_ones(
    after_c2: DecisionTable,
) -> None:
    # By hand: which complete combinations does the seed's text leave open?
    expected = []
    for baseline, c1, response, pam in itertools.product(
        ("positive", "negative"),
        ("positive", "negative"),
        ("CR", "PR", "SD", "PD", "NE"),
        ("true", "false", "unknown"),
    ):
        both_negative = baseline == c1 == "negative"
        if both_negative:
            covered = response in ("PR", "SD", "PD")
        elif pam == "true":
            covered = True  # EveroHT: ctDNA (+) at baseline or after C1
        elif pam == "false":
            covered = c1 == "positive"  # PyroHT
        else:
            covered = False  # PAM unknown
        if not covered:
            expected.append(
                {
                    "ctdna_baseline": baseline,
                    "ctdna_after_c1": c1,
                    "response": response,
                    "pam_mutation": pam,
                }
            )
    uncovered = uncovered_combinations(after_c2)
    assert sorted(map(str, uncovered)) == sorted(map(str, expected))
    assert len(uncovered) == 26


def test_bad_facts_are_refused_not_guessed(after_c2: DecisionTable) -> None:
    with pytest.raises(ValueError, match="reads no fact 'ctdna'"):
        evaluate_decision(after_c2, {"ctdna": "positive"})
    with pytest.raises(ValueError, match="'maybe', not one of true, false, unknown"):
        evaluate_decision(after_c2, {"pam_mutation": "maybe"})
    with pytest.raises(ValueError, match="'XR', not one of CR, PR, SD, PD, NE"):
        evaluate_decision(after_c2, {"response": "XR"})


# --- After cycle 4 ----------------------------------------------------------------------------


def test_after_c4_pr_continues_the_same_regimen(after_c4: DecisionTable) -> None:
    outcome = evaluate_decision(after_c4, {"response": "PR", "current_regimen": "pyroht"})
    assert (outcome.rule_id, outcome.regimen, outcome.cycles) == ("pr_continue", "pyroht", 2)


def test_after_c4_pr_without_the_current_regimen_is_not_guessed(after_c4: DecisionTable) -> None:
    outcome = evaluate_decision(after_c4, {"response": "PR"})
    assert not outcome.is_match
    assert outcome.explanation.startswith(NO_MATCH)
    assert "pr_continue" in outcome.explanation


@pytest.mark.parametrize("response", ["SD", "PD"])
def test_after_c4_non_pr_offers_adc_or_ac_h(after_c4: DecisionTable, response: str) -> None:
    outcome = evaluate_decision(after_c4, {"response": response, "current_regimen": "tcbhp"})
    assert outcome.rule_id == "non_pr_switch"
    assert outcome.regimen is None  # the care team picks one of the options
    assert outcome.options == ("adc", "ac_h")
    assert outcome.cycles == 4


@pytest.mark.parametrize("response", ["CR", "NE"])
def test_after_c4_cr_and_ne_go_to_the_care_team(after_c4: DecisionTable, response: str) -> None:
    outcome = evaluate_decision(after_c4, {"response": response, "current_regimen": "tcbhp"})
    assert not outcome.is_match
    assert uncovered_combinations(after_c4) == [{"response": "CR"}, {"response": "NE"}]


# --- First match wins -------------------------------------------------------------------------

OVERLAP = textwrap.dedent(
    """\
    study: ORDER-TEST
    title: Rule order
    version: a1
    locale: en
    time_zone: UTC
    anchor: C1D1
    cohorts: [{key: arm, label: Arm}]
    treatment:
      cycle_days: 14
      window: {early_days: 0, late_days: 0}
      regimens: [{key: a, label: A}, {key: b, label: B}]
      arms:
        arm: [{regimen: a, cycles: 1}, {decision: pick, planned_cycles: 1}]
    schedule:
      - id: scan
        type: imaging
        modality: mri
        label: Scan
        after_cycle: 1
        window: {early_days: 0, late_days: 0}
    decisions:
      - id: pick
        label: Pick
        facts: {response: {kind: recist_response, item: scan}}
        rules:
          - {id: first, when: {response: [PR, CR]}, regimen: a, cycles: 1}
          - {id: second, when: {response: PR}, regimen: b, cycles: 1}
          - {id: catch_all, regimen: b, cycles: 3}
    """
)


def test_the_first_matching_rule_wins() -> None:
    table = parse_protocol(OVERLAP, file="order.yaml").decision("pick")
    assert evaluate_decision(table, {"response": "PR"}).rule_id == "first"
    # A rule without conditions matches anything: a site may add one on purpose.
    outcome = evaluate_decision(table, {"response": "PD"})
    assert (outcome.rule_id, outcome.regimen, outcome.cycles) == ("catch_all", "b", 3)
    assert uncovered_combinations(table) == []


# --- Re-planning after a choice ---------------------------------------------------------------


def test_a_chosen_regimen_differing_from_the_recommendation_drives_later_cycles(
    nct: Protocol, after_c2: DecisionTable
) -> None:
    recommended = evaluate_decision(after_c2, facts("negative", "negative", "SD", False))
    assert recommended.regimen == "tcbhp"
    # The care team chooses PyroHT instead.
    events = plan_after_decision(
        nct,
        cohort="adaptive",
        anchor_date=ANCHOR,
        decision_id="after_c2",
        regimen="pyroht",
        cycles=2,
    )
    day = {e.key: (e.target_date - ANCHOR).days for e in events}
    assert day == {
        "cycle:3": 42,
        "cycle:4": 63,
        "imaging_c4:1": 84,
        "decision_c4:1": 84,
        "cycle:5": 84,
        "cycle:6": 105,
    }
    regimens = {e.key: e.regimen for e in events if e.item_id == "cycle"}
    assert regimens == {"cycle:3": "pyroht", "cycle:4": "pyroht", "cycle:5": None, "cycle:6": None}
    assert next(e for e in events if e.key == "cycle:3").label.startswith("Cycle 3: PyroHT")


def test_after_c4_choice_follows_the_earlier_one(nct: Protocol) -> None:
    # After C4: not PR -> the team picks AC+H for the suggested 4 cycles, starting 2 days late.
    start = ANCHOR + timedelta(days=86)
    events = plan_after_decision(
        nct,
        cohort="adaptive",
        anchor_date=ANCHOR,
        decision_id="after_c4",
        regimen="ac_h",
        cycles=4,
        start_date=start,
        choices={"after_c2": Choice("pyroht", 2)},
    )
    assert [(e.key, e.target_date, e.regimen) for e in events] == [
        ("cycle:5", start, "ac_h"),
        ("cycle:6", start + timedelta(days=21), "ac_h"),
        ("cycle:7", start + timedelta(days=42), "ac_h"),
        ("cycle:8", start + timedelta(days=63), "ac_h"),
    ]
    # The whole timeline with both choices agrees.
    full = expand_schedule(
        nct,
        cohort="adaptive",
        anchor_date=ANCHOR,
        choices={"after_c2": Choice("pyroht", 2), "after_c4": Choice("ac_h", 4)},
    )
    cycles = [(e.sequence, e.regimen) for e in full if e.item_id == "cycle"]
    assert cycles == [
        (1, "nab_p_hp"),
        (2, "nab_p_hp"),
        (3, "pyroht"),
        (4, "pyroht"),
        (5, "ac_h"),
        (6, "ac_h"),
        (7, "ac_h"),
        (8, "ac_h"),
    ]


def test_a_regimen_started_a_cycle_later_keeps_the_earlier_one_until_then(nct: Protocol) -> None:
    events = plan_after_decision(
        nct,
        cohort="adaptive",
        anchor_date=ANCHOR,
        decision_id="after_c2",
        regimen="everoht",
        cycles=2,
        start_cycle=4,
    )
    assert [(e.key, e.regimen) for e in events if e.item_id == "cycle"][:2] == [
        ("cycle:4", "everoht"),
        ("cycle:5", "everoht"),
    ]
    full = expand_schedule(
        nct,
        cohort="adaptive",
        anchor_date=ANCHOR,
        choices={"after_c2": Choice("everoht", 2, start_cycle=4)},
    )
    assert next(e for e in full if e.key == "cycle:3").regimen == "nab_p_hp"


def test_a_choice_starting_on_its_planned_cycle_is_accepted(nct: Protocol) -> None:
    events = expand_schedule(
        nct,
        cohort="adaptive",
        anchor_date=ANCHOR,
        choices={"after_c2": Choice("tcbhp", 2, start_cycle=3)},
    )
    cycles = {e.sequence: e.regimen for e in events if e.item_id == "cycle"}
    assert (cycles[2], cycles[3], cycles[4], cycles[5]) == ("nab_p_hp", "tcbhp", "tcbhp", None)


def test_choices_are_checked(nct: Protocol) -> None:
    kwargs = {"cohort": "adaptive", "anchor_date": ANCHOR, "decision_id": "after_c2", "cycles": 2}
    with pytest.raises(ValueError, match="unknown regimen 'folfox'"):
        plan_after_decision(nct, regimen="folfox", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot start at cycle 2"):
        plan_after_decision(nct, regimen="tcbhp", start_cycle=2, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="has no decision 'after_c9'"):
        plan_after_decision(
            nct,
            cohort="adaptive",
            anchor_date=ANCHOR,
            decision_id="after_c9",
            regimen="adc",
            cycles=1,
        )
    with pytest.raises(ValueError, match=r"no treatment arm|has no decision"):
        plan_after_decision(
            nct,
            cohort="control",
            anchor_date=ANCHOR,
            decision_id="after_c2",
            regimen="adc",
            cycles=1,
        )
