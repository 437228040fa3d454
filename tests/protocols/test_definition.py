"""The protocol format: the four shipped files load, and broken files fail with clear messages."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from config.settings import PROTOCOLS_DIR
from server.protocols.definition import (
    EventType,
    Protocol,
    ProtocolError,
    iter_nodes,
    load_all,
    load_protocol,
    parse_protocol,
)

MINIMAL = textwrap.dedent(
    """\
    study: DEMO-1
    title: Demo study
    version: 1
    locale: en
    time_zone: Europe/Paris
    anchor: Day therapy stops
    cohorts:
      - {key: stop, label: Stop}
    rules: [ctdna_turns_positive]
    schedule:
      - id: ctdna
        type: ctdna_draw
        label: ctDNA draw
        first: 12 weeks
        every: 12 weeks
        until: 1 year
        window: {early_days: 7, late_days: 7}
    """
)


@pytest.fixture(scope="module")
def protocols() -> dict[str, Protocol]:
    return load_all(PROTOCOLS_DIR)


def _defaults(protocol: Protocol) -> set[str]:
    """Every site-default value of a protocol, as 'node path: value path'."""
    return {
        f"{where}: {path}" for where, node in iter_nodes(protocol) for path in node.site_defaults
    }


def test_the_four_trials_load_keyed_by_file_name(protocols: dict[str, Protocol]) -> None:
    assert sorted(protocols) == ["free-her", "heroes", "nct07239271", "stop-her2"]
    assert {k: p.study for k, p in protocols.items()} == {
        "free-her": "FREE-HER",
        "heroes": "HEROES",
        "nct07239271": "NCT07239271",
        "stop-her2": "STOP-HER2",
    }
    for key, protocol in protocols.items():
        assert protocol.key == key
        assert protocol.source_file == f"{key}.yaml"
        assert len(protocol.sha256) == 64
        # version 2: complete decision tables, choices; 3: alert levels; 4: the entry gate
        assert protocol.version == ("4" if protocol.entry_gate else "3")


def test_cohorts_locales_and_rules(protocols: dict[str, Protocol]) -> None:
    assert protocols["stop-her2"].cohort_keys() == ["stop", "continue"]
    assert protocols["nct07239271"].cohort_keys() == ["control", "adaptive"]
    assert protocols["heroes"].cohort_keys() == ["stop", "continue"]
    assert protocols["heroes"].locale == "fr"
    assert protocols["nct07239271"].locale == "zh"
    assert protocols["heroes"].time_zone == "Europe/Paris"
    assert "ctdna_positive_at_baseline" in protocols["heroes"].rules
    # STOP-HER2 draws no ctDNA, so no ctDNA rule may be switched on.
    assert not [r for r in protocols["stop-her2"].rules if r.startswith("ctdna")]


def test_expected_results_and_turnaround(protocols: dict[str, Protocol]) -> None:
    heroes = protocols["heroes"]
    ctdna = heroes.item("ctdna")
    assert ctdna.expects is not None
    assert (ctdna.expects.result, ctdna.expects.turnaround_days) == ("ctdna", 14)
    assert heroes.item("imaging").expects is not None
    markers = protocols["stop-her2"].item("tumor_markers").expects
    assert markers is not None and markers.result == "tumor_markers"
    assert protocols["stop-her2"].item("visit").expects is None


def test_values_the_seeds_do_not_state_are_marked_as_defaults(
    protocols: dict[str, Protocol],
) -> None:
    stop_her2 = _defaults(protocols["stop-her2"])
    scan = protocols["stop-her2"].item("restaging_scan")
    assert scan.phases is not None
    # Seed: "every 12 weeks (+/- 2 weeks)" in year 1; "every 3-6 months" after: 3 is our choice.
    assert "schedule[4].phases[1]: every" in stop_her2
    assert not any(d.startswith("schedule[4].phases[0]:") for d in stop_her2)
    assert "schedule[4]: reanchor" in stop_her2
    assert "schedule[4].expects: turnaround_days" in stop_her2
    # The oncologist's 3-6 months is a per-participant choice; its default (3) is ours.
    assert "choices[0]: default" in stop_her2

    nct = _defaults(protocols["nct07239271"])
    assert {"treatment: cycle_days", "treatment.arms.control[0]: cycles"} <= nct
    assert "decisions[1].rules[2]: cycles" in nct  # ADC / AC+H: the seed gives no count
    assert not any(d.startswith("decisions[0].rules") for d in nct)  # all stated in the seed

    heroes = _defaults(protocols["heroes"])
    assert {"schedule[1]: every", "schedule[1]: window", "schedule[3]: instrument"} <= heroes
    assert {": locale", ": time_zone", ": rules.result_overdue"} <= heroes
    assert ": rules.ctdna_turns_positive" not in heroes  # stated in seed 002


def test_snapshot_round_trips(protocols: dict[str, Protocol]) -> None:
    for protocol in protocols.values():
        data = protocol.definition()
        json.dumps(data)  # the stored snapshot must be plain JSON
        assert "sha256" not in data and "key" not in data
        again = Protocol.model_validate(data)
        assert again.definition() == data


def test_decision_points_and_treatment(protocols: dict[str, Protocol]) -> None:
    nct = protocols["nct07239271"]
    assert nct.treatment is not None
    assert nct.treatment.cycle_days == 21
    assert [s.regimen or s.decision for s in nct.treatment.arms["adaptive"]] == [
        "nab_p_hp",
        "after_c2",
        "after_c4",
    ]
    assert nct.item("decision_c2").type == EventType.DECISION_POINT
    assert nct.item("decision_c2").decision == "after_c2"
    assert nct.decision("after_c2").facts["response"].item == "imaging_c2"


def test_minimal_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(MINIMAL)
    protocol = load_protocol(path)
    assert protocol.key == "demo"
    item = protocol.item("ctdna")
    assert item.expects is not None and item.expects.turnaround_days == 14  # filled from type


def _error(tmp_path: Path, text: str, name: str = "broken.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    assert info.value.file == name
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "late_days: 7}",
            "late_days: -3}",
            "broken.yaml: schedule[0].window.late_days: must be >= 0",
        ),
        ("type: ctdna_draw", "type: ctdna", "broken.yaml: schedule[0].type: must be one of"),
        (
            "every: 12 weeks",
            "every: 12 wks",
            "broken.yaml: schedule[0].every: write a duration like '12 weeks'",
        ),
        (
            "until: 1 year",
            "until: 1 year\n    untill: 2 years",
            "schedule[0].untill: unknown field",
        ),
        ("until: 1 year", "count: 4\n    until: 1 year", "schedule[0].until: give exactly one"),
        ("until: 1 year", "until: 4 weeks", "schedule[0].until: comes before `first`"),
        ("    label: ctDNA draw\n", "", "broken.yaml: schedule[0].label: required"),
        ("rules: [ctdna_turns_positive]", "rules: [ctdna_positive]", "rules[0]: must be one of"),
        ("version: 1", "version: 1\nstudy: DEMO-2", "line 4, column 1: not valid YAML: duplicate"),
        ("time_zone: Europe/Paris", "time_zone: Europe/Lyon", "time_zone: 'Europe/Lyon' is not"),
        ("study: DEMO-1", "study: demo one", "broken.yaml: study: use upper-case letters"),
        ("type: ctdna_draw", "type: imaging", "broken.yaml: schedule[0].modality: required"),
        (
            "window: {early_days: 7, late_days: 7}",
            "window: {early_days: 7, late_days: 7}\n    cohorts: [stp]",
            "broken.yaml: schedule[0].cohorts[0]: no cohort 'stp'",
        ),
        (
            "window: {early_days: 7, late_days: 7}",
            "window: {early_days: 7, late_days: 7}\n    site_defaults: [every, count]",
            "schedule[0].site_defaults[1]: 'count' is not set here",
        ),
        (
            "type: ctdna_draw",
            "type: clinic_visit",
            "broken.yaml: rules[0]: ctdna_turns_positive needs a ctdna_draw item",
        ),
    ],
)
def test_broken_files_name_the_file_and_the_field(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in MINIMAL
    message = _error(tmp_path, MINIMAL.replace(old, new, 1))
    assert expected in message


def test_phase_errors_point_into_the_phase(tmp_path: Path) -> None:
    timing = (
        "    first: 12 weeks\n    every: 12 weeks\n    until: 1 year\n"
        "    window: {early_days: 7, late_days: 7}\n"
    )
    phases = (
        "    window: {early_days: 7, late_days: 7}\n"
        "    reanchor: true\n"
        "    phases:\n"
        "      - {name: year_1, first: 12 weeks, every: 12 weeks, until: 1 year}\n"
        "      - name: later\n"
        "        every: 3 months\n"
        "        count: 4\n"
        "        window: {early_days: 7, late_days: -1}\n"
    )
    assert timing in MINIMAL
    text = MINIMAL.replace(timing, phases)
    message = _error(tmp_path, text, "stop-her2.yaml")
    assert "stop-her2.yaml: schedule[0].phases[1].window.late_days: must be >= 0" in message
    message = _error(tmp_path, text.replace("late_days: -1", "late_days: 7"), "stop-her2.yaml")
    assert "schedule[0].phases[1].count: a re-anchoring item must end phases with `until`" in (
        message
    )


def test_a_phase_that_starts_before_the_previous_one_ends_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "    first: 12 weeks\n    every: 12 weeks\n    until: 1 year\n",
        "    phases:\n"
        "      - {name: early, first: 12 weeks, every: 12 weeks, until: 1 year}\n"
        "      - {name: late, first: 6 months, every: 6 months, until: 3 years}\n",
    )
    message = _error(tmp_path, text)
    assert "broken.yaml: schedule[0].phases[1]: starts on" in message
    assert "not after the previous occurrence" in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert "broken.yaml: (top level): must be a mapping" in _error(tmp_path, "- just\n- a list\n")


def test_loader_fields_cannot_be_written_in_the_file(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL + "sha256: abc\n")
    assert "broken.yaml: sha256: is taken from the file itself" in message


def test_decision_table_errors(tmp_path: Path) -> None:
    nct = (Path(PROTOCOLS_DIR) / "nct07239271.yaml").read_text()
    bad_value = nct.replace(
        "response: [SD, PD]}\n        regimen: tcbhp", "response: [SD, PG]}\n        regimen: tcbhp"
    )
    assert bad_value != nct
    message = _error(tmp_path, bad_value, "nct07239271.yaml")
    assert "nct07239271.yaml: decisions[0].rules[1].when.response: 'PG' is not one of" in message

    bad_regimen = nct.replace("regimen: pyroht", "regimen: pyrotinib")
    message = _error(tmp_path, bad_regimen, "nct07239271.yaml")
    assert "nct07239271.yaml: decisions[0].rules[6].regimen: no regimen 'pyrotinib'" in message

    bad_fact = nct.replace(
        "when: {ctdna_after_c1: positive, pam_mutation: false}", "when: {ctdna_c1: positive}"
    )
    message = _error(tmp_path, bad_fact, "nct07239271.yaml")
    assert "decisions[0].rules[7].when.ctdna_c1: not a declared fact" in message

    bad_source = nct.replace(
        "{kind: recist_response, item: imaging_c2}", "{kind: recist_response, item: ctdna_c1}"
    )
    message = _error(tmp_path, bad_source, "nct07239271.yaml")
    assert "decisions[0].facts.response.item: a ctdna_draw item cannot supply" in message

    decision_c2 = (
        "label: Regimen decision after cycle 2\n    cohorts: [adaptive]\n    after_cycle: "
    )
    late_decision = nct.replace(decision_c2 + "2", decision_c2 + "3")
    assert late_decision != nct
    message = _error(tmp_path, late_decision, "nct07239271.yaml")
    assert "schedule[3].after_cycle: the decision governs cycle 3" in message


def test_load_all_refuses_two_files_for_one_study(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL)
    with pytest.raises(ProtocolError, match=r"b\.yaml: study: 'DEMO-1' is also defined in a\.yaml"):
        load_all(tmp_path)


def test_parse_protocol_reports_several_problems_at_once() -> None:
    text = MINIMAL.replace("late_days: 7}", "late_days: -1}").replace("locale: en", "locale: de")
    with pytest.raises(ProtocolError) as info:
        parse_protocol(text, file="x.yaml")
    paths = [path for path, _ in info.value.problems]
    assert paths == ["locale", "schedule[0].window.late_days"]


def test_reminders_are_optional_and_validated(tmp_path: Path) -> None:
    window = "    window: {early_days: 7, late_days: 7}\n"
    with_reminders = MINIMAL.replace(
        window, window + "    reminders:\n      - {kind: sms, offset: -2 days}\n"
    )
    path = tmp_path / "ok.yaml"
    path.write_text(with_reminders)
    reminders = load_protocol(path).item("ctdna").reminders
    assert reminders is not None and str(reminders[0].offset) == "-2 days"
    message = _error(tmp_path, with_reminders.replace("offset: -2 days", "offset: soon"))
    assert "broken.yaml: schedule[0].reminders[0].offset: write a duration like" in message
