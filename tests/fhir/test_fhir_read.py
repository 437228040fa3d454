"""The read-only FHIR R4 API: every resource type validates with fhir.resources R4B, searches page
with Bundle links, errors are OperationOutcomes, and nothing outside the caller's scope is read."""

from __future__ import annotations

from typing import Any

import pytest

from server.results import fhir as fhir_in
from tests.fhir.conftest import FHIR_JSON, validate

TYPES = [
    "Patient",
    "ResearchStudy",
    "ResearchSubject",
    "CarePlan",
    "Observation",
    "Questionnaire",
    "QuestionnaireResponse",
    "Flag",
    "Communication",
]


def fhir_get(api: Any, path: str, status: int = 200) -> dict[str, Any]:
    resp = api.get(path)
    assert resp.status_code == status, (path, resp.status_code, resp.get_data(as_text=True))
    assert resp.headers["Content-Type"].startswith(FHIR_JSON)
    body = resp.get_json(force=True)
    validate(body)
    return body  # type: ignore[no-any-return]


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


def test_metadata_is_a_capability_statement_without_a_token(client):
    resp = client.get("/fhir/metadata")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith(FHIR_JSON)
    statement = validate(resp.get_json(force=True))
    assert statement.fhirVersion == "4.0.1"
    served = {r.type for r in statement.rest[0].resource}
    assert set(TYPES) <= served


@pytest.mark.parametrize("resource_type", TYPES)
def test_every_type_searches_and_reads_valid_resources(scene, api_as, resource_type):
    nurse = api_as("nurse", "A")
    bundle = fhir_get(nurse, f"/fhir/{resource_type}")
    found = resources(bundle)
    assert found, f"no {resource_type} for site A"
    assert bundle["total"] == len(found)
    for resource in found:
        assert resource["resourceType"] == resource_type
        one = fhir_get(nurse, f"/fhir/{resource_type}/{resource['id']}")
        assert one == resource


def test_observations_of_a_participant(scene, api_as):
    nurse = api_as("nurse", "A")
    bundle = fhir_get(nurse, f"/fhir/Observation?subject=Patient/{scene.a1}")
    by_code: dict[str, list[dict[str, Any]]] = {}
    for obs in resources(bundle):
        by_code.setdefault(obs["code"]["coding"][0]["code"], []).append(obs)
    positive = next(o for o in by_code["ctdna"] if o["identifier"][0]["value"] == "ACC-1")
    assert positive["valueQuantity"] == {
        "value": 0.42,
        "unit": "MTM/mL",
        "system": "http://unitsofmeasure.org",
        "code": "{MTM}/mL",
    }
    assert positive["interpretation"][0]["coding"][0]["code"] == "POS"
    negative = next(o for o in by_code["ctdna"] if o["identifier"][0]["value"] == "BASE-1")
    assert negative["interpretation"][0]["coding"][0]["code"] == "NEG"
    scan = by_code["recist-response"][0]
    assert scan["valueCodeableConcept"]["coding"][0]["code"] == "CR"
    assert scan["effectiveDateTime"] == "2027-03-28"
    marker = by_code["6875-9"][0]  # LOINC: Cancer Ag 15-3
    assert marker["valueQuantity"]["value"] == 21.5
    scores = [o for o in resources(bundle) if o["category"][0]["coding"][0]["code"] == "survey"]
    assert {o["code"]["coding"][0]["code"] for o in scores} >= {"eortc_qlq_c30.QL2"}
    assert all(
        o["derivedFrom"][0]["reference"] == f"QuestionnaireResponse/{scene.response_id}"
        for o in scores
    )
    # The same search by the study code, and by category.
    by_code_search = fhir_get(
        nurse, "/fhir/Observation?subject:identifier=urn:stepdown:study:HEROES|A-001"
    )
    assert by_code_search["total"] == bundle["total"]
    labs = fhir_get(nurse, f"/fhir/Observation?patient={scene.a1}&category=laboratory")
    assert {o["code"]["coding"][0]["code"] for o in resources(labs)} == {"ctdna", "6875-9"}


def test_a_result_out_reads_back_in_as_the_same_result(scene, api_as):
    """The ctDNA Observation we serve is one the results API's FHIR reader takes: same
    accession, study code, call and MTM/mL."""
    obs = fhir_get(api_as("nurse", "A"), "/fhir/Observation?code=ctdna&date=ge2027-03-29")
    (positive,) = resources(obs)
    back = fhir_in.observation_to_ctdna(positive)
    assert back["accession_id"] == "ACC-1"
    assert back["study_code"] == "A-001" and back["study"] == "HEROES"
    assert back["call"] == "positive" and back["mtm_per_ml"] == 0.42


def test_schedule_is_one_care_plan_with_windows_and_statuses(scene, api_as):
    plan = fhir_get(api_as("monitor", "A"), f"/fhir/CarePlan/{scene.a1}")
    activities = plan["activity"]
    qol1 = next(
        a for a in activities if "Questionnaire" in str(a["detail"].get("instantiatesCanonical"))
    )
    assert qol1["detail"]["status"] == "completed"
    assert {"reference": f"QuestionnaireResponse/{scene.response_id}"} in qol1["outcomeReference"]
    period = qol1["detail"]["scheduledPeriod"]
    assert period["start"] < period["end"]
    statuses = {a["detail"]["statusReason"]["coding"][0]["code"] for a in activities}
    assert {"completed", "planned"} <= statuses


def test_questionnaire_has_options_branching_and_translations(scene, api_as):
    nurse = api_as("nurse", "A")
    checkin = fhir_get(nurse, "/fhir/Questionnaire/qol-checkin")
    items = {i["linkId"]: i for i in checkin["item"]}
    fatigue = items["fatigue"]
    assert [o["valueCoding"]["code"] for o in fatigue["answerOption"]] == ["0", "1", "2", "3"]
    langs = {
        {e["url"]: e for e in x["extension"]}["lang"]["valueCode"]
        for x in fatigue["_text"]["extension"]
    }
    assert langs == {"fr", "zh"}
    branching = [i for i in checkin["item"] if "enableWhen" in i]
    assert branching, "qol_checkin has show_if items"
    for item in branching:
        for condition in item["enableWhen"]:
            assert condition["question"] in items
    # A licensed instrument: its licence, and the texts the site loaded (the world's are made up).
    qlq = fhir_get(nurse, "/fhir/Questionnaire/eortc-qlq-c30")
    assert qlq["copyright"].startswith("The EORTC QLQ-C30 is copyrighted")
    item12 = qlq["item"][11]
    assert item12["text"] == "Made-up question 12 (en)"
    translated = {
        {e["url"]: e for e in x["extension"]}["lang"]["valueCode"]: {
            e["url"]: e for e in x["extension"]
        }["content"]["valueString"]
        for x in item12["_text"]["extension"]
    }
    assert translated == {"fr": "Question inventée 12 (fr)", "zh": "虚构问题 12 (zh)"}


def test_questionnaire_response_answers_in_the_questionnaires_codes(scene, api_as):
    nurse = api_as("nurse", "A")
    qr = fhir_get(nurse, f"/fhir/QuestionnaireResponse/{scene.response_id}")
    assert qr["status"] == "completed"
    assert qr["questionnaire"].endswith("/fhir/Questionnaire/eortc-qlq-c30|3.0")
    answers = {i["linkId"]: i["answer"][0]["valueCoding"]["code"] for i in qr["item"]}
    # As the participant (French) read it.
    assert qr["language"] == "fr"
    assert qr["item"][0]["text"] == "Question inventée 1 (fr)"
    assert answers["q1"] == "2" and answers["q30"] == "6"
    q = fhir_get(nurse, "/fhir/Questionnaire/eortc-qlq-c30")
    codes = {i["linkId"]: {o["valueCoding"]["code"] for o in i["answerOption"]} for i in q["item"]}
    assert all(answers[k] in codes[k] for k in answers)


def test_flag_and_communications_never_carry_the_text_or_the_ack_code(scene, api_as, db):
    from server.alerts.models import Alert

    nurse = api_as("nurse", "A")
    flag = fhir_get(nurse, f"/fhir/Flag/{scene.alert_id}")
    assert flag["status"] == "active"
    assert flag["subject"]["reference"] == f"Patient/{scene.a1}"
    alert = db.get(Alert, scene.alert_id)
    priority = flag["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]
    assert priority == {"critical": "PH", "urgent": "PM", "routine": "PL"}[alert.level.value]
    ack_code = alert.ack_code
    comms = fhir_get(nurse, f"/fhir/Communication?subject=Patient/{scene.a1}")
    assert comms["total"] >= 1
    text = str(comms) + str(flag)
    assert ack_code not in text
    assert "+336" not in text and "payload" not in text


def test_paging_with_links_and_count(scene, api_as):
    nurse = api_as("nurse", "A")
    first = fhir_get(nurse, "/fhir/Observation?_count=2")
    total = first["total"]
    assert total > 4 and len(first["entry"]) == 2
    seen, page = [], first
    while True:
        seen += [r["id"] for r in resources(page)]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = fhir_get(
            nurse, nxt[0].split("http://127.0.0.1:8000", 1)[-1].replace("http://localhost", "")
        )
    assert len(seen) == total == len(set(seen))
    assert fhir_get(nurse, "/fhir/Observation?_count=0")["total"] == total


def test_date_and_last_updated_searches(scene, api_as):
    nurse = api_as("nurse", "A")
    march = fhir_get(nurse, "/fhir/Observation?date=ge2027-03&date=lt2027-04")
    assert {o["id"].split("-")[0] for o in resources(march)} == {"result"}
    january = fhir_get(nurse, "/fhir/Observation?date=2027-01-05")
    assert {o["category"][0]["coding"][0]["code"] for o in resources(january)} == {"survey"}
    recent = fhir_get(nurse, "/fhir/QuestionnaireResponse?_lastUpdated=gt2027-02")
    assert recent["total"] == 0
    assert fhir_get(nurse, "/fhir/QuestionnaireResponse?authored=2027-01")["total"] == 1


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/fhir/Observation?date=yesterday", 400, "invalid"),
        ("/fhir/Observation?pateint=1", 400, "not-supported"),
        ("/fhir/Observation?_count=100000", 400, "invalid"),
        ("/fhir/Observation?subject=Group/1", 400, "invalid"),
        ("/fhir/Medication", 404, "not-found"),
        ("/fhir/Observation/result-999999", 404, "not-found"),
        ("/fhir/Observation/not%20an%20id", 404, "not-found"),
        ("/fhir/a/b/c", 404, "not-found"),
    ],
)
def test_errors_are_operation_outcomes(scene, api_as, path, status, code):
    outcome = fhir_get(api_as("nurse", "A"), path, status)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


def test_writes_are_refused_and_tokens_required(client, scene, api_as):
    nurse = api_as("nurse", "A")
    resp = nurse.post("/fhir/Observation", json={"resourceType": "Observation"})
    assert resp.status_code == 405
    assert validate(resp.get_json(force=True)).issue[0].code == "not-supported"
    for headers in ({}, {"Authorization": "Bearer nope"}):
        resp = client.get("/fhir/Patient", headers=headers)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        validate(resp.get_json(force=True))


def test_a_licensed_questionnaire_shows_only_the_languages_the_site_loaded(world, db, api_as):
    import sqlalchemy as sa

    from server.surveys.models import InstrumentText

    db.execute(sa.delete(InstrumentText).where(InstrumentText.locale != "fr"))
    db.commit()
    qlq = fhir_get(api_as("nurse", "A"), "/fhir/Questionnaire/eortc-qlq-c30")
    # French is the only wording there is: it leads, with no translation and no placeholder.
    assert qlq["language"] == "fr"
    assert qlq["item"][0]["text"] == "Question inventée 1 (fr)"
    assert "_text" not in qlq["item"][0]
    db.execute(sa.delete(InstrumentText))
    db.commit()
    qlq = fhir_get(api_as("nurse", "A"), "/fhir/Questionnaire/eortc-qlq-c30")
    assert qlq["item"][11]["text"] == "Item 12"  # nothing loaded: the neutral placeholder


def test_a_questionnaire_answered_on_the_phone_comes_out_as_a_valid_response(
    world, db, client, api_as, app_token
):
    """Issue 15 item 5: the companion app's answers, read back through FHIR by the care team and
    by the participant's own app, are a valid QuestionnaireResponse with the same answers."""
    import time_machine

    from tests.fhir.conftest import ANSWERED, event, qlq

    a1 = world.participants["A1"]
    qol1 = event(db, a1.id, "qol:1")
    phone = {"Authorization": f"Bearer {app_token('A1')}"}
    answers = qlq(q1=4, q29=7)
    with time_machine.travel(ANSWERED, tick=False):
        resp = client.post(
            f"/api/v1/mobile/questionnaires/{qol1.id}/answers",
            json={"answers": answers, "submit": True},
            headers=phone,
        )
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)
        response_id = resp.get_json()["response_id"]
    for reader in (api_as("coordinator", "A").get, lambda p: client.get(p, headers=phone)):
        got = reader(f"/fhir/QuestionnaireResponse/{response_id}")
        assert got.status_code == 200
        qr = validate(got.get_json(force=True))
        assert qr.status == "completed" and qr.subject.reference == f"Patient/{a1.id}"
        assert {i.linkId: int(i.answer[0].valueCoding.code) for i in qr.item} == answers
    scores = api_as("coordinator", "A").get(
        f"/fhir/Observation?subject=Patient/{a1.id}&category=survey"
    )
    global_health = [
        e["resource"]
        for e in scores.get_json(force=True)["entry"]
        if e["resource"]["code"]["coding"][0]["code"] == "eortc_qlq_c30.QL2"
    ]
    # Global health from q29 = 7 and q30 = 6: ((6.5 - 1) / 6) x 100.
    assert round(global_health[0]["valueQuantity"]["value"], 2) == round(5.5 / 6 * 100, 2)
