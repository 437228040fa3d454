"""Pure decisions on questionnaire answers: what is shown, what is valid, scores, critical answers.

Answers are a mapping of item id to a whole number (the option value or scale point); a missing
key or None means "not answered". Nothing here touches a database or sends anything.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from server.surveys.definition import Instrument, Item, ScaleType, Severity

Answers = Mapping[str, object]

# A step of the survey page holds at most this many questions (one screen or two on a phone).
STEP_SIZE = 5


@dataclass(frozen=True, slots=True)
class ScaleScore:
    """One scale's result. `raw` is the mean of the answered items, `score` the transformed
    score (0-100, or the mean itself for `mean` scales); both None when the scale is missing."""

    raw: float | None
    score: float | None
    answered: int
    total: int
    is_missing: bool


class CriticalAnswer(NamedTuple):
    """An answer that should open an alert."""

    item: str
    severity: Severity


def _answer(answers: Answers, item_id: str) -> object:
    return answers.get(item_id)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def visible_items(instrument: Instrument, answers: Answers) -> list[str]:
    """Ids of the items shown given these answers, in order. An item with `show_if` is shown
    only when its source item is itself shown and was answered with one of the listed values."""
    shown: list[str] = []
    seen: set[str] = set()
    for item in instrument.items:
        if _shown(item, answers, seen):
            shown.append(item.id)
            seen.add(item.id)
    return shown


def _shown(item: Item, answers: Answers, shown_so_far: set[str]) -> bool:
    cond = item.show_if
    if cond is None:
        return True
    value = _answer(answers, cond.item)
    return cond.item in shown_so_far and _is_whole(value) and value in cond.in_


def validate_answers(instrument: Instrument, answers: Answers, *, partial: bool) -> dict[str, str]:
    """Problems with a set of answers, by item id (empty when all is well): unknown items,
    values that are not whole numbers or not allowed, answers to items not shown, and — unless
    `partial` (a survey still being filled in) — required shown items left unanswered."""
    problems: dict[str, str] = {}
    known = {item.id for item in instrument.items}
    for item_id in answers:
        if item_id not in known:
            problems[item_id] = "unknown item"
    shown = set(visible_items(instrument, answers))
    for item in instrument.items:
        value = _answer(answers, item.id)
        if value is None:
            if not partial and item.required and item.id in shown:
                problems[item.id] = "required"
            continue
        if item.id not in shown:
            assert item.show_if is not None
            problems[item.id] = (
                f"not shown (asked only when {item.show_if.item!r} is answered "
                f"{', '.join(str(v) for v in item.show_if.in_)})"
            )
            continue
        if not _is_whole(value):
            problems[item.id] = "must be a whole number"
            continue
        assert isinstance(value, int)
        response_set = instrument.responses[item.responses]
        if not response_set.accepts(value):
            problems[item.id] = f"{value} is not allowed (must be {response_set.describe()})"
    return problems


def _valid_values(instrument: Instrument, answers: Answers) -> dict[str, int]:
    problems = validate_answers(instrument, answers, partial=True)
    if problems:
        listed = "; ".join(f"{item}: {msg}" for item, msg in sorted(problems.items()))
        raise ValueError(f"invalid answers for {instrument.key}: {listed}")
    return {k: v for k, v in answers.items() if isinstance(v, int)}


def score(instrument: Instrument, answers: Answers) -> dict[str, ScaleScore]:
    """Every scale's score, by scale key (EORTC QLQ-C30 scoring manual method).

    RS = mean of the scale's answered items; range = highest - lowest allowed answer;
    functional: (1 - (RS - lowest)/range) x 100; symptom and global_health:
    ((RS - lowest)/range) x 100; mean: RS. Fewer answered items than `min_answered` of the scale
    (EORTC: at least half) makes the scale missing. Raises ValueError for invalid answers (see
    validate_answers); unanswered required items are allowed (they count as missing)."""
    values = _valid_values(instrument, answers)
    out: dict[str, ScaleScore] = {}
    for scale in instrument.scales:
        given = [values[i] for i in scale.items if i in values]
        total = len(scale.items)
        if not given or len(given) < scale.min_answered * total:
            out[scale.key] = ScaleScore(None, None, len(given), total, is_missing=True)
            continue
        raw = sum(given) / len(given)
        response_set = instrument.answers_for(scale.items[0])
        lowest, span = response_set.lowest, response_set.highest - response_set.lowest
        if scale.type == ScaleType.FUNCTIONAL:
            transformed = (1 - (raw - lowest) / span) * 100
        elif scale.type in (ScaleType.SYMPTOM, ScaleType.GLOBAL_HEALTH):
            transformed = (raw - lowest) / span * 100
        else:
            transformed = raw
        out[scale.key] = ScaleScore(raw, transformed, len(given), total, is_missing=False)
    return out


def critical_answers(instrument: Instrument, answers: Answers) -> list[CriticalAnswer]:
    """Answers that meet an item's `critical_if`, as (item id, severity) in item order.
    Only shown items with allowed answers count (invalid ones are ignored here: validate first)."""
    shown = set(visible_items(instrument, answers))
    out: list[CriticalAnswer] = []
    for item in instrument.items:
        value = _answer(answers, item.id)
        if item.critical_if is None or item.id not in shown or not _is_whole(value):
            continue
        assert isinstance(value, int)
        if instrument.responses[item.responses].accepts(value) and item.critical_if.matches(value):
            out.append(CriticalAnswer(item.id, item.critical_if.severity))
    return out


def steps(
    instrument: Instrument, headings: Collection[str] = (), size: int = STEP_SIZE
) -> list[list[str]]:
    """The items grouped into the survey's short steps (item ids, in order).

    A step holds at most `size` items sharing one answer set; an item with a heading (a loaded
    text's "During the past week:") starts a new step, and so does an item shown only after an
    answer in the current step, so a page never changes under the participant's finger and
    works without JavaScript. A longer run is split evenly (7 items: 4 + 3, not 5 + 2)."""
    runs: list[list[str]] = []
    for item in instrument.items:
        current = runs[-1] if runs else None
        if (
            current is None
            or item.id in headings
            or item.responses != instrument.item(current[-1]).responses
            or (item.show_if is not None and item.show_if.item in current)
        ):
            runs.append([item.id])
        else:
            current.append(item.id)
    out: list[list[str]] = []
    for run in runs:
        count = -(-len(run) // size)
        base, extra = divmod(len(run), count)
        start = 0
        for k in range(count):
            end = start + base + (1 if k < extra else 0)
            out.append(run[start:end])
            start = end
    return out
