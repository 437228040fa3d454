"""The facts a decision reads, with their provenance, derived from every draw and result (pure:
records in, facts out). The three cases measured in issue 14 come first."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from config.settings import PROTOCOLS_DIR
from server.protocols.definition import Protocol, load_protocol
from server.protocols.rules import evaluate_decision
from server.schedules.models import EventStatus
from server.schedules.rules import EventRecord, Fact, ResultRecord, derive_facts

C1D1 = date(2027, 1, 4)
DONE = EventStatus.COMPLETED


@pytest.fixture(scope="module")
def nct() -> Protocol:
    return load_protocol(f"{PROTOCOLS_DIR}/nct07239271.yaml")


def event(
    key: str,
    day: int,
    status: EventStatus = DONE,
    outcome: dict[str, object] | None = None,
    event_id: int | None = None,
    regimen: str | None = None,
    reason: str | None = None,
) -> EventRecord:
    item, _, rest = key.partition(":")
    if rest.startswith("1:redraw"):
        item += "_redraw"
    types = {"ctdna_baseline": "ctdna_draw", "ctdna_c1": "ctdna_draw", "imaging_c2": "imaging"}
    on = C1D1 + timedelta(days=day)
    return EventRecord(
        event_id=event_id or abs(hash(key)) % 10_000,
        key=key,
        item_id=item,
        event_type=types.get(item.removesuffix("_redraw"), item),
        sequence=1,
        status=status,
        target_at=datetime.combine(on, datetime.min.time(), UTC),
        target_date=on,
        completed_on=on if status == DONE else None,
        outcome=outcome,
        regimen=regimen,
        status_reason=reason,
    )


def ctdna(
    result_id: int,
    accession: str,
    on: event,  # type: ignore[valid-type]
    call: str,
    pam: bool | None = None,
    retracts: str | None = None,
    lab: str = "lab-1",
) -> ResultRecord:
    return ResultRecord(
        result_id=result_id,
        accession_id=accession,
        lab=lab,
        kind="ctdna",
        event_id=on.event_id if on is not None else None,  # type: ignore[attr-defined]
        on=on.completed_on if on is not None else None,  # type: ignore[attr-defined]
        call=call,
        pam_mutation=pam,
        retracts_pam_mutation_of=retracts,
    )


def imaging(result_id: int, accession: str, on: EventRecord, recist: str) -> ResultRecord:
    return ResultRecord(
        result_id=result_id,
        accession_id=accession,
        lab="radiology",
        kind="imaging",
        event_id=on.event_id,
        on=on.completed_on,
        recist=recist,
    )


POINT = event("decision_c2:1", 42, status=EventStatus.OPEN, event_id=9000)


def derive(nct: Protocol, events: list[EventRecord], results: list[ResultRecord]):
    return derive_facts(nct.decision("after_c2"), events=events, results=results, point=POINT)


def values(found: dict[str, Fact]) -> dict[str, str]:
    return {name: fact.value for name, fact in found.items()}


def adaptive(baseline_call: str, baseline_pam: bool | None, c1_call: str, c1_pam, recist: str):
    """The adaptive arm up to the decision after C2, every input posted by a lab."""
    base = event("ctdna_baseline:1", -2, event_id=1, outcome={"ctdna": baseline_call})
    c1 = event("ctdna_c1:1", 20, event_id=2, outcome={"ctdna": c1_call})
    scan = event("imaging_c2:1", 41, event_id=3, outcome={"recist": recist})
    results = [
        ctdna(11, "B-1", base, baseline_call, baseline_pam),
        ctdna(12, "C1-1", c1, c1_call, c1_pam),
        imaging(13, "IMG-1", scan, recist),
    ]
    return [base, c1, scan, POINT], results


# --- The three measured cases --------------------------------------------------------------------


def test_a_pam_mutation_found_at_baseline_stays_found_when_c1_reports_none(nct: Protocol) -> None:
    events, results = adaptive("positive", True, "negative", False, "PR")
    found, awaited = derive(nct, events, results)
    assert awaited == []
    assert values(found) == {
        "ctdna_baseline": "positive",
        "ctdna_after_c1": "negative",
        "response": "PR",
        "pam_mutation": "true",
    }
    pam = found["pam_mutation"]
    assert pam.note == "found earlier; later results reporting none do not clear it"
    assert [(s.what, s.accession_id, s.event_key, s.on) for s in pam.sources] == [
        ("PAM mutation found", "B-1", "ctdna_baseline:1", date(2027, 1, 2)),
        ("no PAM mutation", "C1-1", "ctdna_c1:1", date(2027, 1, 24)),
    ]
    base = found["ctdna_baseline"].sources[0]
    assert (base.what, base.result_id, base.accession_id, base.lab, base.event_id) == (
        "ctDNA positive",
        11,
        "B-1",
        "lab-1",
        1,
    )
    outcome = evaluate_decision(nct.decision("after_c2"), values(found))
    assert (outcome.rule_id, outcome.regimen) == ("ctdna_pos_baseline_pam", "everoht")


def test_ctdna_negative_with_a_complete_response(nct: Protocol) -> None:
    events, results = adaptive("negative", None, "negative", None, "CR")
    found, _ = derive(nct, events, results)
    assert values(found)["response"] == "CR"
    assert found["response"].sources[0].accession_id == "IMG-1"
    assert (found["pam_mutation"].value, found["pam_mutation"].note) == ("unknown", "never tested")
    outcome = evaluate_decision(nct.decision("after_c2"), values(found))
    assert (outcome.rule_id, outcome.regimen) == ("ctdna_neg_response", "nab_p_hp")


def test_baseline_positive_without_pam_then_c1_negative(nct: Protocol) -> None:
    events, results = adaptive("positive", False, "negative", False, "SD")
    found, _ = derive(nct, events, results)
    assert (found["pam_mutation"].value, found["pam_mutation"].note) == (
        "false",
        "tested, never found",
    )
    outcome = evaluate_decision(nct.decision("after_c2"), values(found))
    assert (outcome.rule_id, outcome.regimen) == ("ctdna_pos_baseline_no_pam", "pyroht")


# --- Retraction -----------------------------------------------------------------------------------


def test_only_a_result_that_retracts_the_finding_clears_it(nct: Protocol) -> None:
    events, results = adaptive("positive", True, "negative", False, "PR")
    corrected = ctdna(14, "B-1-corr", None, "positive", False, retracts="B-1")
    found, _ = derive(nct, events, [*results, corrected])
    pam = found["pam_mutation"]
    assert pam.value == "false"
    assert [(s.what, s.accession_id) for s in pam.sources] == [
        ("no PAM mutation", "C1-1"),
        ("no PAM mutation", "B-1-corr"),
        ("PAM mutation retracted by result B-1-corr", "B-1"),
    ]
    outcome = evaluate_decision(nct.decision("after_c2"), values(found))
    assert outcome.rule_id == "ctdna_pos_baseline_no_pam"


def test_a_retraction_names_a_finding_of_the_same_lab(nct: Protocol) -> None:
    events, results = adaptive("positive", True, "negative", None, "PR")
    other_lab = ctdna(14, "X-1", None, "positive", None, retracts="B-1", lab="lab-2")
    assert derive(nct, events, [*results, other_lab])[0]["pam_mutation"].value == "true"
    same_lab = ctdna(15, "X-2", None, "positive", None, retracts="B-1")
    pam = derive(nct, events, [*results, same_lab])[0]["pam_mutation"]
    # Withdrawn and never tested again: unknown, with the retraction as its source.
    assert (pam.value, pam.note) == ("unknown", "never tested")
    assert [s.what for s in pam.sources] == ["PAM mutation retracted by result X-2"]


def test_a_mutation_in_a_result_linked_to_no_draw_counts(nct: Protocol) -> None:
    events, results = adaptive("positive", None, "negative", None, "PR")
    extra = ctdna(20, "EXTRA", None, "positive", True)
    pam = derive(nct, events, [*results, extra])[0]["pam_mutation"]
    assert pam.value == "true" and pam.sources[0].event_key is None


# --- Time points: awaited, not done, redraws, by hand ---------------------------------------------


def test_a_draw_still_due_or_its_result_pending_is_awaited(nct: Protocol) -> None:
    events, results = adaptive("negative", None, "negative", None, "PR")
    planned = [events[0], event("ctdna_c1:1", 20, EventStatus.OPEN, event_id=2), *events[2:]]
    assert derive(nct, planned, [results[0], results[2]])[1] == ["ctdna_after_c1"]
    # Done, no result yet (nothing recorded with the completion): still awaited.
    drawn = [events[0], event("ctdna_c1:1", 20, event_id=2), *events[2:]]
    assert derive(nct, drawn, [results[0], results[2]])[1] == ["ctdna_after_c1"]


def test_a_failed_test_waits_for_its_redraw_and_the_redraw_gives_the_value(nct: Protocol) -> None:
    events, results = adaptive("negative", None, "negative", None, "PR")
    c1 = event("ctdna_c1:1", 20, event_id=2)
    failed = ctdna(12, "C1-1", c1, "insufficient_sample")
    redraw = event("ctdna_c1:1:redraw1", 22, EventStatus.OPEN, event_id=5)
    found, awaited = derive(
        nct, [events[0], c1, redraw, *events[2:]], [results[0], failed, results[2]]
    )
    assert awaited == ["ctdna_after_c1"]
    done = event("ctdna_c1:1:redraw1", 23, event_id=5, outcome={"ctdna": "positive"})
    found, awaited = derive(
        nct,
        [events[0], c1, done, *events[2:]],
        [results[0], failed, ctdna(16, "C1-2", done, "positive", False), results[2]],
    )
    assert awaited == []
    source = found["ctdna_after_c1"].sources[0]
    assert (found["ctdna_after_c1"].value, source.event_key, source.accession_id) == (
        "positive",
        "ctdna_c1:1:redraw1",
        "C1-2",
    )
    # Failed with no redraw planned (the study does not redraw): not done, the team decides.
    found, awaited = derive(nct, [events[0], c1, *events[2:]], [results[0], failed, results[2]])
    assert awaited == [] and found["ctdna_after_c1"].value == "unknown"
    assert found["ctdna_after_c1"].sources[0].what == "test failed (insufficient sample)"


@pytest.mark.parametrize(
    ("status", "reason", "what"),
    [
        (EventStatus.MISSED, None, "missed (its window closed without it)"),
        (EventStatus.CANCELLED, "patient unwell", "cancelled: patient unwell"),
        (EventStatus.NOT_APPLICABLE, None, "not applicable"),
    ],
)
def test_a_draw_not_done_is_unknown_and_says_why(
    nct: Protocol, status: EventStatus, reason: str | None, what: str
) -> None:
    events, results = adaptive("negative", None, "negative", None, "PR")
    c1 = event("ctdna_c1:1", 20, status, event_id=2, reason=reason)
    found, awaited = derive(nct, [events[0], c1, *events[2:]], [results[0], results[2]])
    assert awaited == []
    fact = found["ctdna_after_c1"]
    assert (fact.value, fact.note, [s.what for s in fact.sources]) == (
        "unknown",
        "not done",
        [what],
    )
    assert fact.sources[0].event_key == "ctdna_c1:1"
    outcome = evaluate_decision(nct.decision("after_c2"), values(found))
    assert outcome.rule_id == "c1_ctdna_not_known" and outcome.team_decides


def test_an_outcome_recorded_by_hand_says_so_and_a_result_wins(nct: Protocol) -> None:
    base = event("ctdna_baseline:1", -2, event_id=1, outcome={"ctdna": "negative"})
    c1 = event("ctdna_c1:1", 20, event_id=2, outcome={"ctdna": "negative", "pam_mutation": True})
    scan = event("imaging_c2:1", 41, event_id=3, outcome={"recist": "pr"})
    found, _ = derive(nct, [base, c1, scan, POINT], [])
    assert (
        found["ctdna_baseline"].sources[0].what == "ctDNA negative (recorded with the completion)"
    )
    assert found["response"].value == "PR"
    assert found["pam_mutation"].sources[0].what == (
        "PAM mutation found (recorded with the completion)"
    )
    # A lab result linked to the draw is what the fact reads, whatever was typed at completion.
    found, _ = derive(nct, [base, c1, scan, POINT], [ctdna(30, "L-1", base, "positive")])
    assert (found["ctdna_baseline"].value, found["ctdna_baseline"].sources[0].accession_id) == (
        "positive",
        "L-1",
    )


def test_the_regimen_is_the_last_cycle_before_the_decision(nct: Protocol) -> None:
    table = nct.decision("after_c4")
    point = event("decision_c4:1", 84, EventStatus.OPEN, event_id=50)
    scan = event("imaging_c4:1", 83, event_id=51, outcome={"recist": "PR"})
    scan = replace(scan, item_id="imaging_c4", event_type="imaging")
    cycles = [
        event(f"cycle:{n}", 21 * (n - 1), event_id=60 + n, regimen=r)
        for n, r in ((1, "nab_p_hp"), (2, "nab_p_hp"), (3, "pyroht"), (4, "pyroht"))
    ]
    cycles = [replace(c, event_type="treatment_cycle") for c in cycles]
    found, awaited = derive_facts(table, events=[*cycles, scan, point], results=[], point=point)
    assert awaited == []
    assert (found["current_regimen"].value, found["current_regimen"].sources[0].event_key) == (
        "pyroht",
        "cycle:4",
    )
    undecided = [*cycles[:2], *(replace(c, regimen=None) for c in cycles[2:])]
    found, _ = derive_facts(table, events=[*undecided, scan, point], results=[], point=point)
    assert found["current_regimen"].value == "unknown"
    assert evaluate_decision(table, values(found)).rule_id == "regimen_not_recorded"
