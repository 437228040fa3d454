"""The wording of an instrument in one language: from its file, or loaded by the site.

A licensed questionnaire (the EORTC QLQ-C30 and its translations) cannot ship with Stepdown: its
file says `text: licensed` and holds only the structure. A site loads the wording of its licensed
copy, one language at a time, from a YAML file:

    stepdown instruments load-text eortc_qlq_c30 --locale fr qlq-c30.fr.yaml

The file (`stepdown instruments text-template KEY --locale fr` prints one to fill in; the demo's
config/instruments/texts/eortc_qlq_c30.demo-fr.yaml is a complete example):

    instrument: eortc_qlq_c30        # optional; when given, must be the instrument loaded
    version: "3.0"                    # optional; when given, the instrument file's version
    locale: fr                        # optional; when given, must equal --locale
    source: EORTC QLQ-C30 v3.0, French, licensed to ... (2027)   # optional, max 300 characters
    title: ...                        # optional: replaces the instrument's title
    intro: ...                        # optional: shown before the first question
    headings:                         # optional: a line shown before an item (a new step starts)
      q8: ...
    items:                            # every item of the instrument, by id, and no other
      q1: ...
    responses:                        # every answer set the items use, and no other
      four_point: {1: ..., 2: ..., 3: ..., 4: ...}   # a choice: a label for every value
      seven_point: {1: ..., 7: ...}                   # a scale: labels for any points of it

Texts are plain text (no markup; at most 1,000 characters, a title 200, the intro 2,000). A load
is checked completely before anything is stored: every problem is listed with its place.

Where the wording lives: in the database (`instrument_text`), so every web worker and the
scheduler read the same; each load is a new version (the highest is shown, earlier ones stay as
the record of what participants were asked, and each response keeps the version it answered) and
writes an audit row with the file's SHA-256, never the text. The text is shown only to a
participant answering that instrument (the survey page behind their signed link, their app): no
staff page, export, log or audit row holds it.

An instrument without usable wording in a participant's language is not sent: its reminders wait
(server.schedules.reminders asks `availability`; loading the text plans them again, and one
planned before the text came goes then), the survey page and the app do not offer it, and Today
lists what waits and why (`waiting_for_text`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
import yaml
from sqlmodel import Session, col, func, select

from server import audit
from server.participants.models import Locale, Participant, ParticipantStatus
from server.protocols.definition import Locale as FileLocale
from server.protocols.definition import StrictLoader
from server.schedules.models import PENDING_STATUSES, EventType, ScheduleEvent
from server.surveys.definition import PLACEHOLDER, Instrument, ShowIf
from server.surveys.models import InstrumentText
from server.surveys.registry import instruments

LANGUAGE = {"en": "English", "fr": "French", "zh": "Chinese"}
MAX_FILE_BYTES = 512 * 1024
MAX_TEXT = 1000
MAX_TITLE = 200
MAX_INTRO = 2000
MAX_SOURCE = 300
# Questionnaires whose window opens within this are listed on Today when their text is missing.
WAITING_AHEAD = timedelta(days=7)
FOLLOWED = (ParticipantStatus.ACTIVE, ParticipantStatus.OFF_TREATMENT_MONITORING)

_FIELDS = {
    "instrument",
    "version",
    "locale",
    "source",
    "title",
    "intro",
    "headings",
    "items",
    "responses",
}
# Control characters other than tab and newline have no place in a question.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\ud800-\udfff]")


class TextError(ValueError):
    """A text file that cannot be loaded; the message names the file, each place and problem."""

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {path}: {msg}" for path, msg in problems))


# --- the file ------------------------------------------------------------------------------------


def _clean(value: Any, limit: int) -> tuple[str | None, str | None]:
    """(text, None) or (None, problem)."""
    if isinstance(value, bool):
        return None, "must be text: put it in quotes (YAML reads yes/no/on/off as true/false)"
    if not isinstance(value, str):
        return None, "must be text (put numbers and dates in quotes)"
    text = value.strip()
    if not text:
        return None, "must not be empty"
    if len(text) > limit:
        return None, f"at most {limit:,} characters (this one has {len(text):,})"
    if _CONTROL.search(text):
        return None, "holds a control character"
    return text, None


def _value(key: Any) -> int | None:
    """An answer value written as a YAML key: 1, or "1"."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    if isinstance(key, str) and re.fullmatch(r"-?\d{1,4}", key.strip()):
        return int(key)
    return None


def parse_text(raw: bytes, *, instrument: Instrument, locale: str, file: str) -> dict[str, Any]:
    """Read and check a text file against the instrument; the content to store, or TextError
    listing every problem (every item present, no unknown id, answer labels that fit the scale)."""
    problems: list[tuple[str, str]] = []
    if len(raw) > MAX_FILE_BYTES:
        raise TextError(file, [("(file)", f"larger than {MAX_FILE_BYTES // 1024} KB")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TextError(file, [("(file)", f"not UTF-8 (byte {exc.start})")]) from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise TextError(file, [(where, f"not valid YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise TextError(file, [("(top level)", "must be a mapping (items:, responses:, ...)")])
    for key in sorted(map(str, set(data) - _FIELDS)):
        problems.append((key, f"unknown field (use {', '.join(sorted(_FIELDS))})"))

    if "instrument" in data and str(data["instrument"]) != instrument.key:
        problems.append(("instrument", f"{data['instrument']!r} is not {instrument.key!r}"))
    if "locale" in data and str(data["locale"]) != locale:
        problems.append(("locale", f"{data['locale']!r}, but the text is loaded as {locale!r}"))
    if "version" in data and str(data["version"]) != str(instrument.version):
        problems.append(
            ("version", f"{data['version']!r}, but the instrument is version {instrument.version}")
        )

    content: dict[str, Any] = {"title": None, "intro": None, "headings": {}, "items": {}}
    for name, limit in (("title", MAX_TITLE), ("intro", MAX_INTRO), ("source", MAX_SOURCE)):
        if data.get(name) is not None:
            content[name], problem = _clean(data[name], limit)
            if problem:
                problems.append((name, problem))
    content.setdefault("source", None)

    item_ids = [item.id for item in instrument.items]
    items = data.get("items")
    if not isinstance(items, dict):
        problems.append(("items", "required: a mapping of every item id to its text"))
        items = {}
    for key, value in items.items():
        if str(key) not in item_ids:
            problems.append((f"items.{key}", "no such item in the instrument"))
            continue
        content["items"][str(key)], problem = _clean(value, MAX_TEXT)
        if problem:
            problems.append((f"items.{key}", problem))
    missing = [i for i in item_ids if i not in {str(k) for k in items}]
    if missing and isinstance(data.get("items"), dict):
        problems.append(("items", f"missing {len(missing)} item(s): {', '.join(missing)}"))

    headings = data.get("headings") or {}
    if not isinstance(headings, dict):
        problems.append(("headings", "must be a mapping of item id to the line shown before it"))
        headings = {}
    for key, value in headings.items():
        if str(key) not in item_ids:
            problems.append((f"headings.{key}", "no such item in the instrument"))
            continue
        content["headings"][str(key)], problem = _clean(value, MAX_TEXT)
        if problem:
            problems.append((f"headings.{key}", problem))

    used = list(dict.fromkeys(item.responses for item in instrument.items))
    responses = data.get("responses")
    if not isinstance(responses, dict):
        problems.append(("responses", f"required: the answer labels of {', '.join(used)}"))
        responses = {}
    content["responses"] = {}
    for name in used:
        if name not in responses:
            if isinstance(data.get("responses"), dict):
                problems.append((f"responses.{name}", "missing (an answer set the items use)"))
            continue
        labels = responses[name]
        answers = instrument.responses[name]
        if not isinstance(labels, dict):
            problems.append((f"responses.{name}", "must be a mapping of answer value to label"))
            continue
        stored: dict[str, str] = {}
        for key, label in labels.items():
            value = _value(key)
            where = f"responses.{name}.{key}"
            if value is None:
                problems.append((where, "an answer value must be a whole number"))
                continue
            if not answers.accepts(value):
                problems.append((where, f"not an answer of {name} ({answers.describe()})"))
                continue
            cleaned, problem = _clean(label, MAX_TEXT)
            if cleaned is None:
                problems.append((where, problem or "must be text"))
            else:
                stored[str(value)] = cleaned
        if answers.options is not None:
            absent = [str(v) for v in answers.values if str(v) not in stored]
            if absent and not any(p[0].startswith(f"responses.{name}.") for p in problems):
                problems.append(
                    (f"responses.{name}", f"needs a label for every answer: {', '.join(absent)}")
                )
        content["responses"][name] = stored
    for name in responses:
        if name not in used:
            problems.append((f"responses.{name}", "no item of the instrument uses this answer set"))
    if problems:
        raise TextError(file, problems)
    return content


def file_digest(raw: bytes) -> str:
    """The SHA-256 of a loaded file (the audit row's proof of what was loaded)."""
    return hashlib.sha256(raw).hexdigest()


def template(instrument: Instrument, locale: str) -> str:
    """A text file to fill in: every item and answer set, with the instrument's own wording where
    it has some (never a licensed text: the instrument file has none)."""
    loc = Locale(locale)
    lines = [
        f"# The {LANGUAGE[loc.value]} wording of {instrument.key} (version {instrument.version}).",
        "# Fill in every TODO from your licensed copy, then:",
        f"#   stepdown instruments load-text {instrument.key} --locale {loc.value} THIS_FILE",
        f"instrument: {instrument.key}",
        f'version: "{instrument.version}"',
        f"locale: {loc.value}",
        'source: "TODO: which licensed copy and translation this is"',
        f"title: {_quoted(instrument.title[loc.value])}",
        "# intro: ...             (optional: shown before the first question)",
        "# headings:              (optional: a line shown before an item)",
        f"#   {instrument.items[0].id}: ...",
        "items:",
    ]
    for item in instrument.items:
        own = item.text[loc.value] if isinstance(item.text, dict) else "TODO"
        lines.append(f"  {item.id}: {_quoted(own)}")
    lines.append("responses:")
    for name in dict.fromkeys(item.responses for item in instrument.items):
        answers = instrument.responses[name]
        lines.append(f"  {name}:")
        if answers.options is not None:
            for option in answers.options:
                lines.append(f"    {option.value}: {_quoted(option.label[loc.value])}")
        else:
            lines.append(f"    # a scale {answers.min}..{answers.max}: label any of its points")
            for value, anchor in sorted(answers.anchors.items()):
                lines.append(f"    {value}: {_quoted(anchor[loc.value])}")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the wording shown ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """One answer as shown: its stored value and its label."""

    value: int
    label: str


@dataclass(frozen=True)
class Question:
    """One item as shown in a language."""

    id: str
    number: int
    text: str
    heading: str | None
    required: bool
    show_if: ShowIf | None
    responses: str
    choices: tuple[Choice, ...]
    is_scale: bool


@dataclass(frozen=True)
class Wording:
    """An instrument as a participant sees it in their language."""

    key: str
    title: str
    intro: str | None
    questions: tuple[Question, ...]
    text_version: int | None  # the loaded text's version; None for the file's own wording


def needs_loaded_text(instrument: Instrument) -> bool:
    """Whether the instrument's wording must come from the site (an item is `licensed`)."""
    return any(item.is_licensed for item in instrument.items)


def _fits(instrument: Instrument, text: InstrumentText) -> str | None:
    """Why a loaded text does not fit the instrument as installed now (None: it fits)."""
    if text.instrument_version != str(instrument.version):
        return (
            f"was loaded for version {text.instrument_version}; the instrument is now version "
            f"{instrument.version}"
        )
    content = text.content or {}
    items = content.get("items") or {}
    absent = [item.id for item in instrument.items if not items.get(item.id)]
    if absent:
        return f"has no text for {', '.join(absent[:5])}{' …' if len(absent) > 5 else ''}"
    labels = content.get("responses") or {}
    for item in instrument.items:
        answers = instrument.responses[item.responses]
        if answers.options is not None:
            given = labels.get(item.responses) or {}
            if any(not given.get(str(v)) for v in answers.values):
                return f"has no label for every answer of {item.responses}"
    return None


def text_problem(instrument: Instrument, locale: str, text: InstrumentText | None) -> str | None:
    """Why the instrument cannot be shown in `locale` (None: it can), in words for staff."""
    if not needs_loaded_text(instrument):
        return None
    language = LANGUAGE.get(locale, locale)
    if text is None:
        return f"no {language} text loaded"
    unfit = _fits(instrument, text)
    return f"the {language} text (loaded version {text.version}) {unfit}" if unfit else None


def wording(instrument: Instrument, locale: str, text: InstrumentText | None) -> Wording:
    """The instrument in `locale`: the loaded text where it fits, else the file's own wording
    (a licensed item without loaded text shows a neutral "Item 12": callers check first)."""
    loc = Locale(locale)
    use = text is not None and _fits(instrument, text) is None
    content: dict[str, Any] = (text.content or {}) if use and text is not None else {}
    labels = content.get("responses") or {}
    questions = []
    for item in instrument.items:
        answers = instrument.responses[item.responses]
        given = labels.get(item.responses)
        choices: list[Choice] = []
        if answers.options is not None:
            for option in answers.options:
                label = (given or {}).get(str(option.value)) or option.label[loc.value]
                choices.append(Choice(option.value, label))
        else:
            for value in answers.values:
                anchor: str | None
                if given is not None:
                    anchor = given.get(str(value))
                else:
                    own = answers.anchors.get(value)
                    anchor = own[loc.value] if own else None
                choices.append(Choice(value, f"{value} – {anchor}" if anchor else str(value)))
        if content.get("items", {}).get(item.id):
            shown = content["items"][item.id]
        elif isinstance(item.text, dict):
            shown = item.text[loc.value]
        else:
            shown = PLACEHOLDER[FileLocale(loc.value)].format(n=item.number)
        questions.append(
            Question(
                id=item.id,
                number=item.number,
                text=shown,
                heading=(content.get("headings") or {}).get(item.id),
                required=item.required,
                show_if=item.show_if,
                responses=item.responses,
                choices=tuple(choices),
                is_scale=answers.options is None,
            )
        )
    return Wording(
        key=instrument.key,
        title=content.get("title") or instrument.title[loc.value],
        intro=content.get("intro"),
        questions=tuple(questions),
        text_version=text.version if use and text is not None else None,
    )


# --- the database --------------------------------------------------------------------------------


def current_text(session: Session, instrument_key: str, locale: str) -> InstrumentText | None:
    """The latest loaded text of an instrument in a language, if any."""
    return session.exec(
        select(InstrumentText)
        .where(
            InstrumentText.instrument_key == instrument_key,
            InstrumentText.locale == Locale(locale),
        )
        .order_by(col(InstrumentText.version).desc())
        .limit(1)
    ).first()


def problem_for(session: Session, instrument: Instrument, locale: str) -> str | None:
    """Why the instrument cannot be shown in `locale` now (None: it can)."""
    if not needs_loaded_text(instrument):
        return None  # the file carries every language: nothing to look up
    return text_problem(instrument, locale, current_text(session, instrument.key, locale))


def wording_for(session: Session, instrument: Instrument, locale: str) -> Wording:
    """The instrument as shown in `locale` now."""
    return wording(instrument, locale, current_text(session, instrument.key, locale))


class Availability(NamedTuple):
    """Whether a questionnaire event can be offered in a language, and since when."""

    waits: bool  # no usable text in the language (or the instrument is not installed)
    # When the usable text was first loaded (its reminders planned before then go then);
    # None when the wording comes with the instrument file, or while it waits.
    since: datetime | None


def availability(session: Session, *, event: ScheduleEvent, locale: str) -> Availability:
    """Whether a questionnaire event can be offered in this language and since when: the check
    the reminder job makes (server.schedules.reminders) before writing a questionnaire's
    reminders, which wait while there is no text and go once it is loaded."""
    instrument = instruments().get(event.instrument or "")
    if instrument is None:
        return Availability(waits=True, since=None)
    if not needs_loaded_text(instrument):
        return Availability(waits=False, since=None)
    if problem_for(session, instrument, locale) is not None:
        return Availability(waits=True, since=None)
    first = session.exec(
        select(func.min(col(InstrumentText.loaded_at))).where(
            InstrumentText.instrument_key == instrument.key,
            InstrumentText.locale == Locale(locale),
            InstrumentText.instrument_version == str(instrument.version),
        )
    ).one()
    return Availability(waits=False, since=first)


def questionnaire_waits(session: Session, *, event: ScheduleEvent, locale: str) -> bool:
    """Whether a questionnaire event cannot be offered in this language yet (its instrument is not
    installed, or has no usable text in it)."""
    return availability(session, event=event, locale=locale).waits


def load_text(
    *,
    session: Session,
    instrument: Instrument,
    locale: str,
    raw: bytes,
    source_file: str,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> InstrumentText:
    """Check a text file against the instrument and store it as the next version for its
    language, with an audit row (file hash, counts; never the text). TextError when it does not
    fit: nothing is stored."""
    loc = Locale(locale)
    content = parse_text(raw, instrument=instrument, locale=loc.value, file=source_file)
    source = content.pop("source", None)
    previous = current_text(session, instrument.key, loc.value)
    row = InstrumentText(
        instrument_key=instrument.key,
        locale=loc,
        version=(previous.version if previous else 0) + 1,
        instrument_version=str(instrument.version),
        content=content,
        sha256=file_digest(raw),
        source_file=source_file[-255:],
        source=source,
        loaded_by=actor[:100],
        loaded_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        action="instrument_text.load",
        entity="instrument_text",
        entity_id=row.id,
        now=now,
        before=({"version": previous.version, "sha256": previous.sha256} if previous else None),
        after={
            "instrument": instrument.key,
            "instrument_version": row.instrument_version,
            "locale": loc.value,
            "version": row.version,
            "sha256": row.sha256,
            "file": row.source_file,
            "source": row.source,
            "items": len(content["items"]),
            "headings": len(content["headings"]),
        },
        reason=reason,
    )
    replan_waiting(session=session, instrument=instrument, locale=loc.value, now=now)
    return row


def replan_waiting(*, session: Session, instrument: Instrument, locale: str, now: datetime) -> int:
    """Let the reminder job look again at the questionnaires of this instrument that waited for
    their text in this language (it stops looking at a waiting one); the number of participants.
    A reminder planned before the text came goes now, or after the participant's quiet hours."""
    from server.schedules import reminders

    ids = session.exec(
        select(Participant.id)
        .join(ScheduleEvent, col(ScheduleEvent.participant_id) == col(Participant.id))
        .where(
            col(ScheduleEvent.event_type) == EventType.QUESTIONNAIRE,
            ScheduleEvent.instrument == instrument.key,
            col(ScheduleEvent.status).in_(list(PENDING_STATUSES)),
            col(ScheduleEvent.window_close_at) > now,
            Participant.locale == Locale(locale),
        )
        .distinct()
    ).all()
    for participant_id in ids:
        if participant_id is not None:
            reminders.materialize(session=session, now=now, participant_id=participant_id)
    return len(ids)


@dataclass(frozen=True)
class TextStatus:
    """One instrument in one language, for `stepdown instruments status` (never the text)."""

    instrument: str
    locale: str
    problem: str | None
    version: int | None
    loaded_at: datetime | None
    loaded_by: str | None
    sha256: str | None
    source: str | None


def status(session: Session) -> list[TextStatus]:
    """Every installed instrument in every language: whether it can be shown, and its text."""
    out = []
    for key, instrument in sorted(instruments().items()):
        for loc in Locale:
            text = current_text(session, key, loc.value)
            out.append(
                TextStatus(
                    instrument=key,
                    locale=loc.value,
                    problem=text_problem(instrument, loc.value, text),
                    version=text.version if text else None,
                    loaded_at=text.loaded_at if text else None,
                    loaded_by=text.loaded_by if text else None,
                    sha256=text.sha256 if text else None,
                    source=text.source if text else None,
                )
            )
    return out


@dataclass(frozen=True)
class WaitingText:
    """Questionnaires held back because their instrument has no usable text in a language."""

    instrument: str
    title: str
    locale: str
    language: str
    problem: str
    participants: int
    codes: list[tuple[int, str]]  # (participant id, study code), the first few
    first_open_at: datetime
    first_open_date: date  # the participant's own calendar day
    is_open: bool  # the first window is open already (else it opens within WAITING_AHEAD)


def waiting_for_text(
    *, session: Session, site_ids: Any, now: datetime, sample: int = 5
) -> list[WaitingText]:
    """Questionnaires open or opening within WAITING_AHEAD at these sites (a subquery of site
    ids) that cannot be sent for want of text in the participant's language, by instrument and
    language: what Today tells the coordinator."""
    due: tuple[Any, ...] = (
        col(ScheduleEvent.event_type) == EventType.QUESTIONNAIRE,
        col(ScheduleEvent.status).in_(list(PENDING_STATUSES)),
        col(ScheduleEvent.window_close_at) > now,
        col(ScheduleEvent.window_open_at) <= now + WAITING_AHEAD,
        col(Participant.site_id).in_(site_ids),
        col(Participant.status).in_(list(FOLLOWED)),
    )
    # Five columns: sqlmodel's select is typed for four, sqlalchemy's is not known to exec.
    groups = session.exec(  # type: ignore[call-overload]
        sa.select(
            col(ScheduleEvent.instrument),
            col(Participant.locale),
            func.count(func.distinct(col(Participant.id))),
            func.min(col(ScheduleEvent.window_open_at)),
            func.min(col(ScheduleEvent.window_open_date)),
        )
        .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
        .where(*due)
        .group_by(col(ScheduleEvent.instrument), col(Participant.locale))
    ).all()
    out = []
    for key, locale, count, first_open, first_day in sorted(
        groups, key=lambda g: (str(g[0]), str(g[1]))
    ):
        loc = Locale(locale)
        instrument = instruments().get(key or "")
        problem = (
            "the instrument is not installed"
            if instrument is None
            else problem_for(session, instrument, loc.value)
        )
        if problem is None:
            continue
        codes = session.exec(
            select(Participant.id, Participant.study_code)
            .join(ScheduleEvent, col(ScheduleEvent.participant_id) == col(Participant.id))
            .where(*due, ScheduleEvent.instrument == key, Participant.locale == loc)
            .group_by(col(Participant.id), col(Participant.study_code))
            .order_by(col(Participant.study_code))
            .limit(sample)
        ).all()
        out.append(
            WaitingText(
                instrument=key or "",
                title=instrument.title["en"] if instrument else (key or ""),
                locale=loc.value,
                language=LANGUAGE[loc.value],
                problem=problem,
                participants=int(count or 0),
                codes=[(int(pid or 0), str(code)) for pid, code in codes],
                first_open_at=first_open,
                first_open_date=first_day,
                is_open=first_open <= now,
            )
        )
    return out
