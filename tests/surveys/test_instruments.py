"""The instrument format: the shipped files load, and broken files fail naming file and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from config.settings import INSTRUMENTS_DIR
from server.surveys.definition import (
    Instrument,
    InstrumentError,
    ScaleType,
    Severity,
    load_all,
    load_instrument,
    parse_instrument,
)

MINIMAL = textwrap.dedent(
    """\
    key: demo
    version: 1
    title: {en: Demo, fr: Démo, zh: 演示}
    responses:
      yes_no:
        options:
          - {value: 1, label: {en: "Yes", fr: Oui, zh: 是}}
          - {value: 0, label: {en: "No", fr: Non, zh: 否}}
      zero_to_ten: {min: 0, max: 10}
    items:
      - id: first
        number: 1
        text: {en: "First?", fr: "Premier ?", zh: 第一？}
        responses: yes_no
      - id: second
        number: 2
        text: {en: "Second?", fr: "Deuxième ?", zh: 第二？}
        responses: zero_to_ten
        show_if: {item: first, in: [1]}
    scales:
      - {key: S1, label: Scale one, type: symptom, items: [first]}
    """
)


def _broken(old: str, new: str) -> str:
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new)


def _error(text: str, file: str = "broken.yaml") -> InstrumentError:
    with pytest.raises(InstrumentError) as info:
        parse_instrument(text, file=file)
    return info.value


# -- shipped files -------------------------------------------------------------------------------


def test_shipped_instruments_load() -> None:
    instruments = load_all(INSTRUMENTS_DIR)
    assert sorted(instruments) == ["eortc_qlq_c30", "qol_checkin"]
    for key, instrument in instruments.items():
        assert instrument.key == key
        assert instrument.source_file == f"{key}.yaml"
        assert len(instrument.sha256) == 64


def test_qlq_c30_structure() -> None:
    c30 = load_instrument(INSTRUMENTS_DIR / "eortc_qlq_c30.yaml")
    assert [item.number for item in c30.items] == list(range(1, 31))
    assert all(item.is_licensed for item in c30.items)
    assert c30.licence is not None and "EORTC Quality of Life Group" in c30.licence
    for n in range(1, 29):
        answers = c30.answers_for(f"q{n}")
        assert answers.values == [1, 2, 3, 4]
        assert answers.options is not None
        assert [o.label["en"] for o in answers.options] == [
            "Not at all",
            "A little",
            "Quite a bit",
            "Very much",
        ]
    for n in (29, 30):
        assert c30.answers_for(f"q{n}").values == [1, 2, 3, 4, 5, 6, 7]

    expected = {
        "QL2": (ScaleType.GLOBAL_HEALTH, [29, 30]),
        "PF2": (ScaleType.FUNCTIONAL, [1, 2, 3, 4, 5]),
        "RF2": (ScaleType.FUNCTIONAL, [6, 7]),
        "EF": (ScaleType.FUNCTIONAL, [21, 22, 23, 24]),
        "CF": (ScaleType.FUNCTIONAL, [20, 25]),
        "SF": (ScaleType.FUNCTIONAL, [26, 27]),
        "FA": (ScaleType.SYMPTOM, [10, 12, 18]),
        "NV": (ScaleType.SYMPTOM, [14, 15]),
        "PA": (ScaleType.SYMPTOM, [9, 19]),
        "DY": (ScaleType.SYMPTOM, [8]),
        "SL": (ScaleType.SYMPTOM, [11]),
        "AP": (ScaleType.SYMPTOM, [13]),
        "CO": (ScaleType.SYMPTOM, [16]),
        "DI": (ScaleType.SYMPTOM, [17]),
        "FI": (ScaleType.SYMPTOM, [28]),
    }
    got = {s.key: (s.type, [c30.item(i).number for i in s.items]) for s in c30.scales}
    assert got == expected
    assert all(s.min_answered == 0.5 for s in c30.scales)
    # every item 1-30 is scored exactly once
    assert sorted(n for _, numbers in expected.values() for n in numbers) == list(range(1, 31))


def test_licensed_text_shows_a_placeholder_until_the_site_supplies_it() -> None:
    c30 = load_instrument(INSTRUMENTS_DIR / "eortc_qlq_c30.yaml")
    item = c30.item("q12")
    assert item.text_in("en") == "Item 12"
    assert item.text_in("fr") == "Question 12"
    assert item.text_in("zh") == "第12题"
    assert item.text_in("en", {"q12": "Site-supplied text"}) == "Site-supplied text"


def test_qol_checkin_content() -> None:
    checkin = load_instrument(INSTRUMENTS_DIR / "qol_checkin.yaml")
    ids = [item.id for item in checkin.items]
    assert ids == [
        "wellbeing",
        "fatigue",
        "pain",
        "breathlessness",
        "appetite_loss",
        "new_lump",
        "fever",
        "chills",
    ]
    for item in checkin.items:
        assert isinstance(item.text, dict) and set(item.text) == {"en", "fr", "zh"}
    assert checkin.answers_for("wellbeing").values == list(range(11))
    assert checkin.answers_for("pain").values == [0, 1, 2, 3]
    chills = checkin.item("chills")
    assert chills.show_if is not None
    assert (chills.show_if.item, chills.show_if.in_) == ("fever", [1])
    lump = checkin.item("new_lump").critical_if
    fever = checkin.item("fever").critical_if
    assert lump is not None and (lump.in_, lump.severity) == ([1], Severity.HIGH)
    assert fever is not None and (fever.in_, fever.severity) == ([1], Severity.HIGH)
    assert {s.key: s.type for s in checkin.scales} == {
        "symptom_burden": ScaleType.MEAN,
        "wellbeing": ScaleType.GLOBAL_HEALTH,
    }


def test_minimal_parses() -> None:
    instrument = parse_instrument(MINIMAL, file="demo.yaml")
    assert isinstance(instrument, Instrument)
    assert instrument.item("second").text_in("fr") == "Deuxième ?"


# -- broken files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        pytest.param(
            "{min: 0, max: 10}",
            "{min: 10, max: 0}",
            "responses.zero_to_ten.max",
            "must be greater than min (10)",
            id="bad-range",
        ),
        pytest.param(
            "    show_if: {item: first, in: [1]}",
            "    show_if: {item: second, in: [1]}",
            "items[1].show_if.item",
            "an item cannot depend on itself",
            id="show-if-self",
        ),
        pytest.param(
            "    show_if: {item: first, in: [1]}",
            "    show_if: {item: nowhere, in: [1]}",
            "items[1].show_if.item",
            "no item 'nowhere'",
            id="show-if-unknown",
        ),
        pytest.param(
            "    show_if: {item: first, in: [1]}",
            "    show_if: {item: first, in: [7]}",
            "items[1].show_if.in",
            "7 is not an answer of 'first' (one of 0, 1)",
            id="show-if-value",
        ),
        pytest.param(
            "title: {en: Demo, fr: Démo, zh: 演示}",
            "title: {en: Demo, fr: Démo, zh: 演示, de: Demo}",
            "title.de",
            "unknown locale (use en, fr, zh)",
            id="unknown-locale",
        ),
        pytest.param(
            'text: {en: "First?", fr: "Premier ?", zh: 第一？}',
            'text: {en: "First?", fr: "Premier ?"}',
            "items[0].text.zh",
            "missing (every text needs en, fr and zh)",
            id="missing-locale",
        ),
        pytest.param(
            "items: [first]}",
            "items: [first, third]}",
            "scales[0].items[1]",
            "no item 'third'",
            id="scale-unknown-item",
        ),
        pytest.param(
            "items: [first]}",
            "items: [first, second]}",
            "scales[0].items",
            "items must share one answer range (found 0..1, 0..10)",
            id="scale-mixed-ranges",
        ),
        pytest.param(
            "type: symptom",
            "type: severity",
            "scales[0].type",
            "must be one of 'functional', 'symptom', 'global_health' or 'mean'",
            id="scale-type",
        ),
        pytest.param(
            "    responses: zero_to_ten\n",
            "    responses: zero_to_ten\n    critical_if: {in: [11], severity: high}\n",
            "items[1].critical_if.in",
            "11 is not an answer (between 0 and 10)",
            id="critical-value",
        ),
        pytest.param(
            "    responses: zero_to_ten\n",
            "    responses: zero_to_ten\n    critical_if: {in: [9], at_least: 9, severity: high}\n",
            "items[1].critical_if.in",
            "give exactly one of `in` (values) or `at_least` (a threshold)",
            id="critical-both",
        ),
        pytest.param(
            "    responses: zero_to_ten\n",
            "    responses: zero_to_ten\n    critical_if: {at_least: 9, severity: urgent}\n",
            "items[1].critical_if.severity",
            "must be one of 'critical', 'high' or 'normal'",
            id="critical-severity",
        ),
        pytest.param(
            "    responses: zero_to_ten\n",
            "    responses: four_point\n",
            "items[1].responses",
            "no response set 'four_point'",
            id="unknown-response-set",
        ),
        pytest.param(
            "  - id: second\n    number: 2",
            "  - id: first\n    number: 2",
            "items[1].id",
            "'first' is used twice",
            id="duplicate-item",
        ),
        pytest.param(
            "  - id: second\n    number: 2",
            "  - id: second\n    number: 1",
            "items[1].number",
            "must be greater than the previous item's number (1)",
            id="numbers-out-of-order",
        ),
        pytest.param(
            'text: {en: "First?", fr: "Premier ?", zh: 第一？}',
            "text: licensed",
            "licence",
            "required when an item's text is `licensed`",
            id="licensed-without-licence",
        ),
        pytest.param(
            'text: {en: "First?", fr: "Premier ?", zh: 第一？}',
            "text: copyrighted",
            "items[0].text",
            "must be a text per locale or `licensed`",
            id="text-not-licensed-keyword",
        ),
        pytest.param(
            "    responses: yes_no\n",
            "    responses: yes_no\n    requird: false\n",
            "items[0].requird",
            "unknown field",
            id="typo",
        ),
        pytest.param(
            "      - {value: 0, label:",
            "      - {value: 1, label:",
            "responses.yes_no.options[1].value",
            "1 is used twice",
            id="duplicate-option",
        ),
    ],
)
def test_broken_files_name_file_and_field(old: str, new: str, field: str, problem: str) -> None:
    error = _error(_broken(old, new))
    assert error.file == "broken.yaml"
    assert (field, problem) in error.problems, error.problems
    assert f"broken.yaml: {field}: {problem}" in str(error)


def test_show_if_must_name_an_earlier_item() -> None:
    text = _broken(
        "    responses: yes_no\n", "    responses: yes_no\n    show_if: {item: second, in: [3]}\n"
    )
    error = _error(text)
    assert error.problems == [
        ("items[0].show_if.item", "'second' is a later item; show_if must name an earlier item")
    ]


def test_key_must_match_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    with pytest.raises(InstrumentError) as info:
        load_instrument(path)
    assert str(info.value) == "other.yaml: key: must match the file name ('other')"


def test_load_all_names_the_broken_file(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text(MINIMAL, encoding="utf-8")
    (tmp_path / "zzz.yaml").write_text(
        _broken("key: demo", "key: zzz").replace("{min: 0, max: 10}", "{min: 3, max: 3}"),
        encoding="utf-8",
    )
    with pytest.raises(InstrumentError) as info:
        load_all(tmp_path)
    assert str(info.value) == "zzz.yaml: responses.zero_to_ten.max: must be greater than min (3)"


def test_yaml_errors_name_the_file_and_line() -> None:
    error = _error("key: demo\nversion: 1\nversion: 2\n")
    assert error.problems[0][0] == "line 3, column 1"
    assert "duplicate key 'version'" in error.problems[0][1]
    error = _error("key: [unclosed\n")
    assert error.problems[0][1].startswith("not valid YAML")


def test_loader_fields_cannot_be_set_in_the_file() -> None:
    error = _error(MINIMAL + "sha256: abc\n")
    assert error.problems == [("sha256", "set by the loader; remove it from the file")]
