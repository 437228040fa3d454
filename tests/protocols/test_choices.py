"""Per-participant choices in the protocol format and the engine: what the four files declare,
what a choice changes in the plan, and the errors a file with a bad choice gets."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from config.settings import PROTOCOLS_DIR
from server.protocols.definition import Protocol, ProtocolError, load_all, load_protocol
from server.protocols.rules import (
    apply_participant_choices,
    check_participant_choices,
    choice_states,
    expand_schedule,
    reanchor_item,
    timeline,
)

ANCHOR = date(2027, 1, 4)
INTERVAL = "imaging_interval_after_year_1"


@pytest.fixture(scope="module")
def protocols() -> dict[str, Protocol]:
    return load_all(PROTOCOLS_DIR)


@pytest.fixture(scope="module")
def stop_her2(protocols: dict[str, Protocol]) -> Protocol:
    return protocols["stop-her2"]


def test_the_choices_each_protocol_declares(protocols: dict[str, Protocol]) -> None:
    declared = {
        key: {c.key: (c.allowed(), c.normalise(c.default)) for c in p.choices}
        for key, p in protocols.items()
    }
    modality = (["ct_or_mri", "ct", "mri"], "ct_or_mri")
    assert declared == {
        "stop-her2": {
            INTERVAL: (["3 months", "4 months", "5 months", "6 months"], "3 months"),
            "scan_modality": modality,
        },
        "heroes": {"scan_modality": modality},
        "free-her": {"scan_modality": modality},
        "nct07239271": {"scan_modality": modality},
    }
    interval = protocols["stop-her2"].choice(INTERVAL)
    assert interval.decided_by == "treating oncologist"
    assert (interval.cohorts, str(interval.applies_from)) == (["stop"], "1 year")


def _scans(events: list) -> list[tuple[str, date]]:
    return [(e.key, e.target_date) for e in events if e.item_id == "restaging_scan"]


def test_six_monthly_imaging_after_year_one_changes_only_that_phase(stop_her2: Protocol) -> None:
    default = expand_schedule(stop_her2, cohort="stop", anchor_date=ANCHOR)
    six = expand_schedule(
        stop_her2, cohort="stop", anchor_date=ANCHOR, participant_choices={INTERVAL: "6 months"}
    )
    # Year one (every 12 weeks) is the same: 2027-03-29, 06-21, 09-13, 12-06.
    assert _scans(default)[:4] == _scans(six)[:4]
    assert [d for _, d in _scans(six)[:4]][-1] == date(2027, 12, 6)
    # After it: every 3 months by default, every 6 when chosen, counted from the last scan.
    assert [d for _, d in _scans(default)[4:7]] == [
        date(2028, 3, 6),
        date(2028, 6, 6),
        date(2028, 9, 6),
    ]
    assert [d for _, d in _scans(six)[4:7]] == [
        date(2028, 6, 6),
        date(2028, 12, 6),
        date(2029, 6, 6),
    ]
    assert (len(_scans(default)), len(_scans(six))) == (4 + 36, 4 + 18)
    # Nothing else moves.
    others = [(e.key, e.target_at) for e in default if e.item_id != "restaging_scan"]
    assert others == [(e.key, e.target_at) for e in six if e.item_id != "restaging_scan"]
    # A value written another way is the same value; the default is the file's value.
    same = expand_schedule(
        stop_her2, cohort="stop", anchor_date=ANCHOR, participant_choices={INTERVAL: " 6 Month "}
    )
    assert _scans(same) == _scans(six)
    three = expand_schedule(
        stop_her2, cohort="stop", anchor_date=ANCHOR, participant_choices={INTERVAL: "3 months"}
    )
    assert _scans(three) == _scans(default)


def test_re_anchoring_follows_the_chosen_interval(stop_her2: Protocol) -> None:
    # A scan done late in year two: the next one is the chosen interval after the actual date.
    later = reanchor_item(
        stop_her2,
        cohort="stop",
        anchor_date=ANCHOR,
        item_id="restaging_scan",
        sequence=5,
        completed_on=date(2028, 6, 20),
        participant_choices={INTERVAL: "4 months"},
    )
    assert [(e.key, e.target_date) for e in later[:2]] == [
        ("restaging_scan:6", date(2028, 10, 20)),
        ("restaging_scan:7", date(2029, 2, 20)),
    ]


def test_the_interval_is_the_stop_cohorts_choice(stop_her2: Protocol) -> None:
    # The continue cohort has no such choice: a value for it changes nothing there.
    plain = expand_schedule(stop_her2, cohort="continue", anchor_date=ANCHOR)
    chosen = expand_schedule(
        stop_her2, cohort="continue", anchor_date=ANCHOR, participant_choices={INTERVAL: "6 months"}
    )
    assert [(e.key, e.target_date) for e in plain] == [(e.key, e.target_date) for e in chosen]
    assert [c["key"] for c in choice_states(stop_her2, cohort="continue")] == ["scan_modality"]


def test_the_scan_method_applies_to_every_scan_of_the_participant(
    protocols: dict[str, Protocol],
) -> None:
    nct = protocols["nct07239271"]
    events = expand_schedule(
        nct, cohort="adaptive", anchor_date=ANCHOR, participant_choices={"scan_modality": "MRI"}
    )
    scans = {e.key: e.modality for e in events if e.event_type == "imaging"}
    assert scans == {"imaging_c2:1": "mri", "imaging_c4:1": "mri"}
    default = expand_schedule(nct, cohort="control", anchor_date=ANCHOR)
    assert {e.modality for e in default if e.event_type == "imaging"} == {"ct_or_mri"}


def test_unknown_choices_and_values_are_refused(stop_her2: Protocol) -> None:
    with pytest.raises(ValueError, match="has no choice 'scan_interval'"):
        check_participant_choices(stop_her2, {"scan_interval": "6 months"})
    with pytest.raises(ValueError, match=r"'7 months' is not one of 3 months, 4 months"):
        check_participant_choices(stop_her2, {INTERVAL: "7 months"})
    with pytest.raises(ValueError, match="write a duration"):
        check_participant_choices(stop_her2, {INTERVAL: "half a year"})
    with pytest.raises(ValueError, match="'pet' is not a modality"):
        apply_participant_choices(stop_her2, cohort="stop", values={"scan_modality": "pet"})
    with pytest.raises(ValueError, match="'pet_ct' is not one of ct_or_mri, ct, mri"):
        check_participant_choices(stop_her2, {"scan_modality": "pet_ct"})


def test_the_preview_shows_the_choices_and_their_defaults(stop_her2: Protocol) -> None:
    data = timeline(stop_her2, cohort="stop", anchor_date=ANCHOR)
    interval = data["participant_choices"][0]
    assert {k: interval[k] for k in ("key", "value", "default", "is_default", "allowed")} == {
        "key": INTERVAL,
        "value": "3 months",
        "default": "3 months",
        "is_default": True,
        "allowed": ["3 months", "4 months", "5 months", "6 months"],
    }
    assert interval["drives"] == [
        {
            "item": "restaging_scan",
            "item_label": "Restaging scans",
            "phase": "after_year_1",
            "field": "every",
        }
    ]
    six = timeline(
        stop_her2, cohort="stop", anchor_date=ANCHOR, participant_choices={INTERVAL: "6 months"}
    )
    assert (
        six["participant_choices"][0]["value"],
        six["participant_choices"][0]["is_default"],
    ) == (
        "6 months",
        False,
    )
    phases = {(p["item_id"], p["phase"]): p["count"] for p in six["phases"]}
    assert phases[("restaging_scan", "after_year_1")] == 18


# --- Errors in a file ---------------------------------------------------------------------------


def _error(tmp_path: Path, old: str, new: str) -> str:
    text = (Path(PROTOCOLS_DIR) / "stop-her2.yaml").read_text()
    assert old in text, old
    path = tmp_path / "stop-her2.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "default: 3 months           # = restaging_scan.after_year_1.every",
            "default: 4 months",
            "stop-her2.yaml: choices[0].default: '4 months' differs from the file's value "
            "'3 months' for restaging_scan: the file's value is the default",
        ),
        (
            "default: 3 months           # = restaging_scan.after_year_1.every",
            "default: 8 months",
            "stop-her2.yaml: choices[0].default: '8 months' is not one of 3 months, 4 months, "
            "5 months, 6 months",
        ),
        (
            "{item: restaging_scan, phase: after_year_1, field: every}",
            "{item: restaging_scan, phase: year_2, field: every}",
            "stop-her2.yaml: choices[0].drives[0].phase: no phase 'year_2' in restaging_scan",
        ),
        (
            "{item: restaging_scan, phase: after_year_1, field: every}",
            "{item: restaging_scan, field: every}",
            "choices[0].drives[0].phase: name one of the item's phases (year_1, after_year_1)",
        ),
        (
            "{item: restaging_scan, phase: after_year_1, field: every}",
            "{item: visit, phase: weeks_4_to_6, field: every}",
            "choices[0].drives[0].phase: this phase does not repeat (no `every`)",
        ),
        (
            "{item: baseline_scan, field: modality}",
            "{item: visit, field: modality}",
            "choices[1].drives[0].item: only imaging items have a modality",
        ),
        (
            "{item: baseline_scan, field: modality}",
            "{item: restaging_scan, phase: after_year_1, field: every}",
            "choices[1].drives: drive one kind of field (all `every` or all `modality`)",
        ),
        (
            "applies_from: 1 year        # seed 003",
            "applies_from: 2 years       # seed 003",
            "stop-her2.yaml: choices[0].applies_from: with imaging_interval_after_year_1 = "
            "3 months, restaging_scan falls on 2025-04-01, before 2 years from an anchor of "
            "2024-01-31",
        ),
        (
            "range: {min: 3 months, max: 6 months, step: 1 month}",
            "range: {min: 3 months, max: 6 months, step: 4 weeks}",
            "choices[0].range.step: write min, max and step in one unit",
        ),
        (
            "    cohorts: [stop]\n    site_defaults: [default]",
            "    cohorts: [stopped]\n    site_defaults: [default]",
            "choices[0].cohorts[0]: no cohort 'stopped'",
        ),
    ],
)
def test_a_bad_choice_is_a_load_error(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in _error(tmp_path, old, new)
