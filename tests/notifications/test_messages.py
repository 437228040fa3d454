"""SMS texts: a snapshot per kind and locale, the health-word deny-list, the 2-segment budget,
local time on both sides of a DST change, locale fallback and parameter errors.

Snapshots live in tests/notifications/snapshots/messages.<locale>.json; after a deliberate
wording change, rewrite them with `UPDATE_SNAPSHOTS=1 pytest tests/notifications/test_messages.py`
and review the diff like code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from notifications import messages
from notifications.messages import (
    FORBIDDEN_TERMS,
    KIND_SPECS,
    MAX_SEGMENTS,
    SUPPORTED_LOCALES,
    Audience,
    CatalogError,
    MessageKind,
    MessageParameterError,
    assert_no_health_information,
    load_catalog,
    parse_catalog,
    render,
    resolve_locale,
    segments,
)

SNAPSHOT_DIR = Path(__file__).parent / "snapshots"
LOCALES_DIR = Path(messages.__file__).parent / "locales"
UPDATE_SNAPSHOTS = os.environ.get("UPDATE_SNAPSHOTS") == "1"

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")

CODE = "HER-001"
LONG_CODE = "ABCDEFGH-123"  # 12 characters, the longest participant code
LINK = "https://stepdown.example-hospital.org/s/AbCdEfGhIjKlMnOpQrStUv"
SITE_PHONE = "+33 1 23 45 67 89"
PARTICIPANT_NAMES = ("Jeanne Dupont", "王芳", "Mary-Ann O'Neil")

OPT_OUT_HINT = {
    "en": "Reply STOP to opt out.",
    "fr": "Répondez STOP pour ne plus recevoir de SMS.",
    "zh": "回复STOP退订。",
}

# (label, when, tz): a plain winter day, the spring-forward days of New York and Paris, and an
# August morning in Shanghai given in UTC, so the conversion and the fr month spelling both show.
MOMENTS: list[tuple[str, datetime, str]] = [
    ("paris", datetime(2027, 1, 12, 9, 0, tzinfo=PARIS), "Europe/Paris"),
    ("new_york_dst_day", datetime(2027, 3, 14, 13, 30, tzinfo=UTC), "America/New_York"),
    ("paris_dst_day", datetime(2027, 3, 28, 9, 0, tzinfo=PARIS), "Europe/Paris"),
    ("shanghai", datetime(2027, 8, 25, 1, 30, tzinfo=UTC), "Asia/Shanghai"),
]
REMINDERS = [
    MessageKind.REMINDER_BLOOD_DRAW,
    MessageKind.REMINDER_SCAN,
    MessageKind.REMINDER_VISIT,
    MessageKind.REMINDER_QUESTIONNAIRE,
    MessageKind.REMINDER_OVERDUE,
]


def _bundle_items(n: int, *, long: bool = False) -> list[tuple[str, str]]:
    prefix = "ABCDEFGH-" if long else "HER-"
    return [(f"{prefix}{i:03d}", f"{482100 + i}") for i in range(1, n + 1)]


def _task_bundles() -> dict[str, list[tuple[str, str]]]:
    tasks = [(f"HER-{i:03d}", "") for i in range(101, 141)]
    return {
        "1 task": tasks[:1],
        "3 tasks": tasks[:3],
        "40 tasks": tasks,
        "1 alert 2 tasks": _bundle_items(1) + tasks[:2],
        "3 alerts 40 tasks": _bundle_items(3) + tasks,
    }


def _params(kind: MessageKind, *, full: bool = False, long: bool = False) -> dict[str, Any]:
    """Typical parameters for a kind; `full` adds the optional ones, `long` maxes every length."""
    code = LONG_CODE if long else CODE
    values: dict[str, Any] = {
        "code": code,
        "when": MOMENTS[0][1],
        "tz": MOMENTS[0][2],
        # A questionnaire's window closes on a day (the last one it may be answered).
        "deadline": date(2027, 1, 18),
        "link": LINK,
        "site_phone": SITE_PHONE,
        "activation_code": "12345678" if long else "482193",
        "minutes_valid": 120 if long else 10,
        "ack_code": "482113",
        "tier": 3,
        "site_code": "FR-PARIS-001" if long else "FR-01",
        "items": _bundle_items(3, long=long),
    }
    spec = KIND_SPECS[kind]
    names = [*spec.required, *(spec.optional if full or long else ())]
    return {name: values[name] for name in names}


def _cases() -> dict[str, tuple[MessageKind, dict[str, Any]]]:
    """Every snapshot case: each kind, each reminder at each moment, optional parts on and off."""
    cases: dict[str, tuple[MessageKind, dict[str, Any]]] = {}
    for kind in MessageKind:
        if kind is MessageKind.REMINDER_QUESTIONNAIRE:
            for label, when, tz in MOMENTS:
                deadline = when.astimezone(ZoneInfo(tz)).date()
                cases[f"{kind.value}[{label}]"] = (kind, {**_params(kind), "deadline": deadline})
            cases[f"{kind.value}[full]"] = (kind, _params(kind, full=True))
        elif kind in REMINDERS:
            for label, when, tz in MOMENTS:
                cases[f"{kind.value}[{label}]"] = (kind, {**_params(kind), "when": when, "tz": tz})
            cases[f"{kind.value}[full]"] = (kind, _params(kind, full=True))
        elif kind is MessageKind.ALERT_BUNDLE:
            for n in (1, 3, 40):
                cases[f"{kind.value}[{n}]"] = (kind, {"items": _bundle_items(n), "link": LINK})
            cases[f"{kind.value}[40 long]"] = (
                kind,
                {"items": _bundle_items(40, long=True), "link": LINK},
            )
            # Tasks (no code: no reply needed): the morning digest, alone or after alerts.
            for label, items in _task_bundles().items():
                cases[f"{kind.value}[{label}]"] = (kind, {"items": items, "link": LINK})
        else:
            cases[kind.value] = (kind, _params(kind))
            if KIND_SPECS[kind].optional:
                cases[f"{kind.value}[full]"] = (kind, _params(kind, full=True))
    cases["activation_code[1 minute]"] = (
        MessageKind.ACTIVATION_CODE,
        {**_params(MessageKind.ACTIVATION_CODE), "minutes_valid": 1},
    )
    return cases


def _snapshot(locale: str) -> dict[str, dict[str, str]]:
    out = {}
    for case, (kind, params) in _cases().items():
        text = render(kind, locale, **params)
        info = segments(text)
        plural = "" if info.segments == 1 else "s"
        out[case] = {
            "text": text,
            "sms": f"{info.encoding}, {info.units} units, {info.segments} segment{plural}",
        }
    return out


def _snapshot_problems(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    problems = [f"new case {case} (not in the snapshot)" for case in actual if case not in expected]
    problems += [
        f"case {case} is in the snapshot but no longer rendered"
        for case in expected
        if case not in actual
    ]
    for case, value in actual.items():
        if case in expected and expected[case] != value:
            problems.append(f"{case}:\n  expected {expected[case]}\n  actual   {value}")
    return problems


# --- snapshots ------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_messages_match_snapshot(locale: str) -> None:
    path = SNAPSHOT_DIR / f"messages.{locale}.json"
    actual = _snapshot(locale)
    if UPDATE_SNAPSHOTS:
        SNAPSHOT_DIR.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_SNAPSHOTS=1 and review it"
    expected = json.loads(path.read_text(encoding="utf-8"))
    problems = _snapshot_problems(expected, actual)
    assert not problems, "\n".join(problems)


def test_snapshot_comparison_reports_every_kind_of_difference() -> None:
    expected = {"a": {"text": "x"}, "b": {"text": "y"}}
    actual = {"a": {"text": "x!"}, "c": {"text": "z"}}
    problems = _snapshot_problems(expected, actual)
    assert any(p.startswith("new case c") for p in problems)
    assert any(p.startswith("case b is in the snapshot") for p in problems)
    assert any(p.startswith("a:") for p in problems)
    assert len(problems) == 3
    assert _snapshot_problems(expected, expected) == []


def test_snapshots_cover_every_kind_in_every_locale() -> None:
    for locale in SUPPORTED_LOCALES:
        stored = json.loads((SNAPSHOT_DIR / f"messages.{locale}.json").read_text("utf-8"))
        kinds = {case.split("[")[0] for case in stored}
        assert kinds == {k.value for k in MessageKind}, locale


# --- no health information --------------------------------------------------------------------


def _catalog_strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _catalog_strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _catalog_strings(value)]
    return []


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_catalog_sources_hold_no_health_word_or_name(locale: str) -> None:
    # Read the YAML independently of the loader, so a string the loader skipped is still seen.
    doc = yaml.safe_load((LOCALES_DIR / f"{locale}.yaml").read_text(encoding="utf-8"))
    strings = _catalog_strings(doc)
    assert len(strings) > len(MessageKind)
    for text in strings:
        assert_no_health_information(text, participant_names=PARTICIPANT_NAMES)


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_rendered_messages_hold_no_health_word_name_or_placeholder(locale: str) -> None:
    for case, (kind, params) in _cases().items():
        text = render(kind, locale, **params)
        assert_no_health_information(text, participant_names=PARTICIPANT_NAMES)
        assert "{" not in text and "}" not in text, case


@pytest.mark.parametrize("term", FORBIDDEN_TERMS)
def test_every_forbidden_term_is_caught(term: str) -> None:
    assert term == term.lower()
    for text in (f"Stepdown: {term} x", f"Stepdown: {term.upper()}s.", f"{term}"):
        with pytest.raises(ValueError, match=re.escape(repr(term))):
            assert_no_health_information(text)


@pytest.mark.parametrize(
    "text",
    [
        "Your ctDNA test is HER2-positive",
        "RESULTAT disponible",  # accents dropped
        "test négatif",
        "métastases",
        "ＨＥＲ２",  # full-width letters
        "Join NCT06450314 today",
        "Free-HER follow-up",
        "https://example.org/cancer-centre/s/abc",  # a link can leak too
        "您的检测结果",
        "乳腺癌复查",
    ],
)
def test_deny_list_sees_through_case_accents_width_and_links(text: str) -> None:
    with pytest.raises(ValueError, match="forbidden term"):
        assert_no_health_information(text)


@pytest.mark.parametrize("text", ["dispositif de rappel", "positionnement", "Stepdown", "superb"])
def test_deny_list_matches_word_starts_only(text: str) -> None:
    assert_no_health_information(text)


@pytest.mark.parametrize(
    "text",
    ["Hello Jeanne Dupont", "DUPONT  Jeanne, rappel", "jeanne dupont", "【Stepdown】王芳提醒"],
)
def test_participant_names_are_caught_without_being_echoed(text: str) -> None:
    with pytest.raises(ValueError, match=r"participant name #\d") as caught:
        assert_no_health_information(text, participant_names=PARTICIPANT_NAMES)
    assert "Dupont" not in str(caught.value) and "王芳" not in str(caught.value)


def test_names_match_whole_names_only() -> None:
    # "Will" and "Page" occur in the English templates; a participant so named must still get SMS.
    text = render(MessageKind.WELCOME, "en", code=CODE, link=LINK)
    assert "will" in text.lower() and "page" in text.lower()
    assert_no_health_information(text, participant_names=["Will Page"])


def test_render_refuses_a_name_passed_as_a_parameter() -> None:
    with pytest.raises(ValueError, match="participant name #1"):
        render(
            MessageKind.ALERT_ACK_CONFIRMED,
            "en",
            code="Jeanne Dupont",
            participant_names=["Jeanne Dupont"],
        )


def test_render_refuses_a_health_word_from_a_parameter() -> None:
    with pytest.raises(ValueError, match="'cancer'"):
        render(MessageKind.ALERT_NEW, "en", code="X", ack_code="482113", link=LINK + "/cancer")


def test_render_checks_its_output_even_if_a_catalog_slipped_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = load_catalog("en")
    entry = catalog.entries[MessageKind.REMINDER_SCAN]
    tampered_entry = dataclasses.replace(entry, text={"other": "{code}: CT for tumour on {when}."})
    tampered = dataclasses.replace(
        catalog, entries={**catalog.entries, MessageKind.REMINDER_SCAN: tampered_entry}
    )
    monkeypatch.setattr(messages, "load_catalog", lambda locale: tampered)
    with pytest.raises(ValueError, match="'tumour'"):
        render(MessageKind.REMINDER_SCAN, "en", **_params(MessageKind.REMINDER_SCAN))


def _en_source() -> str:
    return (LOCALES_DIR / "en.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("blood test on", "ctDNA blood test on", "'ctdna'"),
        ("clinic visit on {when}", "visit on {wen}", r"unknown placeholder \['wen'\]"),
        ("participant {code} needs you", "participant X needs you", r"does not show \['code'\]"),
        ("by {deadline}.", "by {deadline!r}.", "plain"),
        ("  redraw_needed:", "  redraw_needed_typo:", "unknown message kinds"),
        ("It expires in {minutes_valid} minute.", "It expires soon.", "does not show"),
        (' {rest} more in Stepdown."', ' more in Stepdown."', "must show {rest}"),
        ('  site_phone: " Questions? Call {site_phone}."\n', "", "needs a fragment"),
    ],
)
def test_catalog_validation_rejects_bad_templates(old: str, new: str, error: str) -> None:
    source = _en_source()
    assert old in source
    with pytest.raises(CatalogError, match=error):
        parse_catalog(source.replace(old, new, 1), locale="en")


def test_shipped_catalogs_load_and_cover_every_kind() -> None:
    for locale in SUPPORTED_LOCALES:
        catalog = load_catalog(locale)
        assert set(catalog.entries) == set(MessageKind)
    assert set(KIND_SPECS) == set(MessageKind)


# --- the SMS budget -------------------------------------------------------------------------------

# Every weekday of every month, with two-digit days and the longest 12-hour time.
WORST_MOMENTS = [
    datetime(2027, month, day, 12, 59, tzinfo=PARIS)
    for month in range(1, 13)
    for day in range(22, 29)
]


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_every_message_fits_two_segments_with_worst_case_parameters(locale: str) -> None:
    for kind in MessageKind:
        params = _params(kind, long=True)
        moments = WORST_MOMENTS if {"when", "deadline"} & set(params) else [None]
        for when in moments:
            if when is not None and "when" in params:
                params["when"] = when
            if when is not None and "deadline" in params:
                params["deadline"] = when.date()
            text = render(kind, locale, **params)
            info = segments(text)
            assert info.segments <= MAX_SEGMENTS, (kind, when, info, text)
            if locale in ("en", "fr"):
                # One non-GSM character would halve the room: keep en and fr in GSM-7.
                assert info.encoding == "GSM-7", (kind, text)
                # With 306 characters there is room for every optional part.
                for name in KIND_SPECS[kind].optional:
                    assert str(params[name]) in text, (kind, name, text)


def test_zh_keeps_the_link_and_drops_the_phone_when_both_do_not_fit() -> None:
    kind = MessageKind.REMINDER_QUESTIONNAIRE
    both = render(kind, "zh", **_params(kind, long=True))
    assert LINK in both and SITE_PHONE not in both
    assert segments(both).segments <= MAX_SEGMENTS
    phone_only = {k: v for k, v in _params(kind, long=True).items() if k != "link"}
    assert SITE_PHONE in render(kind, "zh", **phone_only)
    # With a short phone number there is room for both.
    short = render(kind, "zh", **{**_params(kind, full=True), "site_phone": "+861012345"})
    assert LINK in short and "+861012345" in short


def test_segments_reports_encoding_units_and_parts() -> None:
    info = segments(render(MessageKind.OPT_IN_CONFIRMATION, "zh"))
    assert (info.encoding, info.segments) == ("UCS-2", 1)
    assert segments("a" * 161).segments == 2


# --- alert bundles --------------------------------------------------------------------------------

REST_PATTERN = {
    "en": r" (\d+) more in Stepdown",
    "fr": r" Et (\d+) autres? dans Stepdown",
    "zh": r"另有(\d+)条",
}


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("n", [1, 3, 40])
@pytest.mark.parametrize("long", [False, True])
def test_alert_bundle_fits_keeps_the_first_alert_and_counts_the_rest(
    locale: str, n: int, long: bool
) -> None:
    items = _bundle_items(n, long=long)
    text = render(MessageKind.ALERT_BUNDLE, locale, items=items, link=LINK)
    assert segments(text).segments <= MAX_SEGMENTS, text
    code, ack = items[0]
    assert code in text and f"ACK {ack}" in text
    listed = [i for i, (c, a) in enumerate(items) if c in text and f"ACK {a}" in text]
    assert listed == list(range(len(listed))), "the listed alerts are the first ones, in order"
    rest = re.search(REST_PATTERN[locale], text)
    if len(listed) == n:
        assert rest is None, text
    else:
        assert rest is not None, text
        assert len(listed) + int(rest.group(1)) == n, text
        assert str(n) in text  # the total is stated
        # As many as fit: one more alert would overflow.
        catalog = load_catalog(locale)
        longer = messages._compose_bundle(catalog, {"items": items, "link": LINK}, len(listed) + 1)
        assert segments(longer).segments > MAX_SEGMENTS
    assert LINK in text


def test_alert_bundle_lists_several_alerts_when_they_fit() -> None:
    text = render(MessageKind.ALERT_BUNDLE, "en", items=_bundle_items(40), link=LINK)
    assert text.startswith(
        "URGENT - Stepdown: 40 participants need you now: HER-001 (ACK 482101), HER-002"
    )
    assert text.count("(ACK ") >= 5


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("label", list(_task_bundles()))
def test_a_bundle_with_tasks_lists_them_without_codes_and_fits(locale: str, label: str) -> None:
    items = _task_bundles()[label]
    sms = messages.compose(MessageKind.ALERT_BUNDLE, locale, items=items, link=LINK)
    assert segments(sms.text).segments <= MAX_SEGMENTS, sms.text
    alerts = [(c, a) for c, a in items if a]
    # The alerts' codes (critical ones: "URGENT") come first; tasks say no reply is needed.
    critical, _urgent, _task = LEVEL_WORDS[locale]
    assert sms.text.startswith(critical) == bool(alerts), sms.text
    assert all(f"ACK {a}" in sms.text for _c, a in alerts[:1])
    assert items[0][0] in sms.text
    if not alerts:
        assert "ACK" not in sms.text
    # The copy staff may see hides the alerts' codes, and a task has none to hide.
    assert sms.redacted is None if not alerts else all(a not in sms.redacted for _c, a in alerts)


def test_a_bundle_prefix_carries_every_task_it_lists() -> None:
    items = _bundle_items(2) + _task_bundles()["40 tasks"]
    sms, shown = messages.bundle_prefix("en", items, LINK)
    assert 3 <= shown < len(items)
    assert all(code in sms.text for code, _ack in items[:shown])
    assert " more in Stepdown" not in sms.text  # the rest goes in the next SMS, not "N more"


@pytest.mark.parametrize(
    "items",
    [[], [("HER-001", "12")], [("HER-001", 4821)], [("HER-001",)], "HER-001", [("", "4821")]],
)
def test_alert_bundle_rejects_bad_items(items: object) -> None:
    with pytest.raises(MessageParameterError, match="items"):
        render(MessageKind.ALERT_BUNDLE, "en", items=items, link=LINK)


# --- local time and DST -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "tz", "en", "fr", "zh"),
    [
        # 09:00 in Paris is 08:00 UTC before the 2027-03-28 change and 07:00 UTC after it.
        (datetime(2027, 3, 27, 8, 0, tzinfo=UTC), "Europe/Paris",
         "Sat 27 Mar, 9:00 AM", "samedi 27 mars à 09:00", "3月27日 星期六 09:00"),
        (datetime(2027, 3, 29, 7, 0, tzinfo=UTC), "Europe/Paris",
         "Mon 29 Mar, 9:00 AM", "lundi 29 mars à 09:00", "3月29日 星期一 09:00"),
        # New York: EST (UTC-5) before 2027-03-14, EDT (UTC-4) after; back to EST on 2027-11-07.
        (datetime(2027, 3, 13, 14, 0, tzinfo=UTC), "America/New_York",
         "Sat 13 Mar, 9:00 AM", "samedi 13 mars à 09:00", "3月13日 星期六 09:00"),
        (datetime(2027, 3, 15, 13, 0, tzinfo=UTC), "America/New_York",
         "Mon 15 Mar, 9:00 AM", "lundi 15 mars à 09:00", "3月15日 星期一 09:00"),
        (datetime(2027, 11, 8, 14, 0, tzinfo=UTC), "America/New_York",
         "Mon 8 Nov, 9:00 AM", "lundi 8 novembre à 09:00", "11月8日 星期一 09:00"),
        # Shanghai is a day ahead of UTC in the evening; August shows the GSM-7 "aout" spelling.
        (datetime(2027, 8, 24, 23, 30, tzinfo=UTC), "Asia/Shanghai",
         "Wed 25 Aug, 7:30 AM", "mercredi 25 aout à 07:30", "8月25日 星期三 07:30"),
    ],
)  # fmt: skip
def test_local_time_is_right_on_both_sides_of_dst(
    utc: datetime, tz: str, en: str, fr: str, zh: str
) -> None:
    for locale, when_text in {"en": en, "fr": fr, "zh": zh}.items():
        text = render(MessageKind.REMINDER_BLOOD_DRAW, locale, code=CODE, when=utc, tz=tz)
        assert when_text in text, (locale, text)


def test_the_same_wall_clock_time_across_the_paris_change() -> None:
    before = datetime(2027, 3, 27, 9, 0, tzinfo=PARIS)
    after = before + timedelta(days=2)  # wall-clock arithmetic on a ZoneInfo datetime
    assert before.utcoffset() != after.utcoffset()
    for when in (before, after):
        text = render(MessageKind.REMINDER_VISIT, "fr", code=CODE, when=when, tz="Europe/Paris")
        assert "à 09:00" in text


def test_overdue_day_is_the_local_day() -> None:
    # 23:30 UTC on 11 January is already 12 January in Shanghai; the date-only field must say so.
    when = datetime(2027, 1, 11, 23, 30, tzinfo=UTC)
    text = render(MessageKind.REMINDER_OVERDUE, "zh", code=CODE, when=when, tz="Asia/Shanghai")
    assert "1月12日 星期二" in text
    text = render(MessageKind.REMINDER_OVERDUE, "en", code=CODE, when=when, tz="Asia/Shanghai")
    assert "Tue 12 Jan" in text


@pytest.mark.parametrize(
    ("locale", "says"),
    [
        ("en", "questionnaire to complete by Fri 18 Dec."),
        ("fr", "questionnaire à remplir au plus tard le vendredi 18 décembre."),
        ("zh", "请最晚于12月18日 星期五填写问卷。"),
    ],
)
def test_a_questionnaire_reminder_states_its_last_day_and_no_time(locale: str, says: str) -> None:
    # The window closes at the end of Friday 18 December: "by" that day, never a time of day (a
    # 09:00 there read as a deadline already passed by a participant texted in the afternoon).
    text = render(
        MessageKind.REMINDER_QUESTIONNAIRE, locale, code=CODE, deadline=date(2026, 12, 18)
    )
    assert says in text, text
    assert not re.search(r"\d{1,2}:\d{2}", text), text


# --- locales --------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["de", "", None, "xx-YY", "pt_BR"])
def test_unknown_locale_falls_back_to_english(locale: str | None) -> None:
    for kind in MessageKind:
        params = _params(kind, full=True)
        assert render(kind, locale, **params) == render(kind, "en", **params)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("fr_FR", "fr"), ("fr-CA", "fr"), ("FR", "fr"), ("zh_Hans_CN", "zh"), ("zh-TW", "zh"),
     ("en_US", "en"), ("es", "en"), (None, "en")],
)  # fmt: skip
def test_resolve_locale(tag: str | None, expected: str) -> None:
    assert resolve_locale(tag) == expected


def test_a_regional_tag_renders_its_language() -> None:
    text = render(MessageKind.OPT_IN_CONFIRMATION, "fr_FR")
    assert text == render(MessageKind.OPT_IN_CONFIRMATION, "fr")
    assert text.startswith("Stepdown : ")


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_participant_messages_end_with_the_opt_out_hint_and_staff_messages_never_do(
    locale: str,
) -> None:
    for kind in MessageKind:
        text = render(kind, locale, **_params(kind, full=True))
        spec = KIND_SPECS[kind]
        if kind is MessageKind.OPT_OUT_CONFIRMATION:
            assert "START" in text and OPT_OUT_HINT[locale] not in text
        elif spec.audience is Audience.PARTICIPANT:
            assert text.endswith(OPT_OUT_HINT[locale]), (kind, text)
        else:
            assert OPT_OUT_HINT[locale] not in text, (kind, text)


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_alerts_carry_the_code_ack_and_link(locale: str) -> None:
    for kind in (
        MessageKind.ALERT_NEW,
        MessageKind.ALERT_ESCALATED,
        MessageKind.ALERT_URGENT,
        MessageKind.ALERT_URGENT_ESCALATED,
    ):
        text = render(kind, locale, **_params(kind))
        assert CODE in text and "ACK 482113" in text and text.endswith(LINK)
    for kind in (MessageKind.ALERT_ESCALATED, MessageKind.ALERT_URGENT_ESCALATED):
        assert "3" in render(kind, locale, **_params(kind)).replace("482113", "")


# Each level's words, first thing in the SMS: a chore never reads like a positive result.
LEVEL_WORDS = {
    "en": ("URGENT - ", "action needed today", "Stepdown task, no reply needed"),
    "fr": ("URGENT - ", "action à faire aujourd'hui", "Stepdown, suivi à faire (pas besoin"),
    "zh": ("【Stepdown】紧急", "今日需处理", "【Stepdown】待办（无需回复）"),
}


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_each_level_says_how_urgent_it_is_in_words(locale: str) -> None:
    critical, urgent, task = LEVEL_WORDS[locale]
    for kind in (MessageKind.ALERT_NEW, MessageKind.ALERT_ESCALATED):
        assert render(kind, locale, **_params(kind)).startswith(critical)
    for kind in (MessageKind.ALERT_URGENT, MessageKind.ALERT_URGENT_ESCALATED):
        text = render(kind, locale, **_params(kind))
        assert urgent in text and critical not in text
    for kind in (
        MessageKind.ALERT_TASK,
        MessageKind.RESULT_OVERDUE,
        MessageKind.MISSED_WINDOW,
        MessageKind.REDRAW_NEEDED,
    ):
        text = render(kind, locale, **_params(kind))
        assert text.startswith(task) and "ACK" not in text and critical not in text


# --- parameter errors -----------------------------------------------------------------------------

REQUIRED = [(kind, name) for kind in MessageKind for name in KIND_SPECS[kind].required]


@pytest.mark.parametrize(("kind", "name"), REQUIRED, ids=[f"{k.value}-{n}" for k, n in REQUIRED])
def test_a_missing_parameter_is_named(kind: MessageKind, name: str) -> None:
    params = _params(kind)
    del params[name]
    with pytest.raises(MessageParameterError, match=f"needs parameter '{name}'") as caught:
        render(kind, "fr", **params)
    assert caught.value.parameter == name
    with pytest.raises(MessageParameterError, match=f"'{name}'"):
        render(kind, "en", **{**params, name: None})


@pytest.mark.parametrize(
    ("kind", "override", "name"),
    [
        (MessageKind.REMINDER_SCAN, {"when": datetime(2027, 1, 12, 9, 0)}, "when"),  # naive
        (MessageKind.REMINDER_SCAN, {"when": "2027-01-12T09:00"}, "when"),
        (MessageKind.REMINDER_SCAN, {"tz": "Mars/Olympus_Mons"}, "tz"),
        (MessageKind.REMINDER_SCAN, {"code": "   "}, "code"),
        (MessageKind.REMINDER_SCAN, {"link": LINK}, "link"),  # only questionnaires take a link
        (MessageKind.REMINDER_SCAN, {"wen": "typo"}, "wen"),
        # A deadline is a day (the window's last), not a moment.
        (
            MessageKind.REMINDER_QUESTIONNAIRE,
            {"deadline": datetime(2027, 1, 18, tzinfo=UTC)},
            "deadline",
        ),
        (MessageKind.REMINDER_QUESTIONNAIRE, {"deadline": "2027-01-18"}, "deadline"),
        (MessageKind.REMINDER_QUESTIONNAIRE, {"when": MOMENTS[0][1]}, "when"),
        (MessageKind.ALERT_NEW, {"ack_code": "48a1"}, "ack_code"),
        (MessageKind.ALERT_NEW, {"ack_code": 4821}, "ack_code"),
        (MessageKind.ALERT_NEW, {"ack_code": "48210"}, "ack_code"),
        (MessageKind.ALERT_NEW, {"ack_code": "4821134"}, "ack_code"),
        (MessageKind.ALERT_NEW, {"ack_code": "482 113"}, "ack_code"),
        (MessageKind.ALERT_ESCALATED, {"tier": 0}, "tier"),
        (MessageKind.ALERT_ESCALATED, {"tier": True}, "tier"),
        (MessageKind.ACTIVATION_CODE, {"minutes_valid": "10"}, "minutes_valid"),
    ],
)
def test_a_malformed_or_unexpected_parameter_is_named(
    kind: MessageKind, override: dict[str, object], name: str
) -> None:
    with pytest.raises(MessageParameterError, match=f"'{name}'") as caught:
        render(kind, "en", **{**_params(kind), **override})
    assert caught.value.parameter == name


def test_optional_parameters_given_as_none_are_left_out() -> None:
    kind = MessageKind.REMINDER_QUESTIONNAIRE
    plain = render(kind, "en", **_params(kind))
    assert render(kind, "en", **_params(kind), link=None, site_phone="") == plain
    assert LINK not in plain and "Questions?" not in plain


def test_kind_may_be_given_as_its_value() -> None:
    params = _params(MessageKind.DECISION_DUE)
    assert render("decision_due", "en", **params) == render(
        MessageKind.DECISION_DUE, "en", **params
    )
