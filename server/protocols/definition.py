"""The protocol definition format (config/protocols/*.yaml): pydantic models and the loader.

One file per trial; a new `version` is an amendment. The shape, top to bottom:

    study: STOP-HER2                 # study key (upper case, digits, dashes)
    title: ...
    version: 1                       # integer or string
    identifiers: [NCT05721248]
    locale: en                       # en | fr | zh
    time_zone: America/New_York      # optional IANA zone, used when a participant has none
    time_of_day: "09:00"             # local time of every event unless an item says otherwise
    anchor: Day anti-HER2 therapy stops (week 1 day 1)
    result_look_back: 30 days        # how long before enrolment a sample or scan may date from
    cohorts:
      - {key: stop, label: "Cohort 2: stop anti-HER2 therapy"}
    rules: [imaging_progression, result_overdue]     # study rules, from STUDY_RULES
    schedule:
      - id: restaging_scan           # unique in the file; event keys are "<id>:<sequence>"
        type: imaging                # EventType
        modality: ct_or_mri          # imaging only
        label: Restaging scans
        cohorts: [stop]              # omitted = every cohort
        reanchor: true               # later occurrences count from the actual completion date
        expects: {result: imaging, turnaround_days: 7}
        phases:                      # or the one-phase shorthand: first/every/until|count/window
          - name: year_1
            first: 12 weeks          # offset from the anchor: "<n> days|weeks|months|years"
            every: 12 weeks
            until: 1 year            # inclusive offset from the anchor (or `count: n`)
            window: {early_days: 14, late_days: 14}
          - name: after_year_1       # no `first`: starts one interval after the last occurrence
            every: 3 months
            until: 10 years
            window: {early_days: 14, late_days: 14}
            site_defaults: [every, window]

Timing of an item is exactly one of: `phases`, the shorthand (`first` [+ `every` + `until`|`count`],
or `at: [offsets]` for explicit time points), or `after_cycle: n | [n, ...]` (the day cycle n
ends, in protocols with a `treatment:` block). A `window` on the item is the default for its phases.

`result_look_back` bounds a result's date from below: a sample collected or a scan performed
before the participant's enrolment day (the earlier of the anchor date and the day they were
enrolled in Stepdown) minus this duration is refused (422). It must cover every planned event:
the loader refuses a look-back shorter than the earliest window that opens before the anchor.

`site_defaults` (allowed on the protocol and on every item, phase, cohort, treatment block,
regimen, arm segment, decision table, decision rule and choice) lists the values of that node
which the seed documents do not state: documented defaults a site may change. Each entry is a
path to a value set on that node (`every`, `window`, `expects.turnaround_days`,
`rules.result_overdue`, `arms.control`); the loader rejects paths that name nothing.
Seed-stated values carry a YAML comment quoting their source instead.

The neoadjuvant trial adds `treatment:` (cycle length, regimens, and per cohort a plan of segments:
a fixed `{regimen, cycles}` or a `{decision, planned_cycles}` whose regimen a decision table picks)
and `decisions:` (tables whose rules have `when:` conditions on declared facts). See the
nct07239271.yaml file for a worked example.

Decision tables are complete when the file loads: every fact takes `unknown` besides its values
(ctdna_status: positive | negative; recist_response: CR | PR | SD | PD | NE; pam_mutation:
true | false; regimen: the regimen keys), a fact a rule's `when` leaves out matches any value,
and every combination must match a rule, else the load fails naming the file, the table and the
combination. A rule leads to `regimen` (`same` keeps the regimen given), `choose_from`, or
`team_decides: "<why>"`, a combination left to the care team on purpose, with the reason
quoted. Two rules matching one combination with different outcomes are an error unless the
table says `order: first_match` (then the first in the file wins).

    decisions:
      - id: after_c4
        label: Regimen after cycle 4
        order: first_match
        facts:
          response: {kind: recist_response, item: imaging_c4}
          current_regimen: {kind: regimen}
        rules:
          - {id: regimen_not_recorded, when: {current_regimen: unknown}, team_decides: "..."}
          - {id: response, when: {response: [CR, PR]}, regimen: same, cycles: 2}
          - ...

`alerts:` says, per alert kind the file's rules raise, how urgent it is (`level`: critical |
urgent | routine, always a site default: the seeds grade nothing) and the care team's
`next_step`, shown on the alert page with its `source` quoted from the trial documents (or listed
in `site_defaults` when they are silent):

    alerts:
      progression:
        level: critical
        next_step: Resume the pre-study regimen (strongly encouraged; the physician decides).
        source: 'seed 003: "resuming the pre-study regimen is strongly encouraged"'
        site_defaults: [level]

`entry_gate:` (issue 17) states the facts that must hold before monitoring starts, where each
comes from and what each outcome does. Participants of a gated protocol start in screening with
only the gate's `items` planned (from the planned stop date); they move on their own once the
facts are in: every fact passing and the stop date confirmed -> monitoring counted from the
confirmed stop date (cohort `on_pass.cohort` if given); any fact failing -> `on_fail` (status
continues_maintenance: nothing more is planned or sent); anything else waits (an indeterminate
draw is redrawn, a missing fact is awaited).

    entry_gate:
      label: Baseline Signatera ctDNA decides the path
      source: 'seed 002: "Signatera-negative patients at baseline will stop treatment ..."'
      items: [ctdna_baseline]
      facts:
        - key: baseline_ctdna
          label: Baseline Signatera ctDNA
          provenance: result          # result | event | attestation
          item: ctdna_baseline        # result: the ctDNA call (or RECIST) of this item's draw
          passes: [negative]
          fails: [positive]           # indeterminate, insufficient_sample, none yet: wait
        # provenance: event + within: 30 days -> the item done within 30 days before the stop
        # date (values within | outside); provenance: attestation -> a person attests one of
        # `values` (default yes | no) with the date it held.
      stop_date: Date anti-HER2 maintenance stopped (confirmed by the coordinator)
      on_pass: {cohort: stop}
      on_fail: {status: continues_maintenance, cohort: continue, label: "..."}

`choices:` declares values the protocol leaves to the care team per participant; the file's own
value is the default and a participant's choice replaces it from `applies_from` on:

    choices:
      - key: imaging_interval
        label: Imaging interval after one progression-free year
        decided_by: treating oncologist
        range: {min: 3 months, max: 6 months, step: 1 month}   # or values: [...]
        default: 3 months                    # = restaging_scan.after_year_1.every
        drives: [{item: restaging_scan, phase: after_year_1, field: every}]   # or field: modality
        applies_from: 1 year
        cohorts: [stop]

Validation errors raise ProtocolError naming the file, the field path and the problem.
"""

from __future__ import annotations

import enum
import hashlib
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from dateutil.relativedelta import relativedelta
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)


class EventType(enum.StrEnum):
    """Kinds of planned events; the values match server.schedules.models.EventType."""

    CTDNA_DRAW = "ctdna_draw"
    BLOOD_WORK = "blood_work"
    TUMOR_MARKERS = "tumor_markers"
    IMAGING = "imaging"
    CLINIC_VISIT = "clinic_visit"
    QUESTIONNAIRE = "questionnaire"
    DECISION_POINT = "decision_point"
    TREATMENT_CYCLE = "treatment_cycle"


class Modality(enum.StrEnum):
    """Imaging modalities; `ct_or_mri` leaves the choice to the site's radiology."""

    CT = "ct"
    PET_CT = "pet_ct"
    MRI = "mri"
    BONE_SCAN = "bone_scan"
    CT_OR_MRI = "ct_or_mri"
    ULTRASOUND = "ultrasound"
    MAMMOGRAPHY = "mammography"


class ResultKind(enum.StrEnum):
    """Results the system takes in for an event (the results watchdog waits for these)."""

    CTDNA = "ctdna"
    IMAGING = "imaging"
    TUMOR_MARKERS = "tumor_markers"


class Locale(enum.StrEnum):
    """Languages participant messages exist in."""

    EN = "en"
    FR = "fr"
    ZH = "zh"


class StudyRule(enum.StrEnum):
    """Result and adherence rules a study can switch on (implemented by the results work)."""

    CTDNA_TURNS_POSITIVE = "ctdna_turns_positive"
    CTDNA_POSITIVE_AT_BASELINE = "ctdna_positive_at_baseline"
    CTDNA_REDRAW_ON_FAILURE = "ctdna_redraw_on_failure"
    IMAGING_PROGRESSION = "imaging_progression"
    RESULT_OVERDUE = "result_overdue"
    MISSED_CTDNA_WINDOW = "missed_ctdna_window"


class AlertLevel(enum.StrEnum):
    """How urgent an alert is (the values match server.alerts.models.Level)."""

    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"


# The alerts a protocol's rules (and its questionnaires) can raise, with what raises each; the
# values match server.alerts.models.AlertKind. `alerts:` may speak only for these.
ALERT_SOURCES: dict[str, tuple[StudyRule | None, ...]] = {
    "ctdna_positive": (StudyRule.CTDNA_TURNS_POSITIVE,),
    "ctdna_positive_baseline": (
        StudyRule.CTDNA_POSITIVE_AT_BASELINE,
        StudyRule.CTDNA_TURNS_POSITIVE,  # a first positive, with no earlier result to compare
    ),
    "progression": (StudyRule.IMAGING_PROGRESSION,),
    "redraw_needed": (StudyRule.CTDNA_REDRAW_ON_FAILURE,),
    "result_overdue": (StudyRule.RESULT_OVERDUE,),
    "missed_window": (StudyRule.MISSED_CTDNA_WINDOW,),
    "critical_answer": (None,),  # a questionnaire item's critical_if
    "entry_gate": (),  # the protocol's entry gate (checked against `entry_gate:`)
}


class FactKind(enum.StrEnum):
    """What a decision-table fact is; the kind fixes the values it may take."""

    CTDNA_STATUS = "ctdna_status"
    RECIST_RESPONSE = "recist_response"
    PAM_MUTATION = "pam_mutation"
    REGIMEN = "regimen"


# A fact whose source was not done, failed, or never tested (a value every fact kind may take,
# so a decision table must say what happens then).
UNKNOWN = "unknown"

# Values each fact kind may take; a regimen fact takes the protocol's regimen keys (or unknown).
FACT_VALUES: dict[FactKind, tuple[str, ...]] = {
    FactKind.CTDNA_STATUS: ("positive", "negative", UNKNOWN),
    FactKind.RECIST_RESPONSE: ("CR", "PR", "SD", "PD", "NE", UNKNOWN),
    FactKind.PAM_MUTATION: ("true", "false", UNKNOWN),
}

# Which event type may supply a fact of each kind (a fact's `item:` must be of that type).
FACT_SOURCES: dict[FactKind, frozenset[EventType]] = {
    FactKind.CTDNA_STATUS: frozenset({EventType.CTDNA_DRAW}),
    FactKind.RECIST_RESPONSE: frozenset({EventType.IMAGING}),
    FactKind.PAM_MUTATION: frozenset({EventType.CTDNA_DRAW}),
    FactKind.REGIMEN: frozenset(),
}

# The one result each event type can expect; the loader fills `expects` from this when absent.
RESULT_FOR_TYPE: dict[EventType, ResultKind] = {
    EventType.CTDNA_DRAW: ResultKind.CTDNA,
    EventType.IMAGING: ResultKind.IMAGING,
    EventType.TUMOR_MARKERS: ResultKind.TUMOR_MARKERS,
}
DEFAULT_TURNAROUND_DAYS = 14

# A decision rule's `regimen: same` keeps the regimen given so far (a `regimen` fact says which).
SAME_REGIMEN = "same"

_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_STUDY_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,31}$")
_DURATION_RE = re.compile(r"^\s*([+-]?\d+)\s*(day|week|month|year)s?\s*$", re.IGNORECASE)
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# Fields the loader sets from the file itself; a file may not state them.
_LOADER_FIELDS = ("key", "source_file", "sha256")


class FieldError(ValueError):
    """A validation problem at a path below the model that raised it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class ProtocolError(ValueError):
    """A protocol file that cannot be used; the message names the file, field paths and problems."""

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {path}: {msg}" for path, msg in problems))


# ---------------------------------------------------------------------------------------------
# Value types


@dataclass(frozen=True, slots=True)
class Duration:
    """An offset or interval written "<n> days|weeks|months|years" (months clamp to month end)."""

    amount: int
    unit: Literal["days", "weeks", "months", "years"]

    @property
    def is_calendar(self) -> bool:
        """Whether the unit is months or years (day-of-month semantics) rather than days."""
        return self.unit in ("months", "years")

    @property
    def months(self) -> int:
        """The length in months (only for calendar units)."""
        return self.amount * (12 if self.unit == "years" else 1)

    def delta(self) -> relativedelta:
        """The relativedelta this duration adds to a date."""
        if self.is_calendar:
            return relativedelta(months=self.months)
        return relativedelta(days=self.amount * (7 if self.unit == "weeks" else 1))

    def approx_days(self) -> float:
        """A rough length in days, only for comparing durations of different units."""
        per = {"days": 1.0, "weeks": 7.0, "months": 30.4375, "years": 365.25}[self.unit]
        return self.amount * per

    def __str__(self) -> str:
        unit = self.unit if abs(self.amount) != 1 else self.unit[:-1]
        return f"{self.amount} {unit}"


def _parse_duration(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"write a duration like '12 weeks' or '3 months', not {value!r}")
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"write a duration like '12 weeks' or '3 months', not {value!r}")
    unit = match.group(2).lower() + "s"
    return Duration(int(match.group(1)), unit)  # type: ignore[arg-type]


def parse_duration(value: Any) -> Duration:
    """A duration written "<n> days|weeks|months|years" (ValueError if it is not one)."""
    return _parse_duration(value)


def _parse_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 9:30 as the base-60 number 570.
        raise ValueError("write the time in quotes, e.g. '09:30'")
    if not isinstance(value, str) or not _TIME_RE.match(value.strip()):
        raise ValueError(f"write a 24-hour local time like '09:00', not {value!r}")
    hours, minutes = value.strip().split(":")
    return time(int(hours), int(minutes))


def _check_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError(
            f"{value!r} is not an id: use lower-case letters, digits and _, starting with a "
            "letter, at most 48 characters (e.g. restaging_scan)"
        )
    return value


def _as_list(value: Any) -> Any:
    # `after_cycle: 2` and `cohorts: stop` read naturally; store both as lists.
    return [value] if isinstance(value, (int, str)) and not isinstance(value, bool) else value


DurationField = Annotated[
    Duration, BeforeValidator(_parse_duration), PlainSerializer(str, return_type=str)
]
TimeField = Annotated[
    time,
    BeforeValidator(_parse_time),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
]
Id = Annotated[str, BeforeValidator(_check_id)]
CycleNumber = Annotated[int, Field(ge=1, le=100)]
_SHORTHAND = ("first", "every", "until", "count", "at")


# ---------------------------------------------------------------------------------------------
# Models


def _resolve_default_path(node: BaseModel, path: str) -> str | None:
    """Why `path` names no value set on `node`, or None when it does."""
    head, _, rest = path.partition(".")
    if head == "site_defaults" or head not in type(node).model_fields:
        return f"{head!r} is not a field here"
    if head not in node.model_fields_set:
        return f"{head!r} is not set here, so there is no value to mark as a default"
    value: Any = getattr(node, head)
    while rest:
        step, _, rest = rest.partition(".")
        if isinstance(value, BaseModel):
            if step not in type(value).model_fields or step not in value.model_fields_set:
                return f"{path!r}: {step!r} is not set here"
            value = getattr(value, step)
        elif isinstance(value, dict):
            if step not in value:
                return f"{path!r}: no entry {step!r}"
            value = value[step]
        elif isinstance(value, list):
            found = [v for v in value if _entry_name(v) == step]
            if not found:
                return f"{path!r}: no entry {step!r}"
            value = found[0]
        else:
            return f"{path!r}: {step!r} is below a plain value"
    return None


def _entry_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    for attr in ("id", "key", "name"):
        name = getattr(value, attr, None)
        if isinstance(name, str):
            return name
    return None


class _Model(BaseModel):
    """Strict, immutable: unknown keys are errors so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _Node(_Model):
    """A node that may mark some of its values as site-changeable defaults."""

    # Checked once the whole protocol is valid (Protocol._check_site_defaults), so a structural
    # error is reported as itself rather than as a default naming a missing value.
    site_defaults: list[str] = Field(default_factory=list)


class Window(_Model):
    """Days before and after the target date in which an event counts as on time."""

    early_days: int = Field(ge=0, le=366)
    late_days: int = Field(ge=0, le=366)


class Expects(_Node):
    """The result an event should produce, and how many days the lab or reader may take."""

    result: ResultKind
    turnaround_days: int = Field(default=DEFAULT_TURNAROUND_DAYS, ge=1, le=365)


class Reminder(_Model):
    """A participant reminder: `offset` days from the event's target, window opening or window
    closing, sent at `at` local time (default: the item's time of day). Moments before the target
    expire at the end of the target day; later ones (nudges, overdue) when the window closes."""

    kind: Id
    offset: DurationField = Field(default_factory=lambda: Duration(0, "days"))
    relative_to: Literal["target", "window_open", "window_close"] = "target"
    at: TimeField | None = None


class Phase(_Node):
    """A segment of an item's schedule with its own cadence, window and end."""

    name: Id | None = None
    first: DurationField | None = None
    every: DurationField | None = None
    until: DurationField | None = None
    count: int | None = Field(default=None, ge=1, le=1000)
    at: list[DurationField] | None = None
    window: Window | None = None

    @model_validator(mode="after")
    def _check_timing(self) -> Phase:
        if self.at is not None:
            for name in ("first", "every", "until", "count"):
                if getattr(self, name) is not None:
                    raise FieldError(name, "not allowed with `at` (explicit time points)")
            if not self.at:
                raise FieldError("at", "must list at least one offset")
            return self
        if self.every is None:
            if self.until is not None or self.count is not None:
                raise FieldError("every", "required when `until` or `count` is given")
            if self.first is None:
                raise FieldError("first", "required (or give `at` or `every`)")
            return self
        if self.every.amount <= 0:
            raise FieldError("every", "must be a positive interval")
        if (self.until is None) == (self.count is None):
            raise FieldError("until", "give exactly one of `until` (an offset) or `count`")
        first, until = self.first, self.until
        if first is not None and until is not None and until.approx_days() < first.approx_days():
            raise FieldError("until", f"comes before `first` ({first})")
        return self


class Item(_Node):
    """One kind of planned event (a draw, scan, visit, questionnaire, decision) and its timing."""

    id: Id
    type: EventType
    label: str = Field(min_length=1, max_length=200)
    modality: Modality | None = None
    instrument: Id | None = None
    decision: Id | None = None
    cohorts: Annotated[list[Id] | None, BeforeValidator(_as_list)] = None
    time_of_day: TimeField | None = None
    expects: Expects | None = None
    reanchor: bool = False
    window: Window | None = None
    # One-phase shorthand.
    phase: Id | None = None
    first: DurationField | None = None
    every: DurationField | None = None
    until: DurationField | None = None
    count: int | None = Field(default=None, ge=1, le=1000)
    at: list[DurationField] | None = None
    # Several phases.
    phases: list[Phase] | None = None
    # Cycle-driven timing: the day treatment cycle n ends (cycle n+1 day 1).
    after_cycle: Annotated[list[CycleNumber] | None, BeforeValidator(_as_list)] = None
    reminders: list[Reminder] | None = None
    note: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_expects(cls, data: Any) -> Any:
        # A ctDNA draw, scan or tumor-marker draw always expects its result: say so once, here.
        if isinstance(data, dict) and "expects" not in data:
            try:
                kind = RESULT_FOR_TYPE.get(EventType(str(data.get("type"))))
            except ValueError:
                kind = None
            if kind is not None:
                data = {**data, "expects": {"result": kind.value}}
        return data

    @model_validator(mode="after")
    def _check_item(self) -> Item:
        if self.type == EventType.TREATMENT_CYCLE:
            raise FieldError("type", "treatment cycles come from the `treatment:` block")
        for name, needed_for in (
            ("modality", EventType.IMAGING),
            ("instrument", EventType.QUESTIONNAIRE),
            ("decision", EventType.DECISION_POINT),
        ):
            if (getattr(self, name) is not None) != (self.type == needed_for):
                if getattr(self, name) is None:
                    raise FieldError(name, f"required for {needed_for.value} items")
                raise FieldError(name, f"only allowed on {needed_for.value} items")
        if self.expects is not None and RESULT_FOR_TYPE.get(self.type) != self.expects.result:
            raise FieldError(
                "expects.result", f"a {self.type.value} item cannot expect {self.expects.result}"
            )
        if self.cohorts is not None and not self.cohorts:
            raise FieldError("cohorts", "name at least one cohort, or omit it for all")
        shorthand = [n for n in _SHORTHAND if getattr(self, n) is not None]
        ways = sum((bool(shorthand), self.phases is not None, self.after_cycle is not None))
        if ways != 1:
            raise FieldError(
                "phases",
                "give exactly one timing: `phases`, the shorthand (`first`/`every`/"
                "`until`/`count` or `at`), or `after_cycle`",
            )
        if self.phases is not None:
            if not self.phases:
                raise FieldError("phases", "must list at least one phase")
            if self.phase is not None:
                raise FieldError("phase", "name each entry of `phases` instead")
            seen: set[str] = set()
            for i, phase in enumerate(self.phases):
                if phase.name is None:
                    raise FieldError(f"phases[{i}].name", "required when there are several phases")
                if phase.name in seen:
                    raise FieldError(f"phases[{i}].name", f"{phase.name!r} is used twice")
                seen.add(phase.name)
                if phase.window is None and self.window is None:
                    raise FieldError(f"phases[{i}].window", "required (here or on the item)")
            first = self.phases[0]
            if first.at is None and first.first is None:
                raise FieldError("phases[0].first", "the first phase needs `first` or `at`")
        elif self.after_cycle is not None:
            if self.window is None:
                raise FieldError("window", "required")
            if self.reanchor:
                raise FieldError("reanchor", "cycle-driven items move with the cycles instead")
            if self.after_cycle != sorted(set(self.after_cycle)):
                raise FieldError("after_cycle", "list cycles once each, in increasing order")
        else:
            if self.window is None:
                raise FieldError("window", "required")
            try:
                Phase(**{n: getattr(self, n) for n in shorthand})
            except ValidationError as exc:
                path, message = validation_problems(exc)[0]
                raise FieldError(path, message) from None
        if self.reanchor and self.after_cycle is None:
            for i, phase in enumerate(self.timing_phases()):
                where = f"phases[{i}]." if self.phases is not None else ""
                if phase.count is not None:
                    raise FieldError(
                        f"{where}count", "a re-anchoring item must end phases with `until`"
                    )
        return self

    def timing_phases(self) -> list[Phase]:
        """The item's phases, turning the one-phase shorthand into a single phase."""
        if self.phases is not None:
            return self.phases
        if self.after_cycle is not None:
            return []
        fields = {n: getattr(self, n) for n in _SHORTHAND}
        return [Phase.model_construct(name=self.phase, window=self.window, **fields)]

    def window_for(self, phase: Phase) -> Window:
        """The window that applies in a phase (the phase's own, else the item's)."""
        window = phase.window or self.window
        assert window is not None  # guaranteed by validation
        return window

    def applies_to(self, cohort: str) -> bool:
        """Whether the item is planned for participants of this cohort."""
        return self.cohorts is None or cohort in self.cohorts


class AlertGuidance(_Node):
    """What the protocol says about one kind of alert: its level (how it reaches people, see
    server/alerts/rules.py) and the next step the care team takes, shown on the alert page.

    The seeds never grade urgency, so a `level` is always a site default (listed in
    `site_defaults`); a `next_step` quotes its `source` from the trial documents, or is listed
    in `site_defaults` when they say nothing."""

    level: AlertLevel | None = None
    next_step: str | None = Field(default=None, min_length=1, max_length=400)
    source: str | None = Field(default=None, min_length=1, max_length=600)

    @model_validator(mode="after")
    def _check_provenance(self) -> AlertGuidance:
        if self.level is not None and "level" not in self.site_defaults:
            raise FieldError(
                "level", "the trial documents grade no alert: list it in site_defaults"
            )
        no_source = self.source is None and "next_step" not in self.site_defaults
        if self.next_step is not None and no_source:
            raise FieldError("next_step", "quote its `source` or list it in site_defaults")
        if self.source is not None and self.next_step is None:
            raise FieldError("source", "a source needs the next_step it supports")
        return self


class Cohort(_Node):
    """A cohort or arm participants are enrolled or randomised into."""

    key: Id
    label: str = Field(min_length=1, max_length=200)


class Regimen(_Node):
    """A treatment regimen the cycles can follow."""

    key: Id
    label: str = Field(min_length=1, max_length=200)
    cycle_days: int | None = Field(default=None, ge=1, le=366)


class ArmSegment(_Node):
    """A run of cycles: a fixed regimen, or a regimen a decision table will choose."""

    name: Id | None = None
    regimen: Id | None = None
    cycles: int | None = Field(default=None, ge=1, le=100)
    decision: Id | None = None
    planned_cycles: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="after")
    def _check_segment(self) -> ArmSegment:
        if self.decision is None:
            if self.regimen is None or self.cycles is None:
                raise FieldError("regimen", "give `regimen` and `cycles`, or `decision`")
            if self.planned_cycles is not None:
                raise FieldError("planned_cycles", "only for a `decision` segment")
        else:
            if self.regimen is not None or self.cycles is not None:
                raise FieldError("decision", "a decision segment gets its regimen from the table")
            if self.planned_cycles is None:
                raise FieldError("planned_cycles", "required: cycles to plan until decided")
        return self

    @property
    def nominal_cycles(self) -> int:
        """Cycles this segment spans before any decision is recorded."""
        return self.cycles if self.decision is None else self.planned_cycles  # type: ignore[return-value]


class Treatment(_Node):
    """Treatment cycles (neoadjuvant trial): cycle length, regimens and each cohort's plan."""

    id: Id = "cycle"
    label: str = "Treatment cycle"
    cycle_days: int = Field(ge=1, le=366)
    window: Window
    time_of_day: TimeField | None = None
    # Whether a cycle given late moves the later cycles (and the checkpoints after them).
    reanchor: bool = False
    regimens: list[Regimen] = Field(min_length=1)
    arms: dict[str, list[ArmSegment]] = Field(min_length=1)

    @field_validator("arms")
    @classmethod
    def _non_empty_arms(cls, arms: dict[str, list[ArmSegment]]) -> dict[str, list[ArmSegment]]:
        for cohort, segments in arms.items():
            if not segments:
                raise FieldError(cohort, "must list at least one segment")
        return arms

    def regimen(self, key: str) -> Regimen:
        """The regimen with this key (KeyError when unknown)."""
        for regimen in self.regimens:
            if regimen.key == key:
                return regimen
        raise KeyError(key)

    def cycle_days_for(self, regimen: str | None) -> int:
        """Cycle length of a regimen (its own, else the block's)."""
        if regimen is None:
            return self.cycle_days
        return self.regimen(regimen).cycle_days or self.cycle_days


class FactSpec(_Model):
    """A fact a decision table reads: its kind and, optionally, the item whose result gives it."""

    kind: FactKind
    item: Id | None = None
    note: str | None = None


def _normalise_values(value: Any) -> Any:
    # YAML reads `pam_mutation: true` as a boolean; facts are compared as text.
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if isinstance(v, bool):
            out.append("true" if v else "false")
        elif isinstance(v, (str, int)):
            out.append(str(v).strip())
        else:
            raise ValueError(f"conditions take a value or a list of values, not {v!r}")
    return out


# A `team_decides` reason shorter than this says nothing a reviewer could check.
TEAM_DECIDES_MIN = 10


class DecisionRule(_Node):
    """One row of a decision table: conditions on facts and what they lead to: a regimen, a
    choice among regimens, or, stated on purpose with its reason, the care team's decision."""

    id: Id
    when: dict[str, Annotated[list[str], BeforeValidator(_normalise_values)]] = Field(
        default_factory=dict
    )
    regimen: Id | None = None
    choose_from: list[Id] | None = None
    team_decides: str | None = Field(default=None, max_length=600)
    cycles: int | None = Field(default=None, ge=1, le=100)
    because: str | None = None

    @model_validator(mode="after")
    def _check_outcome(self) -> DecisionRule:
        given = [self.regimen, self.choose_from, self.team_decides]
        if sum(v is not None for v in given) != 1:
            raise FieldError(
                "regimen", "give exactly one of `regimen`, `choose_from` or `team_decides`"
            )
        if self.team_decides is not None:
            if len(self.team_decides) < TEAM_DECIDES_MIN:
                raise FieldError(
                    "team_decides", "say why the care team decides (quote the seed or reason)"
                )
            if self.cycles is not None:
                raise FieldError("cycles", "not with `team_decides`: the care team sets them")
        elif self.cycles is None:
            raise FieldError("cycles", "required")
        if self.choose_from is not None and len(set(self.choose_from)) < 2:
            raise FieldError("choose_from", "list at least two different regimens")
        for fact, values in self.when.items():
            if not values:
                raise FieldError(f"when.{fact}", "give at least one value")
        return self


class DecisionTable(_Node):
    """A decision table: facts it reads and rules. Every combination of the facts' values must
    match a rule (checked when the file loads); rules matching the same combination must agree
    unless `order: first_match` says the first one in the file wins."""

    id: Id
    label: str = Field(min_length=1, max_length=200)
    facts: dict[str, FactSpec] = Field(min_length=1)
    rules: list[DecisionRule] = Field(min_length=1)
    order: Literal["exclusive", "first_match"] = "exclusive"

    @model_validator(mode="after")
    def _check_table(self) -> DecisionTable:
        for name in self.facts:
            if not _ID_RE.match(name):
                raise FieldError(f"facts.{name}", "fact names use lower-case letters, digits, _")
        regimen_facts = [n for n, f in self.facts.items() if f.kind == FactKind.REGIMEN]
        if len(regimen_facts) > 1:
            raise FieldError("facts", "declare at most one fact of kind regimen")
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.id in seen:
                raise FieldError(f"rules[{i}].id", f"{rule.id!r} is used twice")
            seen.add(rule.id)
            for fact, values in rule.when.items():
                spec = self.facts.get(fact)
                if spec is None:
                    raise FieldError(
                        f"rules[{i}].when.{fact}", f"not a declared fact ({', '.join(self.facts)})"
                    )
                allowed = FACT_VALUES.get(spec.kind)
                for value in values:
                    if allowed is not None and value not in allowed:
                        raise FieldError(
                            f"rules[{i}].when.{fact}",
                            f"{value!r} is not one of {', '.join(allowed)}",
                        )
            if rule.regimen == SAME_REGIMEN and not regimen_facts:
                raise FieldError(
                    f"rules[{i}].regimen", "`same` needs a fact of kind regimen in `facts`"
                )
        return self

    @property
    def regimen_fact(self) -> str | None:
        """The name of the fact that says which regimen is being given, if any."""
        for name, spec in self.facts.items():
            if spec.kind == FactKind.REGIMEN:
                return name
        return None


class ChoiceTarget(_Model):
    """A value a participant choice sets: a phase's interval (`every`) or an imaging modality."""

    item: Id
    phase: Id | None = None
    field: Literal["every", "modality"]


class ChoiceRange(_Model):
    """Allowed intervals from `min` to `max` in steps of `step` (one unit, e.g. months)."""

    min: DurationField
    max: DurationField
    step: DurationField

    @model_validator(mode="after")
    def _check_range(self) -> ChoiceRange:
        if len({self.min.unit, self.max.unit, self.step.unit}) != 1:
            raise FieldError("step", "write min, max and step in one unit (e.g. months)")
        if self.step.amount <= 0:
            raise FieldError("step", "must be a positive interval")
        if self.max.amount < self.min.amount or self.min.amount <= 0:
            raise FieldError("max", "give 0 < min <= max")
        if (self.max.amount - self.min.amount) // self.step.amount > 100:
            raise FieldError("step", "allows more than 100 values")
        return self

    def values(self) -> list[Duration]:
        """Every allowed interval, smallest first."""
        unit, step = self.min.unit, self.step.amount
        return [Duration(n, unit) for n in range(self.min.amount, self.max.amount + 1, step)]


class ParticipantChoice(_Node):
    """A value the protocol leaves to the care team per participant (e.g. STOP-HER2's imaging
    interval after a progression-free year, "every 3-6 months" at the oncologist's discretion).

    The file's own value of each driven field is the default; a participant's choice replaces it
    in the events planned from `applies_from` (an offset from the anchor) on."""

    key: Id
    label: str = Field(min_length=1, max_length=200)
    decided_by: str = Field(min_length=1, max_length=200)
    values: list[str] | None = None
    range: ChoiceRange | None = None
    default: str
    drives: list[ChoiceTarget] = Field(min_length=1)
    applies_from: DurationField = Field(default_factory=lambda: Duration(0, "days"))
    cohorts: Annotated[list[Id] | None, BeforeValidator(_as_list)] = None
    note: str | None = None

    @model_validator(mode="after")
    def _check_choice(self) -> ParticipantChoice:
        if (self.values is None) == (self.range is None):
            raise FieldError("values", "give exactly one of `values` or `range`")
        if len({d.field for d in self.drives}) != 1:
            raise FieldError("drives", "drive one kind of field (all `every` or all `modality`)")
        if self.range is not None and self.kind != "every":
            raise FieldError("range", "a range is for intervals (`every`)")
        if self.values is not None and len(set(self.values)) != len(self.values):
            raise FieldError("values", "lists a value twice")
        try:
            allowed = self.allowed()
            default = self.normalise(self.default)
        except ValueError as exc:
            raise FieldError("values", str(exc)) from None
        if len(allowed) < 2:
            raise FieldError("values", "allow at least two values (else it is no choice)")
        if default not in allowed:
            raise FieldError("default", f"{self.default!r} is not one of {', '.join(allowed)}")
        if self.applies_from.amount < 0:
            raise FieldError("applies_from", "must not be negative")
        if self.cohorts is not None and not self.cohorts:
            raise FieldError("cohorts", "name at least one cohort, or omit it for all")
        return self

    @property
    def kind(self) -> str:
        """The kind of field it drives: "every" (an interval) or "modality"."""
        return self.drives[0].field

    def normalise(self, value: object) -> str:
        """A value as a person wrote it, in canonical form (ValueError if unreadable)."""
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{value!r} is not a value of {self.key}")
        if self.kind == "every":
            return str(_parse_duration(value))
        text = value.strip().lower()
        if text not in {m.value for m in Modality}:
            known = ", ".join(m.value for m in Modality)
            raise ValueError(f"{value!r} is not a modality ({known})")
        return text

    def allowed(self) -> list[str]:
        """The allowed values, canonical, in the file's order (a range: smallest first)."""
        if self.range is not None:
            return [str(d) for d in self.range.values()]
        return [self.normalise(v) for v in self.values or []]

    def applies_to(self, cohort: str) -> bool:
        """Whether participants of this cohort have this choice."""
        return self.cohorts is None or cohort in self.cohorts


class GateProvenance(enum.StrEnum):
    """Where an entry-gate fact comes from."""

    RESULT = "result"  # the result of a gate event: a ctDNA call, a RECIST response
    EVENT = "event"  # a gate event's completion: its date against the confirmed stop date
    ATTESTATION = "attestation"  # a person attests it, with the date it held


# Values a gate fact may take, by provenance (results: by the item's result kind).
GATE_RESULT_VALUES: dict[ResultKind, tuple[str, ...]] = {
    ResultKind.CTDNA: ("positive", "negative", "indeterminate", "insufficient_sample"),
    ResultKind.IMAGING: ("CR", "PR", "SD", "PD", "NE"),
}
GATE_EVENT_VALUES = ("within", "outside")
# The key under which the confirmed stop date is recorded among a participant's facts.
STOP_DATE_FACT = "stop_date"
CONTINUES_MAINTENANCE = "continues_maintenance"


class GateFact(_Node):
    """One fact an entry gate reads: where it comes from and which values pass or fail. Any
    other value (and no value yet) waits."""

    key: Id
    label: str = Field(min_length=1, max_length=200)
    provenance: GateProvenance
    item: Id | None = None
    within: DurationField | None = None
    values: list[str] | None = None
    passes: list[str] = Field(min_length=1)
    fails: list[str] = Field(default_factory=list)
    source: str | None = Field(default=None, max_length=600)
    note: str | None = None

    @model_validator(mode="after")
    def _check_fact(self) -> GateFact:
        if self.key == STOP_DATE_FACT:
            raise FieldError("key", f"{STOP_DATE_FACT!r} is the gate's confirmed stop date")
        needs_item = self.provenance != GateProvenance.ATTESTATION
        if needs_item != (self.item is not None):
            raise FieldError(
                "item", "required for result and event facts" if needs_item else "not here"
            )
        if (self.within is not None) != (self.provenance == GateProvenance.EVENT):
            raise FieldError("within", "an event fact (and only one) says `within: <n> days`")
        if self.values is not None and self.provenance != GateProvenance.ATTESTATION:
            raise FieldError("values", "only an attested fact lists its values")
        if set(self.passes) & set(self.fails):
            raise FieldError("fails", "a value cannot both pass and fail")
        return self

    def allowed(self, result_kind: ResultKind | None = None) -> tuple[str, ...]:
        """The values this fact can take (a result fact: those of its item's result)."""
        if self.provenance == GateProvenance.ATTESTATION:
            return tuple(self.values or ("yes", "no"))
        if self.provenance == GateProvenance.EVENT:
            return GATE_EVENT_VALUES
        return GATE_RESULT_VALUES.get(result_kind, ()) if result_kind else ()

    def verdict(self, value: str | None) -> str:
        """pass, fail or wait for a value (None: not in yet)."""
        if value is not None and value in self.passes:
            return "pass"
        if value is not None and value in self.fails:
            return "fail"
        return "wait"


class GatePass(_Model):
    """What passing the gate does: enter monitoring from the confirmed stop date."""

    cohort: Id | None = None


class GateFail(_Model):
    """What failing the gate does: the participant continues maintenance, is planned nothing
    more and leaves the trial's follow-up, with a status that says so."""

    status: Literal["continues_maintenance"]
    cohort: Id | None = None
    label: str = Field(min_length=1, max_length=200)


class EntryGate(_Node):
    """The facts that must hold before monitoring starts, and what each outcome does."""

    label: str = Field(min_length=1, max_length=200)
    source: str | None = Field(default=None, max_length=600)
    items: list[Id] = Field(default_factory=list)
    facts: list[GateFact] = Field(min_length=1)
    stop_date: str = Field(min_length=1, max_length=200)
    on_pass: GatePass = Field(default_factory=GatePass)
    on_fail: GateFail | None = None

    def fact(self, key: str) -> GateFact:
        """The fact with this key (KeyError when unknown)."""
        for fact in self.facts:
            if fact.key == key:
                return fact
        raise KeyError(key)


class Protocol(_Node):
    """A whole protocol file (one trial, one version)."""

    study: str
    title: str = Field(min_length=1, max_length=300)
    version: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)]
    identifiers: list[str] = Field(default_factory=list)
    locale: Locale
    time_zone: str | None = None
    time_of_day: TimeField = time(9, 0)
    anchor: str = Field(min_length=1, max_length=300)
    # Results dated before enrolment minus this are refused (absent: no lower bound).
    result_look_back: DurationField | None = None
    cohorts: list[Cohort] = Field(min_length=1)
    rules: list[StudyRule] = Field(default_factory=list)
    schedule: list[Item] = Field(min_length=1)
    treatment: Treatment | None = None
    decisions: list[DecisionTable] = Field(default_factory=list)
    # The facts that must hold before monitoring starts (see EntryGate); None: no gate.
    entry_gate: EntryGate | None = None
    # Values the protocol leaves to the care team per participant (see ParticipantChoice).
    choices: list[ParticipantChoice] = Field(default_factory=list)
    # Participant reminder plans per event type; an item's own `reminders` replace its type's.
    reminders: dict[EventType, list[Reminder]] = Field(default_factory=dict)
    # Per alert kind: its level and the care team's next step (see AlertGuidance).
    alerts: dict[str, AlertGuidance] = Field(default_factory=dict)
    # Set by the loader from the file, never written in it.
    key: str = Field(default="", exclude=True)
    source_file: str = Field(default="", exclude=True)
    sha256: str = Field(default="", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _no_loader_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in _LOADER_FIELDS:
                if name in data:
                    raise FieldError(name, "is taken from the file itself; remove it")
        return data

    @field_validator("study")
    @classmethod
    def _check_study(cls, value: str) -> str:
        if not _STUDY_RE.match(value):
            raise ValueError("use upper-case letters, digits and dashes (e.g. STOP-HER2)")
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not value or len(value) > 32:
            raise ValueError("must be 1 to 32 characters")
        return value

    @field_validator("time_zone")
    @classmethod
    def _check_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @model_validator(mode="after")
    def _check_references(self) -> Protocol:
        cohort_keys = _unique(self.cohorts, "cohorts", "key")
        item_ids = _unique(self.schedule, "schedule", "id")
        decision_ids = _unique(self.decisions, "decisions", "id")
        if len(set(self.rules)) != len(self.rules):
            raise FieldError("rules", "lists a rule twice")
        items = {item.id: item for item in self.schedule}

        for i, item in enumerate(self.schedule):
            for j, cohort in enumerate(item.cohorts or []):
                if cohort not in cohort_keys:
                    raise FieldError(f"schedule[{i}].cohorts[{j}]", f"no cohort {cohort!r}")
            if item.decision is not None and item.decision not in decision_ids:
                raise FieldError(f"schedule[{i}].decision", f"no decision table {item.decision!r}")

        self._check_treatment(cohort_keys, item_ids, decision_ids)
        self._check_choices(cohort_keys, items)
        self._check_entry_gate(cohort_keys, items)

        regimen_keys = {r.key for r in self.treatment.regimens} if self.treatment else set()
        for t, table in enumerate(self.decisions):
            for name, spec in table.facts.items():
                if spec.item is None:
                    continue
                source = items.get(spec.item)
                if source is None:
                    raise FieldError(f"decisions[{t}].facts.{name}.item", f"no item {spec.item!r}")
                if source.type not in FACT_SOURCES[spec.kind]:
                    raise FieldError(
                        f"decisions[{t}].facts.{name}.item",
                        f"a {source.type.value} item cannot supply a {spec.kind.value} fact",
                    )
            for r, rule in enumerate(table.rules):
                named = [rule.regimen] if rule.regimen else list(rule.choose_from or [])
                for regimen in named:
                    if regimen != SAME_REGIMEN and regimen not in regimen_keys:
                        raise FieldError(
                            f"decisions[{t}].rules[{r}].regimen", f"no regimen {regimen!r}"
                        )
                for fact, values in rule.when.items():
                    if table.facts[fact].kind == FactKind.REGIMEN:
                        for value in values:
                            if value not in regimen_keys and value != UNKNOWN:
                                raise FieldError(
                                    f"decisions[{t}].rules[{r}].when.{fact}",
                                    f"no regimen {value!r}",
                                )

        self._check_alerts()
        types = {item.type for item in self.schedule}
        needs = {
            StudyRule.CTDNA_TURNS_POSITIVE: EventType.CTDNA_DRAW,
            StudyRule.CTDNA_POSITIVE_AT_BASELINE: EventType.CTDNA_DRAW,
            StudyRule.CTDNA_REDRAW_ON_FAILURE: EventType.CTDNA_DRAW,
            StudyRule.MISSED_CTDNA_WINDOW: EventType.CTDNA_DRAW,
            StudyRule.IMAGING_PROGRESSION: EventType.IMAGING,
        }
        for i, study_rule in enumerate(self.rules):
            needed = needs.get(study_rule)
            if needed is not None and needed not in types:
                raise FieldError(f"rules[{i}]", f"{study_rule.value} needs a {needed.value} item")
            if study_rule == StudyRule.RESULT_OVERDUE and not any(
                it.expects for it in self.schedule
            ):
                raise FieldError(f"rules[{i}]", "result_overdue needs an item that expects results")
        return self

    def _check_alerts(self) -> None:
        has_questionnaire = any(it.type == EventType.QUESTIONNAIRE for it in self.schedule)
        for kind in self.alerts:
            sources = ALERT_SOURCES.get(kind)
            if sources is None:
                known = ", ".join(ALERT_SOURCES)
                raise FieldError(f"alerts.{kind}", f"not an alert a protocol raises ({known})")
            raised = any(
                (rule in self.rules) if rule is not None else has_questionnaire for rule in sources
            )
            if kind == "entry_gate":
                if self.entry_gate is None:
                    raise FieldError(f"alerts.{kind}", "nothing raises it here (needs entry_gate)")
                continue
            if not raised:
                needs = " or ".join(r.value if r else "a questionnaire" for r in sources)
                raise FieldError(f"alerts.{kind}", f"nothing raises it here (needs {needs})")

    @model_validator(mode="after")
    def _check_look_back(self) -> Protocol:
        look_back = self.result_look_back
        if look_back is None:
            return self
        if look_back.amount < 0:
            raise FieldError("result_look_back", "must not be negative")
        lead, item_id = self.earliest_window_lead()
        if lead > look_back.approx_days():
            raise FieldError(
                "result_look_back",
                f"{look_back} is shorter than the {lead} days before the anchor at which the "
                f"window of {item_id!r} opens: its results would be refused",
            )
        return self

    @model_validator(mode="after")
    def _check_site_defaults(self) -> Protocol:
        for where, node in iter_nodes(self):
            prefix = f"{where}." if where else ""
            for i, path in enumerate(node.site_defaults):
                problem = _resolve_default_path(node, path)
                if problem:
                    raise FieldError(f"{prefix}site_defaults[{i}]", problem)
            if len(set(node.site_defaults)) != len(node.site_defaults):
                raise FieldError(f"{prefix}site_defaults", "lists a path twice")
        return self

    def _check_treatment(
        self, cohort_keys: set[str], item_ids: set[str], decision_ids: set[str]
    ) -> None:
        treatment = self.treatment
        cycle_items = [(i, it) for i, it in enumerate(self.schedule) if it.after_cycle]
        if treatment is None:
            if cycle_items:
                i = cycle_items[0][0]
                raise FieldError(f"schedule[{i}].after_cycle", "needs a `treatment:` block")
            return
        if treatment.id in item_ids:
            raise FieldError("treatment.id", f"{treatment.id!r} is also a schedule item id")
        regimen_keys = _unique(treatment.regimens, "treatment.regimens", "key")
        starts: dict[str, dict[str, int]] = {}  # cohort -> decision -> first cycle it governs
        totals: dict[str, int] = {}
        for cohort, segments in treatment.arms.items():
            if cohort not in cohort_keys:
                raise FieldError(f"treatment.arms.{cohort}", f"no cohort {cohort!r}")
            cycle = 1
            starts[cohort] = {}
            for s, segment in enumerate(segments):
                where = f"treatment.arms.{cohort}[{s}]"
                if segment.regimen is not None and segment.regimen not in regimen_keys:
                    raise FieldError(f"{where}.regimen", f"no regimen {segment.regimen!r}")
                if segment.decision is not None:
                    if segment.decision not in decision_ids:
                        raise FieldError(
                            f"{where}.decision", f"no decision table {segment.decision!r}"
                        )
                    if segment.decision in starts[cohort]:
                        raise FieldError(f"{where}.decision", "used twice in this arm")
                    starts[cohort][segment.decision] = cycle
                cycle += segment.nominal_cycles
            totals[cohort] = cycle - 1
        for i, item in cycle_items:
            cohorts = item.cohorts if item.cohorts is not None else sorted(cohort_keys)
            for cohort in cohorts:
                if cohort not in treatment.arms:
                    raise FieldError(
                        f"schedule[{i}].cohorts", f"cohort {cohort!r} has no treatment arm"
                    )
                assert item.after_cycle is not None
                if item.after_cycle[-1] > totals[cohort]:
                    raise FieldError(
                        f"schedule[{i}].after_cycle",
                        f"the {cohort} arm plans {totals[cohort]} cycles",
                    )
                if item.decision is not None:
                    start = starts[cohort].get(item.decision)
                    if start is None:
                        raise FieldError(
                            f"schedule[{i}].decision",
                            f"the {cohort} arm has no segment for {item.decision!r}",
                        )
                    if item.after_cycle != [start - 1]:
                        raise FieldError(
                            f"schedule[{i}].after_cycle",
                            f"the decision governs cycle {start}, so it falls after cycle "
                            f"{start - 1}",
                        )

    def _check_choices(self, cohort_keys: set[str], items: dict[str, Item]) -> None:
        _unique(self.choices, "choices", "key")
        driven: dict[tuple[str, str | None, str], str] = {}
        for c, choice in enumerate(self.choices):
            where = f"choices[{c}]"
            for j, cohort in enumerate(choice.cohorts or []):
                if cohort not in cohort_keys:
                    raise FieldError(f"{where}.cohorts[{j}]", f"no cohort {cohort!r}")
            default = choice.normalise(choice.default)
            for d, target in enumerate(choice.drives):
                at = f"{where}.drives[{d}]"
                item = items.get(target.item)
                if item is None:
                    raise FieldError(f"{at}.item", f"no item {target.item!r}")
                if not any(item.applies_to(k) and choice.applies_to(k) for k in cohort_keys):
                    raise FieldError(f"{at}.item", "not planned for the choice's cohorts")
                found = driven.setdefault((target.item, target.phase, target.field), choice.key)
                if found != choice.key:
                    raise FieldError(at, f"the choice {found!r} already sets this value")
                if target.field == "modality":
                    if item.type != EventType.IMAGING or item.modality is None:
                        raise FieldError(f"{at}.item", "only imaging items have a modality")
                    if target.phase is not None:
                        raise FieldError(f"{at}.phase", "a modality belongs to the whole item")
                    current = item.modality.value
                else:
                    phase = _driven_phase(item, target.phase)
                    if isinstance(phase, str):
                        raise FieldError(f"{at}.phase", phase)
                    if phase.every is None:
                        raise FieldError(f"{at}.phase", "this phase does not repeat (no `every`)")
                    current = str(phase.every)
                if current != default:
                    raise FieldError(
                        f"{where}.default",
                        f"{choice.default!r} differs from the file's value {current!r} for "
                        f"{target.item}: the file's value is the default",
                    )

    def _check_entry_gate(self, cohort_keys: set[str], items: dict[str, Item]) -> None:
        gate = self.entry_gate
        if gate is None:
            return
        for i, item_id in enumerate(gate.items):
            if item_id not in items:
                raise FieldError(f"entry_gate.items[{i}]", f"no item {item_id!r}")
            if items[item_id].cohorts is not None:
                raise FieldError(
                    f"entry_gate.items[{i}]", "a gate item is planned for every cohort"
                )
        _unique(gate.facts, "entry_gate.facts", "key")
        for f, fact in enumerate(gate.facts):
            where = f"entry_gate.facts[{f}]"
            kind = None
            if fact.item is not None:
                if fact.item not in gate.items:
                    raise FieldError(
                        f"{where}.item", f"{fact.item!r} is not one of the gate's items"
                    )
                expects = items[fact.item].expects
                kind = expects.result if expects is not None else None
                if fact.provenance == GateProvenance.RESULT and kind not in GATE_RESULT_VALUES:
                    raise FieldError(f"{where}.item", "gives no ctDNA or imaging result")
            allowed = fact.allowed(kind)
            for name in ("passes", "fails"):
                for value in getattr(fact, name):
                    if value not in allowed:
                        raise FieldError(
                            f"{where}.{name}", f"{value!r} is not one of {', '.join(allowed)}"
                        )
        for name in ("on_pass", "on_fail"):
            outcome = getattr(gate, name)
            if outcome is not None and outcome.cohort not in (None, *cohort_keys):
                raise FieldError(f"entry_gate.{name}.cohort", f"no cohort {outcome.cohort!r}")
        can_fail = any(fact.fails for fact in gate.facts)
        if can_fail != (gate.on_fail is not None):
            raise FieldError(
                "entry_gate.on_fail",
                "required: a fact can fail" if can_fail else "no fact lists values that fail",
            )

    def choice(self, key: str) -> ParticipantChoice:
        """The participant choice with this key (KeyError when unknown)."""
        for choice in self.choices:
            if choice.key == key:
                return choice
        raise KeyError(key)

    # -- lookups ---------------------------------------------------------------------------------

    def earliest_window_lead(self) -> tuple[int, str | None]:
        """How many days before the anchor the earliest planned window opens, and whose."""
        lead: tuple[int, str | None] = (0, None)
        for item in self.schedule:
            for phase in item.timing_phases():
                offsets = phase.at if phase.at is not None else [phase.first]
                for offset in offsets:
                    if offset is None:
                        continue
                    days = item.window_for(phase).early_days - int(offset.approx_days())
                    if days > lead[0]:
                        lead = (days, item.id)
        return lead

    def cohort_keys(self) -> list[str]:
        """Cohort keys in file order."""
        return [c.key for c in self.cohorts]

    def item(self, item_id: str) -> Item:
        """The schedule item with this id (KeyError when unknown)."""
        for item in self.schedule:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def decision(self, decision_id: str) -> DecisionTable:
        """The decision table with this id (KeyError when unknown)."""
        for table in self.decisions:
            if table.id == decision_id:
                return table
        raise KeyError(decision_id)

    def definition(self) -> dict[str, Any]:
        """The protocol as plain JSON-ready data (for the stored protocol version snapshot)."""
        # None means "not given": leaving it out keeps the snapshot a valid protocol file.
        return self.model_dump(mode="json", exclude_none=True)


def _driven_phase(item: Item, name: str | None) -> Phase | str:
    """The phase of an item a choice drives, or why there is none."""
    if item.after_cycle is not None:
        return "a cycle-driven item has no interval to choose"
    if item.phases is None:
        if name is not None and name != item.phase:
            return f"the item's one phase is {item.phase!r}"
        return item.timing_phases()[0]
    if name is None:
        return f"name one of the item's phases ({', '.join(str(p.name) for p in item.phases)})"
    for phase in item.phases:
        if phase.name == name:
            return phase
    return f"no phase {name!r} in {item.id}"


def _unique(nodes: list[Any], where: str, attr: str) -> set[str]:
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        value = getattr(node, attr)
        if value in seen:
            raise FieldError(f"{where}[{i}].{attr}", f"{value!r} is used twice")
        seen.add(value)
    return seen


# ---------------------------------------------------------------------------------------------
# Loading


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
}


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}"
    if kind == "enum":
        return f"must be one of {ctx['expected']}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "value_error":
        err = ctx.get("error")
        if isinstance(err, FieldError):
            return err.message
        return str(err) if err is not None else str(error["msg"])
    return str(error["msg"])


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic errors as (field path, message) pairs for a definition-file error."""
    out = []
    for error in exc.errors():
        path = _loc(tuple(error["loc"]))
        err = (error.get("ctx") or {}).get("error")
        if error["type"] == "value_error" and isinstance(err, FieldError) and err.path:
            path = f"{path}.{err.path}" if path else err.path
            path = path.replace(".[", "[")
        out.append((path or "(top level)", _message(error)))
    return out


def parse_protocol(text: str, *, file: str = "<protocol>", key: str = "") -> Protocol:
    """Parse and validate protocol YAML text; errors raise ProtocolError naming `file`."""
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProtocolError(file, [(where, f"not valid YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise ProtocolError(file, [("(top level)", "must be a mapping of fields")])
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(file, validation_problems(exc)) from None
    # Imported here: the engine imports this module, and its dry run belongs to loading.
    from server.protocols.rules import check_protocol

    problems = check_protocol(protocol)
    if problems:
        raise ProtocolError(file, problems)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return protocol.model_copy(update={"key": key, "source_file": file, "sha256": digest})


def load_protocol(path: str | Path) -> Protocol:
    """Load and validate one protocol file; its key is the file name without extension."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(path.name, [("(file)", f"cannot be read: {exc.strerror}")]) from None
    return parse_protocol(text, file=path.name, key=path.stem)


def load_all(directory: str | Path) -> dict[str, Protocol]:
    """Load every *.yaml protocol in a directory, keyed by file name without extension."""
    protocols: dict[str, Protocol] = {}
    studies: dict[str, str] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        protocol = load_protocol(path)
        if protocol.study in studies:
            raise ProtocolError(
                path.name,
                [("study", f"{protocol.study!r} is also defined in {studies[protocol.study]}")],
            )
        studies[protocol.study] = path.name
        protocols[protocol.key] = protocol
    return protocols


def iter_nodes(protocol: Protocol) -> Iterator[tuple[str, _Node]]:
    """Every node that can carry site_defaults, with its path (for reports and tests)."""
    yield "", protocol
    for i, cohort in enumerate(protocol.cohorts):
        yield f"cohorts[{i}]", cohort
    for i, item in enumerate(protocol.schedule):
        yield f"schedule[{i}]", item
        if item.expects is not None:
            yield f"schedule[{i}].expects", item.expects
        for j, phase in enumerate(item.phases or []):
            yield f"schedule[{i}].phases[{j}]", phase
    if protocol.treatment is not None:
        yield "treatment", protocol.treatment
        for i, regimen in enumerate(protocol.treatment.regimens):
            yield f"treatment.regimens[{i}]", regimen
        for arm, segments in protocol.treatment.arms.items():
            for i, segment in enumerate(segments):
                yield f"treatment.arms.{arm}[{i}]", segment
    for t, table in enumerate(protocol.decisions):
        yield f"decisions[{t}]", table
        for r, rule in enumerate(table.rules):
            yield f"decisions[{t}].rules[{r}]", rule
    for c, choice in enumerate(protocol.choices):
        yield f"choices[{c}]", choice
    for kind, guidance in protocol.alerts.items():
        yield f"alerts.{kind}", guidance
    if protocol.entry_gate is not None:
        yield "entry_gate", protocol.entry_gate
        for f, fact in enumerate(protocol.entry_gate.facts):
            yield f"entry_gate.facts[{f}]", fact
