"""Pure decisions about the event lifecycle, and the facts a decision table reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from server.protocols.definition import UNKNOWN, DecisionTable, FactKind
from server.schedules.models import EventStatus

COMPLETABLE = frozenset({EventStatus.PLANNED, EventStatus.OPEN, EventStatus.MISSED})
CANCELLABLE = frozenset({EventStatus.PLANNED, EventStatus.OPEN, EventStatus.MISSED})
MOVABLE = frozenset({EventStatus.PLANNED, EventStatus.OPEN, EventStatus.MISSED})


def timed_status(
    status: EventStatus, window_open_at: datetime, window_close_at: datetime, now: datetime
) -> EventStatus:
    """What a planned or open event's status should be at `now` (others are final)."""
    if status not in (EventStatus.PLANNED, EventStatus.OPEN):
        return status
    if now >= window_close_at:
        return EventStatus.MISSED
    if now >= window_open_at:
        return EventStatus.OPEN
    return EventStatus.PLANNED


def is_in_window(done_on: date, window_open: date, window_close: date) -> bool:
    """Whether a completion date falls inside the window (both ends included)."""
    return window_open <= done_on <= window_close


def defer_out_of_quiet_hours(
    moment: datetime, zone: ZoneInfo, quiet_start: time, quiet_end: time
) -> datetime:
    """The first allowed moment at or after `moment` (UTC), outside the local quiet hours.

    Quiet hours may wrap midnight (21:00–08:00). A deferred moment lands at quiet_end local time,
    computed on the local calendar so that a DST change does not shift it.
    """
    if quiet_start == quiet_end:
        return moment
    local = moment.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    wraps = quiet_start > quiet_end
    inside = (t >= quiet_start or t < quiet_end) if wraps else (quiet_start <= t < quiet_end)
    if not inside:
        return moment
    day = local.date()
    if wraps and t >= quiet_start:
        day += timedelta(days=1)
    return _local(day, quiet_end, zone)


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    # fold=0 and zoneinfo resolve a wall time in a DST gap forward, which is what a reminder wants.
    return datetime.combine(day, at, zone).astimezone(UTC)


def reminder_moment(
    *,
    relative_to: str,
    offset_days: int,
    at: time,
    target_date: date,
    window_open_date: date,
    window_close_date: date,
    zone: ZoneInfo,
) -> datetime:
    """When a reminder is meant to go (UTC), from its anchor day, day offset and local time."""
    base = {
        "target": target_date,
        "window_open": window_open_date,
        "window_close": window_close_date,
    }[relative_to]
    return _local(base + timedelta(days=offset_days), at, zone)


def reminder_expiry(
    *,
    intended_at: datetime,
    target_at: datetime,
    window_close_at: datetime,
    until_window_close: bool = False,
) -> datetime:
    """Until when a reminder is still true: one announcing the appointment ("blood test on Monday
    at 09:00") expires at that moment, since after it the text is about the past; a nudge after
    it, and any reminder whose text states the window's close (`until_window_close`: a
    questionnaire), when the window closes."""
    if until_window_close or intended_at >= target_at:
        return window_close_at
    return min(target_at, window_close_at)


# --- which reminders go, and when ------------------------------------------------------------
#
# The reminder job writes an event's reminders a little ahead (reminders.HORIZON). A reminder's
# moment may already have passed when it gets there: the participant was just enrolled with an
# anchor in the past, consent came back, the event was moved, the job was down for days. What
# still goes:
# - nothing whose moment has passed: a reminder is written for its moment or not at all (a
#   back-dated enrolment gets the welcome and what is still ahead; an event moved to tomorrow
#   gets its "morning of" reminder, not yesterday's "day before" at once). Reminders are written
#   two days ahead, so only such changes, or a job down for longer, ever skip one;
# - (nothing planned for before the participant could be texted, `owed_from`: their SMS consent,
#   i.e. enrolment: the same rule, with its own reason for whoever reads why one did not go);
# - only while it is still true (its expiry, above): the appointment is still ahead, the window
#   still open (a reminder pushed out of the night past the appointment does not go);
# - and not when a later reminder of the same event goes at the same moment or earlier: the
#   participant gets the latest one only ("morning of" rather than a 22:30 "day before" held
#   until 08:00 and the "morning of" together at 08:00).


@dataclass(frozen=True, slots=True)
class ReminderSlot:
    """One planned reminder of an event as the decision reads it."""

    kind: str
    intended_at: datetime
    not_before_at: datetime  # the intended moment moved out of quiet hours
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ReminderVerdict:
    """Whether a planned reminder goes and when (`send_at` None: it does not, see `why`)."""

    kind: str
    send_at: datetime | None
    why: str  # "on time" | "before consent" | "passed" | "expired" | "superseded by <kind>"


def reminder_verdicts(
    slots: Iterable[ReminderSlot], *, now: datetime, owed_from: datetime
) -> list[ReminderVerdict]:
    """Each of an event's reminders: sent at its moment, or why not (see the rules above).
    Pure: the same inputs give the same verdicts."""
    slots = list(slots)
    first: list[tuple[ReminderSlot, datetime | None, str]] = []
    for s in slots:
        if s.not_before_at < owed_from:
            first.append((s, None, "before consent"))
        elif s.not_before_at < now:
            first.append((s, None, "passed"))
        elif s.not_before_at >= s.expires_at:
            first.append((s, None, "expired"))
        else:
            first.append((s, s.not_before_at, "on time"))
    verdicts = []
    for s, send_at, why in first:
        if send_at is not None:
            goes = send_at
            later = [
                o
                for o, o_sent, _ in first
                if o_sent is not None and o.intended_at > s.intended_at and o_sent <= goes
            ]
            if later:
                latest = max(later, key=lambda o: o.intended_at)
                send_at, why = None, f"superseded by {latest.kind}"
        verdicts.append(ReminderVerdict(s.kind, send_at, why))
    return verdicts


# --- decision facts with their provenance --------------------------------------------------------
#
# A decision table reads facts (server/protocols/definition.py FactKind). Each is derived here from
# every relevant event and result, with the sources it came from, so a decision can show where
# each value came from:
# - a time-point fact (a fact with an `item`): the latest readable value of that item's events,
#   its redraws included; `unknown` when none was done (missed, cancelled, not applicable) or the
#   test failed with no redraw pending; not yet known (awaited) while a draw or its result is due;
# - PAM mutation with no item: found in any ctDNA result so far. Once found it stays found (a later
#   result reporting none does not clear it) unless a result explicitly retracts that finding;
# - regimen: the regimen of the last treatment cycle before the decision point.


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A planned event as facts read it."""

    event_id: int
    key: str
    item_id: str
    event_type: str
    sequence: int
    status: EventStatus
    target_at: datetime
    target_date: date
    completed_on: date | None = None
    outcome: Mapping[str, Any] | None = None
    regimen: str | None = None
    status_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """An accepted ctDNA or imaging result as facts read it."""

    result_id: int
    accession_id: str
    lab: str
    kind: str  # "ctdna" | "imaging"
    event_id: int | None = None
    on: date | None = None  # collected or performed, local date
    call: str | None = None
    recist: str | None = None
    pam_mutation: bool | None = None
    retracts_pam_mutation_of: str | None = None


@dataclass(frozen=True, slots=True)
class FactSource:
    """One piece of evidence for a fact's value: what it said and where it came from."""

    what: str
    event_key: str | None = None
    event_id: int | None = None
    result_id: int | None = None
    accession_id: str | None = None
    lab: str | None = None
    on: date | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (stored with the decision)."""
        return {
            "what": self.what,
            "event_key": self.event_key,
            "event_id": self.event_id,
            "result_id": self.result_id,
            "accession_id": self.accession_id,
            "lab": self.lab,
            "on": self.on.isoformat() if self.on else None,
        }


@dataclass(frozen=True, slots=True)
class Fact:
    """A fact's value and the sources it was derived from."""

    name: str
    kind: str
    value: str
    sources: tuple[FactSource, ...]
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (stored with the decision)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "value": self.value,
            "note": self.note,
            "sources": [s.as_dict() for s in self.sources],
        }


_FIELD = {
    FactKind.CTDNA_STATUS: "ctdna",
    FactKind.RECIST_RESPONSE: "recist",
    FactKind.PAM_MUTATION: "pam_mutation",
}
_RESULT_KIND = {
    FactKind.CTDNA_STATUS: "ctdna",
    FactKind.RECIST_RESPONSE: "imaging",
    FactKind.PAM_MUTATION: "ctdna",
}
_EVENT_TYPE = {
    FactKind.CTDNA_STATUS: "ctdna_draw",
    FactKind.RECIST_RESPONSE: "imaging",
    FactKind.PAM_MUTATION: "ctdna_draw",
}
_REPORTED = ("ctdna", "recist", "pam_mutation")
PENDING = (EventStatus.PLANNED, EventStatus.OPEN)


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _said(kind: FactKind, value: str) -> str:
    if kind == FactKind.CTDNA_STATUS:
        return f"ctDNA {value}"
    if kind == FactKind.RECIST_RESPONSE:
        return f"RECIST {value}"
    return {"true": "PAM mutation found", "false": "no PAM mutation"}.get(value, value)


def _source(what: str, event: EventRecord | None, result: ResultRecord | None = None) -> FactSource:
    return FactSource(
        what=what,
        event_key=event.key if event else None,
        event_id=event.event_id if event else None,
        result_id=result.result_id if result else None,
        accession_id=result.accession_id if result else None,
        lab=result.lab if result else None,
        on=(result.on if result and result.on else None) or (event.completed_on if event else None),
    )


def _result_value(result: ResultRecord, kind: FactKind) -> str | None:
    """What a result says for a fact kind (None: nothing readable for it)."""
    if kind == FactKind.CTDNA_STATUS:
        return result.call if result.call in ("positive", "negative") else None
    if kind == FactKind.RECIST_RESPONSE:
        return result.recist
    return None if result.pam_mutation is None else _text(result.pam_mutation)


def _retracted(results: Iterable[ResultRecord]) -> dict[tuple[str, str], ResultRecord]:
    """(lab, accession) of each PAM finding withdrawn, and the result that withdrew it."""
    return {(r.lab, r.retracts_pam_mutation_of): r for r in results if r.retracts_pam_mutation_of}


def _not_done(event: EventRecord, linked: list[ResultRecord]) -> str:
    if event.status == EventStatus.MISSED:
        return "missed (its window closed without it)"
    if event.status in (EventStatus.CANCELLED, EventStatus.NOT_APPLICABLE):
        why = f": {event.status_reason}" if event.status_reason else ""
        return f"{event.status.value.replace('_', ' ')}{why}"
    failed = [r for r in linked if r.call and r.call not in ("positive", "negative")]
    if failed:
        return f"test failed ({failed[-1].call.replace('_', ' ')})"  # type: ignore[union-attr]
    return "done, but its result did not report this"


def _point_fact(
    name: str,
    kind: FactKind,
    item: str,
    events: list[EventRecord],
    by_event: dict[int, list[ResultRecord]],
    retracted: dict[tuple[str, str], ResultRecord],
) -> Fact | None:
    """A time-point fact, or None while its source is still awaited."""
    field_name = _FIELD[kind]
    own = [e for e in events if e.item_id in (item, f"{item}_redraw")]

    def carrier(e: EventRecord) -> ResultRecord | None:
        linked = [r for r in by_event.get(e.event_id, []) if r.kind == _RESULT_KIND[kind]]
        return linked[-1] if linked else None

    readable: list[tuple[EventRecord, ResultRecord | None, str]] = []
    for e in own:
        result = carrier(e)
        said = _result_value(result, kind) if result is not None else None
        if said is not None:
            if kind == FactKind.PAM_MUTATION and (result.lab, result.accession_id) in retracted:  # type: ignore[union-attr]
                continue  # withdrawn by a later result: this draw tells nothing any more
            readable.append((e, result, said))
        elif e.status == EventStatus.COMPLETED and field_name in (e.outcome or {}):
            readable.append((e, None, _text(e.outcome[field_name])))  # type: ignore[index]
    if readable:
        event, result, value = max(
            readable, key=lambda p: (p[0].completed_on or date.min, p[0].item_id != item, p[0].key)
        )
        if kind == FactKind.RECIST_RESPONSE:
            value = value.upper()
        source = _source(_said(kind, value), event, result)
        if result is None:
            source = replace(source, what=f"{source.what} (recorded with the completion)")
        note = f"the latest of {len(readable)} at this time point" if len(readable) > 1 else ""
        return Fact(name, kind.value, value, (source,), note)
    waiting = [
        e
        for e in own
        if e.status in PENDING
        or (
            e.status == EventStatus.COMPLETED
            and not by_event.get(e.event_id)
            and not any(k in (e.outcome or {}) for k in _REPORTED)
        )
    ]
    if waiting:
        return None
    sources = tuple(_source(_not_done(e, by_event.get(e.event_id, [])), e) for e in own)
    return Fact(
        name,
        kind.value,
        UNKNOWN,
        sources or (FactSource(what=f"no {item} event is planned for this participant"),),
        "not done",
    )


def _pam_ever(
    name: str,
    events: list[EventRecord],
    results: list[ResultRecord],
    by_event: dict[int, list[ResultRecord]],
    retracted: dict[tuple[str, str], ResultRecord],
) -> Fact:
    """PAM mutation in any ctDNA result so far: found stays found unless retracted."""
    keys = {e.event_id: e for e in events}
    found: list[FactSource] = []
    negative: list[FactSource] = []
    withdrawn: list[FactSource] = []
    for r in results:
        if r.kind != "ctdna" or r.pam_mutation is None:
            continue
        event = keys.get(r.event_id) if r.event_id is not None else None
        by = retracted.get((r.lab, r.accession_id))
        if r.pam_mutation and by is not None:
            withdrawn.append(
                _source(f"PAM mutation retracted by result {by.accession_id}", event, r)
            )
        elif r.pam_mutation:
            found.append(_source("PAM mutation found", event, r))
        else:
            negative.append(_source("no PAM mutation", event, r))
    for e in events:
        pam = (e.outcome or {}).get("pam_mutation") if e.status == EventStatus.COMPLETED else None
        if pam is None or any(r.pam_mutation is not None for r in by_event.get(e.event_id, [])):
            continue  # not recorded, or recorded from a result counted above
        what = "PAM mutation found" if pam else "no PAM mutation"
        (found if pam else negative).append(_source(f"{what} (recorded with the completion)", e))
    order = lambda s: (s.on is None, s.on or date.min, s.event_key or "", s.result_id or 0)  # noqa: E731
    found.sort(key=order)
    negative.sort(key=order)
    if found:
        later = [s for s in negative if (s.on or date.min) >= (found[0].on or date.min)]
        note = (
            "found earlier; later results reporting none do not clear it"
            if later
            else "found in a ctDNA result"
        )
        return Fact(name, FactKind.PAM_MUTATION.value, "true", tuple(found + later), note)
    if negative:
        return Fact(
            name,
            FactKind.PAM_MUTATION.value,
            "false",
            tuple(negative + withdrawn),
            "tested, never found",
        )
    return Fact(
        name,
        FactKind.PAM_MUTATION.value,
        UNKNOWN,
        tuple(withdrawn) or (FactSource(what="no ctDNA result reported a PAM status"),),
        "never tested",
    )


def _latest_any(
    name: str,
    kind: FactKind,
    events: list[EventRecord],
    by_event: dict[int, list[ResultRecord]],
    point: EventRecord,
) -> Fact:
    field_name = _FIELD[kind]
    done = [
        e
        for e in events
        if e.event_type == _EVENT_TYPE[kind]
        and e.status == EventStatus.COMPLETED
        and field_name in (e.outcome or {})
        and e.target_at <= point.target_at
    ]
    if not done:
        return Fact(name, kind.value, UNKNOWN, (FactSource(what="no result yet"),), "not done")
    event = max(done, key=lambda e: (e.completed_on or date.min, e.key))
    value = _text(event.outcome[field_name])  # type: ignore[index]
    linked = [r for r in by_event.get(event.event_id, []) if r.kind == _RESULT_KIND[kind]]
    return Fact(
        name,
        kind.value,
        value,
        (_source(_said(kind, value), event, linked[-1] if linked else None),),
        "the latest before the decision",
    )


def _regimen(name: str, events: list[EventRecord], point: EventRecord) -> Fact:
    cycles = [
        e
        for e in events
        if e.event_type == "treatment_cycle"
        and e.target_at < point.target_at
        and e.status not in (EventStatus.CANCELLED, EventStatus.NOT_APPLICABLE)
    ]
    if not cycles:
        return Fact(name, FactKind.REGIMEN.value, UNKNOWN, (FactSource(what="no cycle before it"),))
    last = max(cycles, key=lambda e: (e.target_at, e.sequence))
    value = last.regimen or UNKNOWN
    what = f"cycle {last.sequence}: {value}" if last.regimen else "no regimen recorded"
    source = FactSource(what=what, event_key=last.key, event_id=last.event_id, on=last.target_date)
    return Fact(name, FactKind.REGIMEN.value, value, (source,), "the last cycle before it")


def derive_facts(
    table: DecisionTable,
    *,
    events: list[EventRecord],
    results: list[ResultRecord],
    point: EventRecord,
) -> tuple[dict[str, Fact], list[str]]:
    """The facts a decision table reads, each with its sources; and the names of those still
    awaited (a draw or scan, or its result, still due). Pure: records in, values out."""
    by_event: dict[int, list[ResultRecord]] = {}
    for r in results:
        if r.event_id is not None:
            by_event.setdefault(r.event_id, []).append(r)
    retracted = _retracted(results)
    facts: dict[str, Fact] = {}
    awaited: list[str] = []
    for name, spec in table.facts.items():
        fact: Fact | None
        if spec.kind == FactKind.REGIMEN:
            fact = _regimen(name, events, point)
        elif spec.item is not None:
            fact = _point_fact(name, spec.kind, spec.item, events, by_event, retracted)
        elif spec.kind == FactKind.PAM_MUTATION:
            fact = _pam_ever(name, events, results, by_event, retracted)
        else:
            fact = _latest_any(name, spec.kind, events, by_event, point)
        if fact is None:
            awaited.append(name)
        else:
            facts[name] = fact
    return facts, awaited
