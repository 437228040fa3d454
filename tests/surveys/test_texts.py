"""A site's licensed instrument text: the file is checked against the instrument, stored in the
database as a new version with an audit row (never the text), shown only to the participants
answering it; the app does not offer an instrument without text in the participant's language
(its reminders wait: test_text_waits.py).

The text file used here is made up (tests/surveys/data): the EORTC wording is licensed and is not
in this repository."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
import yaml
from sqlmodel import col, select

from server.audit import AuditEvent
from server.clock import utcnow
from server.schedules.models import ScheduleEvent
from server.surveys import rules, texts
from server.surveys.models import InstrumentText
from server.surveys.registry import instruments
from tests import factories

DATA = Path(__file__).parent / "data"
MADEUP_FR = DATA / "eortc_qlq_c30.madeup-fr.yaml"
OPEN = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)  # qol:1 (anchor 2027-01-04) is open
M = "/api/v1/mobile"


def c30():
    return instruments()["eortc_qlq_c30"]


def _problems(raw: str, locale: str = "fr") -> list[tuple[str, str]]:
    with pytest.raises(texts.TextError) as caught:
        texts.parse_text(raw.encode(), instrument=c30(), locale=locale, file="t.yaml")
    return caught.value.problems


# --- the file -------------------------------------------------------------------------------------


def test_the_made_up_file_fits_the_qlq_c30() -> None:
    content = texts.parse_text(
        MADEUP_FR.read_bytes(), instrument=c30(), locale="fr", file=MADEUP_FR.name
    )
    assert len(content["items"]) == 30 and content["items"]["q1"].startswith("Question fictive 1")
    assert content["headings"] == {"q8": "Ces derniers jours (titre fictif) :"}
    assert content["responses"]["four_point"] == {
        "1": "Jamais (fictif)",
        "2": "Parfois (fictif)",
        "3": "Souvent (fictif)",
        "4": "Toujours (fictif)",
    }
    assert content["responses"]["seven_point"] == {
        "1": "Très bas (fictif)",
        "7": "Très haut (fictif)",
    }


def test_every_problem_of_a_file_is_named_with_its_place() -> None:
    data = yaml.safe_load(MADEUP_FR.read_text(encoding="utf-8"))
    del data["items"]["q7"]
    data["items"]["q99"] = "Not an item"
    data["items"]["q3"] = "   "
    data["headings"]["q42"] = "No such item"
    data["responses"]["four_point"].pop(4)
    data["responses"]["seven_point"][9] = "Beyond the scale"
    data["responses"]["yes_no"] = {1: "Oui"}
    data["locale"] = "en"
    data["colour"] = "blue"
    problems = dict(_problems(yaml.safe_dump(data, allow_unicode=True)))
    assert problems == {
        "colour": problems["colour"],
        "locale": "'en', but the text is loaded as 'fr'",
        "items.q99": "no such item in the instrument",
        "items.q3": "must not be empty",
        "items": "missing 1 item(s): q7",
        "headings.q42": "no such item in the instrument",
        "responses.four_point": "needs a label for every answer: 4",
        "responses.seven_point.9": "not an answer of seven_point (between 1 and 7)",
        "responses.yes_no": "no item of the instrument uses this answer set",
    }
    assert problems["colour"].startswith("unknown field")


@pytest.mark.parametrize(
    ("text", "place", "problem"),
    [
        ("items: [a, b]\n", "items", "required: a mapping of every item id to its text"),
        ("{{{\n", "line 2, column 1", "not valid YAML"),
        ("- a list\n", "(top level)", "must be a mapping"),
        ("version: '2.0'\n", "version", "but the instrument is version 3.0"),
        ("instrument: qol_checkin\n", "instrument", "is not 'eortc_qlq_c30'"),
    ],
)
def test_a_malformed_file_is_refused(text: str, place: str, problem: str) -> None:
    found = dict(_problems(text))
    assert place in found and problem in found[place], found


def test_yaml_booleans_control_characters_and_lengths_are_refused() -> None:
    base = yaml.safe_load(MADEUP_FR.read_text(encoding="utf-8"))
    body = yaml.safe_dump(base, allow_unicode=True)
    body = body.replace("Jamais (fictif)", "yes", 1).replace("Question fictive 2 :", "Q\\u0007", 1)
    body = body.replace("Question fictive 5 : manger seule ?", "x" * (texts.MAX_TEXT + 1), 1)
    problems = dict(_problems(body))
    assert "quotes" in problems["responses.four_point.1"]
    assert "at most 1,000 characters" in problems["items.q5"]
    with pytest.raises(texts.TextError, match="not UTF-8"):
        texts.parse_text(b"\xff\xfe\x00", instrument=c30(), locale="fr", file="t.yaml")


def test_the_template_lists_every_item_and_answer_and_loads_once_filled() -> None:
    template = texts.template(c30(), "fr")
    assert template.count('"TODO"') == 30  # every item
    assert "Pas du tout" in template  # the instrument's own generic answer labels
    filled = template.replace('"TODO"', '"Texte inventé"').replace(
        '"TODO: which licensed copy and translation this is"', '"inventé"'
    )
    content = texts.parse_text(filled.encode(), instrument=c30(), locale="fr", file="t.yaml")
    assert set(content["items"]) == {f"q{i}" for i in range(1, 31)}


def test_steps_are_short_break_at_headings_answer_sets_and_branches() -> None:
    assert [len(s) for s in rules.steps(c30())] == [5, 5, 5, 5, 4, 4, 2]
    assert [len(s) for s in rules.steps(c30(), {"q8", "q29"})] == [4, 3, 5, 4, 4, 4, 4, 2]
    checkin = instruments()["qol_checkin"]
    assert rules.steps(checkin) == [
        ["wellbeing"],
        ["fatigue", "pain", "breathlessness", "appetite_loss"],
        ["new_lump", "fever"],
        ["chills"],  # asked only after "fever", in an earlier step
    ]


# --- stored, versioned, audited -------------------------------------------------------------------


def test_a_load_is_a_new_version_audited_by_its_hash_never_its_text(db) -> None:
    first = texts.load_text(
        session=db,
        instrument=c30(),
        locale="fr",
        raw=MADEUP_FR.read_bytes(),
        source_file=MADEUP_FR.name,
        actor="cli:site-admin",
        now=utcnow(),
    )
    changed = MADEUP_FR.read_bytes().replace(b"Question fictive 1 :", b"Question fictive 1 bis :")
    second = texts.load_text(
        session=db,
        instrument=c30(),
        locale="fr",
        raw=changed,
        source_file="second.yaml",
        actor="cli:site-admin",
        now=utcnow(),
        reason="corrected translation",
    )
    db.commit()
    assert (first.version, second.version) == (1, 2)
    assert texts.current_text(db, "eortc_qlq_c30", "fr").id == second.id
    shown = texts.wording_for(db, c30(), "fr")
    assert shown.text_version == 2 and shown.questions[0].text.startswith("Question fictive 1 bis")
    assert shown.title == "Questionnaire fictif de qualité de vie"
    assert texts.problem_for(db, c30(), "fr") is None
    assert texts.problem_for(db, c30(), "en") == "no English text loaded"
    rows = db.exec(
        select(AuditEvent)
        .where(AuditEvent.action == "instrument_text.load")
        .order_by(col(AuditEvent.id))
    ).all()
    assert [r.after["version"] for r in rows] == [1, 2]
    assert rows[1].before == {"version": 1, "sha256": first.sha256}
    assert rows[1].after["sha256"] == texts.file_digest(changed) and rows[1].reason
    assert all("fictive" not in str(r.after) + str(r.before) for r in rows)
    # A text checked against another edition of the instrument no longer fits it.
    second.instrument_version = "2.0"
    db.add(second)
    db.flush()
    assert "loaded for version 2.0" in (texts.problem_for(db, c30(), "fr") or "")


def test_the_cli_loads_lists_and_refuses_with_every_problem(app, db, tmp_path) -> None:
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["instruments", "list"])
    assert "eortc_qlq_c30    fr  WAITS: no French text loaded" in listed.output
    assert "qol_checkin      zh  ready (the instrument file's own wording)" in listed.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(MADEUP_FR.read_text(encoding="utf-8").replace("  q30:", "  q31:"), "utf-8")
    refused = runner.invoke(
        args=["instruments", "load-text", "qlq-c30", "--locale", "fr", str(bad)]
    )
    assert refused.exit_code == 1
    assert "bad.yaml: items.q31: no such item in the instrument" in refused.output
    assert "bad.yaml: items: missing 1 item(s): q30" in refused.output
    assert "nothing loaded" in refused.output
    assert db.exec(select(InstrumentText)).all() == []

    loaded = runner.invoke(
        args=[
            "instruments",
            "load-text",
            "qlq-c30",
            "--locale",
            "fr",
            str(MADEUP_FR),
            "--by",
            "ana",
        ]
    )
    assert loaded.exit_code == 0, loaded.output
    assert "loaded eortc_qlq_c30 fr text version 1: 30 items, 1 heading(s)" in loaded.output
    again = runner.invoke(
        args=["instruments", "load-text", "eortc_qlq_c30", "--locale", "fr", str(MADEUP_FR)]
    )
    assert "text version 2" in again.output and "replaces version 1" in again.output
    listed = runner.invoke(args=["instruments", "list"])
    assert re.search(r"eortc_qlq_c30 +fr +ready: text version 2, loaded .* by cli:", listed.output)
    assert "fictive" not in listed.output + loaded.output + again.output
    row = db.exec(select(InstrumentText).where(InstrumentText.version == 1)).one()
    assert row.loaded_by == "cli:ana" and row.source == "Texte inventé pour les tests"
    unknown = runner.invoke(args=["instruments", "text-template", "nope", "--locale", "fr"])
    assert unknown.exit_code == 2 and "installed: eortc_qlq_c30, qol_checkin" in unknown.output
    template = runner.invoke(args=["instruments", "text-template", "qlq-c30", "--locale", "zh"])
    assert template.exit_code == 0 and '  q30: "TODO"' in template.output


# --- shown only where it has text, and only to participants -------------------------------------


def test_the_app_offers_only_questionnaires_with_text_in_its_language(
    app, client, db, world, api_as
) -> None:
    from tests.api.test_mobile import _activate

    a1 = factories.a1_in_scenario(db, world)
    # The French text on file was checked against another edition of the QLQ-C30: unusable.
    stale = texts.current_text(db, "eortc_qlq_c30", "fr")
    stale.instrument_version = "2.0"
    db.add(stale)
    db.commit()
    with time_machine.travel(OPEN, tick=False):
        headers = _activate(client, db, api_as, a1)
        assert client.get(f"{M}/questionnaires", headers=headers).get_json() == []
        event = db.exec(
            select(ScheduleEvent).where(
                ScheduleEvent.participant_id == a1.id, ScheduleEvent.key == "qol:1"
            )
        ).one()
        refused = client.post(
            f"{M}/questionnaires/{event.id}/answers", headers=headers, json={"answers": {"q1": 1}}
        )
        assert refused.status_code == 409
        assert "was loaded for version 2.0" in refused.get_json()["error"]["message"]
        texts.load_text(
            session=db,
            instrument=c30(),
            locale="fr",
            raw=MADEUP_FR.read_bytes(),
            source_file=MADEUP_FR.name,
            actor="cli:site-admin",
            now=utcnow(),
        )
        db.commit()
        [offered] = client.get(f"{M}/questionnaires", headers=headers).get_json()
    assert offered["title"] == "Questionnaire fictif de qualité de vie"
    assert offered["text_version"] == 2
    first = offered["items"][0]
    assert first["text"] == "Question fictive 1 : marcher longtemps ?"
    assert [c["label"] for c in first["choices"]][:2] == ["Jamais (fictif)", "Parfois (fictif)"]
    assert offered["items"][7]["heading"] == "Ces derniers jours (titre fictif) :"
    assert offered["items"][29]["choices"][0] == {"value": 1, "label": "1 – Très bas (fictif)"}


def test_staff_never_see_the_loaded_text(db, world, web_as, api_as) -> None:
    a1 = world.participants["A1"]
    page = web_as("investigator").text(f"/participants/{a1.id}")
    scores = (
        api_as("coordinator").get(f"/api/v1/participants/{a1.id}/scores").get_data(as_text=True)
    )
    audit = " ".join(str(r.after) for r in db.exec(select(AuditEvent)))
    for seen in (page, scores, audit):
        assert "Made-up question 1 " not in seen and "Question inventée 1 " not in seen
