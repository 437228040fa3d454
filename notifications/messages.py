"""Every SMS Stepdown sends: one template per message kind and locale, rendered to plain text.

Templates live in `notifications/locales/<locale>.yaml` (en, fr, zh); dates and times are
formatted by Babel in the recipient's time zone and language. An unknown locale falls back to
English. Every text is checked twice against a deny-list of health words (`FORBIDDEN_TERMS`):
when a catalog loads and on every rendered message, so an SMS can only ever carry a participant
code, a time, a phone number and a link. A rendered message is meant to fit in `MAX_SEGMENTS`
SMS segments: optional parts are left out, least important first, when it would not, and an
alert bundle lists as many alerts as fit and says how many more there are.
"""

from __future__ import annotations

import enum
import functools
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from babel import Locale
from babel.dates import format_date, format_datetime

from notifications.segments import SegmentInfo, count_segments

SUPPORTED_LOCALES: tuple[str, ...] = ("en", "fr", "zh")
DEFAULT_LOCALE = "en"
# Two concatenated parts: 306 GSM-7 characters or 134 UCS-2 ones. A third part costs money and,
# on some handsets, arrives out of order.
MAX_SEGMENTS = 2

# Each term matches at the start of a word (so "metasta" covers metastasis and métastase,
# "result" covers results and résultat), case-, accent- and width-insensitively. CJK terms match
# anywhere, since CJK text has no spaces between words.
FORBIDDEN_TERMS: tuple[str, ...] = (
    # the test and the disease
    "ctdna", "adn tumoral", "循环肿瘤", "signatera",
    "cancer", "unicancer", "癌", "tumour", "tumor", "tumeur", "肿瘤",
    "her2", "her-2", "erbb2", "breast", "sein", "乳腺",
    "metasta", "转移", "progression", "relapse", "rechute", "récidive", "复发",
    "remission", "malignan",
    "oncolog", "diagnos", "诊断",
    # results
    "positive", "positif", "阳性", "negative", "négatif", "阴性",
    "result", "résultat", "结果",
    # treatment
    "trastuzumab", "pertuzumab", "herceptin", "docetaxel", "pyrotinib", "everolimus",
    "carboplatin", "paclitaxel", "曲妥珠单抗", "帕妥珠单抗", "吡咯替尼", "多西他赛",
    "依维莫司", "卡铂", "紫杉醇", "靶向",
    "chemo", "chimio", "chimiothérapie", "化疗",
    # the trials and their sponsors
    "heroes", "free-her", "freeher", "stop-her2", "nct0", "dana-farber",
)  # fmt: skip


class MessageKind(enum.StrEnum):
    """Every SMS the system sends; the value is stable (outbox rows store it)."""

    # to participants
    REMINDER_BLOOD_DRAW = "reminder_blood_draw"
    REMINDER_SCAN = "reminder_scan"
    REMINDER_VISIT = "reminder_visit"
    REMINDER_QUESTIONNAIRE = "reminder_questionnaire"
    REMINDER_OVERDUE = "reminder_overdue"
    WELCOME = "welcome"
    ACTIVATION_CODE = "activation_code"
    OPT_OUT_CONFIRMATION = "opt_out_confirmation"
    OPT_IN_CONFIRMATION = "opt_in_confirmation"
    HELP = "help"
    UNKNOWN_SENDER = "unknown_sender"
    # to the care team
    # Alerts by level: critical (ALERT_NEW, ALERT_ESCALATED: "URGENT"), urgent (action today),
    # routine (a task: ALERT_TASK or a kind's own task text; no reply needed); ALERT_BUNDLE lists
    # a phone's critical alerts and tasks due at once (the morning digest).
    ALERT_NEW = "alert_new"
    ALERT_BUNDLE = "alert_bundle"
    ALERT_ESCALATED = "alert_escalated"
    ALERT_URGENT = "alert_urgent"
    ALERT_URGENT_ESCALATED = "alert_urgent_escalated"
    ALERT_TASK = "alert_task"
    # Every tier went unanswered: the site's fail-safe (its staff with the ACK code; its number
    # without: a reply from a number that is nobody's counts for nothing).
    ALERT_FAILSAFE = "alert_failsafe"
    ALERT_FAILSAFE_NUMBER = "alert_failsafe_number"
    ALERT_ACK_CONFIRMED = "alert_ack_confirmed"
    ACK_CODE_UNKNOWN = "ack_code_unknown"
    PARTICIPANT_UNREACHABLE = "participant_unreachable"
    DEAD_ROUTE_WARNING = "dead_route_warning"
    RESULT_OVERDUE = "result_overdue"
    MISSED_WINDOW = "missed_window"
    DECISION_DUE = "decision_due"
    REDRAW_NEEDED = "redraw_needed"


class Audience(enum.StrEnum):
    """Who reads a kind of message."""

    PARTICIPANT = "participant"
    STAFF = "staff"


@dataclass(frozen=True)
class KindSpec:
    """The parameters a kind of message takes and how it is sent."""

    audience: Audience
    required: tuple[str, ...] = ()
    # Most important first: when the text would not fit, the last ones are left out first.
    optional: tuple[str, ...] = ()
    has_opt_out_hint: bool = False
    # The number that picks the plural form of the text (CLDR categories, by Babel).
    plural_by: str | None = None


def _participant(
    *required: str,
    optional: tuple[str, ...] = (),
    has_opt_out_hint: bool = True,
    plural_by: str | None = None,
) -> KindSpec:
    return KindSpec(Audience.PARTICIPANT, required, optional, has_opt_out_hint, plural_by)


def _staff(*required: str) -> KindSpec:
    return KindSpec(Audience.STAFF, required)


_REMINDER = ("code", "when", "tz")

KIND_SPECS: Mapping[MessageKind, KindSpec] = {
    MessageKind.REMINDER_BLOOD_DRAW: _participant(*_REMINDER, optional=("site_phone",)),
    MessageKind.REMINDER_SCAN: _participant(*_REMINDER, optional=("site_phone",)),
    MessageKind.REMINDER_VISIT: _participant(*_REMINDER, optional=("site_phone",)),
    # A questionnaire is answered any day of its window: its reminder states the last one.
    MessageKind.REMINDER_QUESTIONNAIRE: _participant(
        "code", "deadline", optional=("link", "site_phone")
    ),
    MessageKind.REMINDER_OVERDUE: _participant(*_REMINDER, optional=("site_phone",)),
    MessageKind.WELCOME: _participant("code", optional=("link",)),
    MessageKind.ACTIVATION_CODE: _participant(
        "code", "activation_code", "minutes_valid", plural_by="minutes_valid"
    ),
    # Confirms STOP, so it offers START, not STOP.
    MessageKind.OPT_OUT_CONFIRMATION: _participant(has_opt_out_hint=False),
    MessageKind.OPT_IN_CONFIRMATION: _participant(),
    MessageKind.HELP: _participant(optional=("site_phone",)),
    MessageKind.UNKNOWN_SENDER: _participant(),
    MessageKind.ALERT_NEW: _staff("code", "ack_code", "link"),
    # Pluralised by its number of items (see _compose_bundle).
    MessageKind.ALERT_BUNDLE: _staff("items", "link"),
    MessageKind.ALERT_ESCALATED: _staff("code", "ack_code", "link", "tier"),
    MessageKind.ALERT_URGENT: _staff("code", "ack_code", "link"),
    MessageKind.ALERT_URGENT_ESCALATED: _staff("code", "ack_code", "link", "tier"),
    MessageKind.ALERT_TASK: _staff("code", "link"),
    MessageKind.ALERT_FAILSAFE: _staff("code", "ack_code", "link"),
    MessageKind.ALERT_FAILSAFE_NUMBER: _staff("code", "link"),
    MessageKind.ALERT_ACK_CONFIRMED: _staff("code"),
    MessageKind.ACK_CODE_UNKNOWN: _staff(),
    MessageKind.PARTICIPANT_UNREACHABLE: _staff("code", "link"),
    MessageKind.DEAD_ROUTE_WARNING: _staff("site_code", "tier"),
    MessageKind.RESULT_OVERDUE: _staff("code", "link"),
    MessageKind.MISSED_WINDOW: _staff("code", "link"),
    MessageKind.DECISION_DUE: _staff("code", "link"),
    MessageKind.REDRAW_NEEDED: _staff("code", "link"),
}

# Parameters that never appear as such in a text: `tz` only shapes `when`; `items` becomes the
# derived `items`/`more`/`count` fields of a bundle.
_HIDDEN_PARAMS = frozenset({"tz", "items"})
_TEXT_PARAMS = frozenset({"code", "link", "site_phone", "site_code", "activation_code"})
_COUNT_PARAMS = frozenset({"tier", "minutes_valid"})
# The inbound parser reads "ACK" and six digits (four for alerts opened before six); anything else
# would break the loop.
_ACK_CODE = re.compile(r"[0-9]{6}|[0-9]{4}")


# --- bearer secrets ------------------------------------------------------------------------------
#
# The one place that knows which parameters are bearer secrets: whoever holds one acts as its
# owner. An activation code signs a phone in as the participant; an acknowledgement code stops an
# alert's escalation; a link sent to a participant opens their questionnaire without a password.
# Links in staff messages (/alerts/<id>, a participant page) need a staff login: not secrets.
# Staff views, APIs, exports and audit rows only ever see `Sms.redacted`, where each secret is
# replaced by its marker; the outbox keeps the clear text only until the message has gone.

CODE_HIDDEN = "[code hidden]"
LINK_HIDDEN = "[link hidden]"
# Parameters that are secrets whoever reads the message; `items` are a bundle's (code, ack code)
# pairs (a task's ack code is empty: no reply needed).
_SECRET_PARAMS: Mapping[str, str] = {
    "activation_code": CODE_HIDDEN,
    "ack_code": CODE_HIDDEN,
    "items": CODE_HIDDEN,
}
# Parameters that are secrets only in a message to a participant.
_PARTICIPANT_SECRET_PARAMS: Mapping[str, str] = {"link": LINK_HIDDEN}
# Everything else a kind takes is shown as is (a new parameter must be put in one of the three).
PLAIN_PARAMS = frozenset(
    {"code", "when", "deadline", "tz", "site_phone", "site_code", "minutes_valid", "tier"}
)


def secret_params(kind: MessageKind | str) -> dict[str, str]:
    """The parameters of this kind that are bearer secrets, each with the marker shown instead."""
    spec = KIND_SPECS[MessageKind(kind)]
    secret = dict(_SECRET_PARAMS)
    if spec.audience is Audience.PARTICIPANT:
        secret.update(_PARTICIPANT_SECRET_PARAMS)
    return {p: secret[p] for p in (*spec.required, *spec.optional) if p in secret}


@dataclass(frozen=True)
class Sms:
    """A rendered message: `text` goes to the recipient and nowhere else; `redacted` is the same
    text with every bearer secret replaced by a marker (None when the text carries none)."""

    text: str
    redacted: str | None = None

    @property
    def shown(self) -> str:
        """What anyone but the recipient may see."""
        return self.text if self.redacted is None else self.redacted


class MessageParameterError(ValueError):
    """A render() parameter is missing, unexpected or malformed; `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class CatalogError(ValueError):
    """A locale catalog is malformed or breaks a content rule."""


class HealthInformationError(ValueError):
    """A rendered SMS would carry a forbidden term or a participant's name (nothing is sent)."""


# --- the deny-list -------------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Casefold, strip accents, unify full-width forms and collapse whitespace, for matching."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.split())


def _term_pattern(term: str) -> re.Pattern[str]:
    folded = _fold(term)
    if folded.isascii():
        return re.compile(r"(?<![0-9a-z])" + re.escape(folded))
    return re.compile(re.escape(folded))


@functools.cache
def _term_patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((term, _term_pattern(term)) for term in FORBIDDEN_TERMS)


def _name_patterns(name: str) -> list[re.Pattern[str]]:
    words = _fold(name).split()
    if not words:
        return []
    # Whole names only, in either order ("Jeanne Dupont", "DUPONT Jeanne"): matching single
    # name parts would block every SMS to someone called Will or Page.
    orders = {" ".join(words), " ".join(reversed(words))}
    patterns = []
    for phrase in orders:
        if phrase.isascii():
            patterns.append(re.compile(r"(?<![0-9a-z])" + re.escape(phrase) + r"(?![0-9a-z])"))
        else:
            patterns.append(re.compile(re.escape(phrase)))
    return patterns


def assert_no_health_information(text: str, *, participant_names: Iterable[str] = ()) -> None:
    """Raise ValueError naming the forbidden term (or the name's position) the text contains."""
    folded = _fold(text)
    found = [term for term, pattern in _term_patterns() if pattern.search(folded)]
    if found:
        # Name the most specific term: "stop-her2" says more than the "her2" inside it.
        term = max(found, key=len)
        raise HealthInformationError(f"SMS text contains the forbidden term {term!r}")
    for index, name in enumerate(participant_names, start=1):
        if any(p.search(folded) for p in _name_patterns(name)):
            # The name itself stays out of the message: exceptions end up in logs.
            raise HealthInformationError(f"SMS text contains participant name #{index}")


# --- catalogs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One kind's texts in one locale."""

    text: Mapping[str, str]  # CLDR plural category → template; always has "other"
    optional: Mapping[str, str]  # optional parameter → the fragment its slot takes
    item: str = ""  # alert bundles: one alert
    separator: str = ""
    more: Mapping[str, str] | None = None  # alert bundles: "and N more", by plural category
    task_item: str = ""  # alert bundles: one task (no reply needed)
    tasks: Mapping[str, str] | None = None  # the tasks after a bundle's alerts, by their number
    digest: Mapping[str, str] | None = None  # a bundle of tasks only, by their number


@dataclass(frozen=True)
class Catalog:
    """All texts of one locale, validated."""

    locale: str
    datetime_format: str
    date_format: str
    date_replacements: Mapping[str, str]
    opt_out: str
    entries: Mapping[MessageKind, Entry]


def _fields(template: str, where: str) -> set[str]:
    """The placeholder names in a template; only plain {name} placeholders are allowed."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from exc
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise CatalogError(f"{where}: placeholder {{{name}}} must be a plain {{name}}")
        names.add(name)
    return names


def _string(node: object, where: str) -> str:
    if not isinstance(node, str):
        raise CatalogError(f"{where}: expected a string")
    return node


def _plural(node: object, where: str) -> dict[str, str]:
    if isinstance(node, str):
        return {"other": node}
    if not isinstance(node, dict) or "other" not in node:
        raise CatalogError(f"{where}: expected a string or plural forms with 'other'")
    return {str(k): _string(v, f"{where}.{k}") for k, v in node.items()}


def _mapping(node: object, where: str) -> dict[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise CatalogError(f"{where}: expected a mapping")
    return {str(k): v for k, v in node.items()}


def _check_entry(kind: MessageKind, entry: Entry, where: str) -> None:
    """Placeholders exist for the kind, show every parameter, and each optional has a fragment."""
    spec = KIND_SPECS[kind]
    shown = [p for p in spec.required if p not in _HIDDEN_PARAMS]
    allowed = set(shown) | set(spec.optional) | {"day"}
    if kind is MessageKind.ALERT_BUNDLE:
        allowed |= {"items", "more", "count", "tasks"}
        shown += ["items", "more", "tasks"]
    for form, template in entry.text.items():
        names = _fields(template, f"{where}.text.{form}")
        if unknown := names - allowed:
            raise CatalogError(f"{where}.text.{form}: unknown placeholder {sorted(unknown)}")
        missing = [p for p in [*shown, *spec.optional] if p not in names]
        if "when" in missing and "day" in names:
            missing.remove("when")
        if missing:
            raise CatalogError(f"{where}.text.{form}: does not show {missing}")
    for param in spec.optional:
        fragment = entry.optional.get(param)
        if fragment is None or _fields(fragment, f"{where}.optional.{param}") != {param}:
            raise CatalogError(f"{where}.optional.{param}: needs a fragment showing {{{param}}}")
    if kind is MessageKind.ALERT_BUNDLE:
        if _fields(entry.item, f"{where}.item") != {"code", "ack_code"}:
            raise CatalogError(f"{where}.item: must show {{code}} and {{ack_code}}")
        if _fields(entry.task_item, f"{where}.task_item") != {"code"}:
            raise CatalogError(f"{where}.task_item: must show {{code}}")
        for form, template in (entry.more or {}).items():
            if _fields(template, f"{where}.more.{form}") != {"rest"}:
                raise CatalogError(f"{where}.more.{form}: must show {{rest}}")
        if entry.more is None or entry.tasks is None or entry.digest is None:
            raise CatalogError(f"{where}: a bundle needs `more`, `tasks` and `digest`")
        for form, template in entry.tasks.items():
            names = _fields(template, f"{where}.tasks.{form}")
            if "task_items" not in names or names - {"task_items", "task_count"}:
                raise CatalogError(
                    f"{where}.tasks.{form}: shows {{task_items}} (and {{task_count}})"
                )
        for form, template in entry.digest.items():
            names = _fields(template, f"{where}.digest.{form}")
            if not {"task_items", "more", "link"} <= names or names - {
                "task_items",
                "more",
                "link",
                "count",
            }:
                raise CatalogError(
                    f"{where}.digest.{form}: shows {{task_items}}, {{more}} and {{link}} "
                    "(and {count})"
                )


def _all_strings(node: object) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _all_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _all_strings(value)


def parse_catalog(source: str, *, locale: str) -> Catalog:
    """Parse and validate one locale's YAML catalog; raise CatalogError on any defect."""
    doc = _mapping(yaml.safe_load(source), locale)
    if doc.get("locale") != locale:
        raise CatalogError(f"{locale}: the file says locale {doc.get('locale')!r}")
    for text in _all_strings(doc):
        try:
            assert_no_health_information(text)
        except ValueError as exc:
            raise CatalogError(f"{locale}: {exc}: {text!r}") from exc
    formats = _mapping(doc.get("formats"), f"{locale}.formats")
    shared_optional = {
        k: _string(v, f"{locale}.optional.{k}")
        for k, v in _mapping(doc.get("optional"), f"{locale}.optional").items()
    }
    messages = _mapping(doc.get("messages"), f"{locale}.messages")
    if unknown := set(messages) - {k.value for k in MessageKind}:
        raise CatalogError(f"{locale}: unknown message kinds {sorted(unknown)}")
    entries: dict[MessageKind, Entry] = {}
    for kind in MessageKind:
        where = f"{locale}.messages.{kind.value}"
        if kind.value not in messages:
            raise CatalogError(f"{where}: missing")
        node = _mapping(messages[kind.value], where)
        own_optional = {
            k: _string(v, f"{where}.optional.{k}")
            for k, v in _mapping(node.get("optional"), f"{where}.optional").items()
        }
        entry = Entry(
            text=_plural(node.get("text"), f"{where}.text"),
            optional={**shared_optional, **own_optional},
            item=_string(node.get("item", ""), f"{where}.item"),
            separator=_string(node.get("separator", ""), f"{where}.separator"),
            more=_plural(node["more"], f"{where}.more") if "more" in node else None,
            task_item=_string(node.get("task_item", ""), f"{where}.task_item"),
            tasks=_plural(node["tasks"], f"{where}.tasks") if "tasks" in node else None,
            digest=_plural(node["digest"], f"{where}.digest") if "digest" in node else None,
        )
        _check_entry(kind, entry, where)
        entries[kind] = entry
    return Catalog(
        locale=locale,
        datetime_format=_string(formats.get("datetime"), f"{locale}.formats.datetime"),
        date_format=_string(formats.get("date"), f"{locale}.formats.date"),
        date_replacements={
            str(k): _string(v, f"{locale}.date_replacements")
            for k, v in _mapping(doc.get("date_replacements"), locale).items()
        },
        opt_out=_string(doc.get("opt_out"), f"{locale}.opt_out"),
        entries=entries,
    )


@functools.cache
def load_catalog(locale: str) -> Catalog:
    """The validated catalog of a supported locale, read once from the package data."""
    if locale not in SUPPORTED_LOCALES:
        raise ValueError(f"no SMS catalog for locale {locale!r}")
    source = resources.files("notifications.locales").joinpath(f"{locale}.yaml")
    return parse_catalog(source.read_text(encoding="utf-8"), locale=locale)


def resolve_locale(locale: str | None) -> str:
    """The catalog locale for a language tag ("fr_FR", "zh-Hans-CN" → fr, zh); default en."""
    language = (locale or "").replace("-", "_").split("_", 1)[0].strip().lower()
    return language if language in SUPPORTED_LOCALES else DEFAULT_LOCALE


# --- parameters -----------------------------------------------------------------------------------


def _text_param(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MessageParameterError(name, f"parameter {name!r} must be a non-empty string")
    return value.strip()


def _ack_param(name: str, value: object) -> str:
    if not isinstance(value, str) or not _ACK_CODE.fullmatch(value):
        raise MessageParameterError(name, f"parameter {name!r} must be a string of 6 digits")
    return value


def _count_param(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MessageParameterError(name, f"parameter {name!r} must be a positive integer")
    return value


def _when_param(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise MessageParameterError(name, f"parameter {name!r} must be an aware datetime")
    return value


def _date_param(name: str, value: object) -> date:
    # A calendar day where the recipient lives (a datetime would carry a time and a zone).
    if not isinstance(value, date) or isinstance(value, datetime):
        raise MessageParameterError(name, f"parameter {name!r} must be a date (no time)")
    return value


def _tz_param(name: str, value: object) -> tzinfo:
    if isinstance(value, tzinfo):
        return value
    try:
        return ZoneInfo(_text_param(name, value))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MessageParameterError(name, f"parameter {name!r} must be an IANA zone") from exc


def _items_param(name: str, value: object) -> list[tuple[str, str]]:
    """A bundle's (code, ack code) pairs; an empty ack code is a task (no reply needed)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise MessageParameterError(name, f"parameter {name!r} must be a non-empty list")
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 2:
            raise MessageParameterError(name, f"{name}[{index}] must be a (code, ack_code) pair")
        code, ack = item
        items.append(
            (
                _text_param(f"{name}[{index}].code", code),
                "" if ack == "" else _ack_param(f"{name}[{index}].ack", ack),
            )
        )
    return items


def _check_params(
    kind: MessageKind, spec: KindSpec, params: Mapping[str, object]
) -> dict[str, Any]:
    """Validated parameters; optional ones given as None or "" count as absent."""
    takes = (*spec.required, *spec.optional)
    for name in params:
        if name not in takes:
            raise MessageParameterError(
                name, f"{kind.name} takes no parameter {name!r} (it takes {list(takes)})"
            )
    values: dict[str, Any] = {}
    for name in takes:
        value = params.get(name)
        if value is None or value == "":
            if name in spec.required:
                raise MessageParameterError(name, f"{kind.name} needs parameter {name!r}")
            continue
        if name in _TEXT_PARAMS:
            values[name] = _text_param(name, value)
        elif name in _COUNT_PARAMS:
            values[name] = _count_param(name, value)
        elif name == "ack_code":
            values[name] = _ack_param(name, value)
        elif name == "when":
            values[name] = _when_param(name, value)
        elif name == "deadline":
            values[name] = _date_param(name, value)
        elif name == "tz":
            values[name] = _tz_param(name, value)
        elif name == "items":
            values[name] = _items_param(name, value)
        else:  # a spec names a parameter no branch knows: a bug here, not in the caller
            raise AssertionError(f"no check for parameter {name!r}")
    return values


# --- rendering ------------------------------------------------------------------------------------


def segments(text: str) -> SegmentInfo:
    """How the text goes over the air: encoding, units and SMS segment count."""
    return count_segments(text)


def _fits(text: str) -> bool:
    return count_segments(text).segments <= MAX_SEGMENTS


def _plural_form(catalog: Catalog, forms: Mapping[str, str], n: int) -> str:
    category = Locale.parse(catalog.locale).plural_form(n)
    return forms.get(category, forms["other"])


def _local_text(catalog: Catalog, text: str) -> str:
    for old, new in catalog.date_replacements.items():
        text = text.replace(old, new)
    return text


def _display_fields(catalog: Catalog, values: Mapping[str, Any]) -> dict[str, str]:
    fields = {k: str(v) for k, v in values.items() if k in _TEXT_PARAMS | _COUNT_PARAMS}
    if "ack_code" in values:
        fields["ack_code"] = values["ack_code"]
    if "when" in values:
        zone, when = values["tz"], values["when"]
        fields["when"] = _local_text(
            catalog,
            format_datetime(when, catalog.datetime_format, tzinfo=zone, locale=catalog.locale),
        )
        # format_date drops the time zone of a datetime, so take the local date first.
        local_day = when.astimezone(zone).date()
        fields["day"] = _local_text(
            catalog, format_date(local_day, catalog.date_format, locale=catalog.locale)
        )
    if "deadline" in values:
        fields["deadline"] = _local_text(
            catalog, format_date(values["deadline"], catalog.date_format, locale=catalog.locale)
        )
    return fields


def _compose(
    kind: MessageKind, catalog: Catalog, values: Mapping[str, Any], keep: Sequence[str]
) -> str:
    """The text with the optional parameters in `keep` (and no others) filled in."""
    spec = KIND_SPECS[kind]
    entry = catalog.entries[kind]
    fields = _display_fields(catalog, values)
    slots = {
        p: entry.optional[p].format_map({p: fields[p]}) if p in keep else "" for p in spec.optional
    }
    count = values.get(spec.plural_by) if spec.plural_by else None
    template = entry.text["other"] if count is None else _plural_form(catalog, entry.text, count)
    text = template.format_map({**fields, **slots})
    return text + catalog.opt_out if spec.has_opt_out_hint else text


def _compose_bundle(catalog: Catalog, values: Mapping[str, Any], shown: int) -> str:
    """An alert bundle listing its first `shown` items and counting the rest: its alerts (each
    with its code; a bundle's codes are critical alerts' only), then its tasks (no reply needed),
    or a digest of tasks only."""
    entry = catalog.entries[MessageKind.ALERT_BUNDLE]
    items: list[tuple[str, str]] = values["items"]
    listed = items[:shown]
    alerts = [(code, ack) for code, ack in listed if ack]
    tasks = entry.separator.join(
        entry.task_item.format_map({"code": code}) for code, ack in listed if not ack
    )
    alert_count = sum(1 for _code, ack in items if ack)
    task_count = len(items) - alert_count
    rest = len(items) - shown
    more = _plural_form(catalog, entry.more or {}, rest).format_map({"rest": rest}) if rest else ""
    link = values["link"]
    if not alert_count:
        template = _plural_form(catalog, entry.digest or {}, task_count)
        fields = {"task_items": tasks, "more": more, "count": str(task_count), "link": link}
        return template.format_map(fields)
    tasks_part = (
        _plural_form(catalog, entry.tasks or {}, task_count).format_map(
            {"task_items": tasks, "task_count": str(task_count)}
        )
        if tasks
        else ""
    )
    listed_alerts = entry.separator.join(
        entry.item.format_map({"code": code, "ack_code": ack}) for code, ack in alerts
    )
    template = _plural_form(catalog, entry.text, alert_count)
    fields = {
        "items": listed_alerts,
        "tasks": tasks_part,
        "more": more,
        "count": str(alert_count),
        "link": link,
    }
    return template.format_map(fields)


def _render_bundle(catalog: Catalog, values: Mapping[str, Any]) -> tuple[str, int]:
    """The bundle's text and how many alerts it lists."""
    total = len(values["items"])
    text = _compose_bundle(catalog, values, total)
    if _fits(text):
        return text, total
    # Each listed alert costs more than the shrinking "and N more", so the longest list that
    # fits is found by growing from one; the first alert is always listed, even if it overflows.
    best, listed = _compose_bundle(catalog, values, 1), 1
    for shown in range(2, total):
        candidate = _compose_bundle(catalog, values, shown)
        if not _fits(candidate):
            break
        best, listed = candidate, shown
    return best, listed


def _masked(kind: MessageKind, values: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters with each bearer secret replaced by its marker."""
    masked = dict(values)
    for name, marker in secret_params(kind).items():
        if name not in values:
            continue
        if name == "items":
            masked[name] = [(code, marker if ack else "") for code, ack in values[name]]
        else:
            masked[name] = marker
    return masked


def compose(
    kind: MessageKind | str,
    locale: str | None,
    *,
    participant_names: Iterable[str] = (),
    **params: object,
) -> Sms:
    """Render one SMS in the locale (unknown → en) with its redacted copy; raise if a parameter
    or the text is wrong. The copy is the same template, with the same optional parts, filled with
    markers in place of secrets: nothing has to be found again in the text later."""
    kind = MessageKind(kind)  # a stored value ("reminder_scan") works too
    spec = KIND_SPECS[kind]
    values = _check_params(kind, spec, params)
    catalog = load_catalog(resolve_locale(locale))
    masked = _masked(kind, values)
    if kind is MessageKind.ALERT_BUNDLE:
        text, listed = _render_bundle(catalog, values)
        redacted = _compose_bundle(catalog, masked, listed)
    else:
        present = [p for p in spec.optional if p in values]
        text = _compose(kind, catalog, values, present)
        # Optional parts are a courtesy, the budget is not: drop the least important first.
        while present and not _fits(text):
            present.pop()
            text = _compose(kind, catalog, values, present)
        redacted = _compose(kind, catalog, masked, present)
    assert_no_health_information(text, participant_names=participant_names)
    return Sms(text, None if redacted == text else redacted)


def render(
    kind: MessageKind | str,
    locale: str | None,
    *,
    participant_names: Iterable[str] = (),
    **params: object,
) -> str:
    """The text of one SMS (see `compose`, which also gives what staff may see of it)."""
    return compose(kind, locale, participant_names=participant_names, **params).text


def bundle_prefix(locale: str | None, items: list[tuple[str, str]], link: str) -> tuple[Sms, int]:
    """An ALERT_BUNDLE listing the longest prefix of `items` that fits in full (no "and N more"),
    and that length: the dispatcher sends the rest in the next bundle, so every code is carried.
    At least one item is always listed."""
    if not items:
        raise MessageParameterError("items", "ALERT_BUNDLE needs at least one item")
    best = compose(MessageKind.ALERT_BUNDLE, locale, items=items[:1], link=link)
    shown = 1
    for k in range(2, len(items) + 1):
        sms = compose(MessageKind.ALERT_BUNDLE, locale, items=items[:k], link=link)
        if not all(code in sms.text and ack in sms.text for code, ack in items[:k]):
            # (an empty ack, a task's, is in every text: its code is what must be listed)
            break
        best, shown = sms, k
    return best, shown
