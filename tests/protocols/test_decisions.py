"""Decision tables: every combination of every shipped table, generated from the table; the
NCT07239271 reading of the seed; load-time completeness and overlap errors; re-planning after a
choice."""

from __future__ import annotations

import textwrap
from datetime import date, timedelta
from pathlib import Path

import pytest

from config.settings import PROTOCOLS_DIR
from server.protocols.definition import (
    FACT_VALUES,
    UNKNOWN,
    DecisionTable,
    Protocol,
    ProtocolError,
    load_all,
    load_protocol,
    parse_protocol,
)
from server.protocols.rules import (
    ANY_REGIMEN,
    NO_MATCH,
    TEAM_DECIDES,
    Choice,
    decision_report,
    evaluate_decision,
    expand_schedule,
    plan_after_decision,
    table_rows,
    uncovered_combinations,
)

ANCHOR = date(2025, 9, 1)
PROTOCOLS = load_all(PROTOCOLS_DIR)


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


# --- Every combination of every shipped table (generated from the tables) -----------------------


def _combinations() -> list[tuple[str, str, dict[str, str]]]:
    out = []
    for key, protocol in sorted(PROTOCOLS.items()):
        regimens = [r.key for r in protocol.treatment.regimens] if protocol.treatment else []
        for table in protocol.decisions:
            for row in table_rows(table, regimens):
                out.append((key, table.id, dict(row.facts)))
    return out


COMBINATIONS = _combinations()


def test_the_generated_combinations_are_the_full_product_of_the_fact_values() -> None:
    # 3 (baseline) x 3 (C1) x 6 (response) x 3 (PAM) and 6 (response) x 2 (regimen).
    sizes: dict[tuple[str, str], int] = {}
    for key, table_id, _ in COMBINATIONS:
        sizes[(key, table_id)] = sizes.get((key, table_id), 0) + 1
    assert sizes == {("nct07239271", "after_c2"): 162, ("nct07239271", "after_c4"): 12}
    for kind, values in FACT_VALUES.items():
        assert values[-1] == UNKNOWN, kind  # every fact may be unknown, so tables must say


@pytest.mark.parametrize(
    ("key", "table_id", "given"),
    COMBINATIONS,
    ids=[f"{k}-{t}-" + "-".join(g.values()) for k, t, g in COMBINATIONS],
)
def test_every_combination_gets_an_answer_never_a_fall_through(
    key: str, table_id: str, given: dict[str, str]
) -> None:
    protocol = PROTOCOLS[key]
    table = protocol.decision(table_id)
    regimens = {r.key for r in protocol.treatment.regimens} if protocol.treatment else set()
    matching = [r for r in table.rules if all(given[f] in v for f, v in r.when.items())]
    assert matching, f"no rule for {given}"
    # Without a declared order, every rule matching a combination says the same thing.
    if table.order == "exclusive":
        assert (
            len({(r.regimen, str(r.choose_from), r.cycles, r.team_decides) for r in matching}) == 1
        )
    rule = matching[0]
    regimen_fact = table.regimen_fact
    current = "tcbhp" if regimen_fact and given.get(regimen_fact) == ANY_REGIMEN else None
    outcome = evaluate_decision(
        table, {**given, **({regimen_fact: current} if current and regimen_fact else {})}
    )
    assert outcome.rule_id == rule.id
    assert not outcome.explanation.startswith(NO_MATCH)
    if rule.team_decides is not None:
        assert outcome.team_decides == rule.team_decides and len(rule.team_decides) > 40
        assert (outcome.regimen, outcome.options, outcome.cycles) == (None, (), None)
        assert TEAM_DECIDES in outcome.explanation
    elif rule.choose_from is not None:
        assert outcome.regimen is None and set(outcome.options) == set(rule.choose_from)
        assert set(outcome.options) <= regimens and outcome.cycles == rule.cycles
    else:
        expected = current if rule.regimen == "same" else rule.regimen
        assert (outcome.regimen, outcome.cycles) == (expected, rule.cycles)
        assert outcome.regimen in regimens


def _seed_reading(baseline: str, c1: str, response: str, pam: str) -> str:
    """NCT07239271 after C2 as the file's comments read seed 004, written out independently of
    the rules: a regimen, or "team" where the protocol leaves it to the care team."""
    positive = "positive" in (baseline, c1)  # "ctDNA (+) at baseline or after one cycle"
    if positive:
        return {"true": "everoht", "false": "pyroht"}.get(pam, "team")
    if c1 != "negative":  # ctDNA (-) needs the C1 test ("After one cycle ... ctDNA testing")
        return "team"
    if response in ("CR", "PR"):  # "achieves PR": CR counts as a response
        return "nab_p_hp"
    if response in ("SD", "PD"):  # "non-PR"
        return "tcbhp"
    return "team"  # NE or no imaging: no response to decide on


@pytest.mark.parametrize(
    "given",
    [g for k, t, g in COMBINATIONS if t == "after_c2"],
    ids=["-".join(g.values()) for k, t, g in COMBINATIONS if t == "after_c2"],
)
def test_after_c2_agrees_with_the_seed_reading_for_every_combination(
    after_c2: DecisionTable, given: dict[str, str]
) -> None:
    outcome = evaluate_decision(after_c2, given)
    expected = _seed_reading(**dict(zip(("baseline", "c1", "response", "pam"), given.values())))
    if expected == "team":
        assert outcome.team_decides, given
    else:
        assert (outcome.regimen, outcome.cycles) == (expected, 2), given


# --- The three cases measured in issue 14 -------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "rule_id", "regimen"),
    [
        # Baseline (+) with a PAM mutation, C1 (-) reporting none: the mutation stays found.
        (facts("positive", "negative", "PR", True), "ctdna_pos_baseline_pam", "everoht"),
        # ctDNA (-) with a complete response: CR counts as a response.
        (facts("negative", "negative", "CR", False), "ctdna_neg_response", "nab_p_hp"),
        # Baseline (+) without a PAM mutation, then C1 (-): ctDNA (+) at baseline, no PAM.
        (facts("positive", "negative", "SD", False), "ctdna_pos_baseline_no_pam", "pyroht"),
    ],
)
def test_the_three_measured_cases_get_a_recommendation(
    after_c2: DecisionTable, given: dict[str, object], rule_id: str, regimen: str
) -> None:
    outcome = evaluate_decision(after_c2, given)
    assert (outcome.rule_id, outcome.regimen, outcome.cycles) == (rule_id, regimen, 2)
    assert outcome.options == (regimen,)
    assert rule_id in outcome.explanation and regimen in outcome.explanation


@pytest.mark.parametrize(
    ("given", "rule_id"),
    [
        (facts("negative", "negative", "NE", False), "ctdna_neg_response_not_assessed"),
        (facts("negative", "negative", None, False), "ctdna_neg_response_not_assessed"),
        (facts("negative", "positive", "SD", "unknown"), "ctdna_pos_c1_pam_unknown"),
        (facts("positive", "negative", "PR", None), "ctdna_pos_baseline_pam_unknown"),
        (facts("negative", None, "PR", False), "c1_ctdna_not_known"),
        ({"response": "PR"}, "c1_ctdna_not_known"),  # nothing known yet but the response
    ],
)
def test_left_to_the_care_team_on_purpose_with_the_reason(
    after_c2: DecisionTable, given: dict[str, object], rule_id: str
) -> None:
    outcome = evaluate_decision(after_c2, given)
    assert outcome.rule_id == rule_id and outcome.is_match and outcome.is_team_decision
    assert outcome.team_decides and outcome.team_decides in outcome.explanation
    # Absent or None is unknown: every fact is reported, so the team sees what was missing.
    assert set(outcome.facts) == set(after_c2.facts)


def test_bad_facts_are_refused_not_guessed(after_c2: DecisionTable) -> None:
    with pytest.raises(ValueError, match="reads no fact 'ctdna'"):
        evaluate_decision(after_c2, {"ctdna": "positive"})
    with pytest.raises(ValueError, match="'maybe', not one of true, false, unknown"):
        evaluate_decision(after_c2, {"pam_mutation": "maybe"})
    with pytest.raises(ValueError, match="'XR', not one of CR, PR, SD, PD, NE, unknown"):
        evaluate_decision(after_c2, {"response": "XR"})
    # Text in any case is read; "Unknown" is unknown.
    outcome = evaluate_decision(after_c2, facts("Negative", "POSITIVE", "pr", "true"))
    assert outcome.rule_id == "ctdna_pos_c1_pam"
    assert evaluate_decision(after_c2, facts("negative", "Unknown", "PR", False)).team_decides


# --- After cycle 4 ----------------------------------------------------------------------------


@pytest.mark.parametrize("response", ["PR", "CR"])
def test_after_c4_a_response_continues_the_same_regimen(
    after_c4: DecisionTable, response: str
) -> None:
    outcome = evaluate_decision(after_c4, {"response": response, "current_regimen": "pyroht"})
    assert (outcome.rule_id, outcome.regimen, outcome.cycles) == ("pr_continue", "pyroht", 2)


def test_after_c4_without_the_current_regimen_the_team_decides(after_c4: DecisionTable) -> None:
    outcome = evaluate_decision(after_c4, {"response": "PR"})
    assert outcome.rule_id == "regimen_not_recorded" and outcome.team_decides


@pytest.mark.parametrize("response", ["SD", "PD"])
def test_after_c4_non_pr_offers_adc_or_ac_h(after_c4: DecisionTable, response: str) -> None:
    outcome = evaluate_decision(after_c4, {"response": response, "current_regimen": "tcbhp"})
    assert outcome.rule_id == "non_pr_switch"
    assert outcome.regimen is None  # the care team picks one of the options
    assert outcome.options == ("adc", "ac_h")
    assert outcome.cycles == 4


@pytest.mark.parametrize("response", ["NE", "unknown"])
def test_after_c4_no_response_goes_to_the_care_team(after_c4: DecisionTable, response: str) -> None:
    outcome = evaluate_decision(after_c4, {"response": response, "current_regimen": "tcbhp"})
    assert outcome.rule_id == "response_not_assessed" and outcome.team_decides
    assert uncovered_combinations(after_c4) == []


# --- The report -----------------------------------------------------------------------------------


def test_the_report_lists_every_combination_with_its_rule(nct: Protocol) -> None:
    report = decision_report(nct)
    assert (report["study"], report["version"]) == ("NCT07239271", "3")
    c2, c4 = report["tables"]
    assert (c2["combinations"], len(c2["rows"]), c2["uncovered"]) == (162, 162, 0)
    assert sum(r["combinations"] for r in c2["rules"]) == 162
    row = next(
        r
        for r in c2["rows"]
        if r["facts"]
        == {
            "ctdna_baseline": "positive",
            "ctdna_after_c1": "positive",
            "response": "SD",
            "pam_mutation": "true",
        }
    )
    assert row["rule_id"] == "ctdna_pos_baseline_pam"
    assert row["also_matching"] == ["ctdna_pos_c1_pam"]
    assert row["outcome"] == {
        "kind": "regimen",
        "regimen": "everoht",
        "options": ["everoht"],
        "cycles": 2,
        "reason": None,
        "text": "everoht ×2",
    }
    assert c4["order"] == "first_match"
    assert [f["values"] for f in c4["facts"]] == [
        ["CR", "PR", "SD", "PD", "NE", "unknown"],
        ["any", "unknown"],
    ]
    assert {r["id"]: r["combinations"] for r in c4["rules"]} == {
        "regimen_not_recorded": 2,
        "pr_continue": 2,
        "non_pr_switch": 4,
        "response_not_assessed": 4,
    }


# --- Load-time completeness and overlap ---------------------------------------------------------

TABLE_FILE = textwrap.dedent(
    """    study: TABLE-TEST
    title: Decision tables
    version: t1
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
      - id: draw
        type: ctdna_draw
        label: Draw
        after_cycle: 1
        window: {early_days: 0, late_days: 0}
      - id: scan
        type: imaging
        modality: mri
        label: Scan
        after_cycle: 1
        window: {early_days: 0, late_days: 0}
    decisions:
      - id: pick
        label: Pick
        facts:
          ctdna: {kind: ctdna_status, item: draw}
          response: {kind: recist_response, item: scan}
        rules:
          - {id: pos, when: {ctdna: positive}, regimen: b, cycles: 2}
          - {id: neg, when: {ctdna: negative}, regimen: a, cycles: 1}
          - id: not_known
            when: {ctdna: unknown}
            team_decides: "no ctDNA result: the rules turn on it"
    """
)


def _load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tables.yaml"
    path.write_text(text)
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    assert info.value.file == "tables.yaml"
    return str(info.value)


def test_a_complete_table_loads(tmp_path: Path) -> None:
    path = tmp_path / "tables.yaml"
    path.write_text(TABLE_FILE)
    table = load_protocol(path).decision("pick")
    assert uncovered_combinations(table) == []
    assert evaluate_decision(table, {"ctdna": None, "response": "PD"}).rule_id == "not_known"


def test_a_hole_is_a_load_error_naming_the_file_the_table_and_the_combination(
    tmp_path: Path,
) -> None:
    holed = TABLE_FILE.replace(
        "      - {id: neg, when: {ctdna: negative}, regimen: a, cycles: 1}\n",
        "      - {id: neg, when: {ctdna: negative, response: [CR, PR]}, regimen: a, cycles: 1}\n",
    )
    assert holed != TABLE_FILE
    message = _load_error(tmp_path, holed)
    assert message.splitlines() == [
        "tables.yaml: decisions[0]: table 'pick': no rule covers ctdna=negative, response=SD "
        '(add a rule for it, or one with `team_decides: "<why>"`)',
        "tables.yaml: decisions[0]: table 'pick': no rule covers ctdna=negative, response=PD "
        '(add a rule for it, or one with `team_decides: "<why>"`)',
        "tables.yaml: decisions[0]: table 'pick': no rule covers ctdna=negative, response=NE "
        '(add a rule for it, or one with `team_decides: "<why>"`)',
        "tables.yaml: decisions[0]: table 'pick': no rule covers ctdna=negative, "
        'response=unknown (add a rule for it, or one with `team_decides: "<why>"`)',
    ]


def test_the_shipped_nct_file_with_version_1s_hole_does_not_load(tmp_path: Path) -> None:
    # Put back version 1's "PR only": CR with ctDNA (-) falls through again.
    text = (Path(PROTOCOLS_DIR) / "nct07239271.yaml").read_text()
    old = "ctdna_after_c1: negative, response: [CR, PR]}"
    assert old in text
    message = _load_error(tmp_path, text.replace(old, "ctdna_after_c1: negative, response: PR}"))
    assert (
        "tables.yaml: decisions[0]: table 'after_c2': no rule covers ctdna_baseline=negative, "
        "ctdna_after_c1=negative, response=CR, pam_mutation=true" in message
    )
    assert "... and 1 more combinations no rule covers" in message  # 6 holes, 5 listed


def test_overlapping_rules_with_different_outcomes_are_a_load_error(tmp_path: Path) -> None:
    overlap = TABLE_FILE.replace(
        "      - id: not_known\n",
        "      - {id: pd_switch, when: {response: PD}, regimen: a, cycles: 3}\n"
        "      - id: not_known\n",
    )
    message = _load_error(tmp_path, overlap)
    assert (
        "tables.yaml: decisions[0]: table 'pick': rules 'pos' (b ×2) and 'pd_switch' (a ×3) both "
        "match ctdna=positive, response=PD; make them exclusive, or declare `order: first_match` "
        "(the first in the file wins)"
    ) in message.splitlines()
    # Declaring the order makes the first one in the file win.
    ordered = overlap.replace("    label: Pick\n", "    label: Pick\n    order: first_match\n")
    table = parse_protocol(ordered, file="tables.yaml").decision("pick")
    assert evaluate_decision(table, {"ctdna": "positive", "response": "PD"}).rule_id == "pos"
    assert evaluate_decision(table, {"ctdna": "negative", "response": "PD"}).rule_id == "neg"


def test_rules_agreeing_on_an_overlap_need_no_order(tmp_path: Path) -> None:
    agreeing = TABLE_FILE.replace(
        "      - id: not_known\n",
        "      - {id: pd_also_b, when: {ctdna: positive, response: PD}, regimen: b, cycles: 2}\n"
        "      - id: not_known\n",
    )
    table = parse_protocol(agreeing, file="tables.yaml").decision("pick")
    rows = {tuple(r.facts.values()): [x.id for x in r.rules] for r in table_rows(table)}
    assert rows[("positive", "PD")] == ["pos", "pd_also_b"]


def test_keeping_a_regimen_that_may_be_unknown_is_a_load_error(tmp_path: Path) -> None:
    same = TABLE_FILE.replace(
        "      ctdna: {kind: ctdna_status, item: draw}\n",
        "      ctdna: {kind: ctdna_status, item: draw}\n      given: {kind: regimen}\n",
    ).replace("regimen: b, cycles: 2}", "regimen: same, cycles: 2}")
    message = _load_error(tmp_path, same)
    assert (
        "table 'pick': rule 'pos' keeps the current regimen, which is unknown in "
        "ctdna=positive, given=unknown, response=CR: put a rule for given: unknown before it"
    ) in message.splitlines()[0]
    assert "... and 1 more combinations with the regimen unknown" in message  # 6: 5 listed


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            '{id: not_known, when: {ctdna: unknown}, team_decides: "why"}',
            "rules[2].team_decides: say why the care team decides",
        ),
        (
            '{id: not_known, when: {ctdna: unknown}, team_decides: "no result at all", cycles: 2}',
            "rules[2].cycles: not with `team_decides`",
        ),
        (
            "{id: not_known, when: {ctdna: unknown}, regimen: a}",
            "rules[2].cycles: required",
        ),
        (
            '{id: not_known, when: {ctdna: unknown}, regimen: a, team_decides: "x y z w v u"}',
            "rules[2].regimen: give exactly one of `regimen`, `choose_from` or `team_decides`",
        ),
    ],
)
def test_team_decides_needs_a_reason_and_no_cycles(
    tmp_path: Path, rule: str, expected: str
) -> None:
    start = TABLE_FILE.index("      - id: not_known")
    text = TABLE_FILE[:start] + f"      - {rule}\n"
    assert expected in _load_error(tmp_path, text)


def test_a_snapshot_of_an_older_version_still_reads_even_with_a_hole() -> None:
    # Completeness is checked when a file loads; a recorded version (its snapshot) keeps working,
    # and a combination it does not cover is the care team's (never a guess).
    holed = TABLE_FILE.replace(
        "      - {id: neg, when: {ctdna: negative}, regimen: a, cycles: 1}\n", ""
    )
    with pytest.raises(ProtocolError):
        parse_protocol(holed, file="tables.yaml")
    snapshot = parse_protocol(TABLE_FILE, file="tables.yaml").definition()
    snapshot["decisions"][0]["rules"].pop(1)
    table = Protocol.model_validate(snapshot).decision("pick")
    outcome = evaluate_decision(table, {"ctdna": "negative"})
    assert not outcome.is_match and outcome.explanation.startswith(NO_MATCH)


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
