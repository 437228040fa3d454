"""The questionnaire instrument format (config/instruments/*.yaml): pydantic models and the loader.

One file per instrument; the file name (without .yaml) is the instrument key the protocols use
(`instrument: eortc_qlq_c30`) and must equal the file's `key`. A new `version` is a new edition.

    key: qol_checkin
    version: 1
    title: {en: How are you today?, fr: ..., zh: ...}     # every text: en, fr and zh
    licence: ...                     # required when any item text is `licensed`
    responses:                       # named answer sets that items refer to
      severity:
        options:                     # a choice: whole-number values, a label per locale
          - {value: 0, label: {en: None, fr: Aucune, zh: 没有}}
          - {value: 3, label: {en: Severe, fr: Sévère, zh: 严重}}
      wellbeing:                     # or a numeric scale min..max, with optional end labels
        min: 0
        max: 10
        anchors: {0: {en: Very bad, ...}, 10: {en: Very good, ...}}
    items:                           # in the order shown; numbers strictly increasing
      - id: fever                    # unique, lower_snake_case
        number: 6
        text: {en: ..., fr: ..., zh: ...}    # or `text: licensed` (the site supplies it)
        responses: yes_no
        required: true               # default true
        critical_if: {in: [1], severity: high}     # or {at_least: 3, severity: normal}
      - id: chills
        number: 7
        text: {...}
        responses: yes_no
        show_if: {item: fever, in: [1]}            # only after an EARLIER item's answer
    scales:
      - key: symptom_burden
        label: Symptom burden
        type: mean                   # functional | symptom | global_health | mean
        items: [fatigue, pain]
        min_answered: 0.5            # share of the items needed for a score (default: half)

Scoring (server.surveys.rules.score) follows the EORTC QLQ-C30 scoring manual: the raw score RS
is the mean of the answered items; with range = max - min of the items' answers, functional
scales score (1 - (RS - min)/range) x 100, symptom scales, single items and global health
((RS - min)/range) x 100 (the manual writes `RS - 1` because its answers start at 1); `mean`
scales report RS itself. A scale with fewer than `min_answered` of its items answered is missing.
All items of a scale must share one answer range.

Validation errors raise InstrumentError naming the file, the field path and the problem.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

# The YAML loader and error formatting are shared with the protocol format.
from server.protocols.definition import FieldError, Locale, StrictLoader, validation_problems

LICENSED = "licensed"
# Shown in place of a licensed item's text until the site supplies its licensed copy.
PLACEHOLDER = {Locale.EN: "Item {n}", Locale.FR: "Question {n}", Locale.ZH: "第{n}题"}

_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class Severity(enum.StrEnum):
    """How urgent a critical answer is, as its instrument grades it (shown in the alert's summary;
    the alert's level comes from the protocol or the site, see server/alerts/rules.py)."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"


class ScaleType(enum.StrEnum):
    """How a scale's raw score becomes its reported score."""

    FUNCTIONAL = "functional"  # 0-100, higher = better functioning
    SYMPTOM = "symptom"  # 0-100, higher = more symptoms (also single symptom items)
    GLOBAL_HEALTH = "global_health"  # 0-100, higher = better
    MEAN = "mean"  # the raw mean, in the answers' own units


class InstrumentError(ValueError):
    """An instrument file that cannot be used; the message names file, field paths and problems."""

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {path}: {msg}" for path, msg in problems))


# ---------------------------------------------------------------------------------------------
# Value types


def _check_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"{value!r} must be lower_snake_case (a-z, 0-9, _), at most 48 characters")
    return value


Id = Annotated[str, AfterValidator(_check_id)]


def _localized(value: Any) -> Any:
    """A text in every locale: {en: ..., fr: ..., zh: ...}, no other keys, none empty."""
    if not isinstance(value, dict):
        raise FieldError("", "must be a mapping of locale to text ({en: ..., fr: ..., zh: ...})")
    known = {locale.value for locale in Locale}
    for key, text in value.items():
        if key not in known:
            raise FieldError(str(key), f"unknown locale (use {', '.join(sorted(known))})")
        if not isinstance(text, str) or not text.strip():
            raise FieldError(str(key), "must be non-empty text")
    for locale in Locale:
        if locale.value not in value:
            raise FieldError(locale.value, "missing (every text needs en, fr and zh)")
    return {key: text.strip() for key, text in value.items()}


LocalizedText = Annotated[dict[str, str], BeforeValidator(_localized)]


class _Model(BaseModel):
    """Strict, immutable: unknown keys are errors so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# ---------------------------------------------------------------------------------------------
# Nodes


class Option(_Model):
    """One answer choice: the stored whole-number value and its label per locale."""

    value: int
    label: LocalizedText


class ResponseSet(_Model):
    """The answers an item takes: a list of options, or a whole-number scale min..max."""

    options: list[Option] | None = None
    min: int | None = None
    max: int | None = None
    anchors: dict[int, LocalizedText] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ResponseSet:
        if self.options is not None:
            for name in ("min", "max"):
                if getattr(self, name) is not None:
                    raise FieldError(name, "not allowed with `options` (give one or the other)")
            if self.anchors:
                raise FieldError("anchors", "not allowed with `options` (options have labels)")
            if not self.options:
                raise FieldError("options", "must list at least one option")
            seen: set[int] = set()
            for i, option in enumerate(self.options):
                if option.value in seen:
                    raise FieldError(f"options[{i}].value", f"{option.value} is used twice")
                seen.add(option.value)
            return self
        if self.min is None or self.max is None:
            raise FieldError("min" if self.min is None else "max", "required (or give `options`)")
        if self.max <= self.min:
            raise FieldError("max", f"must be greater than min ({self.min})")
        for value in self.anchors:
            if not self.min <= value <= self.max:
                raise FieldError(f"anchors.{value}", f"outside {self.min}..{self.max}")
        return self

    @property
    def values(self) -> list[int]:
        """Every allowed answer, lowest first."""
        if self.options is not None:
            return sorted(option.value for option in self.options)
        assert self.min is not None and self.max is not None
        return list(range(self.min, self.max + 1))

    @property
    def lowest(self) -> int:
        return self.values[0]

    @property
    def highest(self) -> int:
        return self.values[-1]

    def accepts(self, value: int) -> bool:
        """Whether `value` is one of the allowed answers."""
        if self.options is not None:
            return any(option.value == value for option in self.options)
        assert self.min is not None and self.max is not None
        return self.min <= value <= self.max

    def describe(self) -> str:
        """The allowed answers, for error messages."""
        if self.options is not None:
            return "one of " + ", ".join(str(v) for v in self.values)
        return f"between {self.min} and {self.max}"


class ShowIf(_Model):
    """Show an item only when an earlier item's answer is one of `in`."""

    model_config = ConfigDict(populate_by_name=True)

    item: Id
    in_: list[int] = Field(alias="in", min_length=1)


class CriticalIf(_Model):
    """An answer that opens an alert: one of `in`, or at least `at_least`."""

    model_config = ConfigDict(populate_by_name=True)

    in_: list[int] | None = Field(default=None, alias="in", min_length=1)
    at_least: int | None = None
    severity: Severity

    @model_validator(mode="after")
    def _check(self) -> CriticalIf:
        if (self.in_ is None) == (self.at_least is None):
            raise FieldError("in", "give exactly one of `in` (values) or `at_least` (a threshold)")
        return self

    def matches(self, value: int) -> bool:
        if self.in_ is not None:
            return value in self.in_
        assert self.at_least is not None
        return value >= self.at_least


def _text_or_licensed(value: Any) -> Any:
    if isinstance(value, str):
        if value.strip() != LICENSED:
            raise FieldError("", f"must be a text per locale or `{LICENSED}`")
        return LICENSED
    return _localized(value)


class Item(_Model):
    """One question."""

    id: Id
    number: int = Field(ge=1, le=999)
    text: Annotated[dict[str, str] | Literal["licensed"], BeforeValidator(_text_or_licensed)]
    responses: Id
    required: bool = True
    show_if: ShowIf | None = None
    critical_if: CriticalIf | None = None

    @property
    def is_licensed(self) -> bool:
        """Whether the site supplies the text (from its licensed copy of the instrument)."""
        return self.text == LICENSED

    def text_in(self, locale: str, licensed: Mapping[str, str] | None = None) -> str:
        """The item's text in `locale`; for a licensed item the site's text (`licensed`, keyed
        by item id) or, until it is supplied, a neutral placeholder such as "Item 12"."""
        loc = Locale(locale)
        if isinstance(self.text, dict):
            return self.text[loc.value]
        if licensed and licensed.get(self.id):
            return licensed[self.id]
        return PLACEHOLDER[loc].format(n=self.number)


class Scale(_Model):
    """A scored scale (or single item): its items, how it is transformed, how many it needs."""

    key: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")]
    label: str = Field(min_length=1, max_length=200)
    type: ScaleType
    items: list[Id] = Field(min_length=1)
    min_answered: float = Field(default=0.5, gt=0, le=1)


class Instrument(_Model):
    """A questionnaire: texts, answers, branching, critical answers and its scoring recipe."""

    key: Id
    version: int | str
    title: LocalizedText
    licence: str | None = Field(default=None, min_length=1)
    responses: dict[Id, ResponseSet] = Field(min_length=1)
    items: list[Item] = Field(min_length=1)
    scales: list[Scale] = Field(default_factory=list)
    # Set by the loader from the file itself.
    source_file: str = ""
    sha256: str = ""

    @model_validator(mode="after")
    def _check_references(self) -> Instrument:
        positions: dict[str, int] = {}
        last_number = 0
        for i, item in enumerate(self.items):
            if item.id in positions:
                raise FieldError(f"items[{i}].id", f"{item.id!r} is used twice")
            if item.number <= last_number:
                raise FieldError(
                    f"items[{i}].number",
                    f"must be greater than the previous item's number ({last_number})",
                )
            last_number = item.number
            if item.responses not in self.responses:
                raise FieldError(f"items[{i}].responses", f"no response set {item.responses!r}")
            answers = self.responses[item.responses]
            if item.show_if is not None:
                source = item.show_if.item
                if source == item.id:
                    raise FieldError(f"items[{i}].show_if.item", "an item cannot depend on itself")
                if source not in positions:
                    where = "a later item" if any(it.id == source for it in self.items) else None
                    raise FieldError(
                        f"items[{i}].show_if.item",
                        f"{source!r} is {where}; show_if must name an earlier item"
                        if where
                        else f"no item {source!r}",
                    )
                source_answers = self.responses[self.items[positions[source]].responses]
                for value in item.show_if.in_:
                    if not source_answers.accepts(value):
                        raise FieldError(
                            f"items[{i}].show_if.in",
                            f"{value} is not an answer of {source!r} ({source_answers.describe()})",
                        )
            if item.critical_if is not None:
                critical = item.critical_if
                for value in critical.in_ or []:
                    if not answers.accepts(value):
                        raise FieldError(
                            f"items[{i}].critical_if.in",
                            f"{value} is not an answer ({answers.describe()})",
                        )
                if critical.at_least is not None and not (
                    answers.lowest < critical.at_least <= answers.highest
                ):
                    raise FieldError(
                        f"items[{i}].critical_if.at_least",
                        f"must be above {answers.lowest} and at most {answers.highest}",
                    )
            positions[item.id] = i

        if any(item.is_licensed for item in self.items) and not self.licence:
            raise FieldError("licence", "required when an item's text is `licensed`")

        keys: set[str] = set()
        for s, scale in enumerate(self.scales):
            if scale.key in keys:
                raise FieldError(f"scales[{s}].key", f"{scale.key!r} is used twice")
            keys.add(scale.key)
            ranges: set[tuple[int, int]] = set()
            for j, item_id in enumerate(scale.items):
                if item_id not in positions:
                    raise FieldError(f"scales[{s}].items[{j}]", f"no item {item_id!r}")
                if item_id in scale.items[:j]:
                    raise FieldError(f"scales[{s}].items[{j}]", f"{item_id!r} is listed twice")
                answers = self.responses[self.items[positions[item_id]].responses]
                ranges.add((answers.lowest, answers.highest))
            if len(ranges) > 1:
                found = ", ".join(f"{lo}..{hi}" for lo, hi in sorted(ranges))
                raise FieldError(
                    f"scales[{s}].items", f"items must share one answer range (found {found})"
                )
        return self

    # -- lookups ---------------------------------------------------------------------------------

    def item(self, item_id: str) -> Item:
        """The item with this id (KeyError when unknown)."""
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def answers_for(self, item_id: str) -> ResponseSet:
        """The response set of an item (KeyError when the item is unknown)."""
        return self.responses[self.item(item_id).responses]

    def scale(self, key: str) -> Scale:
        """The scale with this key (KeyError when unknown)."""
        for scale in self.scales:
            if scale.key == key:
                return scale
        raise KeyError(key)


# ---------------------------------------------------------------------------------------------
# Loading


def parse_instrument(
    text: str, *, file: str = "<instrument>", key: str | None = None
) -> Instrument:
    """Parse and validate instrument YAML text; errors raise InstrumentError naming `file`.
    With `key`, the file's `key` must equal it (the loader passes the file name)."""
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise InstrumentError(file, [(where, f"not valid YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise InstrumentError(file, [("(top level)", "must be a mapping of fields")])
    for name in ("source_file", "sha256"):
        if name in data:
            raise InstrumentError(file, [(name, "set by the loader; remove it from the file")])
    try:
        instrument = Instrument.model_validate(data)
    except ValidationError as exc:
        raise InstrumentError(file, validation_problems(exc)) from None
    if key is not None and instrument.key != key:
        raise InstrumentError(file, [("key", f"must match the file name ({key!r})")])
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return instrument.model_copy(update={"source_file": file, "sha256": digest})


def load_instrument(path: str | Path) -> Instrument:
    """Load and validate one instrument file; its `key` must equal the file name (no .yaml)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InstrumentError(path.name, [("(file)", f"cannot be read: {exc.strerror}")]) from None
    return parse_instrument(text, file=path.name, key=path.stem)


def load_all(directory: str | Path) -> dict[str, Instrument]:
    """Load every *.yaml instrument in a directory, keyed by instrument key."""
    return {path.stem: load_instrument(path) for path in sorted(Path(directory).glob("*.yaml"))}
