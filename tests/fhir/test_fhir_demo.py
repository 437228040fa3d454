"""The demo (`make run` seeds it) speaks FHIR: /fhir/metadata, and HER-002's Observations and
QuestionnaireResponses found by her study code, every one valid for fhir.resources R4B."""

from __future__ import annotations

import time_machine
from sqlmodel import select

from server.auth.models import StaffUser
from tests import factories
from tests.clock import NOW
from tests.fhir.conftest import validate


def test_demo_serves_her_002_observations_and_questionnaire_responses(app, db, client):
    with time_machine.travel(NOW, tick=False):
        result = app.test_cli_runner().invoke(args=["seed-demo", "--if-empty"])
    assert result.exit_code == 0, result.output
    assert validate(client.get("/fhir/metadata").get_json(force=True)).fhirVersion == "4.0.1"

    nurse = db.exec(select(StaffUser).where(StaffUser.email == "nurse.paris@demo.stepdown.test"))
    headers = {"Authorization": f"Bearer {factories.token_for(db, nurse.one())}"}
    wanted = "subject:identifier=urn:stepdown:study:HEROES|HER-002"

    observations = client.get(f"/fhir/Observation?{wanted}&_count=200", headers=headers)
    assert observations.status_code == 200, observations.get_data(as_text=True)
    bundle = validate(observations.get_json(force=True))
    found = [e.resource for e in bundle.entry]
    assert bundle.total == len(found)
    ctdna = [o for o in found if o.code.coding[0].code == "ctdna"]
    calls = [o.interpretation[0].coding[0].code for o in ctdna]
    # Four negative tests (baseline included), then the positive one that arrived today.
    assert sorted(calls) == ["NEG"] * 4 + ["POS"]
    assert [
        o.valueCodeableConcept.coding[0].code
        for o in found
        if o.code.coding[0].code == "recist-response"
    ] == ["CR", "CR", "CR"]
    scores = [o for o in found if o.category[0].coding[0].code == "survey"]
    assert scores and {o.subject.identifier.value for o in found} == {"HER-002"}

    responses = client.get(f"/fhir/QuestionnaireResponse?{wanted}", headers=headers)
    assert responses.status_code == 200
    bundle = validate(responses.get_json(force=True))
    assert bundle.total == 3  # quality of life at 0, 3 and 6 months
    for entry in bundle.entry:
        assert entry.resource.status == "completed"
        assert entry.resource.questionnaire.endswith("/fhir/Questionnaire/eortc-qlq-c30|3.0")

    # Boston's coordinator does not see her.
    boston = db.exec(
        select(StaffUser).where(StaffUser.email == "coordinator.boston@demo.stepdown.test")
    ).one()
    other = {"Authorization": f"Bearer {factories.token_for(db, boston)}"}
    assert client.get(f"/fhir/Observation?{wanted}", headers=other).get_json()["total"] == 0
