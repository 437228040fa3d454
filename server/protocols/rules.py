"""The pure schedule engine: protocol + participant -> planned events; re-plans; decision tables.

No database, no Flask, no clock: everything is an argument, everything returned is a value.

Dates and times
    Events are planned as local dates in the participant's IANA time zone (zoneinfo) and carry UTC
    instants (house rule 8):
    - target_at: the local target date at the item's `time_of_day` (else the protocol's), in UTC,
      so a 09:00 reminder stays 09:00 local across DST changes. A local time inside a
      spring-forward gap resolves with zoneinfo's fold=0 (it lands just after the gap).
    - window_open_at: local midnight starting the window's first day;
      window_close_at: local midnight ending its last day (the start of the next day). A window
      day is therefore 23 or 25 hours long on DST days.

Recurrence (python-dateutil, never day loops)
    - Offsets from the anchor (`first`, `until`, `at`) use relativedelta, which clamps to month
      end: Jan 31 + 1 month = Feb 28/29.
    - A repeating phase is a dateutil rrule: DAILY/WEEKLY with an interval, or MONTHLY (years =
      12 months) with bymonthday=(d, -1) and bysetpos=1 when d > 28, so a series aimed at the 31st
      gives Jan 31, Feb 28/29, Mar 31 (a plain MONTHLY rrule skips months without a day 31). The
      day aimed at is the anchor's day when the phase starts at a calendar offset, else the day of
      the occurrence the phase continues from.
    - A phase starts at its `first` offset, or one interval after the previous occurrence; it ends
      at `until` (an offset from the anchor, inclusive) or after `count` occurrences; `at` lists
      explicit time points. Sequence numbers run across phases (1, 2, 3, ...) and an event's key
      is "<item id>:<sequence>", unique within a participant.

Re-anchoring (`reanchor_item`)
    For an item with `reanchor: true`, a completed occurrence re-plans the later ones from the
    ACTUAL completion date: the phase whose span holds the actual date continues one interval
    after it, and later phases follow as usual (a later phase with its own `first` keeps its
    anchor-based start). Phase spans end at their `until` date (or, for `at`/single phases, their
    last nominal time point). Occurrences keep their ordinal keys: "restaging_scan:3" is still
    the third scan; the caller moves the pending events whose keys come back, cancels pending
    ones that do not, and creates new ones. Completing a treatment cycle re-plans the later
    cycles and the cycle-driven checkpoints when the treatment block re-anchors.

Treatment cycles and decisions (neoadjuvant protocols)
    Each cohort's arm is a list of segments: a fixed regimen for n cycles, or a decision segment
    whose regimen a decision table recommends and the care team chooses (`Choice`). Until chosen,
    a decision segment is planned as `planned_cycles` cycles with no regimen. Cycle n+1 starts one
    cycle length (the regimen's, else the block's) after cycle n. Items with `after_cycle: n` fall
    on the day cycle n ends (cycle n+1 day 1) and keep their cycle numbers when a chosen course is
    longer or shorter than planned. `plan_after_decision` re-plans everything from the chosen
    regimen's first cycle. `evaluate_decision` returns the first matching rule's outcome, or a
    no-match outcome ("no rule matched — care team decides") whenever no rule covers the facts;
    it never guesses.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.relativedelta import relativedelta
from dateutil.rrule import DAILY, MONTHLY, WEEKLY, rrule

from server.protocols.definition import (
    FACT_VALUES,
    SAME_REGIMEN,
    UNKNOWN,
    DecisionRule,
    DecisionTable,
    Duration,
    EntryGate,
    EventType,
    FactKind,
    Item,
    Modality,
    ParticipantChoice,
    Phase,
    Protocol,
    Treatment,
    Window,
    parse_duration,
)

NO_MATCH = "no rule matched — care team decides"
TEAM_DECIDES = "the care team decides"
# In the table report, a regimen fact no rule tells apart: "whichever regimen is being given".
ANY_REGIMEN = "any"
# Problems of one kind listed per table before "... and N more".
MAX_LISTED = 5
# A guard against a protocol typo such as `every: 1 days` for ten years.
MAX_OCCURRENCES = 1000
# Anchors the loader expands every item for: month ends, a leap day, and a DST Sunday.
_CHECK_ANCHORS = (date(2024, 1, 31), date(2024, 2, 29), date(2025, 3, 30))


class ScheduleError(ValueError):
    """A protocol timing that cannot be planned; `path` names the item or phase."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """One planned occurrence: local dates in the participant's zone, instants in UTC."""

    key: str
    item_id: str
    sequence: int
    event_type: EventType
    label: str
    phase: str | None
    modality: str | None
    instrument: str | None
    regimen: str | None
    decision_id: str | None
    target_date: date
    window_open_date: date
    window_close_date: date
    target_at: datetime
    window_open_at: datetime
    window_close_at: datetime
    expects_result: str | None
    result_turnaround_days: int | None
    is_reanchoring: bool
    site_defaults: tuple[str, ...] = ()

    def as_dict(self, tz: str | None = None) -> dict[str, Any]:
        """Plain JSON-ready data; with `tz`, also the three instants in local time."""
        out: dict[str, Any] = {
            "key": self.key,
            "item_id": self.item_id,
            "sequence": self.sequence,
            "event_type": self.event_type.value,
            "label": self.label,
            "phase": self.phase,
            "modality": self.modality,
            "instrument": self.instrument,
            "regimen": self.regimen,
            "decision_id": self.decision_id,
            "target_date": self.target_date.isoformat(),
            "window_open_date": self.window_open_date.isoformat(),
            "window_close_date": self.window_close_date.isoformat(),
            "target_at": _iso_utc(self.target_at),
            "window_open_at": _iso_utc(self.window_open_at),
            "window_close_at": _iso_utc(self.window_close_at),
            "expects_result": self.expects_result,
            "result_turnaround_days": self.result_turnaround_days,
            "is_reanchoring": self.is_reanchoring,
            "site_defaults": list(self.site_defaults),
        }
        if tz is not None:
            zone = ZoneInfo(tz)
            out["target_local"] = self.target_at.astimezone(zone).isoformat()
            out["window_open_local"] = self.window_open_at.astimezone(zone).isoformat()
            out["window_close_local"] = self.window_close_at.astimezone(zone).isoformat()
        return out


@dataclass(frozen=True, slots=True)
class Choice:
    """The care team's choice at a decision: regimen, number of cycles, optional first cycle."""

    regimen: str
    cycles: int
    start_cycle: int | None = None


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """A decision table's answer: the matching rule's recommendation, or no match."""

    rule_id: str | None
    regimen: str | None
    options: tuple[str, ...]
    cycles: int | None
    explanation: str
    facts: Mapping[str, str] = field(default_factory=dict)
    # The protocol's reason when the matching rule leaves the decision to the care team.
    team_decides: str | None = None

    @property
    def is_match(self) -> bool:
        """Whether a rule matched (a `team_decides` rule is a match, stated on purpose)."""
        return self.rule_id is not None

    @property
    def is_team_decision(self) -> bool:
        """Whether the care team decides (a team_decides rule, or no rule in an old table)."""
        return self.regimen is None and not self.options


# ---------------------------------------------------------------------------------------------
# Small helpers


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _zone(protocol: Protocol, tz: str | None) -> ZoneInfo:
    name = tz or protocol.time_zone
    if not name:
        raise ValueError(f"{protocol.study}: no time zone given and the protocol sets none")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone") from None


def _check_cohort(protocol: Protocol, cohort: str) -> None:
    if cohort not in protocol.cohort_keys():
        known = ", ".join(protocol.cohort_keys())
        raise ValueError(f"{protocol.study} has no cohort {cohort!r} (known: {known})")


def _local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    # fold=0: an ambiguous time is its first occurrence; a missing one lands after the gap.
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time())


@dataclass(frozen=True, slots=True)
class _Context:
    protocol: Protocol
    cohort: str
    anchor: date
    zone: ZoneInfo


def _event(
    ctx: _Context,
    *,
    item_id: str,
    sequence: int,
    event_type: EventType,
    label: str,
    phase: str | None,
    target: date,
    window: Window,
    at: time | None,
    modality: str | None = None,
    instrument: str | None = None,
    regimen: str | None = None,
    decision_id: str | None = None,
    expects: tuple[str, int] | None = None,
    reanchor: bool = False,
    site_defaults: Iterable[str] = (),
) -> PlannedEvent:
    opens = target - timedelta(days=window.early_days)
    closes = target + timedelta(days=window.late_days)
    return PlannedEvent(
        key=f"{item_id}:{sequence}",
        item_id=item_id,
        sequence=sequence,
        event_type=event_type,
        label=label,
        phase=phase,
        modality=modality,
        instrument=instrument,
        regimen=regimen,
        decision_id=decision_id,
        target_date=target,
        window_open_date=opens,
        window_close_date=closes,
        target_at=_local_to_utc(target, at or ctx.protocol.time_of_day, ctx.zone),
        window_open_at=_local_to_utc(opens, time(), ctx.zone),
        window_close_at=_local_to_utc(closes + timedelta(days=1), time(), ctx.zone),
        expects_result=expects[0] if expects else None,
        result_turnaround_days=expects[1] if expects else None,
        is_reanchoring=reanchor,
        site_defaults=tuple(dict.fromkeys(site_defaults)),
    )


# ---------------------------------------------------------------------------------------------
# Recurrence


def _step(previous: date, every: Duration, aim_day: int) -> date:
    """One interval after `previous`; calendar steps aim at `aim_day`, clamped to month end."""
    if every.is_calendar:
        return previous + relativedelta(months=every.months, day=aim_day)
    return previous + every.delta()


def _series(
    start: date, every: Duration, aim_day: int, until: date | None, count: int | None
) -> list[date]:
    """Occurrences from `start` every `every`, up to `until` (inclusive) or `count` of them."""
    bound = {"until": _midnight(until)} if until is not None else {"count": count}
    if every.unit == "days":
        rule = rrule(DAILY, dtstart=_midnight(start), interval=every.amount, **bound)
    elif every.unit == "weeks":
        rule = rrule(WEEKLY, dtstart=_midnight(start), interval=every.amount, **bound)
    elif aim_day > 28:
        # Without the (d, -1)/bysetpos pair, rrule would skip months that lack day d.
        rule = rrule(
            MONTHLY,
            dtstart=_midnight(start),
            interval=every.months,
            bymonthday=(aim_day, -1),
            bysetpos=1,
            **bound,
        )
    else:
        rule = rrule(
            MONTHLY, dtstart=_midnight(start), interval=every.months, bymonthday=aim_day, **bound
        )
    # Bounded by until/count; the cap only protects against a mistyped protocol.
    return [moment.date() for moment in itertools.islice(rule, MAX_OCCURRENCES + 1)]


@dataclass(frozen=True, slots=True)
class _Occurrence:
    phase_index: int
    phase: Phase
    day: date


def _phase_path(item_path: str, item: Item, index: int) -> str:
    return f"{item_path}.phases[{index}]" if item.phases is not None else item_path


def _walk(
    item: Item,
    anchor: date,
    *,
    resume: tuple[int, date] | None = None,
    item_path: str | None = None,
) -> list[_Occurrence]:
    """An item's occurrence dates; `resume` = (phase index, actual date) continues from a
    completion; `item_path` switches on strict checks (the loader's dry run)."""
    phases = item.timing_phases()
    strict = item_path is not None
    out: list[_Occurrence] = []
    start_index = resume[0] if resume else 0
    previous: date | None = resume[1] if resume else None
    aim_day = previous.day if previous else anchor.day
    for index in range(start_index, len(phases)):
        phase = phases[index]
        where = _phase_path(item_path or "", item, index)
        if phase.at is not None:
            days = [anchor + offset.delta() for offset in phase.at]
            if strict and any(b <= a for a, b in itertools.pairwise(days)):
                raise ScheduleError(where, "`at` time points must be in increasing order")
            days.sort()
            last = phase.at[-1]
            next_aim = anchor.day if last.is_calendar else days[-1].day
        elif phase.every is None:
            assert phase.first is not None  # guaranteed by validation
            days = [anchor + phase.first.delta()]
            next_aim = anchor.day if phase.first.is_calendar else days[0].day
        else:
            resuming = resume is not None and index == start_index
            if phase.first is not None and not resuming:
                start = anchor + phase.first.delta()
                series_aim = anchor.day if phase.first.is_calendar else start.day
            elif previous is not None:
                start = _step(previous, phase.every, aim_day)
                series_aim = aim_day if phase.every.is_calendar else start.day
            else:
                raise ScheduleError(where, "nothing earlier to count from: give `first`")
            until = anchor + phase.until.delta() if phase.until is not None else None
            days = _series(start, phase.every, series_aim, until, phase.count)
            next_aim = series_aim if phase.every.is_calendar else (days[-1].day if days else 0)
        if previous is not None:
            if strict and days and days[0] <= previous:
                raise ScheduleError(
                    where,
                    f"starts on {days[0]}, not after the previous occurrence ({previous}) for an "
                    f"anchor of {anchor}",
                )
            days = [d for d in days if d > previous]
        if strict and not days:
            raise ScheduleError(
                where, f"plans no occurrence for an anchor of {anchor} (check `first`/`until`)"
            )
        out.extend(_Occurrence(index, phase, d) for d in days)
        if len(out) > MAX_OCCURRENCES:
            raise ScheduleError(where, f"plans more than {MAX_OCCURRENCES} occurrences")
        # A phase that planned nothing (a late completion past its end) changes nothing.
        if days:
            previous = days[-1]
            aim_day = next_aim
    return out


def _phase_ends(item: Item, anchor: date) -> list[date]:
    """The last day of each phase's span: its `until` date, else its last nominal occurrence."""
    nominal = _walk(item, anchor)
    ends: list[date] = []
    for index, phase in enumerate(item.timing_phases()):
        if phase.until is not None:
            ends.append(anchor + phase.until.delta())
        else:
            days = [o.day for o in nominal if o.phase_index == index]
            ends.append(days[-1] if days else (ends[-1] if ends else anchor))
    return ends


def _item_events(
    ctx: _Context, item: Item, occurrences: list[_Occurrence], first_sequence: int
) -> list[PlannedEvent]:
    expects = (item.expects.result.value, item.expects.turnaround_days) if item.expects else None
    item_defaults = [*item.site_defaults]
    if item.expects is not None:
        item_defaults += [f"expects.{p}" for p in item.expects.site_defaults]
    return [
        _event(
            ctx,
            item_id=item.id,
            sequence=first_sequence + n,
            event_type=item.type,
            label=item.label,
            phase=occ.phase.name,
            target=occ.day,
            window=item.window_for(occ.phase),
            at=item.time_of_day,
            modality=item.modality.value if item.modality else None,
            instrument=item.instrument,
            decision_id=item.decision,
            expects=expects,
            reanchor=item.reanchor,
            site_defaults=[*item_defaults, *occ.phase.site_defaults],
        )
        for n, occ in enumerate(occurrences)
    ]


# ---------------------------------------------------------------------------------------------
# Treatment cycles


@dataclass(frozen=True, slots=True)
class _Cycle:
    number: int
    regimen: str | None
    days: int
    segment: str
    decision_id: str | None
    site_defaults: tuple[str, ...]


def _cycles(treatment: Treatment, cohort: str, choices: Mapping[str, Choice]) -> list[_Cycle]:
    """The arm's cycles in order, with the regimens chosen so far (None = still to decide)."""
    out: list[_Cycle] = []
    number = 1
    for segment in treatment.arms[cohort]:
        regimen: str | None
        if segment.decision is None:
            regimen, count, name = segment.regimen, segment.nominal_cycles, segment.name
            name = name or segment.regimen
        else:
            name = segment.name or segment.decision
            choice = choices.get(segment.decision)
            if choice is None:
                regimen, count = None, segment.nominal_cycles
            else:
                regimen, count = choice.regimen, choice.cycles
                if choice.start_cycle is not None:
                    if choice.start_cycle < number or (choice.start_cycle > number and not out):
                        raise ValueError(
                            f"{segment.decision}: the chosen regimen cannot start at cycle "
                            f"{choice.start_cycle}; it starts at cycle {number}"
                        )
                    # A later start means the regimen given before ran on until then.
                    out.extend(
                        replace(out[-1], number=n) for n in range(number, choice.start_cycle)
                    )
                    number = choice.start_cycle
        defaults = tuple(segment.site_defaults)
        days = treatment.cycle_days_for(regimen)
        out.extend(
            _Cycle(number + k, regimen, days, name or "", segment.decision, defaults)
            for k in range(count)
        )
        number += count
    return out


def _cycle_starts(cycles: list[_Cycle], from_number: int, start: date) -> dict[int, date]:
    """Start date of each cycle from `from_number` on, plus the day after the last one ends."""
    starts: dict[int, date] = {}
    todo = [c for c in cycles if c.number >= from_number]
    run_start = start
    # Runs of equal cycle length are one rrule each; count+1 gives the next run's first day.
    for _, run in itertools.groupby(todo, key=lambda c: c.days):
        run_cycles = list(run)
        rule = rrule(
            DAILY,
            dtstart=_midnight(run_start),
            interval=run_cycles[0].days,
            count=len(run_cycles) + 1,
        )
        days = [moment.date() for moment in rule]
        for cycle, day in zip(run_cycles, days, strict=False):
            starts[cycle.number] = day
        run_start = days[-1]
    if todo:
        starts[todo[-1].number + 1] = run_start
    return starts


def _treatment_events(
    ctx: _Context,
    choices: Mapping[str, Choice],
    *,
    from_cycle: int,
    start_date: date | None,
    checkpoints_from: int,
) -> list[PlannedEvent]:
    treatment = ctx.protocol.treatment
    if treatment is None or ctx.cohort not in treatment.arms:
        return []
    cycles = _cycles(treatment, ctx.cohort, choices)
    if start_date is None:
        start_date = _cycle_starts(cycles, 1, ctx.anchor).get(from_cycle, ctx.anchor)
    starts = _cycle_starts(cycles, from_cycle, start_date)
    labels = {r.key: r.label for r in treatment.regimens}
    events: list[PlannedEvent] = []
    for cycle in cycles:
        if cycle.number < from_cycle:
            continue
        if cycle.regimen is not None:
            label = f"Cycle {cycle.number}: {labels[cycle.regimen]}"
        else:
            table = ctx.protocol.decision(cycle.decision_id or "")
            label = f"Cycle {cycle.number}: regimen to be decided ({table.label})"
        events.append(
            _event(
                ctx,
                item_id=treatment.id,
                sequence=cycle.number,
                event_type=EventType.TREATMENT_CYCLE,
                label=label,
                phase=cycle.segment,
                target=starts[cycle.number],
                window=treatment.window,
                at=treatment.time_of_day,
                regimen=cycle.regimen,
                decision_id=cycle.decision_id,
                reanchor=treatment.reanchor,
                site_defaults=[*treatment.site_defaults, *cycle.site_defaults],
            )
        )
    for item in ctx.protocol.schedule:
        if item.after_cycle is None or not item.applies_to(ctx.cohort):
            continue
        expects = (
            (item.expects.result.value, item.expects.turnaround_days) if item.expects else None
        )
        for index, after in enumerate(item.after_cycle):
            # Checkpoints stay tied to their cycle number; one past the plan is not planned.
            if after < checkpoints_from or after + 1 not in starts:
                continue
            events.append(
                _event(
                    ctx,
                    item_id=item.id,
                    sequence=index + 1,
                    event_type=item.type,
                    label=item.label,
                    phase=item.phase,
                    target=starts[after + 1],
                    window=item.window,  # type: ignore[arg-type]  # required by validation
                    at=item.time_of_day,
                    modality=item.modality.value if item.modality else None,
                    instrument=item.instrument,
                    decision_id=item.decision,
                    expects=expects,
                    site_defaults=item.site_defaults,
                )
            )
    return _sorted(ctx.protocol, events)


def _sorted(protocol: Protocol, events: list[PlannedEvent]) -> list[PlannedEvent]:
    # Same-day events follow file order (a draw or scan before the cycle it precedes).
    order = {item.id: i for i, item in enumerate(protocol.schedule)}
    last = len(order)
    return sorted(events, key=lambda e: (e.target_date, order.get(e.item_id, last), e.sequence))


def _context(
    protocol: Protocol,
    cohort: str,
    anchor_date: date,
    tz: str | None,
    participant_choices: Mapping[str, object] | None = None,
) -> _Context:
    _check_cohort(protocol, cohort)
    chosen = apply_participant_choices(protocol, cohort=cohort, values=participant_choices)
    return _Context(chosen, cohort, anchor_date, _zone(protocol, tz))


def _finish(
    protocol: Protocol,
    ctx: _Context,
    participant_choices: Mapping[str, object] | None,
    events: list[PlannedEvent],
) -> list[PlannedEvent]:
    return _keep_before(protocol, ctx.cohort, ctx.anchor, participant_choices, events)


def _check_choices(protocol: Protocol, cohort: str, choices: Mapping[str, Choice]) -> None:
    treatment = protocol.treatment
    if not choices:
        return
    if treatment is None or cohort not in treatment.arms:
        raise ValueError(f"cohort {cohort!r} has no treatment arm to choose regimens for")
    decisions = {s.decision for s in treatment.arms[cohort] if s.decision}
    regimens = {r.key for r in treatment.regimens}
    for decision_id, choice in choices.items():
        if decision_id not in decisions:
            raise ValueError(f"the {cohort} arm has no decision {decision_id!r}")
        if choice.regimen not in regimens:
            raise ValueError(f"unknown regimen {choice.regimen!r} (known: {', '.join(regimens)})")
        if choice.cycles < 1:
            raise ValueError("a chosen regimen runs for at least one cycle")


# ---------------------------------------------------------------------------------------------
# Public API


def expand_schedule(
    protocol: Protocol,
    *,
    cohort: str,
    anchor_date: date,
    tz: str | None = None,
    choices: Mapping[str, Choice] | None = None,
    participant_choices: Mapping[str, object] | None = None,
) -> list[PlannedEvent]:
    """A participant's planned events sorted by target date (tz defaults to the protocol's);
    `choices` are the regimens chosen at decisions, `participant_choices` the values of the
    protocol's per-participant choices (absent: the file's defaults)."""
    ctx = _context(protocol, cohort, anchor_date, tz, participant_choices)
    choices = dict(choices or {})
    _check_choices(protocol, cohort, choices)
    events: list[PlannedEvent] = []
    for item in ctx.protocol.schedule:
        if item.after_cycle is None and item.applies_to(cohort):
            events.extend(_item_events(ctx, item, _walk(item, anchor_date), 1))
    events.extend(
        _treatment_events(ctx, choices, from_cycle=1, start_date=anchor_date, checkpoints_from=0)
    )
    return _finish(protocol, ctx, participant_choices, _sorted(protocol, events))


def reanchor_item(
    protocol: Protocol,
    *,
    cohort: str,
    anchor_date: date,
    tz: str | None = None,
    item_id: str,
    sequence: int,
    completed_on: date,
    choices: Mapping[str, Choice] | None = None,
    participant_choices: Mapping[str, object] | None = None,
) -> list[PlannedEvent]:
    """The later occurrences of an item re-planned from an occurrence's actual completion date.

    Returns [] for items that do not re-anchor; raises ValueError for unknown items or cohorts.
    """
    ctx = _context(protocol, cohort, anchor_date, tz, participant_choices)
    choices = dict(choices or {})
    _check_choices(protocol, cohort, choices)
    treatment = protocol.treatment
    if treatment is not None and item_id == treatment.id:
        if cohort not in treatment.arms or not treatment.reanchor:
            return []
        cycles = {c.number: c for c in _cycles(treatment, cohort, choices)}
        if sequence not in cycles:
            raise ValueError(f"the {cohort} arm plans no cycle {sequence}")
        next_start = completed_on + timedelta(days=cycles[sequence].days)
        return _finish(
            protocol,
            ctx,
            participant_choices,
            _treatment_events(
                ctx,
                choices,
                from_cycle=sequence + 1,
                start_date=next_start,
                checkpoints_from=sequence,
            ),
        )
    try:
        item = ctx.protocol.item(item_id)
    except KeyError:
        raise ValueError(f"{protocol.study} has no schedule item {item_id!r}") from None
    if not item.applies_to(cohort):
        raise ValueError(f"item {item_id!r} is not planned for cohort {cohort!r}")
    if not item.reanchor:
        return []
    ends = _phase_ends(item, anchor_date)
    index = next((i for i, end in enumerate(ends) if completed_on <= end), None)
    if index is None:
        return []  # completed after the item's last phase ended: nothing left to plan
    occurrences = _walk(item, anchor_date, resume=(index, completed_on))
    return _finish(
        protocol, ctx, participant_choices, _item_events(ctx, item, occurrences, sequence + 1)
    )


def plan_treatment(
    protocol: Protocol,
    *,
    cohort: str,
    anchor_date: date,
    tz: str | None = None,
    choices: Mapping[str, Choice] | None = None,
    from_cycle: int = 1,
    start_date: date | None = None,
    participant_choices: Mapping[str, object] | None = None,
) -> list[PlannedEvent]:
    """Treatment cycles from `from_cycle` (starting on `start_date`, else its planned day) and the
    checkpoints after them, following the regimens chosen so far."""
    ctx = _context(protocol, cohort, anchor_date, tz, participant_choices)
    choices = dict(choices or {})
    _check_choices(protocol, cohort, choices)
    if from_cycle < 1:
        raise ValueError("cycles are numbered from 1")
    events = _treatment_events(
        ctx, choices, from_cycle=from_cycle, start_date=start_date, checkpoints_from=from_cycle - 1
    )
    return _finish(protocol, ctx, participant_choices, events)


def plan_after_decision(
    protocol: Protocol,
    *,
    cohort: str,
    anchor_date: date,
    tz: str | None = None,
    decision_id: str,
    regimen: str,
    cycles: int,
    start_cycle: int | None = None,
    start_date: date | None = None,
    choices: Mapping[str, Choice] | None = None,
    participant_choices: Mapping[str, object] | None = None,
) -> list[PlannedEvent]:
    """The cycles and checkpoints that follow a decision, given the regimen actually chosen.

    `regimen` may differ from the recommendation; `start_cycle` defaults to the decision's planned
    first cycle and `start_date` to that cycle's planned day; `choices` holds earlier decisions.
    """
    ctx = _context(protocol, cohort, anchor_date, tz, participant_choices)
    all_choices = dict(choices or {})
    all_choices[decision_id] = Choice(regimen, cycles, start_cycle)
    _check_choices(protocol, cohort, all_choices)
    assert protocol.treatment is not None  # _check_choices made sure
    planned = _cycles(protocol.treatment, cohort, all_choices)
    first = next(c.number for c in planned if c.decision_id == decision_id)
    events = _treatment_events(
        ctx, all_choices, from_cycle=first, start_date=start_date, checkpoints_from=first
    )
    return _finish(protocol, ctx, participant_choices, events)


def _normalise_facts(table: DecisionTable, facts: Mapping[str, object]) -> dict[str, str]:
    """Every fact of the table as text; a fact absent or None is `unknown`."""
    given: dict[str, str] = {}
    for name in facts:
        if name not in table.facts:
            known = ", ".join(table.facts)
            raise ValueError(f"decision {table.id!r} reads no fact {name!r} (it reads: {known})")
    for name, spec in table.facts.items():
        raw = facts.get(name)
        if raw is None:
            given[name] = UNKNOWN
            continue
        if isinstance(raw, bool):
            value = "true" if raw else "false"
        elif isinstance(raw, str):
            value = raw.strip()
        else:
            raise ValueError(f"fact {name!r} must be text or true/false, not {raw!r}")
        if value.lower() == UNKNOWN:
            value = UNKNOWN
        elif spec.kind == FactKind.RECIST_RESPONSE:
            value = value.upper()
        elif spec.kind != FactKind.REGIMEN:
            value = value.lower()
        allowed = FACT_VALUES.get(spec.kind)
        if allowed is not None and value not in allowed:
            raise ValueError(f"fact {name!r} is {value!r}, not one of {', '.join(allowed)}")
        given[name] = value
    return given


def _describe(given: Mapping[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in given.items()) or "none"


def _matches(rule: DecisionRule, given: Mapping[str, str]) -> bool:
    return all(given.get(fact) in values for fact, values in rule.when.items())


def evaluate_decision(table: DecisionTable, facts: Mapping[str, object]) -> DecisionOutcome:
    """The first matching rule's outcome: a regimen, a choice among regimens, or the care team's
    decision with the protocol's reason. Never a guess.

    Facts are keyed by the table's fact names; None or absent means unknown (a value tables
    must cover). Unknown names or values raise ValueError. A table loaded from a file always has
    a rule for every combination; one from an older snapshot may not (then: NO_MATCH).
    """
    given = _normalise_facts(table, facts)
    for rule in table.rules:
        if not _matches(rule, given):
            continue
        conditions = ", ".join(f"{f}={given[f]}" for f in rule.when) or "any facts"
        reason = f" ({rule.because})" if rule.because else ""
        if rule.team_decides is not None:
            return DecisionOutcome(
                rule_id=rule.id,
                regimen=None,
                options=(),
                cycles=None,
                explanation=f"rule {rule.id} matched on {conditions}: {TEAM_DECIDES} — "
                f"{rule.team_decides}",
                facts=given,
                team_decides=rule.team_decides,
            )
        if rule.choose_from is not None:
            options = tuple(rule.choose_from)
            return DecisionOutcome(
                rule_id=rule.id,
                regimen=None,
                options=options,
                cycles=rule.cycles,
                explanation=f"rule {rule.id} matched on {conditions}: one of "
                f"{' or '.join(options)} for {rule.cycles} cycles, care team chooses{reason}",
                facts=given,
            )
        regimen = rule.regimen
        if regimen == SAME_REGIMEN:
            regimen = given.get(table.regimen_fact or "", UNKNOWN)
            if regimen == UNKNOWN:
                return DecisionOutcome(
                    rule_id=None,
                    regimen=None,
                    options=(),
                    cycles=None,
                    explanation=f"{NO_MATCH}: rule {rule.id} keeps the current regimen, which "
                    f"is not known (facts: {_describe(given)})",
                    facts=given,
                )
        assert regimen is not None
        return DecisionOutcome(
            rule_id=rule.id,
            regimen=regimen,
            options=(regimen,),
            cycles=rule.cycles,
            explanation=f"rule {rule.id} matched on {conditions}: {regimen} for "
            f"{rule.cycles} cycles{reason}",
            facts=given,
        )
    missing = [name for name, value in given.items() if value == UNKNOWN]
    unknown = f"; not known: {', '.join(missing)}" if missing else ""
    return DecisionOutcome(
        rule_id=None,
        regimen=None,
        options=(),
        cycles=None,
        explanation=f"{NO_MATCH} (facts: {_describe(given)}{unknown})",
        facts=given,
    )


# ---------------------------------------------------------------------------------------------
# Decision tables as a whole: every combination, completeness, overlaps, the report


@dataclass(frozen=True, slots=True)
class TableRow:
    """One combination of fact values and the rules matching it, in file order."""

    facts: Mapping[str, str]
    rules: tuple[DecisionRule, ...]

    @property
    def rule(self) -> DecisionRule | None:
        """The rule the system applies (the first matching one), or None (a hole)."""
        return self.rules[0] if self.rules else None


def fact_values(table: DecisionTable, name: str, regimens: Iterable[str] = ()) -> tuple[str, ...]:
    """The values a table's fact can take, `unknown` included. A regimen fact that no rule tells
    apart is one value, ANY_REGIMEN (whichever regimen is being given)."""
    spec = table.facts[name]
    if spec.kind != FactKind.REGIMEN:
        return FACT_VALUES[spec.kind]
    named = [v for rule in table.rules for v in rule.when.get(name, []) if v != UNKNOWN]
    if not named:
        return (ANY_REGIMEN, UNKNOWN)
    keys = list(regimens) or list(dict.fromkeys(named))
    # Without the protocol's list, "any other" stands for the regimens no rule names.
    return (*keys, UNKNOWN) if regimens else (*keys, ANY_REGIMEN, UNKNOWN)


def table_rows(table: DecisionTable, regimens: Iterable[str] = ()) -> list[TableRow]:
    """Every combination of the table's fact values (file order of facts and values), each with
    the rules that match it."""
    regimens = tuple(regimens)
    names = list(table.facts)
    domains = [fact_values(table, n, regimens) for n in names]
    rows = []
    for combo in itertools.product(*domains):
        given = dict(zip(names, combo, strict=True))
        rows.append(TableRow(given, tuple(r for r in table.rules if _matches(r, given))))
    return rows


def _outcome_key(rule: DecisionRule) -> tuple[Any, ...]:
    if rule.team_decides is not None:
        return ("team", rule.team_decides)
    if rule.choose_from is not None:
        return ("choose", frozenset(rule.choose_from), rule.cycles)
    return ("regimen", rule.regimen, rule.cycles)


def outcome_text(rule: DecisionRule) -> str:
    """A rule's outcome in words, for reports and error messages."""
    if rule.team_decides is not None:
        return f"{TEAM_DECIDES}: {rule.team_decides}"
    if rule.choose_from is not None:
        return f"one of {' or '.join(rule.choose_from)} ×{rule.cycles} (care team chooses)"
    if rule.regimen == SAME_REGIMEN:
        return f"the same regimen ×{rule.cycles}"
    return f"{rule.regimen} ×{rule.cycles}"


def _listed(kind: str, items: list[str]) -> list[str]:
    more = len(items) - MAX_LISTED
    return items[:MAX_LISTED] + ([f"... and {more} more {kind}"] if more > 0 else [])


def table_problems(table: DecisionTable, regimens: Iterable[str] = ()) -> list[str]:
    """Why a table cannot be used as it stands: combinations no rule covers, rules that disagree
    on one combination (unless `order: first_match`), `same` with the regimen unknown."""
    holes: list[str] = []
    clashes: list[str] = []
    unresolved: list[str] = []
    regimen_fact = table.regimen_fact
    for row in table_rows(table, regimens):
        combo = _describe(row.facts)
        rule = row.rule
        if rule is None:
            holes.append(
                f"table {table.id!r}: no rule covers {combo} (add a rule for it, or one with "
                '`team_decides: "<why>"`)'
            )
            continue
        if table.order == "exclusive":
            other = next((r for r in row.rules if _outcome_key(r) != _outcome_key(rule)), None)
            if other is not None:
                clashes.append(
                    f"table {table.id!r}: rules {rule.id!r} ({outcome_text(rule)}) and "
                    f"{other.id!r} ({outcome_text(other)}) both match {combo}; make them "
                    "exclusive, or declare `order: first_match` (the first in the file wins)"
                )
        if rule.regimen == SAME_REGIMEN and row.facts.get(regimen_fact or "") == UNKNOWN:
            unresolved.append(
                f"table {table.id!r}: rule {rule.id!r} keeps the current regimen, which is "
                f"unknown in {combo}: put a rule for {regimen_fact}: unknown before it"
            )
    return [
        *_listed("combinations no rule covers", holes),
        *_listed("overlapping combinations", clashes),
        *_listed("combinations with the regimen unknown", unresolved),
    ]


def uncovered_combinations(
    table: DecisionTable, regimens: Iterable[str] = ()
) -> list[dict[str, str]]:
    """Every combination of fact values that no rule covers (a file with one does not load)."""
    return [dict(row.facts) for row in table_rows(table, regimens) if row.rule is None]


def fact_reading(protocol: Protocol, table: DecisionTable, name: str) -> str:
    """What a fact means and where its value comes from, in words (for the report)."""
    spec = table.facts[name]
    source = ""
    if spec.item is not None:
        try:
            source = f"{protocol.item(spec.item).label} ({spec.item})"
        except KeyError:
            source = spec.item
    if spec.kind == FactKind.REGIMEN:
        named = any(v != UNKNOWN for rule in table.rules for v in rule.when.get(name, []))
        return (
            "the regimen of the last treatment cycle before the decision; unknown if that "
            "cycle has none recorded"
            + ("" if named else f"; {ANY_REGIMEN!r} stands for whichever regimen that is")
        )
    if spec.kind == FactKind.PAM_MUTATION and spec.item is None:
        return (
            "PI3K/AKT/mTOR (PAM) pathway mutation in any ctDNA result so far: true once found "
            "(a later result reporting none does not clear it; only a result that explicitly "
            "retracts it does), false if tested and never found, unknown if never tested"
        )
    what = {
        FactKind.CTDNA_STATUS: "ctDNA call",
        FactKind.RECIST_RESPONSE: "RECIST 1.1 response",
        FactKind.PAM_MUTATION: "PAM pathway mutation reported",
    }[spec.kind]
    if spec.item is None:
        return f"the latest {what} before the decision; unknown if none"
    redraws = ", its redraws included" if spec.kind != FactKind.RECIST_RESPONSE else ""
    return (
        f"{what} of {source}{redraws}: the latest readable result; unknown if it was not "
        "done (missed, cancelled, not applicable) or gave no readable result"
    )


def _rule_dict(rule: DecisionRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "when": {fact: list(values) for fact, values in rule.when.items()},
        "regimen": rule.regimen,
        "choose_from": list(rule.choose_from) if rule.choose_from else None,
        "cycles": rule.cycles,
        "team_decides": rule.team_decides,
        "because": rule.because,
        "outcome": outcome_text(rule),
    }


def _row_outcome(rule: DecisionRule | None) -> dict[str, Any]:
    if rule is None:
        return {"kind": "none", "regimen": None, "options": [], "cycles": None, "text": NO_MATCH}
    options: list[str] = []
    if rule.team_decides is not None:
        kind = "team_decides"
    elif rule.choose_from is not None:
        kind, options = "choose_from", list(rule.choose_from)
    elif rule.regimen == SAME_REGIMEN:
        kind = "same"
    else:
        kind, options = "regimen", [str(rule.regimen)]
    return {
        "kind": kind,
        "regimen": rule.regimen if kind == "regimen" else None,
        "options": options,
        "cycles": rule.cycles,
        "reason": rule.team_decides,
        # The reason is long and the same for every row of the rule: the rule lists it.
        "text": TEAM_DECIDES if kind == "team_decides" else outcome_text(rule),
    }


def table_report(protocol: Protocol, table: DecisionTable) -> dict[str, Any]:
    """One table as the system applies it: facts, rules, and every combination's outcome."""
    regimens = [r.key for r in protocol.treatment.regimens] if protocol.treatment else []
    rows = table_rows(table, regimens)
    by_rule: dict[str, int] = {r.id: 0 for r in table.rules}
    for row in rows:
        if row.rule is not None:
            by_rule[row.rule.id] += 1
    team = sum(1 for row in rows if row.rule is not None and row.rule.team_decides is not None)
    return {
        "id": table.id,
        "label": table.label,
        "order": table.order,
        "facts": [
            {
                "name": name,
                "kind": spec.kind.value,
                "item": spec.item,
                "values": list(fact_values(table, name, regimens)),
                "reading": fact_reading(protocol, table, name),
                "note": spec.note,
            }
            for name, spec in table.facts.items()
        ],
        "rules": [{**_rule_dict(r), "combinations": by_rule[r.id]} for r in table.rules],
        "combinations": len(rows),
        "team_decides": team,
        "uncovered": sum(1 for row in rows if row.rule is None),
        "rows": [
            {
                "facts": dict(row.facts),
                "rule_id": row.rule.id if row.rule else None,
                "also_matching": [r.id for r in row.rules[1:]],
                "outcome": _row_outcome(row.rule),
            }
            for row in rows
        ],
    }


def decision_report(protocol: Protocol) -> dict[str, Any]:
    """Every decision table of a protocol as the system will apply it (for review before
    go-live): `stepdown protocol decisions KEY` and GET /api/v1/protocols/KEY/decisions."""
    return {
        "study": protocol.study,
        "protocol_key": protocol.key,
        "version": protocol.version,
        "source_file": protocol.source_file,
        "sha256": protocol.sha256,
        "unknown_means": (
            "the source was not done (missed, cancelled, not applicable), gave no readable "
            "result, or was never tested"
        ),
        "regimens": [
            {"key": r.key, "label": r.label}
            for r in (protocol.treatment.regimens if protocol.treatment else [])
        ],
        "tables": [table_report(protocol, table) for table in protocol.decisions],
    }


# ---------------------------------------------------------------------------------------------
# Participant choices (values the protocol leaves to the care team per participant)


def _choice_value(protocol: Protocol, key: str, raw: object) -> tuple[ParticipantChoice, str]:
    try:
        spec = protocol.choice(key)
    except KeyError:
        known = ", ".join(c.key for c in protocol.choices) or "none"
        raise ValueError(f"{protocol.study} has no choice {key!r} (known: {known})") from None
    value = spec.normalise(raw)
    if value not in spec.allowed():
        raise ValueError(f"{key}: {raw!r} is not one of {', '.join(spec.allowed())}")
    return spec, value


def check_participant_choices(
    protocol: Protocol, values: Mapping[str, object] | None
) -> dict[str, str]:
    """Choice values in canonical form; ValueError naming the first unknown key or value."""
    return {key: _choice_value(protocol, key, raw)[1] for key, raw in (values or {}).items()}


def apply_participant_choices(
    protocol: Protocol, *, cohort: str, values: Mapping[str, object] | None
) -> Protocol:
    """The protocol as one participant follows it: each chosen value put into the fields it
    drives (choices of other cohorts are ignored). Raises ValueError for unknown keys/values."""
    every: dict[tuple[str, str | None], Duration] = {}
    modality: dict[str, Modality] = {}
    for key, raw in (values or {}).items():
        spec, value = _choice_value(protocol, key, raw)
        if not spec.applies_to(cohort):
            continue
        for target in spec.drives:
            if target.field == "modality":
                modality[target.item] = Modality(value)
            else:
                every[(target.item, target.phase)] = parse_duration(value)
    if not every and not modality:
        return protocol
    schedule = []
    for item in protocol.schedule:
        update: dict[str, Any] = {}
        if item.id in modality:
            update["modality"] = modality[item.id]
        if item.phases is not None:
            phases = [
                p.model_copy(update={"every": every[(item.id, p.name)]})
                if (item.id, p.name) in every
                else p
                for p in item.phases
            ]
            if phases != item.phases:
                update["phases"] = phases
        elif (item.id, None) in every or (item.id, item.phase) in every:
            update["every"] = every.get((item.id, None)) or every[(item.id, item.phase)]
        schedule.append(item.model_copy(update=update) if update else item)
    return protocol.model_copy(update={"schedule": schedule})


def _keep_before(
    protocol: Protocol,
    cohort: str,
    anchor: date,
    values: Mapping[str, object] | None,
    events: list[PlannedEvent],
) -> list[PlannedEvent]:
    """Events before a modality choice's `applies_from` keep the file's modality."""
    cutoffs: dict[str, tuple[date, str]] = {}
    for key, raw in (values or {}).items():
        spec, _ = _choice_value(protocol, key, raw)
        if spec.kind == "modality" and spec.applies_to(cohort) and spec.applies_from.amount:
            for target in spec.drives:
                start = anchor + spec.applies_from.delta()
                cutoffs[target.item] = (start, spec.normalise(spec.default))
    if not cutoffs:
        return events
    return [
        replace(e, modality=cutoffs[e.item_id][1])
        if e.item_id in cutoffs and e.target_date < cutoffs[e.item_id][0]
        else e
        for e in events
    ]


def choice_states(
    protocol: Protocol, *, cohort: str, values: Mapping[str, object] | None = None
) -> list[dict[str, Any]]:
    """The choices a participant of this cohort has: allowed values, default, current value."""
    given = check_participant_choices(protocol, values)
    out = []
    for spec in protocol.choices:
        if not spec.applies_to(cohort):
            continue
        default = spec.normalise(spec.default)
        value = given.get(spec.key, default)
        drives = []
        for target in spec.drives:
            item = protocol.item(target.item)
            drives.append(
                {
                    "item": target.item,
                    "item_label": item.label,
                    "phase": target.phase,
                    "field": target.field,
                }
            )
        out.append(
            {
                "key": spec.key,
                "label": spec.label,
                "decided_by": spec.decided_by,
                "kind": spec.kind,
                "allowed": spec.allowed(),
                "default": default,
                "value": value,
                "is_default": value == default,
                "applies_from": str(spec.applies_from),
                "drives": drives,
                "note": spec.note,
                "site_defaults": list(spec.site_defaults),
            }
        )
    return out


def _check_choice_timing(protocol: Protocol) -> list[tuple[str, str]]:
    """Every allowed interval plans (the loader's dry run), never before `applies_from`."""
    problems: list[tuple[str, str]] = []
    for c, spec in enumerate(protocol.choices):
        if spec.kind != "every":
            continue
        cohort = next(k for k in protocol.cohort_keys() if spec.applies_to(k))
        for value in spec.allowed():
            chosen = apply_participant_choices(protocol, cohort=cohort, values={spec.key: value})
            for target in spec.drives:
                item = chosen.item(target.item)
                index = next(
                    i
                    for i, p in enumerate(item.timing_phases())
                    if item.phases is None or p.name == target.phase
                )
                for anchor in _CHECK_ANCHORS:
                    try:
                        occurrences = _walk(item, anchor, item_path=f"choices[{c}]")
                    except ScheduleError as exc:
                        problems.append((exc.path, f"with {spec.key} = {value}: {exc.message}"))
                        break
                    start = anchor + spec.applies_from.delta()
                    early = [o.day for o in occurrences if o.phase_index == index and o.day < start]
                    if early:
                        problems.append(
                            (
                                f"choices[{c}].applies_from",
                                f"with {spec.key} = {value}, {target.item} falls on {early[0]}, "
                                f"before {spec.applies_from} from an anchor of {anchor}",
                            )
                        )
                        break
    return problems


def timeline(
    protocol: Protocol,
    *,
    cohort: str,
    anchor_date: date,
    tz: str | None = None,
    choices: Mapping[str, Choice] | None = None,
    participant_choices: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """The whole planned timeline as plain data (for the API and CLI dry run), with the
    participant choices the protocol declares (their defaults, or the values given)."""
    zone = _zone(protocol, tz)
    events = expand_schedule(
        protocol,
        cohort=cohort,
        anchor_date=anchor_date,
        tz=zone.key,
        choices=choices,
        participant_choices=participant_choices,
    )
    phases: dict[tuple[str, str | None], dict[str, Any]] = {}
    for event in events:
        entry = phases.setdefault(
            (event.item_id, event.phase),
            {
                "item_id": event.item_id,
                "phase": event.phase,
                "first": event.target_date,
                "last": event.target_date,
                "count": 0,
            },
        )
        entry["last"] = event.target_date
        entry["count"] += 1
    used = {e.decision_id for e in events if e.decision_id}
    regimens = [r.key for r in protocol.treatment.regimens] if protocol.treatment else []
    decisions = []
    for table in protocol.decisions:
        if table.id not in used:
            continue
        rows = table_rows(table, regimens)
        decisions.append(
            {
                "id": table.id,
                "label": table.label,
                "facts": {name: spec.kind.value for name, spec in table.facts.items()},
                "rules": [_rule_dict(rule) for rule in table.rules],
                "combinations": len(rows),
                "team_decides": sum(
                    1 for r in rows if r.rule is not None and r.rule.team_decides is not None
                ),
                "uncovered": [dict(r.facts) for r in rows if r.rule is None],
                "no_match": NO_MATCH,
            }
        )
    return {
        "study": protocol.study,
        "protocol_key": protocol.key,
        "version": protocol.version,
        "cohort": cohort,
        "anchor_date": anchor_date.isoformat(),
        "time_zone": zone.key,
        "choices": {
            k: {"regimen": c.regimen, "cycles": c.cycles, "start_cycle": c.start_cycle}
            for k, c in (choices or {}).items()
        },
        "events": [event.as_dict(zone.key) for event in events],
        "phases": [
            {**p, "first": p["first"].isoformat(), "last": p["last"].isoformat()}
            for p in phases.values()
        ],
        "decisions": decisions,
        "participant_choices": choice_states(protocol, cohort=cohort, values=participant_choices),
        "entry_gate": gate_preview(protocol, events=events, tz=zone.key),
    }


def gate_paths(gate: EntryGate) -> list[dict[str, str]]:
    """An entry gate's outcomes in words: when each happens and what it does."""
    facts = " and ".join(f"{f.label}: {' or '.join(f.passes)}" for f in gate.facts)
    out = [
        {
            "outcome": "pass",
            "when": f"{facts}, and the stop date confirmed",
            "then": "enters monitoring: the whole schedule counts from the confirmed stop date"
            + (f" (cohort {gate.on_pass.cohort})" if gate.on_pass.cohort else ""),
        }
    ]
    if gate.on_fail is not None:
        failing = " or ".join(f"{f.label}: {' or '.join(f.fails)}" for f in gate.facts if f.fails)
        out.append(
            {
                "outcome": "fail",
                "when": failing,
                "then": f"{gate.on_fail.label}: status continues maintenance, nothing more is "
                "planned, no monitoring SMS; the coordinator is told",
            }
        )
    out.append(
        {
            "outcome": "wait",
            "when": "a fact not in yet, a failed test (redrawn), or the stop date not confirmed",
            "then": "stays in screening with only the gate's events planned",
        }
    )
    return out


def gate_preview(
    protocol: Protocol, *, events: list[PlannedEvent], tz: str
) -> dict[str, Any] | None:
    """The dry run's entry gate: what is planned in screening (from the planned stop date), its
    facts, and both paths (the monitoring events if it passes, nothing if it fails)."""
    gate = protocol.entry_gate
    if gate is None:
        return None
    screening = [e for e in events if e.item_id in gate.items]
    monitoring = [e for e in events if e.item_id not in gate.items]
    paths = gate_paths(gate)
    for path in paths:
        if path["outcome"] == "pass":
            path["events"] = str(len(monitoring))
            path["cohort"] = gate.on_pass.cohort or ""
            if monitoring:
                path["first"] = monitoring[0].target_date.isoformat()
                path["last"] = monitoring[-1].target_date.isoformat()
        elif path["outcome"] == "fail":
            path["events"] = "0"
            path["cohort"] = (gate.on_fail.cohort if gate.on_fail else None) or ""
    return {
        "label": gate.label,
        "source": gate.source,
        "stop_date": gate.stop_date,
        "items": list(gate.items),
        "facts": [
            {
                "key": f.key,
                "label": f.label,
                "provenance": f.provenance.value,
                "item": f.item,
                "within": str(f.within) if f.within else None,
                "passes": list(f.passes),
                "fails": list(f.fails),
            }
            for f in gate.facts
        ],
        "screening_events": [e.as_dict(tz) for e in screening],
        "paths": paths,
    }


def check_protocol(protocol: Protocol) -> list[tuple[str, str]]:
    """Problems found when a file loads: planning every item (and every allowed value of a
    participant choice) for a few awkward anchors, and decision tables that are incomplete,
    overlap without a declared order, or keep a regimen that may be unknown."""
    problems: dict[tuple[str, str], None] = {}
    for index, item in enumerate(protocol.schedule):
        if item.after_cycle is not None:
            continue
        for anchor in _CHECK_ANCHORS:
            try:
                _walk(item, anchor, item_path=f"schedule[{index}]")
            except ScheduleError as exc:
                problems[(exc.path, exc.message)] = None
                break
    regimens = [r.key for r in protocol.treatment.regimens] if protocol.treatment else []
    for t, table in enumerate(protocol.decisions):
        for message in table_problems(table, regimens):
            problems[(f"decisions[{t}]", message)] = None
    for problem in _check_choice_timing(protocol):
        problems[problem] = None
    return list(problems)


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def weekday_date(day: date) -> str:
    """A date with its weekday, "Mon 2027-03-29" (English names, whatever the locale)."""
    return f"{WEEKDAYS[day.weekday()]} {day.isoformat()}"


def offset_from_anchor(anchor: date, day: date) -> str:
    """Where a date falls from the anchor, as protocols count: "week 12" for whole weeks, else
    "month 3" for the same day of a later month, else "day 45" ("anchor day" on the anchor;
    negative before it, e.g. "week -1" for a baseline a week before)."""
    days = (day - anchor).days
    if days == 0:
        return "anchor day"
    if days % 7 == 0:
        return f"week {days // 7}"
    span = relativedelta(day, anchor)
    if span.days == 0:
        return f"month {span.years * 12 + span.months}"
    return f"day {days}"
