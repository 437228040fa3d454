"""FHIR search parameters: parsing and matching, pure (no database, no request).

Supported: the date prefixes eq, ne, lt, le, gt, ge on dates of any precision (a year, a month,
a day, a time), token values `system|code` or `code`, references `Type/id`, `id` or an absolute
URL ending in `Type/id`, `_count` (default 50, at most 200) and `_offset` for paging. A parameter
the resource type does not support is an error (400), never silently ignored: an integration
engine that misspells `patient` must not receive every participant's data of its sites.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

DEFAULT_COUNT = 50
MAX_COUNT = 200
# Paging by offset: a client could page forever through a big set; bounded so that a page's work
# stays small (a larger search must be narrowed by date or subject).
MAX_OFFSET = 100_000


class SearchError(ValueError):
    """A search the server cannot run as asked (the API answers 400 with an OperationOutcome)."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


_DATE = re.compile(
    r"^(?P<prefix>eq|ne|lt|le|gt|ge)?"
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True)
class DateFilter:
    """One date parameter: the prefix and the range [start, end) its value stands for."""

    prefix: str
    start: datetime
    end: datetime

    def matches(self, value: datetime | date | None) -> bool:
        if value is None:
            return False
        if not isinstance(value, datetime):
            value = datetime.combine(value, datetime.min.time(), UTC)
        inside = self.start <= value < self.end
        return {
            "eq": inside,
            "ne": not inside,
            "lt": value < self.start,
            "le": value < self.end,
            "gt": value >= self.end,
            "ge": value >= self.start,
        }[self.prefix]


def parse_date(name: str, raw: str) -> DateFilter:
    """`ge2027-01-01`, `lt2027-03`, `2027`, `eq2027-01-05T10:00:00+01:00` → a DateFilter."""
    found = _DATE.match(raw.strip())
    if not found:
        raise SearchError(
            f"{name}: {raw!r} is not a FHIR date (e.g. ge2027-01-01, lt2027-03-01T00:00:00Z)"
        )
    prefix = found["prefix"] or "eq"
    try:
        year = int(found["year"])
        if found["time"]:
            text = f"{found['year']}-{found['month']}-{found['day']}T{found['time']}"
            start = datetime.fromisoformat(text + (found["tz"] or "+00:00").replace("Z", "+00:00"))
            start = start.astimezone(UTC)
            seconds = found["time"].count(":") == 2
            return DateFilter(prefix, start, start + timedelta(seconds=1 if seconds else 60))
        if found["day"]:
            day = date(year, int(found["month"]), int(found["day"]))
            start = datetime.combine(day, datetime.min.time(), UTC)
            return DateFilter(prefix, start, start + timedelta(days=1))
        if found["month"]:
            month = int(found["month"])
            start = datetime(year, month, 1, tzinfo=UTC)
            end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
            return DateFilter(prefix, start, end)
        return DateFilter(
            prefix, datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
        )
    except ValueError:
        raise SearchError(f"{name}: {raw!r} is not a valid date") from None


@dataclass(frozen=True)
class Token:
    """A token parameter's value: `system|code`, `|code` (no system) or `code` (any system)."""

    system: str | None
    code: str

    def matches(self, codings: Sequence[Mapping[str, Any]]) -> bool:
        for c in codings:
            if c.get("code") == self.code and (
                self.system is None or c.get("system") == self.system
            ):
                return True
        return False


def parse_token(raw: str) -> Token:
    system, bar, code = raw.partition("|")
    return Token(system or None, code) if bar else Token(None, raw)


def reference_id(raw: str, resource_type: str, name: str) -> str:
    """The id in `Type/id`, `id` or `http://…/Type/id` (another type is an error)."""
    value = raw.strip().rstrip("/")
    parts = value.split("/")
    if len(parts) == 1:
        return parts[0]
    if parts[-2] != resource_type:
        raise SearchError(f"{name}: {raw!r} must reference a {resource_type}")
    return parts[-1]


@dataclass
class Query:
    """A parsed search: the filters each resource type reads, and the page."""

    ids: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)  # Patient ids
    subject_identifiers: list[Token] = field(default_factory=list)
    categories: list[Token] = field(default_factory=list)
    codes: list[Token] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    questionnaires: list[str] = field(default_factory=list)
    dates: list[DateFilter] = field(default_factory=list)
    last_updated: list[DateFilter] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0

    @property
    def has_subject(self) -> bool:
        return bool(self.subjects or self.subject_identifiers)


# Each type's search parameters (besides _id, _lastUpdated, _count, _offset, _format), and the
# Query field each feeds; `date` names the element the README lists per type.
COMMON = {"_id", "_lastUpdated", "_count", "_offset", "_format"}
SUBJECT = {"subject", "patient", "subject:identifier", "patient:identifier"}
PARAMETERS: dict[str, set[str]] = {
    "Patient": {"identifier"},
    "ResearchStudy": {"identifier"},
    "ResearchSubject": {"patient", "individual", "patient:identifier", "study", "status"},
    "CarePlan": SUBJECT | {"status"},
    "Observation": SUBJECT | {"category", "code", "date"},
    "Questionnaire": {"url", "name"},
    "QuestionnaireResponse": SUBJECT | {"questionnaire", "authored", "status"},
    "Flag": SUBJECT | {"date", "status"},
    "Communication": SUBJECT | {"category", "sent", "status"},
    "Subscription": {"status"},
}


def _integer(name: str, raw: str, low: int, high: int) -> int:
    if not raw.isdigit():
        raise SearchError(f"{name}: {raw!r} must be a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise SearchError(f"{name}: must be between {low} and {high}")
    return value


def parse(resource_type: str, params: Sequence[tuple[str, str]]) -> Query:
    """Parse a search's query string pairs for one resource type (SearchError when invalid)."""
    allowed = PARAMETERS[resource_type] | COMMON
    query = Query()
    for name, raw in params:
        if name not in allowed:
            known = ", ".join(sorted(allowed - {"_format"}))
            raise SearchError(
                f"unknown search parameter {name!r} for {resource_type} (supported: {known})",
                "not-supported",
            )
        values = [v for v in raw.split(",") if v] if name not in ("_count", "_offset") else [raw]
        if not values:
            raise SearchError(f"{name}: a value is required")
        if name == "_count":
            query.count = _integer(name, raw, 0, MAX_COUNT)
        elif name == "_offset":
            query.offset = _integer(name, raw, 0, MAX_OFFSET)
        elif name == "_format":
            if raw not in ("json", "application/fhir+json", "application/json"):
                raise SearchError("_format: only json is served", "not-supported")
        elif name == "_id":
            query.ids.extend(values)
        elif name == "_lastUpdated":
            query.last_updated.append(parse_date(name, raw))
        elif name in ("date", "authored", "sent"):
            query.dates.append(parse_date(name, raw))
        elif name in ("subject", "patient", "individual"):
            query.subjects.extend(reference_id(v, "Patient", name) for v in values)
        elif name in ("subject:identifier", "patient:identifier", "identifier"):
            query.subject_identifiers.extend(parse_token(v) for v in values)
        elif name == "category":
            query.categories.extend(parse_token(v) for v in values)
        elif name == "code":
            query.codes.extend(parse_token(v) for v in values)
        elif name == "status":
            query.statuses.extend(values)
        elif name == "study":
            query.studies.extend(reference_id(v, "ResearchStudy", name) for v in values)
        elif name in ("questionnaire", "url", "name"):
            query.questionnaires.extend(values)
    return query
