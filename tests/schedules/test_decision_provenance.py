"""NCT07239271 decisions from lab results through the API: the three cases measured in issue 14,
each fact shown with the result and draw it came from, a PAM finding retracted only explicitly
(and audited); the decision-table report through the API and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import time_machine
from sqlmodel import select

from server.audit import AuditEvent
from server.participants.models import Locale, ParticipantStatus
from server.results.models import LabResult
from server.schedules.models import Decision
from tests import factories

P = "/api/v1/participants"
C1D1 = "2027-01-04"  # the factories' fixed anchor: cycle 1 day 1


def at(iso: str):
    return time_machine.travel(datetime.fromisoformat(iso).replace(tzinfo=UTC), tick=False)


def enrol(db, world, code: str):
    """An adaptive-arm participant, enrolled a month before C1D1 whatever the suite's clock."""
    study = db.exec(select(factories.Study).where(factories.Study.key == "NCT07239271")).first()
    study = study or factories.make_study(db, "NCT07239271", "nct07239271")
    with at("2026-12-01T08:00:00"):
        p = factories.make_participant(
            db,
            world.staff[("coordinator", "A")],
            world.sites["A"],
            study,
            code,
            cohort="adaptive",
            status=ParticipantStatus.ACTIVE,
            timezone="Asia/Shanghai",
            locale=Locale.ZH,
        )
        db.commit()
    return p


def post_ctdna(api, code: str, accession: str, collected: str, call: str, **extra):
    body = {
        "study": "NCT07239271",
        "study_code": code,
        "accession_id": accession,
        "collected_at": collected,
        "call": call,
        **extra,
    }
    return api.post("/api/v1/results/ctdna", json=body)


def run_adaptive(api, code: str, baseline: tuple, c1: tuple, recist: str) -> dict:
    """Baseline draw, C1 draw and C2 imaging, each posted by a lab."""
    for accession, collected, (call, pam) in (
        ("B-1", "2027-01-03T01:00:00Z", baseline),
        ("C1-1", "2027-01-24T01:00:00Z", c1),
    ):
        extra = {} if pam is None else {"pam_mutation": pam}
        r = post_ctdna(api, code, accession, collected, call, **extra)
        assert r.status_code == 201, r.get_json()
    r = api.post(
        "/api/v1/results/imaging",
        json={
            "study": "NCT07239271",
            "study_code": code,
            "accession_id": "IMG-1",
            "modality": "ct",
            "performed_on": "2027-02-14",
            "recist": recist,
        },
    )
    assert r.status_code == 201, r.get_json()
    return r


def only_decision(api, participant_id: int) -> dict:
    decisions = api.get(f"{P}/{participant_id}/decisions").get_json()
    assert len(decisions) == 1, decisions
    return decisions[0]


@pytest.mark.parametrize(
    ("baseline", "c1", "recist", "rule_id", "regimen"),
    [
        # 1. Baseline (+) with a PAM mutation, C1 (-) reporting none -> EveroHT.
        (("positive", True), ("negative", False), "PR", "ctdna_pos_baseline_pam", "everoht"),
        # 2. ctDNA (-) with a complete response -> continue Nab-P+HP.
        (("negative", None), ("negative", None), "CR", "ctdna_neg_response", "nab_p_hp"),
        # 3. Baseline (+) without a PAM mutation, then C1 (-) -> PyroHT.
        (("positive", False), ("negative", False), "SD", "ctdna_pos_baseline_no_pam", "pyroht"),
    ],
    ids=["pam-found-at-baseline", "cr-with-ctdna-negative", "baseline-positive-no-pam"],
)
def test_the_measured_cases_get_the_rule_with_each_fact_and_its_source(
    world, db, api_as, baseline, c1, recist, rule_id, regimen
):
    # Not the rule id: "ctdna" in a study code would make every SMS fail the guard (issue 17).
    p = enrol(db, world, f"NEO-{regimen}")
    api = api_as("coordinator", "A")
    with at("2027-02-16T02:00:00"):
        run_adaptive(api, p.study_code, baseline, c1, recist)
        d = only_decision(api, p.id)
    assert (d["status"], d["rule_id"], d["recommended_regimen"]) == ("due", rule_id, regimen)
    assert d["team_decides"] is None
    ids = {r.accession_id: r.id for r in db.exec(select(LabResult)).all()}
    sources = {f["name"]: f for f in d["fact_sources"]}
    assert list(sources) == ["ctdna_baseline", "ctdna_after_c1", "response", "pam_mutation"]
    assert sources["ctdna_baseline"]["sources"] == [
        {
            "what": f"ctDNA {baseline[0]}",
            "event_key": "ctdna_baseline:1",
            "event_id": sources["ctdna_baseline"]["sources"][0]["event_id"],
            "result_id": ids["B-1"],
            "accession_id": "B-1",
            "lab": "default",
            "on": "2027-01-03",
        }
    ]
    assert [
        (s["accession_id"], s["event_key"], s["on"]) for s in sources["response"]["sources"]
    ] == [("IMG-1", "imaging_c2:1", "2027-02-14")]
    pam = sources["pam_mutation"]
    if baseline[1] is True:
        assert pam["value"] == "true"
        assert pam["note"] == "found earlier; later results reporting none do not clear it"
        assert [(s["what"], s["accession_id"]) for s in pam["sources"]] == [
            ("PAM mutation found", "B-1"),
            ("no PAM mutation", "C1-1"),
        ]
    elif baseline[1] is False:
        assert (pam["value"], [s["accession_id"] for s in pam["sources"]]) == (
            "false",
            ["B-1", "C1-1"],
        )
    else:
        assert (pam["value"], pam["note"]) == ("unknown", "never tested")
    # The decision's audit row holds the same facts and sources.
    row = db.exec(select(AuditEvent).where(AuditEvent.action == "decision.due")).one()
    assert row.after["rule_id"] == rule_id
    assert row.after["fact_sources"] == d["fact_sources"]


def test_a_pam_finding_is_cleared_only_by_a_result_that_retracts_it(world, db, api_as, web_as):
    p = enrol(db, world, "NEO-RETRACT")
    api = api_as("coordinator", "A")
    with at("2027-02-16T02:00:00"):
        run_adaptive(api, p.study_code, ("positive", True), ("negative", False), "PR")
        assert only_decision(api, p.id)["rule_id"] == "ctdna_pos_baseline_pam"
        # A retraction must name a finding of this participant, from the same lab: else 422.
        for bogus in ("C1-1", "NO-SUCH", "IMG-1"):
            r = post_ctdna(
                api, p.study_code, "B-2", "2027-01-03T01:00:00Z", "positive",
                pam_mutation=False, retracts_pam_mutation_of=bogus,
            )  # fmt: skip
            assert r.status_code == 422, (bogus, r.get_json())
            assert "retracts_pam_mutation_of" in r.get_json()["error"]["fields"]
        other_lab = post_ctdna(
            api, p.study_code, "B-2", "2027-01-03T01:00:00Z", "positive",
            lab="lab-2", retracts_pam_mutation_of="B-1",
        )  # fmt: skip
        assert other_lab.status_code == 422
        assert db.exec(select(LabResult).where(LabResult.accession_id == "B-2")).first() is None
        # The lab's corrected report withdraws the baseline finding.
        r = post_ctdna(
            api, p.study_code, "B-2", "2027-01-03T01:00:00Z", "positive",
            pam_mutation=False, retracts_pam_mutation_of="B-1",
        )  # fmt: skip
        assert r.status_code == 201, r.get_json()
        d = only_decision(api, p.id)
    assert (d["rule_id"], d["recommended_regimen"]) == ("ctdna_pos_baseline_no_pam", "pyroht")
    pam = next(f for f in d["fact_sources"] if f["name"] == "pam_mutation")
    assert pam["value"] == "false"
    assert ("PAM mutation retracted by result B-2", "B-1") in [
        (s["what"], s["accession_id"]) for s in pam["sources"]
    ]
    retracted = db.exec(select(LabResult).where(LabResult.accession_id == "B-1")).one()
    audit = db.exec(select(AuditEvent).where(AuditEvent.action == "result.pam_retraction")).one()
    assert (audit.entity, audit.entity_id) == ("lab_result", str(retracted.id))
    assert (audit.before, audit.after) == (
        {"pam_mutation": True},
        {"pam_mutation": "retracted", "retracted_by": "B-2"},
    )
    assert "B-2 retracts the PAM mutation of B-1" in audit.reason
    # Twice re-evaluated while due, each time in the audit trail with its facts.
    dues = db.exec(select(AuditEvent).where(AuditEvent.action == "decision.due")).all()
    assert [a.after["rule_id"] for a in dues] == [
        "ctdna_pos_baseline_pam",
        "ctdna_pos_baseline_no_pam",
    ]
    # The participant page shows each fact with the result it came from.
    with at("2027-02-16T02:00:00"):
        page = web_as("investigator", "A").text(f"/participants/{p.id}")
    assert "PAM mutation retracted by result B-2" in page and "result B-1" in page


def test_decision_rows_keep_facts_and_sources_apart_from_other_participants(
    world, db, api_as, web_as
):
    # Results of one participant never feed another's decision (PAM reads every result).
    p1, p2 = enrol(db, world, "NEO-P1"), enrol(db, world, "NEO-P2")
    api = api_as("coordinator", "A")
    with at("2027-02-16T02:00:00"):
        run_adaptive(api, p1.study_code, ("positive", True), ("negative", None), "PR")
        r = post_ctdna(api, p2.study_code, "P2-B", "2027-01-03T01:00:00Z", "positive")
        assert r.status_code == 201
        r = post_ctdna(api, p2.study_code, "P2-C1", "2027-01-24T01:00:00Z", "negative")
        assert r.status_code == 201
        r = api.post(
            "/api/v1/results/imaging",
            json={
                "study": "NCT07239271",
                "study_code": p2.study_code,
                "accession_id": "P2-IMG",
                "modality": "ct",
                "performed_on": "2027-02-14",
                "recist": "PR",
            },
        )
        assert r.status_code == 201
        d2 = only_decision(api, p2.id)
        today = web_as("nurse", "A").text("/")
    # Today lists it with the protocol's reason rather than "no rule matched".
    assert "the protocol leaves it to the care team: ctDNA (+) but the PAM pathway status" in today
    assert d2["facts"]["pam_mutation"] == "unknown"
    assert d2["rule_id"] == "ctdna_pos_baseline_pam_unknown" and d2["team_decides"]
    assert db.exec(select(Decision).where(Decision.participant_id == p1.id)).one().rule_id == (
        "ctdna_pos_baseline_pam"
    )


# --- The decision-table report --------------------------------------------------------------------


def test_the_report_through_the_api_is_the_whole_table(world, api_as, client):
    monitor = api_as("monitor", "A")  # a read-only reviewer may read it
    r = monitor.get("/api/v1/protocols/NCT07239271/decisions")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["study"], body["version"], body["source_file"]) == (
        "NCT07239271",
        "3",
        "nct07239271.yaml",
    )
    c2 = body["tables"][0]
    assert (c2["id"], c2["combinations"], len(c2["rows"]), c2["uncovered"]) == (
        "after_c2",
        162,
        162,
        0,
    )
    cr = [
        row
        for row in c2["rows"]
        if row["facts"]["response"] == "CR"
        and row["facts"]["ctdna_baseline"] == "negative"
        and row["facts"]["ctdna_after_c1"] == "negative"
    ]
    assert {(row["rule_id"], row["outcome"]["regimen"]) for row in cr} == {
        ("ctdna_neg_response", "nab_p_hp")
    }
    assert monitor.get("/api/v1/protocols/nct07239271/decisions").status_code == 200
    empty = monitor.get("/api/v1/protocols/HEROES/decisions").get_json()
    assert empty["tables"] == []
    missing = monitor.get("/api/v1/protocols/NOPE/decisions")
    assert missing.status_code == 404 and missing.get_json()["error"]["message"]
    assert client.get("/api/v1/protocols/NCT07239271/decisions").status_code == 401


def test_the_report_on_the_command_line(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["protocol", "decisions", "NCT07239271"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("NCT07239271 v3 — decision tables as the system applies them")
    assert (
        "after_c2: Regimen after cycle 2 — 162 combinations, 78 left to the care team, 0 uncovered"
        in lines
    )
    assert (
        "negative        negative        CR        true          →  nab_p_hp ×2  "
        "[ctdna_neg_response]"
    ) in lines
    assert (
        "positive        negative        SD        false         →  pyroht ×2  "
        "[ctdna_pos_baseline_no_pam]"
    ) in lines
    assert any(
        line.startswith(
            "  c1_ctdna_not_known: ctdna_baseline=negative|unknown, ctdna_after_c1=unknown → "
            "the care team decides: "
        )
        for line in lines
    )
    assert (
        "CR        unknown          →  the care team decides  "
        "[regimen_not_recorded, also pr_continue]" in lines
    )
    rows = [line for line in lines if "  →  " in line and not line.endswith("[rule]")]
    assert len(rows) == 162 + 12  # every combination of both tables, one line each
    as_json = runner.invoke(args=["protocol", "decisions", "nct07239271", "--json"])
    assert json.loads(as_json.output)["tables"][1]["id"] == "after_c4"
    unknown = runner.invoke(args=["protocol", "decisions", "NOPE"])
    assert unknown.exit_code == 2 and "no protocol 'NOPE'" in unknown.output
